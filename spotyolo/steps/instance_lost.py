"""Instance lost: an EC2 instance is shutting down or terminated; was it one of ours, mid-task?

Event: the EventBridge "EC2 Instance State-change Notification" (``detail["instance-id"]``,
``detail.state``; no tags, so they are read from the instance). Instances without
``app=spotyolo`` are ignored. The pending Launch trainer task fails with ``InstanceLost`` only
if the job's *current* attempt runs on that very instance: the end of an earlier attempt's
instance, or of one whose trainer already reported, changes nothing. A token that is no longer
waiting (``InvalidToken`` / ``TaskTimedOut``) means the task already ended: fine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from spotyolo.contract.errors import ErrorName
from spotyolo.core.awserrors import error_code
from spotyolo.core.jobtable import JobTable
from spotyolo.steps.common import hide, logger, metrics, retrying

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_stepfunctions import SFNClient

STALE_TOKEN_CODES = {"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"}


class StateDetail(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    instance_id: str = Field(alias="instance-id")
    state: str


class StateChangeEvent(EventBridgeModel):
    detail: StateDetail  # type: ignore[assignment]


#: EC2 is eventually consistent: a just-launched instance is "not found" for a few seconds
NOT_FOUND = frozenset({"InvalidInstanceID.NotFound"})
NOT_FOUND_DELAYS = (0.5, 1.0, 2.0, 4.0)


def instance_lost(
    instance_id: str, state: str, *, ec2: EC2Client, sfn: SFNClient, table: JobTable
) -> dict[str, Any]:
    try:  # an instance that fails at boot may not be visible yet: ask again for a few seconds
        reservations = retrying(
            lambda: ec2.describe_instances(InstanceIds=[instance_id]), NOT_FOUND, NOT_FOUND_DELAYS
        )["Reservations"]
    except ClientError as err:
        if error_code(err) == "InvalidInstanceID.NotFound":
            return {"outcome": "ignored", "reason": "unknown instance"}
        raise
    instances = [i for r in reservations for i in r.get("Instances", [])]
    tags = {t["Key"]: t["Value"] for i in instances for t in i.get("Tags", [])}
    if tags.get("app") != "spotyolo" or "job" not in tags:
        return {"outcome": "ignored", "reason": "not a spotyolo instance"}
    job, run, attempt = tags["job"], tags.get("run"), tags.get("attempt")
    item = table.get(job)
    current = item.current if item else None
    # Launch trainer records the token before it asks for the fleet and the instance just after:
    # an instance that dies at once may be reported in between, and is then known by its tags
    ours = current is not None and (
        current.instance == instance_id or (current.instance is None and str(current.number) == attempt)
    )
    if not item or not current or not ours or item.run_id != run or not current.token:
        return {"outcome": "ignored", "reason": "not the job's current instance", "job": job}
    hide(current.token)
    instance_type = instances[0].get("InstanceType", "") if instances else ""
    try:
        sfn.send_task_failure(
            taskToken=current.token,
            error=ErrorName.INSTANCE_LOST,
            cause=(
                f"instance {instance_id} ({instance_type}) of job {job}, attempt {attempt}, went {state} "
                "before its trainer reported a result (a crash, a termination without spot notice, or a "
                "stop from the console)"
            ),
        )
    except ClientError as err:
        if error_code(err) in STALE_TOKEN_CODES:
            return {"outcome": "stale", "job": job}
        raise
    metrics.add_metric(name="InstancesLost", unit=MetricUnit.Count, value=1)
    logger.info(
        "instance lost", extra={"job": job, "instance": instance_id, "state": state, "attempt": attempt}
    )
    return {"outcome": "failed task", "job": job, "attempt": attempt}
