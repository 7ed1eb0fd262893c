"""End-to-end fixtures: one local engine per test module (it executes the real ASL file, the
real Lambdas in-process and the real trainer as subprocesses), tiny jobs, and a check after
every test that nothing is left running, waiting or locked.

Module scope, not "package": in a folder without ``__init__.py`` a package fixture lives for
the whole session, and the engine's threads and environment would leak into later modules."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import waiting

from spotyolo.local.engine import LocalEngine

#: the tiny job's config; tests override keys
BASE_CONFIG: dict[str, Any] = {
    "model": "yolo11n.yaml",
    "epochs": 2,
    "imgsz": 64,
    "batch": 8,
    "workers": 0,
    "plots": False,
    "instance_type": "g5.xlarge",
    "capacity": "spot",
    "max_interruptions": 2,
    "stall_hours": 0.05,
    "max_hours": 1,
    "target": {"metric": "recall", "min": 0.5},
}


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """The shared poller with the slower pace and longer patience of whole-pipeline runs."""
    return waiting.wait_for(predicate, timeout, what, interval=0.2)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, ultralytics_offline: Path) -> Iterator[LocalEngine]:
    eng = LocalEngine(
        workdir=tmp_path_factory.mktemp("e2e-engine"),
        settle_seconds=1,
        notice_seconds=15.0,
        poll_seconds=0.2,
        # a notice is seen within a batch or two of these 0.2-second batches
        trainer_env={
            "YOLO_CONFIG_DIR": str(ultralytics_offline.parent),
            "SPOTYOLO_IMDS_POLL_SECONDS": "0.25",
        },
    )
    eng.start()
    yield eng
    eng.stop()
    assert not eng.instances.live_processes()


@pytest.fixture
def make_job(tmp_path: Path, shapes_dataset: Path) -> Callable[..., Path]:
    """make_job(name, **config overrides) -> a job folder (config.yaml + the tiny dataset)."""

    def make(name: str, **overrides: Any) -> Path:
        job = tmp_path / name
        shutil.copytree(shapes_dataset, job / "dataset")
        config = {**BASE_CONFIG, **overrides}
        (job / "config.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        return job

    return make


def scan_items(engine: LocalEngine) -> list[dict[str, Any]]:
    from spotyolo.core.jobtable import _from_dynamo

    pages = engine.client("dynamodb").get_paginator("scan").paginate(TableName=engine.resources.table)
    return [_from_dynamo(item) for page in pages for item in page["Items"]]


def leftovers(engine: LocalEngine) -> dict[str, Any]:
    """What would still cost money or block the next run: it must all be empty."""
    items = scan_items(engine)
    from spotyolo.core.slots import SEMAPHORE

    ddb, slots = engine.client("dynamodb"), engine.resources.slot_table
    semaphore = ddb.get_item(TableName=slots, Key=SEMAPHORE, ConsistentRead=True).get("Item", {})
    waiters = ddb.query(
        TableName=slots,
        KeyConditionExpression="pk = :q",
        ExpressionAttributeValues={":q": {"S": "queue"}},
        ConsistentRead=True,
    )["Items"]
    return {
        "held instance slots": sorted(semaphore.get("holders", {}).get("M", {})),
        "queued for a slot": [w["job"]["S"] for w in waiters],
        "running instances": [i["InstanceId"] for i in engine.running_instances()],
        "live trainers": engine.instances.live_processes(),
        "held locks": [i["job"] for i in items if i.get("execution")],
        "pending tokens": [i["job"] for i in items if (i.get("current") or {}).get("token")],
        "running executions": [e["executionArn"] for e in engine.executions() if e["status"] == "RUNNING"],
    }


@pytest.fixture(autouse=True)
def nothing_left(engine: LocalEngine) -> Iterator[None]:
    """After every test: no running instance, no live trainer, no lock, no token, no execution,
    no instance slot held and nobody queued for one."""
    yield
    try:
        wait_for(lambda: not any(leftovers(engine).values()), timeout=30, what="the pipeline to settle")
    except AssertionError:
        pytest.fail(f"left behind after the test: {leftovers(engine)}")


class Run:
    """One job run through the engine: trigger, follow, inspect."""

    def __init__(self, engine: LocalEngine, job_dir: Path) -> None:
        self.engine = engine
        self.job_dir = job_dir
        self.job = job_dir.name
        self.before = {e["executionArn"] for e in engine.executions(self.job)}
        engine.upload_job(job_dir)
        self.arn = engine.wait_for_execution(self.job, timeout=30, exclude=self.before)

    def wait(self, timeout: float = 240) -> dict[str, Any]:
        self.described = self.engine.wait_done(self.arn, timeout=timeout)
        return self.described

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.engine.history(self.arn))

    def task_errors(self) -> list[str]:
        return [
            details["error"]
            for e in self.history
            for key, details in e.items()
            if key in ("taskFailedEventDetails", "taskTimedOutEventDetails")
        ]

    def states(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history if "stateEnteredEventDetails" in e
        ]

    def instances(self) -> list[dict[str, Any]]:
        """Every instance ever launched for this job (any state), oldest first."""
        reservations = self.engine.client("ec2").describe_instances(
            Filters=[{"Name": "tag:app", "Values": ["spotyolo"]}, {"Name": "tag:job", "Values": [self.job]}]
        )["Reservations"]
        found = [i for r in reservations for i in r["Instances"]]
        return sorted(found, key=lambda i: int({t["Key"]: t["Value"] for t in i["Tags"]}["attempt"]))

    def notifications(self, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
        named = re.compile(rf"(?<![a-z0-9._-]){re.escape(self.job)}(?![a-z0-9_-])")

        def mine() -> list[dict[str, Any]]:
            return [
                n for n in self.engine.notifications() if named.search(f"{n.get('subject')}\n{n['message']}")
            ]

        deadline = time.monotonic() + timeout
        while len(mine()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return mine()

    def item(self) -> Any:
        return self.engine.job_item(self.job)

    def wait_training(self, attempt: int = 1, epochs_done: int = 1, timeout: float = 120) -> Any:
        """Until the trainer of ``attempt`` reported ``epochs_done`` epochs."""

        def ready() -> Any:
            item = self.item()
            progress = item.progress if item else None
            if progress and progress.attempt == attempt and progress.epoch >= epochs_done:
                return item
            return None

        return wait_for(ready, timeout=timeout, what=f"attempt {attempt} to finish epoch {epochs_done}")

    def results_epochs(self) -> list[int]:
        """The epoch column of weights/<job>/results.csv."""
        s3 = self.engine.client("s3")
        body = s3.get_object(Bucket=self.engine.resources.bucket, Key=f"weights/{self.job}/results.csv")[
            "Body"
        ]
        lines = body.read().decode().strip().splitlines()
        header = [h.strip() for h in lines[0].split(",")]
        column = header.index("epoch")
        return [int(float(line.split(",")[column])) for line in lines[1:]]


@pytest.fixture
def run(engine: LocalEngine) -> Callable[[Path], Run]:
    return lambda job_dir: Run(engine, job_dir)
