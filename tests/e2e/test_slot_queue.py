"""Issue 12, end to end: many jobs in an account whose EC2 quota allows two instances
(``spotyolo local --max-instances 2``), with no ``max_instances`` deploy option: the slot count
comes from the account's quota. The real ASL file, the real Lambdas and real one-epoch trainers;
six jobs share two instances, in the order they came, and none fails for quota."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Run, wait_for

from spotyolo.local.engine import LocalEngine

pytestmark = pytest.mark.e2e

SLOTS = 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, ultralytics_offline: Path) -> Iterator[LocalEngine]:
    """An account whose quota allows 2 instances (the conftest's engine has no limit)."""
    eng = LocalEngine(
        workdir=tmp_path_factory.mktemp("e2e-slots"),
        settle_seconds=1,
        poll_seconds=0.2,
        quota_instances=SLOTS,
        boot_seconds=0.5,
        trainer_env={"YOLO_CONFIG_DIR": str(ultralytics_offline.parent)},
    )
    eng.start()
    yield eng
    eng.stop()
    assert not eng.instances.live_processes()


def _ticket(engine: LocalEngine, job: str) -> int | None:
    item = engine.job_item(job)
    return item.queue.ticket if item and item.queue else None


def test_six_jobs_share_two_instances_first_come_first_served(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    names = [f"fifo-{i}" for i in range(6)]
    live: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # what a user would see in the EC2 console, every 50 ms
        while not stop.wait(0.05):
            live.append(len(engine.running_instances()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    arns = []
    try:
        for name in names:  # uploaded one after another: each takes its ticket before the next
            arns.append(run(make_job(name, epochs=1, imgsz=32)).arn)
            wait_for(lambda n=name: _ticket(engine, n), 30, f"{name} to take its ticket")
        results = [engine.wait_done(arn, timeout=240) for arn in arns]
    finally:
        stop.set()
        watcher.join(5)
    assert [r["status"] for r in results] == ["SUCCEEDED"] * len(names), [r.get("error") for r in results]
    assert max(live) == SLOTS, f"live instances seen: {sorted(set(live))}"
    # granted in the order they asked: each left "Wait for an instance slot" after the one before
    granted = {}
    for name, arn in zip(names, arns, strict=True):
        (exited,) = [
            e["timestamp"]
            for e in engine.history(arn)
            if e.get("stateExitedEventDetails", {}).get("name") == "Wait for an instance slot"
        ]
        granted[name] = exited
    assert sorted(names, key=granted.__getitem__) == names
    # one instance each: nothing was refused or retried
    waited = [engine.job_item(n) for n in names]
    assert all(
        item and item.status in ("complete", "below target") and len(item.attempts) == 1 for item in waited
    ), [
        (item.job, item.status, [(a.number, a.outcome, a.instance) for a in item.attempts])
        for item in waited
        if item
    ]
