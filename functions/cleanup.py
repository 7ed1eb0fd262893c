"""Clean up: leave nothing running and nothing locked when a run ends, however it ends.

Two callers:

* the workflow's "Clean up" / "Clean up after failure" states:
  ``{"document": <the whole state document>, "execution": "<arn>", "outcome": "succeeded"|"failed"}``
  → ``{**Summary, "terminated": [instance ids], "released": bool}``;
* the execution-status rule (FAILED / ABORTED / TIMED_OUT), an EventBridge
  "Step Functions Execution Status Change" event whose ``detail.input`` is the execution
  input: covers what the workflow cannot catch (``States.Runtime``, a stop). It notifies
  only when the execution still held the lock, i.e. when nobody told the user yet.

Every change is conditional on the job table still naming this execution, so a refused
duplicate, a late retry or a second cleanup never touches a run that is not its own; running
it twice is harmless.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict

from functions.common import client, logger, metrics, settings, tracer
from functions.launch import run_instances_of
from spotyolo.cost import price_fn, run_cost
from spotyolo.errors import JobInvalid
from spotyolo.jobtable import JobTable
from spotyolo.layout import job_from_config_key
from spotyolo.models import Attempt, ErrorInfo, JobSpec, Summary

#: what each error means, in words a user reads, and what to do about it
ERROR_TEXT: dict[str, str] = {
    "SpotInterrupted": "the spot instance was interrupted",
    "InstanceLost": "the instance went away without a result (crash or termination)",
    "TooManyInterruptions": "it was interrupted too often",
    "BudgetExceeded": "its time or cost budget is used up",
    "NoCapacity": "EC2 had no capacity for its instance types",
    "QuotaExceeded": "an EC2 quota of the account stopped the launch",
    "PreflightFailed": "the instance cannot train this job (checked before training)",
    "TrainingDiverged": "training diverged: a loss became NaN or infinite (lower lr0, check the labels)",
    "DatasetError": "the dataset could not be read on the instance",
    "TrainerError": "the trainer failed",
    "JobInvalid": "the job is invalid",
    "JobAlreadyRunning": "another execution is training this job",
    "States.HeartbeatTimeout": "the trainer made no progress for {stall} (stall_hours in config.yaml): it "
    "was stopped; raise stall_hours if an epoch really takes that long",
    "States.TaskFailed": "a step failed",
    "Cancelled": "it was cancelled",
}


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def cause_text(error: ErrorInfo | None) -> str:
    """The human part of an error's Cause: a Lambda's errorMessage, or the trainer's text."""
    if error is None or not error.Cause:
        return ""
    cause = error.Cause
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause.strip()[:1500]
    if isinstance(parsed, dict) and parsed.get("errorMessage"):
        return str(parsed["errorMessage"])[:1500]
    return cause.strip()[:1500]


def error_words(error: ErrorInfo | None, job: JobSpec | None, now: float | None = None) -> str:
    name = error.Error if error else "States.TaskFailed"
    if name == "States.Timeout":  # the local engine's name for both timeouts
        out_of_time = job is not None and (now or time.time()) >= job.deadline - 5
        if not out_of_time:
            name = "States.HeartbeatTimeout"
        else:
            return (
                f"it used its max_hours ({job.config.max_hours:g} h in config.yaml)"
                if job
                else "it timed out"
            )
    text = ERROR_TEXT.get(name, f"of {name}")
    if "{stall}" in text:
        text = text.format(stall=duration(job.stall_seconds) if job else "too long")
    return text


def execution_error(error: ErrorInfo | None, job: JobSpec | None, now: float | None = None) -> str:
    """The error name the execution fails with (``States.*`` names may not be raised by a Fail)."""
    name = error.Error if error else "TrainerError"
    if name in ("States.Timeout", "States.HeartbeatTimeout"):
        out_of_time = job is not None and (now or time.time()) >= job.deadline - 5
        return "JobTimedOut" if out_of_time else "TrainerStalled"
    if name.startswith("States."):
        return "PipelineError"
    return name


def failure_summary(
    job_name: str,
    error: ErrorInfo | None,
    job: JobSpec | None,
    *,
    cost_usd: float,
    attempts: int,
    interruptions: int,
    status: Literal["failed", "cancelled"] = "failed",
) -> Summary:
    name = error.Error if error else "States.TaskFailed"
    what = error_words(error, job)
    cause = cause_text(error)
    message = f"{job_name} {status}: {what}."
    if cause and cause not in message:
        message += f"\n{cause}"
    parts = [f"cost so far ${cost_usd:.2f}", f"{attempts} attempt{'s' if attempts != 1 else ''}"]
    if interruptions:
        parts.append(f"{interruptions} interruption{'s' if interruptions != 1 else ''}")
    message += "\n" + " · ".join(parts)
    subject = f"spotyolo: {job_name} {status} ({name})"[:100]
    return Summary(
        status=status,
        subject=subject,
        message=message,
        cost_usd=cost_usd,
        attempts=attempts,
        interruptions=interruptions,
        target=job.config.target if job else None,
        error=execution_error(error, job),
    )


def job_of(document: dict[str, Any]) -> tuple[str | None, JobSpec | None, Attempt | None]:
    """The job a state document (or a bare execution input) belongs to."""
    raw_job = document.get("job")
    if isinstance(raw_job, dict):
        spec = JobSpec.model_validate(raw_job)
        attempt = (
            Attempt.model_validate(document["attempt"]) if isinstance(document.get("attempt"), dict) else None
        )
        return spec.name, spec, attempt
    if isinstance(raw_job, str):  # ManualInput
        return raw_job, None, None
    key = document.get("key")
    if isinstance(key, str):  # EventInput
        try:
            return job_from_config_key(key), None, None
        except JobInvalid:
            return None, None, None
    return None, None, None


class CleanupReport(BaseModel):
    job: str | None
    owned: bool = False
    terminated: list[str] = []
    released: bool = False
    summary: Summary | None = None


def clean_up(
    job_name: str,
    execution: str,
    *,
    run_id: str | None,
    outcome: str,
    error: ErrorInfo | None,
    job: JobSpec | None,
    summary: Summary | None,
    ec2: Any,
    table: JobTable,
) -> CleanupReport:
    """Terminate the run's instances, close the attempt, drop the token, release the lock.

    ``run_id`` comes from ``$.job`` (written after this execution took the lock, so the run is
    its own); without it, only from the item if the item still names ``execution``.
    """
    item = table.get(job_name)
    owned = item is not None and item.execution == execution
    if run_id is None and owned and item is not None:
        run_id = item.run_id
    terminated: list[str] = []
    if run_id:  # first, so nothing keeps billing even if the table writes below fail
        live = run_instances_of(ec2, job_name, run_id)
        terminated = [i["InstanceId"] for i in live]
        if terminated:
            ec2.terminate_instances(InstanceIds=terminated)
            metrics.add_metric(name="InstancesTerminated", unit=MetricUnit.Count, value=len(terminated))
    if not owned or item is None:
        return CleanupReport(job=job_name, owned=False, terminated=terminated, summary=summary)
    if item.current:
        table.end_attempt(job_name, execution, item.current.number, outcome)
    fresh = table.get(job_name) or item
    cost = run_cost(fresh.attempts, price_fn(ec2))
    interruptions = sum(1 for a in fresh.attempts if a.outcome in ("SpotInterrupted", "InstanceLost"))
    attempts = len({a.number for a in fresh.attempts if a.instance})
    if summary is None:
        status: Literal["failed", "cancelled"] = "cancelled" if outcome == "Cancelled" else "failed"
        summary = failure_summary(
            job_name, error, job, cost_usd=cost, attempts=attempts, interruptions=interruptions, status=status
        )
    table.finish(job_name, execution, message=summary.message, cost_usd=summary.cost_usd or cost)
    released = table.release_lock(job_name, execution, summary.status)
    logger.info(
        "cleaned up",
        extra={"job": job_name, "outcome": outcome, "terminated": terminated, "released": released},
    )
    return CleanupReport(job=job_name, owned=True, terminated=terminated, released=released, summary=summary)


def notify_if_owned(report: CleanupReport, sns: Any, topic_arn: str) -> None:
    """Tell the user, when this clean up was the one that ended the run outside the workflow
    (a cancel, or the execution-status rule): the workflow's own notification never came."""
    if report.owned and report.summary and topic_arn:
        sns.publish(TopicArn=topic_arn, Subject=report.summary.subject, Message=report.summary.message)


# ---------------------------------------------------------------- events


class WorkflowCleanup(BaseModel):
    model_config = ConfigDict(extra="ignore")

    document: dict[str, Any]
    execution: str
    outcome: Literal["succeeded", "failed"]


class StatusDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    executionArn: str
    status: str
    input: str | None = None


class StatusChangeEvent(EventBridgeModel):
    detail: StatusDetail  # type: ignore[assignment]


def from_workflow(event: WorkflowCleanup, *, ec2: Any, table: JobTable) -> dict[str, Any]:
    doc = event.document
    name, spec, _attempt = job_of(doc)
    error = ErrorInfo.model_validate(doc["error"]) if isinstance(doc.get("error"), dict) else None
    summary = Summary.model_validate(doc["summary"]) if event.outcome == "succeeded" else None
    if name is None:
        # the input named no job we could read: nothing was locked or launched
        summary = failure_summary("job", error, None, cost_usd=0.0, attempts=0, interruptions=0)
        return {**summary.model_dump(mode="json"), "terminated": [], "released": False}
    report = clean_up(
        name,
        event.execution,
        run_id=spec.run_id if spec else None,
        outcome="succeeded" if event.outcome == "succeeded" else (error.Error if error else "failed"),
        error=error,
        job=spec,
        summary=summary,
        ec2=ec2,
        table=table,
    )
    final = report.summary or failure_summary(name, error, spec, cost_usd=0.0, attempts=0, interruptions=0)
    return {**final.model_dump(mode="json"), "terminated": report.terminated, "released": report.released}


def from_status_event(
    event: StatusChangeEvent, *, ec2: Any, table: JobTable, sns: Any, topic_arn: str
) -> dict[str, Any]:
    detail = event.detail
    if detail.status not in ("FAILED", "ABORTED", "TIMED_OUT"):
        return {"ignored": f"status {detail.status}"}
    try:
        document = json.loads(detail.input or "{}")
    except ValueError:
        document = {}
    name, _spec, _attempt = job_of(document if isinstance(document, dict) else {})
    if name is None:
        return {"ignored": "the execution input names no job"}
    error = ErrorInfo(
        Error={"ABORTED": "Cancelled", "TIMED_OUT": "States.Timeout"}.get(detail.status, "TrainerError"),
        Cause=f"the execution {detail.executionArn} ended {detail.status} before its own clean up ran",
    )
    report = clean_up(
        name,
        detail.executionArn,
        run_id=None,
        outcome=error.Error,
        error=error,
        job=None,
        summary=None,
        ec2=ec2,
        table=table,
    )
    notify_if_owned(report, sns, topic_arn)  # the workflow ended without its own notification
    return report.model_dump(mode="json")


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = settings()
    table = JobTable(client("dynamodb"), cfg.job_table)
    if "detail-type" in event:
        parsed = parse(event=event, model=StatusChangeEvent)
        return from_status_event(
            parsed, ec2=client("ec2"), table=table, sns=client("sns"), topic_arn=cfg.topic_arn
        )
    return from_workflow(parse(event=event, model=WorkflowCleanup), ec2=client("ec2"), table=table)
