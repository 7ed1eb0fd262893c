"""Check result: publish the run's weights and say how good they are.

Event ``{"job": JobSpec, "attempt": Attempt, "result": TrainResult, "execution": arn}``;
returns a ``Summary`` (``$.summary``). Copies ``runs/<job>/<run_id>/artifacts/{best.pt,
last.pt, results.csv, metrics.json}`` to ``weights/<job>/`` after moving the weights that were
there to ``weights/<job>/previous/``, so a retrain never silently destroys the last good model.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict

from spotyolo.contract import layout
from spotyolo.contract.errors import TrainerError
from spotyolo.contract.status import JobStatus
from spotyolo.core.cost import price_fn, run_cost
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, JobSpec, Summary, TrainResult
from spotyolo.core.s3objects import object_exists
from spotyolo.core.text import duration
from spotyolo.steps.common import logger, metrics

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client


class CheckEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: JobSpec
    attempt: Attempt
    result: TrainResult
    execution: str = ""


def promote(s3: S3Client, job: JobSpec, result: TrainResult) -> list[str]:
    """Copy the run's artifacts to weights/<job>/, keeping the previous ones; returns the new keys."""
    bucket = job.bucket
    sources = {
        name: result.artifacts.get(name) or layout.artifact_key(job.name, job.run_id, name)
        for name in layout.WEIGHT_FILES
    }
    missing = [k for n, k in sources.items() if n == layout.BEST and not object_exists(s3, bucket, k)]
    if missing:
        raise TrainerError(
            f"the trainer reported success but s3://{bucket}/{missing[0]} is missing, so there is "
            "nothing to publish; see the run's train.log under its artifacts/"
        )
    if object_exists(s3, bucket, layout.weights_key(job.name, layout.BEST)):
        for name in layout.WEIGHT_FILES:
            current = layout.weights_key(job.name, name)
            if object_exists(s3, bucket, current):
                s3.copy_object(
                    Bucket=bucket,
                    Key=layout.previous_weights_prefix(job.name) + name,
                    CopySource={"Bucket": bucket, "Key": current},
                )
    promoted = []
    for name, source in sources.items():
        if not object_exists(s3, bucket, source):
            continue  # results.csv / metrics.json are nice to have
        target = layout.weights_key(job.name, name)
        s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
        promoted.append(target)
    return promoted


def _metric(metrics_: dict[str, float], name: str) -> float | None:
    for key in (name, f"metrics/{name}(B)"):
        if key in metrics_:
            return float(metrics_[key])
    return None


def _value(name: str, value: float) -> str:
    return f"{value * 100:.1f}%" if name in ("precision", "recall") else f"{value:.3f}"


def _fmt(name: str, value: float) -> str:
    return f"{_value(name, value)} {name}" if name in ("precision", "recall") else f"{name} {value:.3f}"


def job_seconds(job: JobSpec, now: float | None = None) -> float | None:
    """Wall time since Validate job accepted the run (all attempts, boots and waits included)."""
    if not job.created:
        return None
    started = dt.datetime.strptime(job.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return max(0.0, (now if now is not None else time.time()) - started.timestamp())


def summarize(
    job: JobSpec, attempt: Attempt, result: TrainResult, cost_usd: float, elapsed: float | None = None
) -> Summary:
    """The message, e.g. `shapes complete: 90.4% recall (mAP50 0.938) · 60 epochs · 1m32s · ~$0.42`."""
    target = job.config.target
    headline_name = target.metric if target else "mAP50"
    headline = _metric(result.metrics, headline_name)
    met = None if target is None or headline is None else headline >= target.min
    status = JobStatus.BELOW_TARGET if met is False else JobStatus.COMPLETE
    head = f"{headline_name} not reported" if headline is None else _fmt(headline_name, headline)
    second = "mAP50" if headline_name != "mAP50" else "mAP50-95"
    second_value = _metric(result.metrics, second)
    if second_value is not None:
        head += f" ({second} {second_value:.3f})"
    parts = [f"{job.name} {status}: {head}"]
    if target is not None:
        parts.append(f"target {target.metric} ≥ {_value(target.metric, target.min)}")
    # the whole job's time when known: result.seconds is the last attempt's training only
    parts += [f"{result.epochs} epochs", duration(elapsed if elapsed is not None else result.seconds)]
    if attempt.interruptions:
        parts.append(f"{attempt.interruptions} interruption{'s' if attempt.interruptions != 1 else ''}")
    parts.append(f"~${cost_usd:.2f}")
    weights = f"s3://{job.bucket}/{layout.weights_prefix(job.name)}"
    message = " · ".join(parts) + f"\nweights: {weights}best.pt"
    return Summary(
        status=status,
        subject=f"spotyolo: {job.name} {status}"[:100],
        message=message,
        metrics=result.metrics,
        target=target,
        met_target=met,
        cost_usd=cost_usd,
        attempts=attempt.number,
        interruptions=attempt.interruptions,
        weights=weights,
    )


def check_result(event: CheckEvent, *, s3: S3Client, ec2: EC2Client, table: JobTable) -> Summary:
    promote(s3, event.job, event.result)
    item = table.get(event.job.name)
    cost = run_cost(item.attempts, price_fn(ec2)) if item else 0.0
    summary = summarize(event.job, event.attempt, event.result, cost, job_seconds(event.job))
    metrics.add_metric(name="JobsTrained", unit=MetricUnit.Count, value=1)
    logger.info(
        "result", extra={"job": event.job.name, "status": summary.status, "metrics": event.result.metrics}
    )
    return summary
