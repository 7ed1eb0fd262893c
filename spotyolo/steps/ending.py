"""How a run ends, shared by the Lambdas that end one (Clean up, Cancel): the failure
notification's words, the execution's error name, and the clean up itself (terminate the run's
instances, close the attempt, drop the token, release the lock).

Every change is conditional on the job table still naming the execution, so a refused
duplicate, a late retry or a second cleanup never touches a run that is not its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import BaseModel

from spotyolo.contract.errors import ErrorName, JobInvalid
from spotyolo.contract.layout import job_from_config_key
from spotyolo.contract.status import AttemptOutcome, JobStatus
from spotyolo.core.awserrors import error_code
from spotyolo.core.cost import CostReport, cost_report, price_fn
from spotyolo.core.fleet import run_instances_of
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, AttemptRecord, ErrorInfo, JobSpec, Summary
from spotyolo.core.slots import QUEUE_TIMEOUT_SECONDS
from spotyolo.core.text import cause_text, duration, sns_subject
from spotyolo.steps.common import logger, metrics, retrying

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_sns import SNSClient

    from spotyolo.core.slots import SlotQueue

#: what each error means, in words a user reads, and what to do about it
ERROR_TEXT: dict[str, str] = {
    ErrorName.SPOT_INTERRUPTED: "the spot instance was interrupted",
    ErrorName.INSTANCE_LOST: "the instance went away without a result (crash or termination)",
    ErrorName.TOO_MANY_INTERRUPTIONS: "it was interrupted too often",
    ErrorName.BUDGET_EXCEEDED: "its time or cost budget is used up",
    ErrorName.NO_CAPACITY: "EC2 had no capacity for its instance types",
    ErrorName.QUOTA_EXCEEDED: "an EC2 quota of the account stopped the launch",
    ErrorName.LAUNCH_FAILED: "EC2 refused to launch its instance",
    ErrorName.PREFLIGHT_FAILED: "the instance cannot train this job (checked before training)",
    ErrorName.TRAINING_DIVERGED: "training diverged: a loss became NaN or infinite "
    "(lower lr0, check the labels)",
    ErrorName.DATASET_ERROR: "the dataset could not be read on the instance",
    ErrorName.TRAINER_ERROR: "the trainer failed",
    ErrorName.JOB_INVALID: "the job is invalid",
    ErrorName.JOB_ALREADY_RUNNING: "another execution is training this job",
    ErrorName.STATES_HEARTBEAT_TIMEOUT: "the trainer made no progress for {stall} "
    "(stall_hours in config.yaml): it was stopped; raise stall_hours if an epoch really takes that long",
    ErrorName.STATES_TASK_FAILED: "a step failed",
    ErrorName.CANCELLED: "it was cancelled",
    ErrorName.QUEUE_TIMED_OUT: "it waited {queue} for an instance slot without getting one (the "
    "account's instance count, max_instances, is taken by other jobs): upload it again later, or "
    "raise max_instances or the EC2 quota",
}


def error_words(error: ErrorInfo | None, job: JobSpec | None, now: float | None = None) -> str:
    name = error.Error if error else ErrorName.STATES_TASK_FAILED
    if name == ErrorName.STATES_TIMEOUT:  # the local engine's name for both timeouts
        out_of_time = job is not None and (now or time.time()) >= job.deadline - 5
        if not out_of_time:
            name = ErrorName.STATES_HEARTBEAT_TIMEOUT
        else:
            return (
                f"it used its max_hours ({job.config.max_hours:g} h in config.yaml)"
                if job
                else "it timed out"
            )
    text = ERROR_TEXT.get(name, f"of {name}")
    if "{stall}" in text:
        text = text.format(stall=duration(job.stall_seconds) if job else "too long")
    if "{queue}" in text:
        text = text.format(queue=f"{QUEUE_TIMEOUT_SECONDS / 86400:g} days")
    return text


def outcome_of(error: ErrorInfo | None, job: JobSpec | None) -> ErrorName:
    """The attempt outcome an error stands for (``PipelineError`` for a name no part defines)."""
    name = execution_error(error, job)
    return ErrorName(name) if name in ErrorName.__members__.values() else ErrorName.PIPELINE_ERROR


def execution_error(error: ErrorInfo | None, job: JobSpec | None, now: float | None = None) -> str:
    """The error name the execution fails with (``States.*`` names may not be raised by a Fail)."""
    name = error.Error if error else ErrorName.TRAINER_ERROR
    if name in (ErrorName.STATES_TIMEOUT, ErrorName.STATES_HEARTBEAT_TIMEOUT):
        out_of_time = job is not None and (now or time.time()) >= job.deadline - 5
        return ErrorName.JOB_TIMED_OUT if out_of_time else ErrorName.TRAINER_STALLED
    if name.startswith("States."):
        return ErrorName.PIPELINE_ERROR
    return name


def failure_summary(
    job_name: str,
    error: ErrorInfo | None,
    job: JobSpec | None,
    *,
    cost_usd: float,
    attempts: int,
    interruptions: int,
    status: JobStatus = JobStatus.FAILED,
    cost: CostReport | None = None,
) -> Summary:
    what = error_words(error, job)
    cause = cause_text(error)
    message = f"{job_name} {status}: {what}."
    if cause and cause not in message:
        message += f"\n{cause}"
    parts = [
        f"cost so far {cost.words()}" if cost else f"cost so far ${cost_usd:.2f}",
        f"{attempts} attempt{'s' if attempts != 1 else ''}",
    ]
    if interruptions:
        parts.append(f"{interruptions} interruption{'s' if interruptions != 1 else ''}")
    message += "\n" + " · ".join(parts)
    failed_with = execution_error(error, job)  # the name the execution fails with, not States.*
    subject = sns_subject("spotyolo: ", job_name, f" {status} ({failed_with})")
    return Summary(
        status=status,
        subject=subject,
        message=message,
        cost_usd=cost_usd,
        attempts=attempts,
        interruptions=interruptions,
        target=job.config.target if job else None,
        error=failed_with,
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


#: EC2 is eventually consistent: a just-launched instance is "not found" for a few seconds
NOT_FOUND = frozenset({"InvalidInstanceID.NotFound"})
NOT_FOUND_DELAYS = (0.5, 1.0, 2.0, 4.0)


def _terminate(ec2: EC2Client, instances: list[str]) -> None:
    """Terminate ``instances``, asking again while EC2 does not know one yet; one it never
    knows (long gone) is no reason to leave the rest of the clean up undone."""
    try:
        retrying(lambda: ec2.terminate_instances(InstanceIds=instances), NOT_FOUND, NOT_FOUND_DELAYS)
    except ClientError as err:
        if error_code(err) not in NOT_FOUND:
            raise
        logger.warning("instances not found to terminate", extra={"instances": instances})


def clean_up(
    job_name: str,
    execution: str,
    *,
    run_id: str | None,
    outcome: AttemptOutcome | ErrorName,
    error: ErrorInfo | None,
    job: JobSpec | None,
    summary: Summary | None,
    ec2: EC2Client,
    table: JobTable,
    pricing: Any = None,
    slots: SlotQueue | None = None,
) -> CleanupReport:
    """Terminate the run's instances, close the attempt, drop the token, release the lock, then
    take the execution out of the instance-slot queue, give its slot back and wake the next
    waiter (``slots``; whether or not it still held the job, so a slot never outlives its run).

    ``run_id`` comes from ``$.job`` (written after this execution took the lock, so the run is
    its own); without it, only from the item if the item still names ``execution``.
    """
    report = _clean_up(
        job_name,
        execution,
        run_id=run_id,
        outcome=outcome,
        error=error,
        job=job,
        summary=summary,
        ec2=ec2,
        table=table,
        pricing=pricing,
    )
    if slots is not None:  # after the instances are gone: never more running than the count
        try:
            pumped = slots.finish(execution)
            logger.info("slot given back", extra={"job": job_name, "woke": len(pumped.granted)})
        except Exception:  # the run is cleaned up and its user told; never fail that for the queue
            # a slot left held is reclaimed by the next pump (its holder has ended)
            logger.exception("giving the instance slot back failed", extra={"job": job_name})
            metrics.add_metric(name="SlotReleaseFailed", unit=MetricUnit.Count, value=1)
    return report


def _clean_up(
    job_name: str,
    execution: str,
    *,
    run_id: str | None,
    outcome: AttemptOutcome | ErrorName,
    error: ErrorInfo | None,
    job: JobSpec | None,
    summary: Summary | None,
    ec2: EC2Client,
    table: JobTable,
    pricing: Any = None,
) -> CleanupReport:
    item = table.get(job_name)
    owned = item is not None and item.execution == execution
    if run_id is None and owned and item is not None:
        run_id = item.run_id
    terminated: list[str] = []
    if run_id:  # first, so nothing keeps billing even if the table writes below fail
        live = run_instances_of(ec2, job_name, run_id)
        terminated = [i["InstanceId"] for i in live]
        recorded = (
            item.current.instance if owned and item and item.current and item.run_id == run_id else None
        )
        if recorded and recorded not in terminated:  # just launched: a tag query does not list it yet
            terminated.append(recorded)
        if terminated:
            _terminate(ec2, terminated)
            metrics.add_metric(name="InstancesTerminated", unit=MetricUnit.Count, value=len(terminated))
    if not owned or item is None:
        return CleanupReport(job=job_name, owned=False, terminated=terminated, summary=summary)
    if item.current:
        table.end_attempt(job_name, execution, item.current.number, outcome)
    fresh = table.get(job_name) or item
    report = cost_report(fresh.attempts, price_fn(ec2, pricing))
    cost = report.cost_usd
    if summary is None:
        summary = _ended_summary(
            job_name, error, job, fresh.attempts, report, cancelled=outcome == ErrorName.CANCELLED
        )
    table.finish(job_name, execution, message=summary.message, cost_usd=summary.cost_usd or cost)
    released = table.release_lock(job_name, execution, summary.status)
    logger.info(
        "cleaned up",
        extra={"job": job_name, "outcome": outcome, "terminated": terminated, "released": released},
    )
    return CleanupReport(job=job_name, owned=True, terminated=terminated, released=released, summary=summary)


def _ended_summary(
    job_name: str,
    error: ErrorInfo | None,
    job: JobSpec | None,
    attempts: list[AttemptRecord],
    report: CostReport,
    *,
    cancelled: bool,
) -> Summary:
    """The notification of a run that ended without a result, from its attempts' records."""
    return failure_summary(
        job_name,
        error,
        job,
        cost_usd=report.cost_usd,
        attempts=len({a.number for a in attempts if a.instance}),
        interruptions=sum(
            1 for a in attempts if a.outcome in (ErrorName.SPOT_INTERRUPTED, ErrorName.INSTANCE_LOST)
        ),
        status=JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
        cost=report,
    )


def notify_replaced(
    job_name: str,
    execution: str,
    error: ErrorInfo,
    *,
    ec2: EC2Client,
    table: JobTable,
    sns: SNSClient,
    topic_arn: str,
    pricing: Any = None,
) -> Summary | None:
    """The clean up of an execution whose lock a takeover took first (the user stopped it and
    uploaded again, and the new Validate came before this clean up): tell the user that run
    ended, once (``JobTable.claim_replaced`` is a conditional write), from what the takeover kept
    of it. Its instances were terminated by the takeover."""
    replaced = table.claim_replaced(job_name, execution)
    if replaced is None:
        return None
    report = cost_report(replaced.attempts, price_fn(ec2, pricing))
    summary = _ended_summary(
        job_name, error, None, replaced.attempts, report, cancelled=error.Error == ErrorName.CANCELLED
    )
    summary.message += f"\nrun {replaced.run_id} was replaced by a new upload of the job"
    if topic_arn:
        sns.publish(TopicArn=topic_arn, Subject=summary.subject, Message=summary.message)
    return summary


def notify_if_owned(report: CleanupReport, sns: SNSClient, topic_arn: str) -> None:
    """Tell the user, when this clean up was the one that ended the run outside the workflow
    (a cancel, or the execution-status rule): the workflow's own notification never came.

    "The one" is whoever released the lock (a conditional write: exactly one of them), not
    whoever saw it held: Cancel stops the execution and then cleans up, and the status rule's
    clean up of that ABORTED execution may read the item while Cancel has not yet released it;
    both saw it held, and the user got two "cancelled" messages."""
    if report.owned and report.released and report.summary and topic_arn:
        sns.publish(TopicArn=topic_arn, Subject=report.summary.subject, Message=report.summary.message)
