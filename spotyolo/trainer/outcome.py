"""Exit codes of ``python -m spotyolo.trainer`` and the control-flow exceptions behind them.

Every outcome has its own code, so whoever started the process (the instance's user data,
the local engine, a test) can tell them apart without parsing logs.
"""

from __future__ import annotations

from enum import IntEnum

from spotyolo.contract.errors import ErrorName


class ExitCode(IntEnum):
    #: SendTaskSuccess accepted: weights and metrics are in runs/<job>/<run_id>/artifacts/
    SUCCESS = 0
    #: the trainer itself broke before or while reporting (nothing could be sent)
    CRASHED = 1
    #: environment contract not met (a variable missing or malformed): nothing was sent
    BAD_ENVIRONMENT = 2
    #: the job table has no token for this attempt (it is no longer current): nothing was sent
    NO_TOKEN = 3
    #: SendTaskFailure(TrainerError) sent
    TRAINER_ERROR = 10
    #: SendTaskFailure(DatasetError) sent
    DATASET_ERROR = 11
    #: SendTaskFailure(PreflightFailed) sent
    PREFLIGHT_FAILED = 12
    #: SendTaskFailure(TrainingDiverged) sent
    TRAINING_DIVERGED = 13
    #: SendTaskFailure(SpotInterrupted) sent after the checkpoint was uploaded
    SPOT_INTERRUPTED = 14
    #: a heartbeat or the result was answered TaskTimedOut / InvalidToken: nobody waits any more
    TASK_GONE = 20


#: error name sent with SendTaskFailure -> exit code
FAILURE_EXIT: dict[str, ExitCode] = {
    ErrorName.TRAINER_ERROR: ExitCode.TRAINER_ERROR,
    ErrorName.DATASET_ERROR: ExitCode.DATASET_ERROR,
    ErrorName.PREFLIGHT_FAILED: ExitCode.PREFLIGHT_FAILED,
    ErrorName.TRAINING_DIVERGED: ExitCode.TRAINING_DIVERGED,
    ErrorName.SPOT_INTERRUPTED: ExitCode.SPOT_INTERRUPTED,
}


class TaskGone(Exception):
    """The state machine no longer waits for this attempt (TaskTimedOut / InvalidToken)."""


class StopForInterruption(Exception):
    """Training was stopped because of a spot interruption notice; SpotInterrupted is sent."""
