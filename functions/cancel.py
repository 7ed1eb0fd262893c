"""Cancel: ``jobs/<job>/config.yaml`` was deleted, so stop that job's run.

Event: the EventBridge S3 "Object Deleted" event (``detail.bucket.name``,
``detail.object.key``). Stops the execution that holds the job's lock (error ``Cancelled``)
and does the clean up itself (terminate the run's instances, close the attempt, drop the
token, release the lock, notify "cancelled"): moto's StopExecution does not end a task-token
wait, and on AWS the execution-status rule's clean up then finds nothing left to do.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from functions.cleanup import clean_up, notify_if_owned
from functions.common import client, logger, metrics, settings, tracer
from spotyolo.errors import JobInvalid
from spotyolo.jobtable import JobTable
from spotyolo.layout import job_from_config_key
from spotyolo.models import ErrorInfo


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
    bucket: str, key: str, *, sfn: Any, ec2: Any, sns: Any, table: JobTable, topic_arn: str
) -> dict[str, Any]:
    try:
        job = job_from_config_key(key)
    except JobInvalid:
        return {"cancelled": False, "reason": f"{key} is not a job's config.yaml"}
    item = table.get(job)
    if not item or not item.execution:
        return {"cancelled": False, "reason": f"job {job} is not running", "job": job}
    execution = item.execution
    cause = f"s3://{bucket}/{key} was deleted, which cancels the job"
    try:
        sfn.stop_execution(executionArn=execution, error="Cancelled", cause=cause)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
            raise
    report = clean_up(
        job,
        execution,
        run_id=item.run_id,
        outcome="Cancelled",
        error=ErrorInfo(Error="Cancelled", Cause=cause),
        job=None,
        summary=None,
        ec2=ec2,
        table=table,
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


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=ObjectDeletedEvent)
    cfg = settings()
    return cancel(
        parsed.detail.bucket.name,
        parsed.detail.object.key,
        sfn=client("stepfunctions"),
        ec2=client("ec2"),
        sns=client("sns"),
        table=JobTable(client("dynamodb"), cfg.job_table),
        topic_arn=cfg.topic_arn,
    )
