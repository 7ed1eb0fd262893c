"""Words a user reads: durations and the human part of an error's Cause."""

from __future__ import annotations

import json

from spotyolo.core.models import ErrorInfo


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
