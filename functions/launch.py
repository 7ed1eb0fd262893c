"""Lambda entry point: Launch trainer (logic and event model: spotyolo.steps.launch)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import launch as step
from spotyolo.steps.common import ec2_client, job_table, logger, metrics, settings, tracer

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)  # the event holds the task token: never log it
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=step.LaunchEvent)
    return step.launch(parsed, ec2=ec2_client(), table=job_table(), cfg=settings())
