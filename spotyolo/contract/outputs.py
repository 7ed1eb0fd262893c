"""The stack's outputs: how the ``spotyolo`` commands find a deployment.

The CDK app writes these CloudFormation outputs; ``spotyolo local serve`` (every local engine)
keeps a stack of the same name with the same outputs in the emulator, so the commands read one
``DescribeStacks`` on AWS and locally, and a user never pastes an ARN.
"""

from __future__ import annotations

from enum import StrEnum

#: the stack name ``cdk deploy`` creates and the commands' ``--stack`` default
DEFAULT_STACK = "SpotYolo"


class StackOutput(StrEnum):
    BUCKET = "BucketName"
    STATE_MACHINE = "StateMachineArn"
    TOPIC = "TopicArn"
    JOB_TABLE = "JobTableName"
    TRAINER_LOG_GROUP = "TrainerLogGroup"


#: what a command needs to find everything else
REQUIRED_OUTPUTS = tuple(StackOutput)


def trainer_log_stream(job: str, run_id: str, attempt: int) -> str:
    """The trainer's CloudWatch log stream of one attempt: the instance's user data
    (``cdk/trainer_construct.py``) names it ``$JOB/$RUN_ID/attempt-$ATTEMPT`` for the awslogs
    driver, and the local engine ships each trainer's output under the same name."""
    return f"{job}/{run_id}/attempt-{attempt}"
