"""What the local pipeline costs on top of training, and what one spot interruption costs.

    .venv/bin/python bench/pipeline_overhead.py [--job examples/shapes] [--interrupt-at-epoch 20]

Three timed runs of the same job (the sample 'shapes' job by default):

1. reference: plain ``yolo detect train`` with the job's own training arguments
   (``JobConfig.train_args()``, as the trainer passes them) on the local dataset folder;
2. ``spotyolo local JOB --force --json``: validate, emulator start, upload, the state machine,
   the Lambdas, the trainer's boot, S3 checkpoints every epoch, promotion, the notification;
3. the same with ``--interrupt-at-epoch N`` (the engine in this process, so the trainers' logs
   can be read): the notice, the checkpoint, Prepare retry, a second trainer boot, the
   download of dataset and checkpoint, the redone part. Its cost is read off the two
   trainers' timestamped logs, within the one run: a difference of two wall times on a
   shared 2-core machine is noise of +-30 s.

Prints one table row per comparison (paste them into bench/README.md) and the raw numbers as
JSON. Goals (issue 4): (2)/(1) <= 1.15; the interruption's cost (notice -> training again,
plus the redone part) <= the redone part of one epoch + 10 s.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def _env(config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir), "PYTHONUNBUFFERED": "1"})
    return env


def reference_train(job_dir: Path, work: Path) -> dict[str, float]:
    """Plain Ultralytics CLI, same arguments, offline; wall seconds and the last epoch time."""
    from spotyolo.core.config import parse_config
    from spotyolo.trainer.offline import prepare_ultralytics

    config_dir = work / "yolo"
    prepare_ultralytics(config_dir)
    config = parse_config((job_dir / "config.yaml").read_bytes(), str(job_dir / "config.yaml"))
    args = {**config.train_args(), "data": str((job_dir / "dataset" / "data.yaml").resolve())}
    args.update(model=config.model, project=str(work / "runs"), name="reference", exist_ok=True)
    command = [str(VENV_BIN / "yolo"), "detect", "train", *(f"{k}={_cli(v)}" for k, v in args.items())]
    print("reference:", " ".join(command), flush=True)
    start = time.monotonic()
    subprocess.run(command, check=True, env=_env(config_dir), stdout=subprocess.DEVNULL, cwd=work)
    wall = time.monotonic() - start
    rows = list(csv.DictReader((work / "runs" / "reference" / "results.csv").open()))
    epoch_seconds = _epoch_seconds(rows)
    return {"wall": wall, "epoch_seconds": epoch_seconds, "recall": float(rows[-1]["metrics/recall(B)"])}


def _epoch_seconds(rows: list[dict[str, str]]) -> float:
    """Mean seconds per epoch from Ultralytics' cumulative ``time`` column."""
    times = [float(r["time"]) for r in rows if r.get("time")]
    return (times[-1] / len(times)) if times else 0.0


def _cli(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value).replace(" ", "")
    return str(value)


def spotyolo_local(job_dir: Path, work: Path, interrupt: int | None) -> dict[str, object]:
    out = work / ("out-interrupted" if interrupt else "out")
    command = [str(VENV_BIN / "spotyolo"), "local", str(job_dir), "--force", "--json", "--output", str(out)]
    if interrupt:
        command += ["--interrupt-at-epoch", str(interrupt)]
    print("pipeline: ", " ".join(command), flush=True)
    start = time.monotonic()
    done = subprocess.run(command, env=_env(work / "yolo"), capture_output=True, text=True, cwd=work)
    wall = time.monotonic() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"spotyolo local exited {done.returncode}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    return {
        "wall": wall,
        "status": summary["status"],
        "attempts": summary["attempts"],
        "interruptions": summary["interruptions"],
        "recall": summary["metrics"].get("recall"),
        "message": summary["message"],
    }


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) ")


def _events(log: Path) -> list[tuple[float, str]]:
    """(epoch seconds, line) of the trainer's own timestamped log lines."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        clean = line.replace("\x1b[K", "").split("\r")[-1]  # after a progress bar's last redraw
        match = _STAMP.match(clean)
        if match:
            when = dt.datetime.fromisoformat(match.group(1)).timestamp()
            out.append((when, clean[match.end() :]))
    return out


def _first(events: list[tuple[float, str]], text: str) -> float | None:
    return next((t for t, line in events if text in line), None)


def interruption_cost(job_dir: Path, work: Path, epoch: int) -> dict[str, object]:
    """Run the job in-process with one interruption and read the cost off the trainers' logs:
    downtime = notice seen by attempt 1 -> attempt 2 training again; redone = the part of
    the interrupted epoch that attempt 1 had done (0 when it stopped at an epoch end)."""
    from spotyolo.local.engine import LocalEngine

    engine = LocalEngine(workdir=work / "engine", interrupt_at_epochs=[epoch])
    print(f"interrupted: in-process engine, --interrupt-at-epoch {epoch}", flush=True)
    start = time.monotonic()
    engine.start()
    try:
        job = engine.upload_job(job_dir)
        described = engine.wait_done(engine.wait_for_execution(job, timeout=60), timeout=1800)
        wall = time.monotonic() - start
        runner = engine.instances
        by_attempt = sorted(runner.instances.values(), key=lambda i: i.attempt)
        logs = [_events(i.log_path) for i in by_attempt]
    finally:
        engine.stop()
    if described["status"] != "SUCCEEDED" or len(logs) < 2:
        raise SystemExit(f"interrupted run: {described['status']} with {len(logs)} attempts")
    first, second = logs[0], logs[1]
    seen = _first(first, "spot interruption notice")
    exited = _first(first, "trainer: exit")
    resumed = _first(second, "training epochs")
    booted = second[0][0] if second else None
    if seen is None or resumed is None or exited is None or booted is None:
        raise SystemExit("interrupted run: the trainers' logs lack the notice / resume lines")
    # since issue 11 a notice inside an epoch checkpoints its position: attempt 2 continues there
    continued = _first(second, "continuing epoch") is not None
    stopped_at_epoch_end = continued or any("at the end of epoch" in line for _, line in first)
    epoch_ends = [t for t, line in first if "trainer.monitor: epoch " in line and t <= seen]
    epoch_start = epoch_ends[-1] if epoch_ends else _first(first, "training epochs") or seen
    redone = 0.0 if stopped_at_epoch_end else max(0.0, seen - epoch_start)
    return {
        "wall": wall,
        "attempts": len(logs),
        "downtime": resumed - seen,
        "notice_to_exit": exited - seen,
        "exit_to_next_trainer": booted - exited,
        "next_trainer_boot_to_training": resumed - booted,
        "redone": redone,
        "stopped_at_epoch_end": stopped_at_epoch_end and not continued,
        "continued_inside_the_epoch": continued,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "examples" / "shapes")
    parser.add_argument("--interrupt-at-epoch", type=int, default=20)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternate reference/pipeline runs N times")
    parser.add_argument("--skip-interruption", action="store_true")
    args = parser.parse_args(argv)
    job_dir = args.job.resolve()
    if not (job_dir / "dataset" / "data.yaml").exists() and job_dir == (ROOT / "examples" / "shapes"):
        generator = ROOT / "examples" / "generate_shapes.py"
        subprocess.run([sys.executable, str(generator), str(job_dir / "dataset")], check=True)
    with tempfile.TemporaryDirectory(prefix="spotyolo-bench-") as tmp:
        work = Path(tmp)
        references, plains = [], []
        for _ in range(args.repeat):  # alternate, so a change of load hits both sides
            if not args.skip_reference:
                references.append(reference_train(job_dir, work))
            plains.append(spotyolo_local(job_dir, work, None))
        interrupted = (
            None if args.skip_interruption else interruption_cost(job_dir, work, args.interrupt_at_epoch)
        )
    results = {"reference": references, "pipeline": plains, "interrupted": interrupted}
    print(json.dumps(results, indent=2))
    if references:
        ref = statistics.median(float(r["wall"]) for r in references)
        ours = statistics.median(float(p["wall"]) for p in plains)  # type: ignore[arg-type]
        print(
            f"| spotyolo local {job_dir.name} vs `yolo detect train`, same args (median of {args.repeat}) "
            f"| {ours:.1f} s | {ref:.1f} s | {ours / ref:.2f} |"
        )
    if interrupted is None:
        return 0
    cost = float(interrupted["downtime"]) + float(interrupted["redone"])  # type: ignore[arg-type]
    print(
        f"| one interruption at epoch {args.interrupt_at_epoch}: notice -> training again "
        f"{interrupted['downtime']:.1f} s + redone {interrupted['redone']:.1f} s "
        f"| goal: redone + 10 s | {cost:.1f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
