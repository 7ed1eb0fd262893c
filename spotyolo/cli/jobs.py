"""What several commands need: a job's item, its executions, the times and money in it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from spotyolo.cli.deployment import Deployment
from spotyolo.cli.exits import NOT_FOUND, CliError
from spotyolo.contract.layout import JOB_NAME_RE, job_from_config_key
from spotyolo.core.models import JobItem


def check_name(job: str) -> str:
    if not JOB_NAME_RE.match(job):
        raise CliError(f"{job!r} is not a job name (a-z, 0-9, '.', '_', '-'; up to 63 characters)", 2)
    return job


def job_item(deployment: Deployment, job: str) -> JobItem:
    """The job's item; unknown job: a one-line error naming the jobs there are."""
    check_name(job)
    item = deployment.table().get(job)
    if item is None:
        known = sorted(i.job for i in all_items(deployment))[:10]
        listed = f" (jobs: {', '.join(known)})" if known else " (no job has run yet)"
        raise CliError(f"unknown job {job!r} in stack {deployment.stack!r}{listed}", NOT_FOUND)
    return item


def all_items(deployment: Deployment) -> list[JobItem]:
    return deployment.table().scan()


def input_job(raw: str | None) -> str | None:
    """The job an execution's input names: ``{"job"}`` or the start rule's ``{"bucket", "key"}``."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return None
    if isinstance(data.get("job"), str):
        return str(data["job"])
    try:
        return job_from_config_key(str(data.get("key", "")))
    except Exception:
        return None


def executions_of(
    deployment: Deployment, job: str, *, limit: int = 50, status: str | None = None
) -> list[Any]:
    """The job's executions, newest first, among the state machine's ``limit`` newest."""
    sfn = deployment.client("stepfunctions")
    kwargs: dict[str, Any] = {"stateMachineArn": deployment.state_machine, "maxResults": limit}
    if status:
        kwargs["statusFilter"] = status
    found = []
    for execution in sfn.list_executions(**kwargs)["executions"]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if input_job(described.get("input")) == job:
            found.append(described)
    return sorted(found, key=lambda e: e["startDate"], reverse=True)


def parse_time(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def table(rows: list[list[str]], right: tuple[int, ...] = ()) -> str:
    """Aligned columns, the first row a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
