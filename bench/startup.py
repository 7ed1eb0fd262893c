"""Where the local pipeline's start-up goes: ``spotyolo local JOB`` from process start to the
first epoch's first batch, phase by phase (issue 11).

    .venv/bin/python bench/startup.py [--job examples/shapes] [--repeat 3] [--tree DIR ...]

Each run is the real command in its own process (``python -m spotyolo.cli local JOB --force``)
on a copy of the job with ``epochs: 1`` (the start-up is the same for any epoch count; the run
then ends in seconds). The process is wrapped only to keep what the emulator knows when the
run ends (the execution history and the instances' launch times), which goes away with it.
Timestamps come from:

- the CLI's progress lines, stamped here as they arrive (the job checked locally, the emulator
  up, the upload done);
- the execution history (execution started, each state entered, the Validate rounds);
- EC2's launch time of the instance;
- the trainer's own timestamped log (its first line, the dataset downloaded, "training epochs"
  and "first batch trained").

``--repeat N`` reports each phase's median. ``--tree DIR`` (repeatable) runs the same job with
``PYTHONPATH=DIR`` instead of this checkout, alternating the trees run by run, so a before/after
comparison shares the machine's load (a tree without the "first batch trained" line reports the
first batch as missing and its total up to "training epochs").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (name, what it is) of each milestone, in pipeline order
MILESTONES = (
    ("checked", "job checked locally (CLI imports + validation)"),
    ("emulator", "emulator up, pipeline deployed"),
    ("uploaded", "job uploaded (config.yaml last)"),
    ("execution", "execution started (the upload rule)"),
    ("validated", "Validate job done (every round, settle waits)"),
    ("launch", "Launch trainer entered"),
    ("launched", "instance launched (EC2 launch time)"),
    ("seen", "instance first listed by the local EC2 runner"),
    ("booted", "instance booted (the trainer starts)"),
    ("trainer", "trainer process started (first log line)"),
    ("dataset", "dataset downloaded"),
    ("training", "Ultralytics set up: training epochs"),
    ("first_batch", "first batch trained"),
)


# ---------------------------------------------------------------------- the child


def child(argv: list[str], dump: Path) -> int:
    """Run ``spotyolo local`` as its console script does; before the engine stops, write the
    execution history and the instances to ``dump``."""
    from spotyolo.cli import main
    from spotyolo.local import cli as local_cli
    from spotyolo.local import instances as local_instances

    keep_logs = local_cli._keep_logs
    wall = time.time() - time.monotonic()
    zygote_ready: list[float] = []
    zygote_init = local_instances.Zygote.__init__

    def zygote_timed(self: Any, *a: Any, **k: Any) -> None:
        zygote_init(self, *a, **k)
        started = time.time()

        def wait() -> None:
            self.ready.wait()
            zygote_ready.append(time.time())

        threading.Thread(target=wait, daemon=True).start()
        zygote_ready.append(started)

    local_instances.Zygote.__init__ = zygote_timed  # type: ignore[method-assign]

    def keep_and_dump(engine: Any, folder: Path) -> list[Path]:
        execution = engine.executions()[-1]["executionArn"]
        history = [
            {
                "type": e["type"],
                "at": e["timestamp"].timestamp(),
                "state": e.get("stateEnteredEventDetails", {}).get("name"),
            }
            for e in engine.history(execution)
        ]
        from moto.ec2.models import ec2_backends  # the emulator runs in this process

        backend = ec2_backends["123456789012"]["us-east-1"]
        instances = [  # EC2's LaunchTime has whole seconds: moto's own has microseconds
            {"id": i.id, "launched": i.launch_time.replace(tzinfo=dt.UTC).timestamp()}
            for r in backend.all_reservations()
            for i in r.instances
        ]
        runner = engine.instances
        for record in instances:
            inst = runner.instances.get(record["id"]) if runner else None
            if inst is not None:  # the runner's clock is monotonic
                record["booted"] = inst.boot_at + wall
                record["seen"] = inst.started + wall
        zygote = {"started": zygote_ready[0], "ready": zygote_ready[1]} if len(zygote_ready) > 1 else {}
        dump.write_text(json.dumps({"history": history, "instances": instances, "zygote": zygote}))
        return keep_logs(engine, folder)

    local_cli._keep_logs = keep_and_dump  # type: ignore[assignment]
    sys.argv = ["spotyolo", *argv]
    return int(main(argv) or 0)


# ---------------------------------------------------------------------- one run

#: a log line's stamp, also where a progress bar's last redraw left no newline before it
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) (.*)$")


def _trainer_events(log: Path) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text(errors="replace").replace("\r", "\n").splitlines():
        match = _STAMP.search(line.replace("\x1b[K", ""))
        if match:
            out.append((dt.datetime.fromisoformat(match.group(1)).timestamp(), match.group(2)))
    return out


def _first(events: list[tuple[float, str]], text: str) -> float | None:
    return next((t for t, line in events if text in line), None)


def one_run(job_dir: Path, work: Path, tree: Path) -> dict[str, Any]:
    """One ``spotyolo local`` of ``job_dir``; the milestones in seconds from process start."""
    out, dump = work / "out", work / "dump.json"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(dump), "--"]
    command += ["local", str(job_dir), "--force", "--output", str(out)]
    lines: list[tuple[float, str]] = []
    load = os.getloadavg()[0]
    t0 = time.time()
    process = subprocess.Popen(
        command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)  # its CPU with that of every descendant it waited for
    process.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    reader.join(timeout=5)
    if code != 0:
        print("\n".join(line for _, line in lines[-40:]), file=sys.stderr)
        raise SystemExit(f"spotyolo local exited {code}")
    data = json.loads(dump.read_text())
    history = data["history"]
    logs = sorted((out / "logs").glob("trainer-attempt-1-*.log"))
    trainer = _trainer_events(logs[0]) if logs else []

    def entered(state: str) -> float | None:
        times = [e["at"] for e in history if e["type"].endswith("StateEntered") and e["state"] == state]
        return times[0] if times else None

    uploaded = [t for t, line in lines if re.search(r"uploaded (\d+)/\1 files", line)]
    at = {
        "checked": _first(lines, "is valid"),
        "emulator": _first(lines, "local AWS emulator on"),
        "uploaded": uploaded[-1] if uploaded else None,
        "execution": next((e["at"] for e in history if e["type"] == "ExecutionStarted"), None),
        # Validate job's end: the state after it was entered (its exit event has no name here)
        "validated": entered("Already trained?"),
        "launch": entered("Launch trainer"),
        "launched": min((i["launched"] for i in data["instances"]), default=None),
        "seen": min((i["seen"] for i in data["instances"] if "seen" in i), default=None),
        "booted": min((i["booted"] for i in data["instances"] if "booted" in i), default=None),
        "trainer": trainer[0][0] if trainer else None,
        "dataset": _first(trainer, "dataset: downloaded"),
        "training": _first(trainer, "training epochs"),
        "first_batch": _first(trainer, "first batch trained"),
    }
    rounds = sum(1 for e in history if e["type"].endswith("StateEntered") and e["state"] == "Validate job")
    result: dict[str, Any] = {k: (round(v - t0, 3) if v is not None else None) for k, v in at.items()}
    zygote = data.get("zygote") or {}
    result["zygote_ready"] = round(zygote["ready"] - t0, 3) if zygote else None
    cpu = usage.ru_utime + usage.ru_stime
    result.update(validate_rounds=rounds, wall=round(wall, 2), cpu=round(cpu, 2), load=round(load, 2))
    result["tree"] = str(tree)
    return result


# ---------------------------------------------------------------------- report


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def report(runs: list[dict[str, Any]]) -> str:
    """A table: each milestone's median time from process start, and the phase before it."""
    rows = ["| milestone | from start (median) | phase (median) | runs |", "|---|---|---|---|"]
    for name, words in MILESTONES:
        value = _median([r[name] for r in runs])
        phases = [
            (r[name] - (r[prev] if prev else 0.0))
            for r in runs
            for prev in [_previous(name, r)]
            if r[name] is not None and (prev is None or r[prev] is not None)
        ]
        phase = _median(phases)  # type: ignore[arg-type]
        each = ", ".join("-" if r[name] is None else f"{r[name]:.2f}" for r in runs)
        shown = f"{value:.2f} s" if value is not None else "-"
        phase_shown = f"{phase:.2f} s" if phase is not None else "-"
        rows.append(f"| {words} | {shown} | {phase_shown} | {each} |")
    loads = ", ".join(f"{r['load']:.1f}" for r in runs)
    rounds = ", ".join(str(r["validate_rounds"]) for r in runs)
    zygote = ", ".join("-" if r.get("zygote_ready") is None else f"{r['zygote_ready']:.2f}" for r in runs)
    walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
    cpus = ", ".join(f"{r['cpu']:.1f}" for r in runs)
    rows.append(f"\nValidate job rounds: {rounds}; warm trainer ready at: {zygote} s")
    rows.append(f"whole run (1 epoch): {walls} s wall, {cpus} s CPU (user + system, every process)")
    rows.append(f"load average at each run's start: {loads}")
    return "\n".join(rows)


def _previous(name: str, run: dict[str, Any]) -> str | None:
    names = [n for n, _ in MILESTONES]
    for prev in reversed(names[: names.index(name)]):
        if run.get(prev) is not None:
            return prev
    return None


def startup_job(job_dir: Path, work: Path) -> Path:
    """A copy of the job that trains one epoch (same name, dataset and settings otherwise)."""
    copy = work / "job" / job_dir.name
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(job_dir, copy, ignore=shutil.ignore_patterns(".DS_Store"))
    config = copy / "config.yaml"
    text = config.read_text()
    text, n = re.subn(r"(?m)^epochs:.*$", "epochs: 1", text)
    config.write_text(text if n else text + "\nepochs: 1\n")
    return copy


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(argv[3:], Path(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "examples" / "shapes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout to run (default: this one)")
    parser.add_argument("--json", type=Path, help="also write the raw runs here")
    parser.add_argument(
        "--warmup", action="store_true", help="one run per tree first, not counted (writes its .pyc files)"
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (the last run's logs)")
    args = parser.parse_args(argv)
    job_dir = args.job.resolve()
    if not (job_dir / "dataset" / "data.yaml").exists() and job_dir == ROOT / "examples" / "shapes":
        generator = ROOT / "examples" / "generate_shapes.py"
        subprocess.run([sys.executable, str(generator), str(job_dir / "dataset")], check=True)
    trees = [t.resolve() for t in args.tree] if args.tree else [ROOT]
    runs: dict[Path, list[dict[str, Any]]] = {t: [] for t in trees}
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="spotyolo-startup-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        job = startup_job(job_dir, work)
        for tree in trees if args.warmup else []:  # compiled alike (PYTHONDONTWRITEBYTECODE may be set)
            compiled = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            folders = [str(tree / name) for name in ("spotyolo", "functions")]
            subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True, env=compiled)
            print(f"warm-up {tree}: {json.dumps(one_run(job, work, tree))}", flush=True)
        for i in range(args.repeat):
            for tree in trees:  # alternate, so a change of load hits every tree alike
                run = one_run(job, work, tree)
                runs[tree].append(run)
                print(f"run {i + 1} {tree}: {json.dumps(run)}", flush=True)
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {os.getloadavg()}")
    for tree, tree_runs in runs.items():
        print(f"\n{tree} ({len(tree_runs)} runs):\n{report(tree_runs)}")
    if args.json:
        args.json.write_text(json.dumps({str(t): r for t, r in runs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
