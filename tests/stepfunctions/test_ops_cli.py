"""The everyday commands (`spotyolo submit | status | logs | cancel | retrain | weights`) against
one real local engine: the pipeline's ASL and Lambdas, real trainers on a tiny job. The commands
find the engine only by its endpoint, through the stack outputs it keeps, as `local serve`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from spotyolo.cli import exits, main
from spotyolo.core import fleet
from spotyolo.local.engine import LocalEngine, free_port

CONFIG = (
    "model: yolo11n.yaml\nepochs: 2\nimgsz: 64\nbatch: 8\nworkers: 0\nplots: false\n"
    "instance_type: g5.xlarge\ncapacity: spot\nstall_hours: 0.1\nmax_hours: 1\n"
    "target: {metric: recall, min: 0.0}\n"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, ultralytics_offline: Path) -> Iterator[LocalEngine]:
    eng = LocalEngine(
        workdir=tmp_path_factory.mktemp("ops-engine"),
        settle_seconds=1,
        poll_seconds=0.2,
        trainer_env={"YOLO_CONFIG_DIR": str(ultralytics_offline.parent)},
    )
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory, shapes_dataset: Path) -> Path:
    job = tmp_path_factory.mktemp("ops-jobs") / "ops-shapes"
    shutil.copytree(shapes_dataset, job / "dataset")
    # the one job here that draws Ultralytics' plots (on by default): `weights` fetches them
    (job / "config.yaml").write_text(CONFIG.replace("plots: false", "plots: true"))
    return job


def run(engine: LocalEngine | None, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    where = ["--endpoint-url", engine.endpoint] if engine else []
    code = main([*args, *where])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_deployment_is_one_line_and_exit_3(
    engine: LocalEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--endpoint-url", f"http://127.0.0.1:{free_port()}"])
    _, err = capsys.readouterr()
    assert code == exits.NO_DEPLOYMENT
    assert "cannot reach" in err and "local serve" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    code, _, err = run(engine, capsys, "status", "--stack", "Elsewhere")
    assert code == exits.NO_DEPLOYMENT and "stack 'Elsewhere' not found" in err


def test_submit_refuses_a_bad_job_before_any_upload(
    engine: LocalEngine, capsys: pytest.CaptureFixture[str], tmp_path: Path, shapes_dataset: Path
) -> None:
    bad = tmp_path / "bad-job"
    shutil.copytree(shapes_dataset, bad / "dataset")
    (bad / "config.yaml").write_text(CONFIG.replace("imgsz", "imgzs"))
    code, _, err = run(engine, capsys, "submit", str(bad))
    assert code == exits.INVALID
    assert "imgzs" in err and "nothing was uploaded" in err
    listed = engine.client("s3").list_objects_v2(Bucket=engine.resources.bucket, Prefix="jobs/bad-job/")
    assert listed.get("KeyCount", 0) == 0


def test_submit_wait_trains_then_status_logs_and_weights_read_the_run(
    engine: LocalEngine, capsys: pytest.CaptureFixture[str], job_dir: Path, tmp_path: Path
) -> None:
    code, out, err = run(engine, capsys, "submit", str(job_dir), "--wait", "--json")
    result = json.loads(out)  # only the JSON: the emulator prints nothing (no Price List API there)
    assert code == exits.OK, (result, err)
    assert result["success"] and result["status"] == "complete"
    files = sum(1 for p in job_dir.rglob("*") if p.is_file())
    assert result["uploaded"] == files and result["skipped"] == 0
    assert "uploading" in err and f"{files}/{files} files" in err  # the progress bar

    # the table: one aligned row per job with state, epochs, metric, cost
    code, out, _ = run(engine, capsys, "status")
    assert code == exits.OK
    header, row = (
        out.splitlines()[0],
        next(line for line in out.splitlines() if line.startswith("ops-shapes")),
    )
    assert header.split()[:3] == ["JOB", "STATE", "ATTEMPT"]
    assert "complete" in row and "2/2" in row and "$" in row and "%)" in row
    assert row.index("complete") == header.index("STATE")

    code, out, _ = run(engine, capsys, "status", "ops-shapes", "--json")
    detail = json.loads(out)
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]
    # spot, billed 60 s at least: cheaper than the same seconds on demand, and said so (the
    # emulator's spot price history is a placeholder $0.00001/h, so the spot cost is ~0 here)
    assert detail["on_demand_usd"] > 0 and detail["cost_usd"] < detail["on_demand_usd"]
    assert detail["saving_percent"] > 0
    assert detail["attempts"][0]["instance_type"] == "g5.xlarge" and detail["attempts"][0]["seconds"] > 0
    states = [s["state"] for s in detail["states"]]
    assert states[0] == "Validate job" and "Launch trainer" in states and states[-1] == "succeeded"
    code, out, _ = run(engine, capsys, "status", "ops-shapes")
    assert "Launch trainer" in out and "ATTEMPT" in out
    assert "on spot, " in out and "% less than on-demand" in out
    assert {"results.png", "confusion_matrix.png"} <= set(detail["plots"])
    assert "plots: " in out and "results.png" in out

    # the trainer's log, from the emulator's CloudWatch Logs
    code, out, _ = run(engine, capsys, "logs", "ops-shapes")
    assert code == exits.OK and "2/2" in out, out[-2000:]

    dest = tmp_path / "w"
    code, out, _ = run(engine, capsys, "weights", "ops-shapes", "--to", str(dest))
    assert code == exits.OK and (dest / "best.pt").stat().st_size > 0
    published = json.loads((dest / "metrics.json").read_text())
    assert published["saving_pct"] > 0 and published["on_demand_usd"] > published["cost_usd"]
    assert (dest / "plots" / "results.png").read_bytes().startswith(b"\x89PNG")
    assert not (dest / "previous").exists()

    # a second submit uploads only config.yaml (the trigger); the run is skipped (trained)
    code, out, _ = run(engine, capsys, "submit", str(job_dir), "--wait")
    assert code == exits.OK
    assert f"1 files uploaded, {files - 1} already there" in out
    assert "▶ Validate job" in out and "▶ Already trained?" in out
    assert "already trained: nothing was launched" in out and "spotyolo retrain ops-shapes" in out


def test_retrain_checks_overrides_first_then_trains_with_them(
    engine: LocalEngine, capsys: pytest.CaptureFixture[str], job_dir: Path
) -> None:
    if engine.job_item("ops-shapes") is None:
        engine.upload_job(job_dir, "ops-shapes")
        wait_for(
            lambda: engine.job_item("ops-shapes") and engine.job_item("ops-shapes").execution is None, 300
        )
    before = len(engine.executions())
    code, _, err = run(engine, capsys, "retrain", "ops-shapes", "--set", "imgzs=32")
    assert code == exits.INVALID and "imgzs" in err and "nothing was started" in err
    assert len(engine.executions()) == before

    old_run = engine.job_item("ops-shapes").run_id  # type: ignore[union-attr]
    code, out, _ = run(engine, capsys, "retrain", "ops-shapes", "--set", "epochs=1", "--json")
    result: dict[str, Any] = json.loads(out)
    assert code == exits.OK and result["overrides"] == {"epochs": 1}

    def training() -> bool:
        item = engine.job_item("ops-shapes")
        return bool(item and item.run_id != old_run and item.current is not None)

    wait_for(training, 120, "the retrain's first attempt")
    # --follow prints the attempt's log as it grows and returns once the attempt has ended
    code, out, _ = run(engine, capsys, "logs", "ops-shapes", "--follow")
    assert code == exits.OK and "1/1" in out
    shipped = [line for line in out.splitlines() if "spotyolo.trainer" in line]
    assert shipped and len(shipped) == len(set(shipped)), "each line once"
    described = engine.wait_done(result["execution"], timeout=300)
    assert described["status"] == "SUCCEEDED"
    item = engine.job_item("ops-shapes")
    assert item is not None and item.progress is not None and item.progress.epochs == 1

    code, _, err = run(engine, capsys, "logs", "ops-shapes", "--attempt", "7")
    assert code == exits.NOT_FOUND and "no attempt 7" in err


def test_cancel_returns_once_the_instance_is_gone_and_the_lock_released(
    engine: LocalEngine, capsys: pytest.CaptureFixture[str], tmp_path: Path, shapes_dataset: Path
) -> None:
    job = tmp_path / "ops-cancel"
    shutil.copytree(shapes_dataset, job / "dataset")
    (job / "config.yaml").write_text(CONFIG.replace("epochs: 2", "epochs: 200"))
    code, out, _ = run(engine, capsys, "submit", str(job))
    assert code == exits.OK and "execution" in out and "spotyolo logs ops-cancel --follow" in out
    wait_for(lambda: fleet.run_instances_of(engine.client("ec2"), "ops-cancel", states=["running"]), 120)
    # the trainer's output reaches CloudWatch Logs while it runs
    wait_for(lambda: "spotyolo.trainer" in run(engine, capsys, "logs", "ops-cancel")[1], 120, "a live log")

    started = time.monotonic()
    code, out, err = run(engine, capsys, "cancel", "ops-cancel")
    assert code == exits.OK, err
    assert "instance terminated" in out and "lock released" in out
    assert fleet.run_instances_of(engine.client("ec2"), "ops-cancel", states=["pending", "running"]) == []
    item = engine.job_item("ops-cancel")
    assert item is not None and item.execution is None and item.status == "cancelled"
    assert time.monotonic() - started < 120

    code, _, err = run(engine, capsys, "cancel", "ops-cancel")
    assert code == exits.NOT_FOUND and "not running" in err
    code, _, err = run(engine, capsys, "weights", "no-such-job")
    assert code == exits.NOT_FOUND and "unknown job 'no-such-job'" in err


def test_trainer_output_is_shipped_by_whole_lines_and_the_last_one_at_the_end(
    engine: LocalEngine, tmp_path: Path
) -> None:
    from spotyolo.local.logship import LogShipper

    logs = engine.client("logs")
    shipper = LogShipper(logs, "ship-test")
    logs.create_log_group(logGroupName="ship-test")
    log = tmp_path / "trainer.log"
    log.write_bytes(b"first line\nprogress 10%\rprogress 100%\nhalf a li")

    def read() -> list[str]:
        got = logs.get_log_events(logGroupName="ship-test", logStreamName="j/r/attempt-1", startFromHead=True)
        return [e["message"] for e in got["events"]]

    shipper.ship([("j/r/attempt-1", log)])
    assert read() == ["first line", "progress 100%"]  # a redrawn bar: its last state
    with open(log, "ab") as out:
        out.write(b"ne\nexit 0")
    shipper.ship([("j/r/attempt-1", log)])
    assert read()[2:] == ["half a line"]  # each line once, whole
    shipper.ship([("j/r/attempt-1", log)], final=True)
    assert read()[2:] == ["half a line", "exit 0"]
