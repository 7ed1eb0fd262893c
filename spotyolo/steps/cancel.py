"""Cancel: ``jobs/<job>/config.yaml`` was deleted, so stop that job's run.

Event: the EventBridge S3 "Object Deleted" event (``detail.bucket.name``,
``detail.object.key``). Acts only when config.yaml is really gone: EventBridge may deliver the
Deleted event after a re-upload's Created event, and the run that re-upload started is not the
one the user meant to cancel. Then it claims the run in the job table against Check result
(``JobTable.claim_cancel``): a run whose weights are being published completes, and the cancel
comes too late. Otherwise it stops the execution that holds the job's lock (error
``Cancelled``) and does the clean up itself (terminate the run's instances, close the attempt,
drop the token, release the lock, take it out of the instance-slot queue or give its slot back
and wake the next waiter, notify "cancelled"): moto's StopExecution does not end a
task-token wait, and on AWS the execution-status rule's clean up then finds nothing left to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from spotyolo.contract.errors import ErrorName, JobInvalid
from spotyolo.contract.layout import job_from_config_key
from spotyolo.contract.status import JobStatus
from spotyolo.core.awserrors import error_code
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import ErrorInfo
from spotyolo.core.s3objects import object_exists
from spotyolo.steps.common import logger, metrics
from spotyolo.steps.ending import clean_up, notify_if_owned

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient

    from spotyolo.core.slots import SlotQueue


class _Bucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str


class DeletedDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: _Bucket
    object: _Object


class ObjectDeletedEvent(EventBridgeModel):
    detail: DeletedDetail  # type: ignore[assignment]


def cancel(
    bucket: str,
    key: str,
    *,
    s3: S3Client,
    sfn: SFNClient,
    ec2: EC2Client,
    sns: SNSClient,
    table: JobTable,
    topic_arn: str,
    pricing: Any = None,
    slots: SlotQueue | None = None,
) -> dict[str, Any]:
    try:
        job = job_from_config_key(key)
    except JobInvalid:
        return {"cancelled": False, "reason": f"{key} is not a job's config.yaml"}
    if object_exists(s3, bucket, key):
        again = f"s3://{bucket}/{key} is there again (uploaded anew): its run is not cancelled"
        return {"cancelled": False, "reason": again, "job": job}
    item = table.get(job)
    if not item or not item.execution:
        return {"cancelled": False, "reason": f"job {job} is not running", "job": job}
    execution = item.execution
    if not table.claim_cancel(job, execution):
        now = table.get(job)
        if now and now.execution == execution and now.status == JobStatus.PUBLISHING:
            logger.info("cancel too late", extra={"job": job, "execution": execution})
            return {
                "cancelled": False,
                "reason": f"run {item.run_id} of job {job} had finished and was publishing its weights",
                "job": job,
            }
        return {"cancelled": False, "reason": f"job {job}'s run {item.run_id} ended meanwhile", "job": job}
    cause = f"s3://{bucket}/{key} was deleted, which cancels the job"
    try:
        sfn.stop_execution(executionArn=execution, error=ErrorName.CANCELLED, cause=cause)
    except ClientError as err:
        if error_code(err) != "ExecutionDoesNotExist":
            raise
    report = clean_up(
        job,
        execution,
        run_id=item.run_id,
        outcome=ErrorName.CANCELLED,
        error=ErrorInfo(Error=ErrorName.CANCELLED, Cause=cause),
        job=None,
        summary=None,
        ec2=ec2,
        table=table,
        pricing=pricing,
        slots=slots,
    )
    notify_if_owned(report, sns, topic_arn)
    metrics.add_metric(name="JobsCancelled", unit=MetricUnit.Count, value=1)
    logger.info("cancelled", extra={"job": job, "execution": execution, "terminated": report.terminated})
    return {
        "cancelled": True,
        "job": job,
        "execution": execution,
        "terminated": report.terminated,
        "released": report.released,
    }
