"""Error names: the contract between the trainer, the Lambdas and the state machine.

A Lambda that raises one of these is seen by Step Functions as an error of the class's name
(Python Lambda reports ``errorType`` = the exception class name), so the class names *are* the
error names of DESIGN §5. The trainer sends the same names with ``SendTaskFailure``.
"""

from __future__ import annotations


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


class NoCapacity(SpotyoloError):
    """No instance pool had capacity for any of the configured types."""


class QuotaExceeded(SpotyoloError):
    """The account's EC2 limit (named in the message) stops the launch."""


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


ERROR_NAMES: tuple[str, ...] = tuple(
    cls.__name__
    for cls in (
        JobInvalid,
        JobAlreadyRunning,
        UploadInProgress,
        NoCapacity,
        QuotaExceeded,
        SpotInterrupted,
        InstanceLost,
        PreflightFailed,
        TrainingDiverged,
        DatasetError,
        TrainerError,
        TooManyInterruptions,
        BudgetExceeded,
    )
)

#: errors after which another attempt on a new instance makes sense
RETRYABLE_ON_NEW_INSTANCE: tuple[str, ...] = ("SpotInterrupted", "InstanceLost")
#: errors that mean "try the launch again later"
LAUNCH_BACKOFF: tuple[str, ...] = ("NoCapacity", "QuotaExceeded")


def error_class(name: str) -> type[SpotyoloError]:
    """The exception class for an error name (``TrainerError`` for unknown names)."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, SpotyoloError) and name in ERROR_NAMES:
        return cls
    return TrainerError
