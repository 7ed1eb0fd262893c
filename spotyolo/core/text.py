"""Words a user reads: durations, the human part of an error's Cause, notification subjects."""

from __future__ import annotations

import json
import re

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


#: plot names listed before "..." (the folder holds them all)
PLOTS_NAMED = 4
#: the plots a person looks at first, named first
PLOTS_FIRST = (
    "results.png",
    "confusion_matrix.png",
    "BoxPR_curve.png",
    "BoxF1_curve.png",
    "val_batch0_pred.jpg",
)


def plot_names(names: list[str]) -> str:
    """``results.png, confusion_matrix.png, BoxPR_curve.png, val_batch0_pred.jpg, ...``"""
    rank = {name: i for i, name in enumerate(PLOTS_FIRST)}
    ordered = sorted(names, key=lambda n: (rank.get(n, len(PLOTS_FIRST)), n))
    return ", ".join(ordered[:PLOTS_NAMED]) + (", ..." if len(ordered) > PLOTS_NAMED else "")


#: SNS Publish: a subject is printable ASCII, "less than 100 characters long"
SUBJECT_MAX = 99


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in re.sub(r"\s+", " ", text))


def sns_subject(prefix: str, job: str, suffix: str = "") -> str:
    """``prefix + job + suffix`` as SNS takes it (else the publish, and the email, fails):
    printable ASCII on one line, under 100 characters. A long job name is shortened in its
    middle, so the status after it stays readable."""
    prefix, job, suffix = _ascii(prefix), _ascii(job), _ascii(suffix)
    room = SUBJECT_MAX - len(prefix) - len(suffix)
    if len(job) > room:
        keep = max(room - 3, 0)
        job = (job[: keep - keep // 2] + "..." + job[len(job) - keep // 2 :]) if keep else ""
    return (prefix + job + suffix)[:SUBJECT_MAX].strip() or "spotyolo"


def short_cause(text: str, limit: int = 300) -> str:
    """An error's cause as one short line: a Lambda's error payload read for its message, and
    Validate's refusal (JSON subject + message) for its message."""
    try:  # a Lambda's error payload: its message is what a user reads
        parsed = json.loads(text)
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            text = parsed["errorMessage"]
            words = json.loads(text) if text.startswith("{") else None  # Validate's refusal
            if isinstance(words, dict) and words.get("message"):
                text = words["message"]
    except (TypeError, ValueError):
        pass
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
