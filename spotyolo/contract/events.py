"""The EventBridge rules of the pipeline: their patterns and targets.

The CDK app deploys exactly these rules; the local engine creates the same patterns in the
emulator, each delivering to an SQS queue that its bridge reads (moto delivers the events but
starts no state machine and invokes no Lambda), and does what the rule's target would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spotyolo.contract.lambdas import LambdaName
from spotyolo.contract.layout import CONFIG_NAME

#: EventBridge's ``*`` matches any characters, ``/`` included, so this also matches a
#: config.yaml deeper in a job (``jobs/x/dataset/config.yaml``). No pattern can leave those out:
#: the matchers listed for one field are OR-ed (a key cannot be required to match this and
#: not ``jobs/*/*/config.yaml``). Validate names such a key ``NotATrigger`` and the execution
#: ends quietly, without a notification; ``cancel`` ignores its deletion the same way.
CONFIG_KEY_WILDCARD = f"jobs/*/{CONFIG_NAME}"

S3_SOURCE = "aws.s3"
OBJECT_CREATED = "Object Created"
OBJECT_DELETED = "Object Deleted"
EC2_SOURCE = "aws.ec2"
EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
STATES_SOURCE = "aws.states"
EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"
#: execution statuses after which the run's instance, token and lock must be cleaned up
CLEANUP_STATUSES = ["FAILED", "ABORTED", "TIMED_OUT"]
#: instance states that mean "this instance is going away"
LOST_STATES = ["shutting-down", "terminated"]


def config_created(bucket: str) -> dict[str, Any]:
    """Upload of jobs/<job>/config.yaml: start an execution."""
    return {
        "source": [S3_SOURCE],
        "detail-type": [OBJECT_CREATED],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": CONFIG_KEY_WILDCARD}]}},
    }


def config_deleted(bucket: str) -> dict[str, Any]:
    """Deletion of jobs/<job>/config.yaml: cancel the job."""
    return {
        "source": [S3_SOURCE],
        "detail-type": [OBJECT_DELETED],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": CONFIG_KEY_WILDCARD}]}},
    }


def execution_ended(state_machine_arn: str) -> dict[str, Any]:
    """This state machine's execution failed, was aborted or timed out: clean up."""
    return {
        "source": [STATES_SOURCE],
        "detail-type": [EXECUTION_STATUS_CHANGE],
        "detail": {"status": CLEANUP_STATUSES, "stateMachineArn": [state_machine_arn]},
    }


def instance_state() -> dict[str, Any]:
    """Any EC2 instance going away (instance_lost ignores instances that are not ours)."""
    return {
        "source": [EC2_SOURCE],
        "detail-type": [EC2_STATE_CHANGE],
        "detail": {"state": LOST_STATES},
    }


class RuleName(StrEnum):
    CONFIG_CREATED = "config-created"
    CONFIG_DELETED = "config-deleted"
    EXECUTION_ENDED = "execution-ended"
    INSTANCE_STATE = "instance-state"


@dataclass(frozen=True)
class Rule:
    name: RuleName
    description: str
    #: the pattern, from the deployment's bucket name and state machine ARN
    pattern: Callable[[str, str], dict[str, Any]]
    #: the Lambda it invokes; None: it starts an execution of the state machine
    target: LambdaName | None


RULES: tuple[Rule, ...] = (
    Rule(
        RuleName.CONFIG_CREATED,
        "jobs/<job>/config.yaml uploaded: start a training execution",
        lambda bucket, _machine: config_created(bucket),
        None,
    ),
    Rule(
        RuleName.CONFIG_DELETED,
        "jobs/<job>/config.yaml deleted: cancel the job",
        lambda bucket, _machine: config_deleted(bucket),
        LambdaName.CANCEL,
    ),
    Rule(
        RuleName.INSTANCE_STATE,
        "an EC2 instance is shutting down or terminated: instance_lost fails the pending task if it "
        "was ours and not announced",
        lambda _bucket, _machine: instance_state(),
        LambdaName.INSTANCE_LOST,
    ),
    Rule(
        RuleName.EXECUTION_ENDED,
        "an execution failed, was aborted or timed out: clean up its instance and lock",
        lambda _bucket, machine: execution_ended(machine),
        LambdaName.CLEANUP,
    ),
)

#: the start-execution target's input transformer: {"bucket": ..., "key": ...} (EventInput)
START_INPUT_PATHS = {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}
START_INPUT_TEMPLATE = '{"bucket": <bucket>, "key": <key>}'
