"""Error names: the contract between the trainer, the Lambdas and the state machine.

A Lambda that raises one of these is seen by Step Functions as an error of the class's name
(Python Lambda reports ``errorType`` = the exception class name), so the class names *are* the
error names (:class:`ErrorName`, checked by a test). The trainer sends the same names with
``SendTaskFailure``; the ASL file catches them by name.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorName(StrEnum):
    """Every error name a part raises, sends, catches or fails an execution with."""

    JOB_INVALID = "JobInvalid"
    JOB_ALREADY_RUNNING = "JobAlreadyRunning"
    UPLOAD_IN_PROGRESS = "UploadInProgress"
    NOT_A_TRIGGER = "NotATrigger"
    NO_CAPACITY = "NoCapacity"
    QUOTA_EXCEEDED = "QuotaExceeded"
    LAUNCH_FAILED = "LaunchFailed"
    SPOT_INTERRUPTED = "SpotInterrupted"
    INSTANCE_LOST = "InstanceLost"
    PREFLIGHT_FAILED = "PreflightFailed"
    TRAINING_DIVERGED = "TrainingDiverged"
    DATASET_ERROR = "DatasetError"
    TRAINER_ERROR = "TrainerError"
    TOO_MANY_INTERRUPTIONS = "TooManyInterruptions"
    BUDGET_EXCEEDED = "BudgetExceeded"
    # what an execution fails with where Step Functions' own name may not be raised by a Fail
    #: the job was cancelled (config.yaml deleted, or the execution stopped)
    CANCELLED = "Cancelled"
    #: max_hours ran out (States.Timeout / States.HeartbeatTimeout at the deadline)
    JOB_TIMED_OUT = "JobTimedOut"
    #: the job waited for an instance slot longer than the queue allows (QUEUE_TIMEOUT_SECONDS)
    QUEUE_TIMED_OUT = "QueueTimedOut"
    #: a missed heartbeat: the trainer made no progress for stall_hours
    TRAINER_STALLED = "TrainerStalled"
    #: any other States.* error (a defect of the pipeline, not of the job)
    PIPELINE_ERROR = "PipelineError"
    # Step Functions' own names, as the workflow catches them
    STATES_TIMEOUT = "States.Timeout"
    STATES_HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
    STATES_TASK_FAILED = "States.TaskFailed"


class SpotyoloError(Exception):
    """Base of every named pipeline error; ``str(err)`` is the message a user reads."""

    @property
    def error_name(self) -> str:
        return type(self).__name__


class JobInvalid(SpotyoloError):
    """The job's config or dataset is wrong; nothing was launched."""


class JobAlreadyRunning(SpotyoloError):
    """Another execution holds the job's lock; the running one is left alone."""


class UploadInProgress(SpotyoloError):
    """The job's files are still arriving; the state machine waits and validates again."""


class NotATrigger(SpotyoloError):
    """The upload that started the execution is not ``jobs/<job>/config.yaml`` (the rule's
    wildcard also matches a config.yaml deeper in a job): the execution ends quietly."""


class NoCapacity(SpotyoloError):
    """No instance pool had capacity for any of the configured types."""


class QuotaExceeded(SpotyoloError):
    """The account's EC2 limit (named in the message) stops the launch."""


class LaunchFailed(SpotyoloError):
    """EC2 refused the launch for a reason waiting cannot fix (permissions, a bad parameter)."""


class SpotInterrupted(SpotyoloError):
    """The spot instance got its interruption notice; the checkpoint was saved."""


class InstanceLost(SpotyoloError):
    """The instance went away without a result (crash, termination)."""


class PreflightFailed(SpotyoloError):
    """The machine cannot train this job (no GPU, disk, shared memory); not retried."""


class TrainingDiverged(SpotyoloError):
    """A non-finite loss; retrying would burn money on the same divergence."""


class DatasetError(SpotyoloError):
    """The dataset could not be read on the instance."""


class TrainerError(SpotyoloError):
    """Any other failure of the trainer."""


class TooManyInterruptions(SpotyoloError):
    """More spot interruptions than ``max_interruptions`` allows."""


class BudgetExceeded(SpotyoloError):
    """The job's ``max_cost_usd`` or ``max_hours`` is used up."""


class Cancelled(SpotyoloError):
    """config.yaml was deleted and Cancel stopped the run before its weights were published."""


#: the names raised as exceptions (each class is named after its ErrorName)
ERROR_NAMES: tuple[str, ...] = tuple(
    cls.__name__
    for cls in (
        JobInvalid,
        JobAlreadyRunning,
        UploadInProgress,
        NotATrigger,
        NoCapacity,
        QuotaExceeded,
        LaunchFailed,
        SpotInterrupted,
        InstanceLost,
        PreflightFailed,
        TrainingDiverged,
        DatasetError,
        TrainerError,
        TooManyInterruptions,
        BudgetExceeded,
        Cancelled,
    )
)

#: errors after which another attempt on a new instance makes sense
RETRYABLE_ON_NEW_INSTANCE: tuple[str, ...] = (ErrorName.SPOT_INTERRUPTED, ErrorName.INSTANCE_LOST)
#: errors that mean "try the launch again later"
LAUNCH_BACKOFF: tuple[str, ...] = (ErrorName.NO_CAPACITY, ErrorName.QUOTA_EXCEEDED)


def error_class(name: str) -> type[SpotyoloError]:
    """The exception class for an error name (``TrainerError`` for unknown names)."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, SpotyoloError) and name in ERROR_NAMES:
        return cls
    return TrainerError
