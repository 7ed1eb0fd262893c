"""The instance-slot queue's two states (docs/ARCHITECTURE.md, "Capacity queue"; the semaphore
itself is spotyolo/core/slots.py).

* "Wait for an instance slot" (``lambda:invoke.waitForTaskToken``):
  ``{"action": "enqueue", "job": JobSpec, "attempt": Attempt, "token": "<task token>",
  "execution": arn}``. Registers the token under the job's ticket (a new one, or the one it
  had: a job put back after ``QuotaExceeded`` keeps its place at the front), then pumps, so a
  free slot is granted at once. The state waits for the grant's SendTaskSuccess, whose output
  is ``{"job", "attempt", "queued_seconds", "ticket"}`` (``max_hours`` counts from the grant).
* "Back to the queue": ``{"action": "requeue", "job", "attempt", "error", "execution"}``
  after a ``QuotaExceeded`` launch while holding a slot: lowers the count to the live holders
  and gives the slot back (``{"requeued": true}``), or, when no other holder runs (the count is
  not what stopped it), keeps the slot (``{"requeued": false}``: the launch backoff goes on).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from spotyolo.contract.errors import JobAlreadyRunning
from spotyolo.core.jobtable import JobTable, now_iso
from spotyolo.core.models import Attempt, ErrorInfo, JobSpec, QueueInfo
from spotyolo.core.slots import SlotQueue, Waiter
from spotyolo.steps.common import hide, logger


class EnqueueEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["enqueue"]
    job: JobSpec
    attempt: Attempt
    #: secret: never logged
    token: SecretStr
    execution: str


class RequeueEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["requeue"]
    job: JobSpec
    attempt: Attempt
    error: ErrorInfo | None = None
    execution: str


def enqueue(event: EnqueueEvent, *, slots: SlotQueue, table: JobTable, now: float) -> dict[str, object]:
    job, attempt = event.job, event.attempt
    token = event.token.get_secret_value()
    hide(token)
    item = table.get(job.name)
    if not item or item.execution != event.execution:
        raise JobAlreadyRunning(
            f"job {job.name!r} is no longer held by this execution (cancelled or taken over): not queued"
        )
    if item.queue is not None:  # it had a ticket in this run: keep its place
        ticket = item.queue.ticket
        if item.queue.granted is not None:  # put back after QuotaExceeded: a new launch request
            attempt = attempt.model_copy(update={"requeues": attempt.requeues + 1})
    else:
        ticket = slots.new_ticket()
    table.join_queue(job.name, event.execution, QueueInfo(ticket=ticket, since=now_iso()))
    document = {"job": job.model_dump(mode="json"), "attempt": attempt.model_dump(mode="json")}
    slots.register(Waiter(ticket, event.execution, job.name, token, now, document))
    report = slots.pump()
    logger.info(
        "queued for an instance slot",
        extra={
            "job": job.name,
            "ticket": ticket,
            "granted_now": event.execution in report.granted,
            "waiting": report.waiting,
            "running": report.running,
            "slots": report.slots,
        },
    )
    return {"ticket": ticket, "granted": report.granted, "waiting": report.waiting}


def requeue(event: RequeueEvent, *, slots: SlotQueue) -> dict[str, object]:
    lowered = slots.lower(event.execution)
    logger.info(
        "quota refused a launch while holding a slot",
        extra={"job": event.job.name, "requeued": lowered is not None, "slots": lowered},
    )
    if lowered is None:
        return {"requeued": False, "slots": None}
    slots.pump()  # the count is lower now: this wakes nobody unless a holder ended meanwhile
    return {"requeued": True, "slots": lowered}
