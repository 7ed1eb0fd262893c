"""The trainer's side of the task token: heartbeats and the one final answer.

The token is read from the job table (never from the environment, user data or tags) and is
never logged. Heartbeats are rate-limited here, and the caller decides *when* to offer one
(only while batches advance). Exactly one final answer (success or failure) is sent, even
when the interruption watcher thread and the training thread race for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import ClientError

from spotyolo.contract.errors import ErrorName
from spotyolo.core.awserrors import error_code
from spotyolo.trainer.outcome import StopForInterruption, TaskGone

if TYPE_CHECKING:  # the stubs are a development dependency: not in the trainer image
    from mypy_boto3_stepfunctions import SFNClient

    from spotyolo.core.jobtable import JobTable

log = logging.getLogger(__name__)

#: Step Functions answers these when nobody waits for the token any more
GONE_CODES = ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")
#: SendTaskFailure limits: error 256 characters, cause 32768
MAX_CAUSE = 32000


def heartbeat_interval(stall_seconds: int, override: float | None = None) -> float:
    """Seconds between heartbeats: at most a minute, and a quarter of the stall window, so a
    short local window (a few minutes) still gets several heartbeats before it fires."""
    if override is not None and override > 0:
        return override
    return float(min(60, max(1, stall_seconds // 4)))


def attempt_token(table: JobTable, job: str, run_id: str, attempt: int) -> Callable[[], str | None]:
    """How an attempt reads its task token from the job table: by its run (``RUN_ID``, from
    the instance's tags) and its number, so a trainer whose run was taken over never finds the
    new run's token (both runs start at attempt 1) and never answers that run's task."""
    return lambda: table.token_for(job, run_id, attempt)


class TaskChannel:
    """Heartbeats and the final SendTaskSuccess / SendTaskFailure for one task token."""

    def __init__(
        self, sfn: SFNClient, token: str, interval: float, refresh: Callable[[], str | None] | None = None
    ) -> None:
        self._sfn = sfn
        self._token = token
        #: re-reads this attempt's token from the job table: a retried Launch trainer task (a
        #: transient Lambda error) gets a new token and the launch step stores it there
        self._refresh = refresh
        self.interval = interval
        self._lock = threading.Lock()
        self._last_beat = float("-inf")
        self.final: str | None = None  # "success" or the error name, once sent
        self.gone = False
        self.heartbeats = 0

    def __repr__(self) -> str:  # never show the token
        return f"TaskChannel(interval={self.interval}, final={self.final!r}, gone={self.gone})"

    def _send(self, method: str, **kwargs: Any) -> None:
        """Call ``sfn.<method>(taskToken=..., **kwargs)``; on a "gone" answer, retry once with
        the attempt's current token if it has changed (the old task was retried, not ended)."""
        try:
            getattr(self._sfn, method)(taskToken=self._token, **kwargs)
        except ClientError as err:
            if error_code(err) not in GONE_CODES or self._refresh is None:
                raise
            fresh = self._refresh()
            if not fresh or fresh == self._token:
                raise
            log.info("the task token of this attempt was replaced (a retried launch): using the new one")
            self._token = fresh
            getattr(self._sfn, method)(taskToken=self._token, **kwargs)

    def _gone(self, err: ClientError, what: str) -> TaskGone:
        code = error_code(err)
        self.gone = True
        return TaskGone(f"{what} answered {code}: the state machine no longer waits for this attempt")

    def heartbeat(self, *, force: bool = False) -> bool:
        """Send SendTaskHeartbeat if ``interval`` seconds passed since the last one.

        Raises :class:`TaskGone` when Step Functions says the task is over. Other errors
        (a network blip) are logged and retried at the next opportunity.
        """
        now = time.monotonic()
        with self._lock:
            if self.final is not None or self.gone:
                return False
            if not force and now - self._last_beat < self.interval:
                return False
            self._last_beat = now
        try:
            self._send("send_task_heartbeat")
        except ClientError as err:
            if error_code(err) in GONE_CODES:
                raise self._gone(err, "SendTaskHeartbeat") from None
            log.warning("heartbeat failed (will retry): %s", error_code(err))
            return False
        self.heartbeats += 1
        return True

    def succeed(self, output: str) -> bool:
        """Send SendTaskSuccess once; False when an answer was already sent."""
        with self._lock:
            if self.final is not None:
                return False
            self.final = "success"
            try:
                self._send("send_task_success", output=output)
            except ClientError as err:
                if error_code(err) in GONE_CODES:
                    raise self._gone(err, "SendTaskSuccess") from None
                self.final = None  # not delivered: a failure may still be sent
                raise
        return True

    def interrupted(self, cause: str) -> NoReturn:
        """Answer SpotInterrupted (whatever checkpoint there is, is already uploaded) and stop
        training: the one way every phase of the trainer reacts to a spot notice."""
        self.fail(ErrorName.SPOT_INTERRUPTED, cause)
        raise StopForInterruption(cause)

    def fail(self, error: str, cause: str) -> bool:
        """Send SendTaskFailure once; False when an answer was already sent."""
        with self._lock:
            if self.final is not None:
                return False
            self.final = error
            if len(cause) > MAX_CAUSE:
                cause = "..." + cause[-MAX_CAUSE:]
            try:
                self._send("send_task_failure", error=error, cause=cause)
            except ClientError as err:
                if error_code(err) in GONE_CODES:
                    raise self._gone(err, "SendTaskFailure") from None
                self.final = None
                raise
        return True
