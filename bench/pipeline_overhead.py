"""What the local pipeline costs on top of training, and what one spot interruption costs.

    .venv/bin/python bench/pipeline_overhead.py [--job examples/shapes] [--interrupt-at-epoch 20]

Three timed runs of the same job (the sample 'shapes' job by default):

1. reference: plain ``yolo detect train`` with the job's own training arguments
   (``JobConfig.train_args()``, as the trainer passes them) on the local dataset folder;
2. ``spotyolo local JOB --force --json``: validate, emulator start, upload, the state machine,
   the Lambdas, the trainer's boot, S3 checkpoints every epoch, promotion, the notification;
3. the same with ``--interrupt-at-epoch N``: the notice, the mid-epoch checkpoint, Prepare
   retry, a second trainer boot, the download of dataset and checkpoint, the redone part.

Prints one table row per comparison (paste them into bench/README.md) and the raw numbers as
JSON. Goals (issue 4): (2)/(1) <= 1.15; (3)-(2) <= the redone part of one epoch + 10 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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
    from spotyolo.config import parse_config
    from spotyolo.offline import prepare_ultralytics

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "examples" / "shapes")
    parser.add_argument("--interrupt-at-epoch", type=int, default=20)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args(argv)
    job_dir = args.job.resolve()
    if not (job_dir / "dataset" / "data.yaml").exists() and job_dir == (ROOT / "examples" / "shapes"):
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "generate_shapes.py"), str(job_dir / "dataset")],
            check=True,
        )
    with tempfile.TemporaryDirectory(prefix="spotyolo-bench-") as tmp:
        work = Path(tmp)
        reference = None if args.skip_reference else reference_train(job_dir, work)
        plain = spotyolo_local(job_dir, work, None)
        interrupted = spotyolo_local(job_dir, work, args.interrupt_at_epoch)
    results = {"reference": reference, "pipeline": plain, "interrupted": interrupted}
    print(json.dumps(results, indent=2))
    if reference:
        ratio = float(plain["wall"]) / reference["wall"]  # type: ignore[arg-type]
        print(
            f"| spotyolo local {job_dir.name} vs `yolo detect train`, same args | {plain['wall']:.1f} s "
            f"| {reference['wall']:.1f} s | {ratio:.2f} |"
        )
    cost = float(interrupted["wall"]) - float(plain["wall"])  # type: ignore[arg-type]
    epoch = reference["epoch_seconds"] if reference else 0.0
    print(
        f"| one interruption at epoch {args.interrupt_at_epoch} | {interrupted['wall']:.1f} s "
        f"| {plain['wall']:.1f} s (no interruption) | +{cost:.1f} s (one epoch = {epoch:.1f} s) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
