"""Lambda entry point: Check result (logic and event model: spotyolo.steps.check_result)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import check_result as step
from spotyolo.steps.common import (
    ec2_client,
    job_table,
    logger,
    metrics,
    pricing_client,
    s3_client,
    settings,
    tracer,
)

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=step.CheckEvent)
    summary = step.check_result(
        parsed, s3=s3_client(), ec2=ec2_client(), table=job_table(), pricing=pricing_client()
    )
    return summary.model_dump(mode="json")
