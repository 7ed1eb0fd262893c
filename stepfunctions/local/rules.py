"""The EventBridge rules of the pipeline (DESIGN §8), as the local engine creates them.

They are the same patterns the CDK app deploys; locally each rule has one SQS target that
the engine's bridge polls and turns into what the AWS target would do (moto delivers the
events to SQS but starts no state machine and invokes no Lambda).
"""

from __future__ import annotations

from typing import Any

CONFIG_KEY_WILDCARD = "jobs/*/config.yaml"

EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"
#: execution statuses after which the run's instance, token and lock must be cleaned up
CLEANUP_STATUSES = ["FAILED", "ABORTED", "TIMED_OUT"]
#: instance states that mean "this instance is going away"
LOST_STATES = ["shutting-down", "terminated"]


def config_created(bucket: str) -> dict[str, Any]:
    """Upload of jobs/<job>/config.yaml: start an execution."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": CONFIG_KEY_WILDCARD}]}},
    }


def config_deleted(bucket: str) -> dict[str, Any]:
    """Deletion of jobs/<job>/config.yaml: cancel the job."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Deleted"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": CONFIG_KEY_WILDCARD}]}},
    }


def execution_ended(state_machine_arn: str) -> dict[str, Any]:
    """This state machine's execution failed, was aborted or timed out: clean up."""
    return {
        "source": ["aws.states"],
        "detail-type": [EXECUTION_STATUS_CHANGE],
        "detail": {"status": CLEANUP_STATUSES, "stateMachineArn": [state_machine_arn]},
    }


def instance_state() -> dict[str, Any]:
    """Any EC2 instance going away (instance_lost ignores instances that are not ours)."""
    return {
        "source": ["aws.ec2"],
        "detail-type": [EC2_STATE_CHANGE],
        "detail": {"state": LOST_STATES},
    }


#: the start-execution target's input transformer: {"bucket": ..., "key": ...} (EventInput)
START_INPUT_PATHS = {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"}
START_INPUT_TEMPLATE = '{"bucket": <bucket>, "key": <key>}'


def start_input(event: dict[str, Any]) -> dict[str, str]:
    """What the input transformer makes of an S3 event (moto skips transformers for S3 events,
    so the bridge applies it; an already transformed message passes through)."""
    if "detail" not in event:
        return {"bucket": event["bucket"], "key": event["key"]}
    return {"bucket": event["detail"]["bucket"]["name"], "key": event["detail"]["object"]["key"]}


def rule_of(message: dict[str, Any]) -> str:
    """Which rule delivered a message to the shared target queue."""
    if "detail-type" not in message:  # the start rule's transformed input
        return "config-created"
    source, kind = message.get("source"), message["detail-type"]
    if source == "aws.s3":
        return "config-created" if kind == "Object Created" else "config-deleted"
    if source == "aws.states":
        return "execution-ended"
    if source == "aws.ec2":
        return "instance-state"
    raise ValueError(f"no rule sends {source} / {kind}")
