"""Lambda entry point: Clean up (the workflow's states and the execution-status rule)
(logic: spotyolo.steps.cleanup)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import cleanup as step
from spotyolo.steps.common import (
    ec2_client,
    job_table,
    logger,
    metrics,
    pricing_client,
    settings,
    slot_queue,
    sns_client,
    tracer,
)

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "detail-type" in event:
        parsed = parse(event=event, model=step.StatusChangeEvent)
        return step.from_status_event(
            parsed,
            ec2=ec2_client(),
            table=job_table(),
            sns=sns_client(),
            topic_arn=settings().topic_arn,
            pricing=pricing_client(),
            slots=slot_queue(),
        )
    return step.from_workflow(
        parse(event=event, model=step.WorkflowCleanup),
        ec2=ec2_client(),
        table=job_table(),
        pricing=pricing_client(),
        slots=slot_queue(),
    )
