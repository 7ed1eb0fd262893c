"""Check result: publish the run's weights and say how good they are.

Event ``{"job": JobSpec, "attempt": Attempt, "result": TrainResult, "execution": arn}``;
returns a ``Summary`` (``$.summary``). Copies ``runs/<job>/<run_id>/artifacts/{best.pt,
last.pt, results.csv, metrics.json}`` to ``weights/<job>/`` and the run's plot images to
``weights/<job>/plots/``, after copying the set that was there (plots included) to
``weights/<job>/previous/``, so a retrain never silently destroys the last good model
(``promote`` says how a retry keeps it so). The published metrics.json also says what the run
cost, its on-demand equivalent and the saving. It publishes only after claiming the run in the job
table, so a cancel either stops it before it publishes anything or comes too late.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from spotyolo.contract import layout
from spotyolo.contract.errors import Cancelled, TrainerError
from spotyolo.contract.status import JobStatus
from spotyolo.core.awserrors import MISSING_OBJECT_CODES, error_code
from spotyolo.core.cost import CostReport, cost_report, price_fn
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, JobSpec, Summary, TrainResult
from spotyolo.core.s3objects import object_exists
from spotyolo.core.text import duration, plot_names, sns_subject
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


#: what ``_recorded_run`` says of a folder whose metrics.json is missing or names no run
UNRECORDED = "<unrecorded>"
_FILES = tuple(n for n in layout.WEIGHT_FILES if n != layout.METRICS_JSON)


def _read_json(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as err:
        if error_code(err) in MISSING_OBJECT_CODES:
            return None
        raise
    except ValueError:  # not JSON: as good as missing
        return None
    return doc if isinstance(doc, dict) else None


def _recorded_run(s3: S3Client, bucket: str, prefix: str) -> str | None:
    """The ``run_id`` that ``prefix``metrics.json names (None: no run), else ``UNRECORDED``."""
    doc = _read_json(s3, bucket, prefix + layout.METRICS_JSON)
    if doc is None or "run_id" not in doc:
        return UNRECORDED
    return None if doc["run_id"] is None else str(doc["run_id"])


def _put_json(s3: S3Client, bucket: str, key: str, doc: dict[str, Any]) -> None:
    body = json.dumps(doc, indent=2) + "\n"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/json")


def _mirror(s3: S3Client, bucket: str, sources: dict[str, str], prefix: str) -> None:
    """Make ``prefix``<name> a copy of each source, deleting those whose source is missing."""
    for name, source in sources.items():
        target = prefix + name
        if object_exists(s3, bucket, source):
            s3.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
        else:  # results.csv is nice to have; a stale one would mix two runs
            s3.delete_object(Bucket=bucket, Key=target)


def _listed(s3: S3Client, bucket: str, prefix: str) -> dict[str, str]:
    """name -> key of the plain files directly under ``prefix``."""
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if name and "/" not in name:
                found[name] = obj["Key"]
    return found


def _sync(s3: S3Client, bucket: str, sources: dict[str, str], prefix: str) -> None:
    """Make ``prefix`` hold exactly a copy of ``sources``: copy each, delete any other file."""
    for name, source in sources.items():
        s3.copy_object(Bucket=bucket, Key=prefix + name, CopySource={"Bucket": bucket, "Key": source})
    for name, key in _listed(s3, bucket, prefix).items():
        if name not in sources:  # a plot of another model would mislabel this one
            s3.delete_object(Bucket=bucket, Key=key)


def run_plots(s3: S3Client, job: JobSpec, result: TrainResult) -> dict[str, str]:
    """The run's plot images (name -> artifact key) that are in S3; only this run's artifacts."""
    _run_sources(job, result)  # refuses keys outside the run
    plots = {n: k for n, k in result.artifacts.items() if layout.is_plot(n)}
    return {n: k for n, k in sorted(plots.items()) if object_exists(s3, job.bucket, k)}


def _run_sources(job: JobSpec, result: TrainResult) -> dict[str, str]:
    """The run's files to publish; a key outside the run's own artifacts/ is refused."""
    prefix = layout.artifacts_prefix(job.name, job.run_id)
    for name, key in result.artifacts.items():
        if not key.startswith(prefix) or ".." in key[len(prefix) :].split("/"):
            raise TrainerError(
                f"the trainer reported artifact {name} at s3://{job.bucket}/{key}, outside this run's "
                f"s3://{job.bucket}/{prefix}; nothing was published (a trainer only publishes its own run)"
            )
    return {name: result.artifacts.get(name) or prefix + name for name in layout.WEIGHT_FILES}


def publishable(s3: S3Client, job: JobSpec, result: TrainResult) -> dict[str, str]:
    """The run's files to publish, refused when they are not this run's or best.pt is missing."""
    sources = _run_sources(job, result)
    if not object_exists(s3, job.bucket, sources[layout.BEST]):
        raise TrainerError(
            f"the trainer reported success but s3://{job.bucket}/{sources['best.pt']} is missing, so "
            "there is nothing to publish; see the run's train.log under its artifacts/"
        )
    return sources


def promote(s3: S3Client, job: JobSpec, result: TrainResult, cost: CostReport | None = None) -> list[str]:
    """Publish the run to weights/<job>/ (its plots to weights/<job>/plots/), the set it
    replaces, plots included, to weights/<job>/previous/.

    Each folder's metrics.json is written last and names the run the folder holds (null: none),
    so it is the commit point: a reader trusts the folder's set when metrics.json names its run,
    and a retry (Check result is retried on Lambda errors) redoes only what is not done yet.
    1. Keep the old set, unless weights/ already names this run or previous/ already names the
       run weights/ holds: copy weights/ to previous/ (plots/ to previous/plots/, exactly), then
       previous/metrics.json.
    2. Publish: copy this run's files to weights/, make plots/ exactly this run's plots (the old
       model's are in previous/plots/), then metrics.json with this run's id and ``cost``.
    Returns the published keys (plots included).
    """
    bucket, weights, plots = job.bucket, layout.weights_prefix(job.name), layout.plots_prefix(job.name)
    sources = publishable(s3, job, result)
    held = _recorded_run(s3, bucket, weights)
    if held != job.run_id:
        new_plots = run_plots(s3, job, result)
        held = None if held == UNRECORDED else held
        previous = layout.previous_weights_prefix(job.name)
        if _recorded_run(s3, bucket, previous) != held:
            _mirror(s3, bucket, {n: weights + n for n in _FILES}, previous)
            _sync(s3, bucket, _listed(s3, bucket, plots), layout.previous_plots_prefix(job.name))
            _put_json(s3, bucket, previous + layout.METRICS_JSON, _old_metrics(s3, bucket, weights, held))
        _mirror(s3, bucket, {n: sources[n] for n in _FILES}, weights)
        _sync(s3, bucket, new_plots, plots)
        doc = _run_metrics(s3, job, result, sources)
        if cost is not None:
            doc.update(cost.as_metrics())
        _put_json(s3, bucket, weights + layout.METRICS_JSON, doc)
    published = [weights + n for n in layout.WEIGHT_FILES if object_exists(s3, bucket, weights + n)]
    return published + sorted(_listed(s3, bucket, plots).values())


def _old_metrics(s3: S3Client, bucket: str, weights: str, held: str | None) -> dict[str, Any]:
    doc = _read_json(s3, bucket, weights + layout.METRICS_JSON) or {}
    if held is None and not doc:
        doc["note"] = "weights/ held no recorded run before"
    return {**doc, "run_id": held}


def _run_metrics(s3: S3Client, job: JobSpec, result: TrainResult, sources: dict[str, str]) -> dict[str, Any]:
    """The trainer's metrics.json, or one made from its result; either way naming this run."""
    doc = _read_json(s3, job.bucket, sources[layout.METRICS_JSON]) or {
        "job": job.name,
        "attempt": result.attempt,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "seconds": result.seconds,
    }
    return {**doc, "run_id": job.run_id}


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


def plots_line(bucket: str, job: str, names: list[str]) -> str:
    """``plots: s3://bkt/weights/shapes/plots/ (results.png, confusion_matrix.png, ...)``."""
    return f"plots: s3://{bucket}/{layout.plots_prefix(job)} ({plot_names(names)})"


def summarize(
    job: JobSpec,
    attempt: Attempt,
    result: TrainResult,
    cost: CostReport | float,
    elapsed: float | None = None,
    plots: list[str] | None = None,
) -> Summary:
    """The message, e.g. `shapes complete: 90.4% recall (mAP50 0.938) · 60 epochs · 1m32s ·
    $0.42 on spot, 61% less than on-demand`, then where the weights and the plots are."""
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
    parts.append(cost.words() if isinstance(cost, CostReport) else f"~${cost:.2f}")
    cost_usd = cost.cost_usd if isinstance(cost, CostReport) else cost
    weights = f"s3://{job.bucket}/{layout.weights_prefix(job.name)}"
    message = " · ".join(parts) + f"\nweights: {weights}best.pt"
    if plots:
        message += "\n" + plots_line(job.bucket, job.name, plots)
    return Summary(
        status=status,
        subject=sns_subject("spotyolo: ", job.name, f" {status}"),
        message=message,
        metrics=result.metrics,
        target=target,
        met_target=met,
        cost_usd=cost_usd,
        attempts=attempt.number,
        interruptions=attempt.interruptions,
        weights=weights,
    )


def check_result(
    event: CheckEvent, *, s3: S3Client, ec2: EC2Client, table: JobTable, pricing: Any = None
) -> Summary:
    """Publish, once this run has claimed publication against a cancel (whichever claims the job
    table first wins: docs/ARCHITECTURE.md, "Cancel and publication")."""
    job = event.job
    publishable(s3, job, event.result)  # a result that cannot be published claims nothing
    if not table.claim_publication(job.name, job.execution):
        raise Cancelled(
            f"run {job.run_id} of job {job.name} was cancelled (s3://{job.bucket}/"
            f"{layout.config_key(job.name)} deleted) or taken over by a newer run before its weights "
            f"were published: nothing was published, s3://{job.bucket}/{layout.weights_prefix(job.name)} "
            "is as it was"
        )
    item = table.get(event.job.name)
    cost = cost_report(item.attempts if item else [], price_fn(ec2, pricing))
    published = promote(s3, event.job, event.result, cost)
    plots = [k.rsplit("/", 1)[-1] for k in published if k.startswith(layout.plots_prefix(job.name))]
    summary = summarize(event.job, event.attempt, event.result, cost, job_seconds(event.job), plots)
    metrics.add_metric(name="JobsTrained", unit=MetricUnit.Count, value=1)
    logger.info(
        "result", extra={"job": event.job.name, "status": summary.status, "metrics": event.result.metrics}
    )
    return summary
