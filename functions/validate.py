"""Lambda entry point: Validate job (logic and event model: spotyolo.steps.validate)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser

from spotyolo.contract.errors import JobAlreadyRunning, JobInvalid, SpotyoloError
from spotyolo.core.dataset import MAX_WORKERS
from spotyolo.steps import validate as step
from spotyolo.steps.common import (
    dynamodb_client,
    ec2_client,
    logger,
    metrics,
    quotas_client,
    s3_client,
    settings,
    sfn_client,
    tracer,
)

settings()  # cold start: a missing environment variable fails here, naming it


@metrics.log_metrics
@tracer.capture_lambda_handler
@event_parser(model=step.ValidateEvent)
def handler(event: step.ValidateEvent, context: Any) -> dict[str, Any]:
    try:
        result = step.validate_job(
            event.model_dump(),
            s3=s3_client(pool=MAX_WORKERS),  # as many connections as parallel label reads
            dynamodb=dynamodb_client(),
            sfn=sfn_client(),
            ec2=ec2_client(),
            quotas=quotas_client(),
            settings=settings(),
            now=dt.datetime.now(dt.UTC),
        )
    except SpotyoloError as err:
        metrics.add_metric(name=err.error_name, unit=MetricUnit.Count, value=1)
        logger.info("validate refused", extra={"error": err.error_name, "reason": str(err)})
        if isinstance(err, JobInvalid | JobAlreadyRunning):  # "Explain refusal" reads its words
            raise step.refusal(event.input, err) from None
        raise
    metrics.add_metric(
        name="AlreadyTrained" if result["job"]["already_trained"] else "JobValidated",
        unit=MetricUnit.Count,
        value=1,
    )
    return result
