"""Many jobs, few instances (issue 12): N tiny jobs submitted at once in an account whose EC2
quota allows M instances (``spotyolo local --max-instances M``; no max_instances deploy option:
the slot count comes from the quota).

    .venv/bin/python bench/slot_queue.py [--jobs 20] [--max-instances 2] [--epochs 1]

The local engine in this process (the real ASL, the real Lambdas, real one-epoch trainers),
its emulated account quota M instances. Every job is uploaded at once (config.yaml last, as a user's
loop of ``aws s3 cp`` would). Measured:

- how many succeed, and how many failed for the quota (goal: N/N, none);
- the most instances live at once (sampled every 50 ms; goal: never more than M);
- whether the slots were granted in the order the jobs took their tickets (FIFO);
- slot freed -> next launch: for every job that waited, from the "Clean up" that freed a slot
  (the state entered by the run that ended) to the waiting job's "Launch trainer" (goal: <= 2 s).

Prints a table row for bench/README.md and the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _job(folder: Path, dataset: Path, epochs: int) -> Path:
    shutil.copytree(dataset, folder / "dataset")
    (folder / "config.yaml").write_text(
        f"model: yolo11n.yaml\nepochs: {epochs}\nimgsz: 32\nbatch: 8\nworkers: 0\nplots: false\n"
        "instance_type: g5.xlarge\ncapacity: spot\nstall_hours: 0.1\nmax_hours: 1\n"
    )
    return folder


def _entered(engine: object, arn: str, state: str) -> list[float]:
    return [
        e["timestamp"].timestamp()
        for e in engine.history(arn)  # type: ignore[attr-defined]
        if e.get("stateEnteredEventDetails", {}).get("name") == state
    ]


def _ticket(engine: object, arn: str) -> int:
    """The ticket the grant answered with (the job item drops it when the run ends)."""
    for event in engine.history(arn):  # type: ignore[attr-defined]
        output = event.get("taskSucceededEventDetails", {}).get("output")
        if output and '"ticket"' in output:
            return int(json.loads(output)["ticket"])
    raise AssertionError(f"{arn} was never granted a slot")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--max-instances", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    import importlib.util

    from spotyolo.local.engine import LocalEngine
    from spotyolo.trainer.offline import prepare_ultralytics

    work = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    config_dir = prepare_ultralytics(work / "yolo").parent
    spec = importlib.util.spec_from_file_location("generate_shapes", ROOT / "examples" / "generate_shapes.py")
    assert spec and spec.loader
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    dataset = work / "dataset"
    shapes.generate(dataset, train=24, val=8, size=64, seed=1)
    names = [f"bench-{i:02d}" for i in range(args.jobs)]
    folders = [_job(work / name, dataset, args.epochs) for name in names]

    engine = LocalEngine(
        workdir=work / "engine",
        settle_seconds=1,
        poll_seconds=0.2,
        boot_seconds=0.5,
        quota_instances=args.max_instances,  # the account quota, as `spotyolo local --max-instances`
        trainer_env={"YOLO_CONFIG_DIR": str(config_dir)},
    )
    live: list[int] = []
    stop = threading.Event()
    engine.start()
    try:

        def watch() -> None:
            while not stop.wait(0.05):
                live.append(len(engine.running_instances()))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        for folder in folders:  # "at once": one upload after another, no waiting in between
            engine.upload_job(folder)
        arns = [engine.wait_for_execution(name, timeout=60) for name in names]
        results = [engine.wait_done(arn, timeout=3600) for arn in arns]
        wall = time.monotonic() - started
        stop.set()
        watcher.join(5)
        tickets = {name: _ticket(engine, arn) for name, arn in zip(names, arns, strict=True)}
        launches = {arn: _entered(engine, arn, "Launch trainer")[0] for arn in arns}
        cleanups = [t for arn in arns for t in _entered(engine, arn, "Clean up")]
        by_ticket = [arn for _, arn in sorted((tickets[n], a) for n, a in zip(names, arns, strict=True))]
        waited = sorted(launches.values())[args.max_instances :]
        gaps = [
            launch - max(c for c in cleanups if c <= launch)
            for launch in waited
            if any(c <= launch for c in cleanups)
        ]
    finally:
        stop.set()
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    succeeded = sum(r["status"] == "SUCCEEDED" for r in results)
    quota = sum(r.get("error") == "QuotaExceeded" for r in results)
    fifo = sorted(arns, key=launches.__getitem__) == by_ticket
    met = succeeded == args.jobs and max(live) <= args.max_instances and max(gaps) <= 2
    row = (
        f"| slot queue: {args.jobs} jobs ({args.epochs} epoch, 32 px) at once, "
        f"--max-instances {args.max_instances} "
        f"(`bench/slot_queue.py`) | {succeeded}/{args.jobs} succeeded, {quota} for the quota, peak "
        f"{max(live)} live, FIFO {'yes' if fifo else 'NO'}; slot freed -> next launch median "
        f"{statistics.median(gaps):.2f} s, max {max(gaps):.2f} s; {wall:.0f} s in all | goal: "
        f"{args.jobs}/{args.jobs}, <= {args.max_instances} live, <= 2 s | "
        f"{'met' if met else 'not met'} |"
    )
    print(row)
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "max_instances": args.max_instances,
                "succeeded": succeeded,
                "quota_failures": quota,
                "peak_live": max(live),
                "fifo": fifo,
                "freed_to_launch_s": [round(g, 3) for g in gaps],
                "wall_s": round(wall, 1),
            },
            indent=1,
        )
    )
    return 0 if succeeded == args.jobs and max(live) <= args.max_instances else 1


if __name__ == "__main__":
    sys.exit(main())
