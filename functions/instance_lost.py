"""Lambda entry point: Instance lost (the EC2 state-change rule) (logic: spotyolo.steps.instance_lost)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import instance_lost as step
from spotyolo.steps.common import ec2_client, job_table, logger, metrics, settings, sfn_client, tracer

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    parsed = parse(event=event, model=step.StateChangeEvent)
    return step.instance_lost(
        parsed.detail.instance_id, parsed.detail.state, ec2=ec2_client(), sfn=sfn_client(), table=job_table()
    )
