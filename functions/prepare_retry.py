"""Lambda entry point: Prepare retry / Prepare launch retry (logic: spotyolo.steps.prepare_retry)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import prepare_retry as step
from spotyolo.steps.common import ec2_client, job_table, logger, metrics, pricing_client, settings, tracer

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=step.RetryEvent)
    return step.prepare_retry(
        parsed, ec2=ec2_client(), table=job_table(), cfg=settings(), pricing=pricing_client()
    )
