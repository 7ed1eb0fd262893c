"""Ship each trainer's output to the emulator's CloudWatch Logs, as the instance's awslogs
driver does on AWS (``cdk/trainer_construct.py``'s user data): one stream per attempt in the
trainer log group, named by :func:`spotyolo.contract.outputs.trainer_log_stream`, so
``spotyolo logs`` reads the same place on both."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spotyolo.contract.outputs import trainer_log_stream

#: the local trainer log group (CloudFormation names it on AWS)
LOG_GROUP = "spotyolo-trainer"
#: PutLogEvents takes at most 10 000 events per call
_BATCH = 5000


class LogShipper:
    """Tails every instance's log file from where it last read; :meth:`ship` sends the whole
    lines that arrived since (a line still being written waits for its newline)."""

    def __init__(self, logs: Any, group: str = LOG_GROUP) -> None:
        self.logs = logs
        self.group = group
        self._offsets: dict[Path, int] = {}
        self._streams: set[str] = set()

    def ship(self, sources: Iterable[tuple[str, Path]], *, final: bool = False) -> None:
        """``sources``: (stream, log file). ``final``: send a last unterminated line too."""
        for stream, path in sources:
            lines = self._new_lines(path, final)
            if not lines:
                continue
            if stream not in self._streams:
                self.logs.create_log_stream(logGroupName=self.group, logStreamName=stream)
                self._streams.add(stream)
            now = int(time.time() * 1000)
            events = [{"timestamp": now, "message": line} for line in lines]
            for start in range(0, len(events), _BATCH):
                self.logs.put_log_events(
                    logGroupName=self.group, logStreamName=stream, logEvents=events[start : start + _BATCH]
                )

    def _new_lines(self, path: Path, final: bool) -> list[str]:
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return []
        end = len(data) if final else data.rfind(b"\n") + 1
        if end <= 0:
            return []
        self._offsets[path] = offset + end
        text = data[:end].decode("utf-8", errors="replace")
        # tqdm's progress bars redraw with carriage returns: keep the last state of each line
        # (split on newlines only: str.splitlines would also split at each carriage return)
        lines = (line.rstrip("\r") for line in text.split("\n"))
        return [line.rsplit("\r", 1)[-1] for line in lines if line.strip()]


def instance_streams(instances: Iterable[Any]) -> list[tuple[str, Path]]:
    """(stream, log file) of each local instance that belongs to a run."""
    found = []
    for inst in instances:
        run = inst.tags.get("run")
        if inst.job and run:
            found.append((trainer_log_stream(inst.job, run, inst.attempt), inst.log_path))
    return found


def ship_loop(
    shipper: LogShipper, instances: Callable[[], Iterable[Any]], stopped: Any, every: float
) -> None:
    """Ship until ``stopped`` (a threading.Event) is set, then once more with the last lines."""
    while not stopped.wait(every):
        shipper.ship(instance_streams(list(instances())))
    shipper.ship(instance_streams(list(instances())), final=True)
