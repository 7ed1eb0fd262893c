"""Following one execution to its end: the states it enters, the attempts, each epoch with its
metrics, the interruptions, and the notification (``submit --wait``, ``retrain --wait``).

It reads only what the deployment shows anyone (the execution history, the job table), so it
follows a run on AWS exactly as in ``spotyolo local serve``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from spotyolo.cli.deployment import Deployment
from spotyolo.cli.jobs import clock
from spotyolo.contract.errors import ErrorName
from spotyolo.contract.status import JobStatus
from spotyolo.core.text import short_cause

_SHOWN_METRICS = ("precision", "recall", "mAP50", "mAP50-95")


@dataclass
class Follower:
    deployment: Deployment
    job: str
    execution: str
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    seen_events: int = 0
    lines: set[str] = field(default_factory=set)
    last_epoch: tuple[int, int] = (-1, -1)
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{clock(time.monotonic() - self.started):>6}] {text}", file=self.stream, flush=True)

    def run(self, poll_seconds: float = 2.0, timeout: float | None = None) -> dict[str, Any]:
        """Follow until the execution ends; its summary (``success`` says whether it succeeded)."""
        sfn = self.deployment.client("stepfunctions")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            described = sfn.describe_execution(executionArn=self.execution)
            if described["status"] != "RUNNING":
                self.poll()
                return self.finish(described)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.execution} still running after {timeout:.0f} s")
            time.sleep(poll_seconds)

    def poll(self) -> None:
        sfn = self.deployment.client("stepfunctions")
        events: list[dict[str, Any]] = []
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=self.execution):
            events.extend(page["events"])
        for event in events[self.seen_events :]:
            self._event(event)
        self.seen_events = len(events)
        self._item()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            self.say(f"▶ {event['stateEnteredEventDetails']['name']}")
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut"):
            failed: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            self.say(f"  ✗ {failed.get('error', '?')}: {short_cause(failed.get('cause', ''))}")

    def _item(self) -> None:
        item = self.deployment.table().get(self.job)
        if item is None or item.execution not in (None, self.execution):
            return
        for rec in item.attempts:
            where = f" on {rec.instance} ({rec.instance_type}, {rec.az})" if rec.instance else ""
            line = f"  attempt {rec.number} · {rec.capacity}{where} · {rec.outcome}"
            if rec.outcome == ErrorName.SPOT_INTERRUPTED:
                line = f"  ⚡ attempt {rec.number} interrupted (spot): the next resumes from its checkpoint"
            if line not in self.lines:
                self.lines.add(line)
                self.say(line)
        progress = item.progress
        if progress is not None and progress.epochs and (progress.attempt, progress.epoch) != self.last_epoch:
            self.last_epoch = (progress.attempt, progress.epoch)
            metrics = " ".join(f"{k} {v:.3f}" for k, v in progress.metrics.items() if k in _SHOWN_METRICS)
            losses = " ".join(f"{k} {v:.3f}" for k, v in progress.losses.items())
            self.say(f"  epoch {progress.epoch}/{progress.epochs}  {losses}  {metrics}".rstrip())

    def finish(self, described: dict[str, Any]) -> dict[str, Any]:
        status = described["status"]
        document: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            document = json.loads(described.get("output") or "{}")
        summary: dict[str, Any] = document.get("summary") or {}
        item = self.deployment.table().get(self.job)
        if not summary and (document.get("job") or {}).get("already_trained"):
            summary = {
                "status": JobStatus.SKIPPED.value,
                "message": f"{self.job} is already trained: nothing was launched. `spotyolo weights "
                f"{self.job}` downloads its weights; `spotyolo retrain {self.job}` trains it again.",
            }
        outcome = summary.get("status") or (JobStatus.FAILED.value if status != "SUCCEEDED" else "unknown")
        message = summary.get("message") or (item.message if item else None) or described.get("cause") or ""
        result = {
            "job": self.job,
            "execution": self.execution,
            "execution_status": status,
            "status": outcome,
            "success": status == "SUCCEEDED" and outcome != JobStatus.FAILED.value,
            "subject": summary.get("subject"),
            "message": message,
            "metrics": summary.get("metrics") or {},
            "error": described.get("error"),
        }
        if not self.quiet:
            print("", file=self.stream)
            print(f"── {result['subject'] or f'{self.job}: {outcome}'}", file=self.stream)
            if message:
                print(message, file=self.stream, flush=True)
        return result
