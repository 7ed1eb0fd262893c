"""Exit codes of the ``spotyolo`` commands (documented in ``spotyolo --help`` and the README),
and the one error type a command raises for a one-line message."""

from __future__ import annotations

#: success (for ``--wait``: the run succeeded)
OK = 0
#: the run ended without success (failed, cancelled, stopped)
FAILED = 1
#: bad input: a job folder, an override or an argument that is not valid; nothing was started
INVALID = 2
#: no deployment: the stack is not there, the endpoint does not answer, no region/credentials
NO_DEPLOYMENT = 3
#: unknown job, or nothing of it to show (no weights, no log, not running)
NOT_FOUND = 4
#: the job is busy (already running) or did not do what was asked in time
BUSY = 5
#: Ctrl-C
INTERRUPTED = 130

EXIT_CODES_HELP = (
    "exit codes: 0 success · 1 the run failed or was cancelled · 2 bad input, nothing started · "
    "3 deployment not found or unreachable · 4 unknown job or nothing to show · "
    "5 job busy or timed out waiting · 130 interrupted"
)


class CliError(Exception):
    """A plain sentence for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
