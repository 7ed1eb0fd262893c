"""Prepare retry / Prepare launch retry: plan the next launch after a lost instance or a refused one.

Event ``{"job": JobSpec, "attempt": Attempt, "error": {"Error", "Cause"}, "execution": arn}``;
returns ``{"job": JobSpec, "attempt": Attempt}`` (the state makes it the whole document).

* ``SpotInterrupted`` / ``InstanceLost``: close the attempt with that outcome, terminate
  whatever is left of its instance, and plan attempt + 1 (``spotyolo.core.planning.next_attempt``:
  capacity ladder, what is left of ``max_hours``; ``TooManyInterruptions`` /
  ``BudgetExceeded`` end the job).
* ``NoCapacity`` / ``QuotaExceeded``: the same attempt after a growing wait
  (``attempt.wait_seconds``), at most ``MAX_LAUNCH_WAITS`` rounds, then that error ends the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict

from spotyolo.contract.env import Settings
from spotyolo.contract.errors import LAUNCH_BACKOFF, RETRYABLE_ON_NEW_INSTANCE, ErrorName
from spotyolo.core import planning
from spotyolo.core.cost import price_fn, run_cost
from spotyolo.core.fleet import run_instances_of
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, ErrorInfo, JobSpec
from spotyolo.core.text import cause_text
from spotyolo.steps.common import logger, metrics

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client


class RetryEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: JobSpec
    attempt: Attempt
    error: ErrorInfo
    execution: str = ""


def prepare_retry(
    event: RetryEvent,
    *,
    ec2: EC2Client,
    table: JobTable,
    cfg: Settings,
    now: float | None = None,
    pricing: Any = None,
) -> dict[str, Any]:
    job, attempt, name = event.job, event.attempt, event.error.Error
    item = table.get(job.name)
    price = price_fn(
        ec2, pricing, cfg.region
    )  # the budget of the next attempt is counted as its cost will be
    cost = run_cost(item.attempts, price) if item else 0.0
    if name in RETRYABLE_ON_NEW_INSTANCE:
        leftovers = [i["InstanceId"] for i in run_instances_of(ec2, job.name, job.run_id, attempt.number)]
        if leftovers:  # a noticed interruption leaves the instance up for ~2 minutes: stop paying now
            ec2.terminate_instances(InstanceIds=leftovers)
        table.end_attempt(job.name, job.execution, attempt.number, ErrorName(name))
        table.clear_token(job.name, job.execution)
        nxt = planning.next_attempt(job, attempt, name, cost_usd=cost, now=now, price=price)
        metrics.add_metric(name="Interruptions", unit=MetricUnit.Count, value=1)
    elif name in LAUNCH_BACKOFF:
        nxt = planning.next_launch_round(
            job,
            attempt,
            name,
            cause_text(event.error) or name,
            backoff_seconds=cfg.launch_backoff_seconds,
            max_waits=cfg.max_launch_waits,
            cost_usd=cost,
            now=now,
            price=price,
        )
    else:
        raise ValueError(
            f"prepare_retry got {name!r}: only {RETRYABLE_ON_NEW_INSTANCE + LAUNCH_BACKOFF} retry"
        )
    logger.info(
        "next attempt",
        extra={
            "job": job.name,
            "after": name,
            "number": nxt.number,
            "capacity": nxt.capacity,
            "wait_seconds": nxt.wait_seconds,
        },
    )
    return {"job": job.model_dump(mode="json"), "attempt": nxt.model_dump(mode="json")}
