"""Lambda entry point: "Wait for an instance slot" and "Back to the queue"
(logic: spotyolo.steps.slot_queue, the semaphore: spotyolo.core.slots)."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.parser import parse

from spotyolo.steps import slot_queue as step
from spotyolo.steps.common import job_table, logger, metrics, settings, slot_queue, tracer

settings()  # cold start: a missing environment variable fails here, naming it


@logger.inject_lambda_context(log_event=False)  # the enqueue event holds a task token: never log it
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("action") == "requeue":
        return step.requeue(parse(event=event, model=step.RequeueEvent), slots=slot_queue())
    parsed = parse(event=event, model=step.EnqueueEvent)
    return step.enqueue(parsed, slots=slot_queue(), table=job_table(), now=time.time())
