"""The job item's ``status`` and an attempt's ``outcome``: what ``spotyolo``'s readers (the
job table, the notification, the local CLI) may find there."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    IDLE = "idle"
    #: Validate job took the lock
    STARTING = "starting"
    #: waiting in the instance-slot queue (``JobItem.queue`` says where)
    QUEUED = "queued"
    #: Launch trainer is starting an instance
    LAUNCHING = "launching"
    #: the trainer reads its token and trains
    TRAINING = "training"
    #: Check result publishes the weights: a cancel from now on comes too late
    PUBLISHING = "publishing"
    #: Cancel stops the run: Check result publishes nothing
    CANCELLING = "cancelling"
    # how a run ended (also Summary.status)
    COMPLETE = "complete"
    BELOW_TARGET = "below target"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


#: how a run ended (``Summary.status``)
FINAL_STATUSES = (
    JobStatus.COMPLETE,
    JobStatus.BELOW_TARGET,
    JobStatus.FAILED,
    JobStatus.SKIPPED,
    JobStatus.CANCELLED,
)


class AttemptOutcome(StrEnum):
    """An attempt in progress, or one that succeeded; a failed attempt's outcome is the
    :class:`~spotyolo.contract.errors.ErrorName` that ended it."""

    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
