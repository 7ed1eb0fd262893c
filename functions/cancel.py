"""Lambda entry point: Cancel (config.yaml deleted) (logic and event model: spotyolo.steps.cancel)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import cancel as step
from spotyolo.steps.common import (
    ec2_client,
    job_table,
    logger,
    metrics,
    pricing_client,
    s3_client,
    settings,
    sfn_client,
    slot_queue,
    sns_client,
    tracer,
)

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=step.ObjectDeletedEvent)
    return step.cancel(
        parsed.detail.bucket.name,
        parsed.detail.object.key,
        s3=s3_client(),
        sfn=sfn_client(),
        ec2=ec2_client(),
        sns=sns_client(),
        table=job_table(),
        topic_arn=settings().topic_arn,
        pricing=pricing_client(),
        slots=slot_queue(),
    )
