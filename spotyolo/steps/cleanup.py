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
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict

from spotyolo.contract.errors import ErrorName
from spotyolo.contract.status import AttemptOutcome
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, ErrorInfo, JobSpec, Summary
from spotyolo.steps.ending import (
    clean_up,
    failure_summary,
    job_of,
    notify_if_owned,
    notify_replaced,
    outcome_of,
)

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_sns import SNSClient

    from spotyolo.core.slots import SlotQueue

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


def budget_timeout(
    error: ErrorInfo | None, spec: JobSpec | None, attempt: Attempt | None, now: float | None = None
) -> ErrorInfo | None:
    """``BudgetExceeded`` for a task timeout at the attempt's ``budget_end``, else ``error``.

    Launch trainer's timeout is the smaller of max_hours and max_cost_usd; without this a stop
    for money would read as a stall (the local engine names both timeouts ``States.Timeout``).
    """
    if error is None or error.Error != ErrorName.STATES_TIMEOUT or spec is None or attempt is None:
        return error
    if not attempt.budget_end or (now or time.time()) < attempt.budget_end - 5:
        return error
    return ErrorInfo(
        Error=ErrorName.BUDGET_EXCEEDED,
        Cause=f"attempt {attempt.number} was stopped when what was left of max_cost_usd "
        f"(${spec.config.max_cost_usd:.2f} in config.yaml) was spent; raise max_cost_usd to train longer",
    )


def from_workflow(
    event: WorkflowCleanup,
    *,
    ec2: EC2Client,
    table: JobTable,
    pricing: Any = None,
    slots: SlotQueue | None = None,
) -> dict[str, Any]:
    doc = event.document
    name, spec, attempt = job_of(doc)
    error = ErrorInfo.model_validate(doc["error"]) if isinstance(doc.get("error"), dict) else None
    error = budget_timeout(error, spec, attempt)
    summary = Summary.model_validate(doc["summary"]) if event.outcome == "succeeded" else None
    if name is None:
        # the input named no job we could read: nothing was locked, queued or launched
        summary = failure_summary("job", error, None, cost_usd=0.0, attempts=0, interruptions=0)
        return {**summary.model_dump(mode="json"), "terminated": [], "released": False}
    report = clean_up(
        name,
        event.execution,
        run_id=spec.run_id if spec else None,
        outcome=AttemptOutcome.SUCCEEDED if event.outcome == "succeeded" else outcome_of(error, spec),
        error=error,
        job=spec,
        summary=summary,
        ec2=ec2,
        table=table,
        pricing=pricing,
        slots=slots,
    )
    final = report.summary or failure_summary(name, error, spec, cost_usd=0.0, attempts=0, interruptions=0)
    return {**final.model_dump(mode="json"), "terminated": report.terminated, "released": report.released}


def from_status_event(
    event: StatusChangeEvent,
    *,
    ec2: EC2Client,
    table: JobTable,
    sns: SNSClient,
    topic_arn: str,
    pricing: Any = None,
    slots: SlotQueue | None = None,
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
        Error={"ABORTED": ErrorName.CANCELLED, "TIMED_OUT": ErrorName.STATES_TIMEOUT}.get(
            detail.status, ErrorName.TRAINER_ERROR
        ),
        Cause=f"the execution {detail.executionArn} ended {detail.status} before its own clean up ran",
    )
    report = clean_up(
        name,
        detail.executionArn,
        run_id=None,
        outcome=outcome_of(error, None),
        error=error,
        job=None,
        summary=None,
        ec2=ec2,
        table=table,
        pricing=pricing,
        slots=slots,
    )
    notify_if_owned(report, sns, topic_arn)  # the workflow ended without its own notification
    # a takeover took the lock before this ran, or while it ran (it read the lock as its own, and
    # its release failed): the takeover kept the run, and this tells the user (once: a claim)
    if not report.released:
        told = notify_replaced(
            name,
            detail.executionArn,
            error,
            ec2=ec2,
            table=table,
            sns=sns,
            topic_arn=topic_arn,
            pricing=pricing,
        )
        if told is not None:
            report.summary = told
    return report.model_dump(mode="json")
