"""``spotyolo local JOB_DIR`` and ``spotyolo local serve``: the pipeline on this machine.

``run_local`` checks the job folder first (bad input fails before anything starts), starts the
local engine, uploads the job as a user would (dataset first, ``config.yaml`` last: that upload
is the trigger, exactly as on AWS), follows the execution, prints the notification, and copies
``weights/<job>/`` to the output folder. ``run_serve`` keeps the emulator up for the real
``aws`` CLI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from spotyolo.contract.layout import BEST, CONFIG_NAME, JOB_NAME_RE, PLOTS_DIR, weights_key, weights_prefix
from spotyolo.contract.status import JobStatus
from spotyolo.core.slots import queue_words
from spotyolo.core.text import plot_names, short_cause

#: exit codes of `spotyolo local`
OK, FAILED, INVALID, INTERRUPTED = 0, 1, 2, 130


class Console:
    """Progress lines with the elapsed time; silent in --json mode (stderr stays for errors)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.t0
            print(f"[{_clock(elapsed):>6}] {text}", file=self.stream, flush=True)

    def raw(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# ---------------------------------------------------------------------- local checks


def check_job_dir(job_dir: Path) -> tuple[str, list[str]]:
    """(job name, problems) of a job folder, checked as Validate job will check it."""
    problems: list[str] = []
    job = job_dir.resolve().name
    if not job_dir.is_dir():
        return job, [f"{job_dir}: no such folder (a job folder holds config.yaml and dataset/)"]
    if not JOB_NAME_RE.match(job):
        problems.append(
            f"{job_dir}: the folder name {job!r} is the job name and must match [a-z0-9][a-z0-9._-]* "
            f"(up to 63 characters): rename the folder, e.g. to {_suggest_name(job)!r}"
        )
    if not (job_dir / CONFIG_NAME).is_file():
        problems.append(f"{job_dir / 'config.yaml'}: missing (the job's config: model, epochs, imgsz, ...)")
        return job, problems
    problems.extend(_check_with_validator(job_dir))
    return job, problems


def _suggest_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower())
    return cleaned.strip("-._")[:63] or "my-job"


def _check_with_validator(job_dir: Path) -> list[str]:
    """The config + dataset checks of `spotyolo validate` and of the Validate job Lambda."""
    from spotyolo.core.config import inspect_job
    from spotyolo.core.dataset import LocalSource

    config, _summary, problems = inspect_job(LocalSource(job_dir))
    found = [str(p) for p in problems]
    if config is None and not found:
        found.append(f"{job_dir / 'config.yaml'}: could not be read as a job config")
    return found


# ---------------------------------------------------------------------- following a run


class Follower:
    """Turns the execution history and the job table into progress lines, incrementally."""

    def __init__(self, engine: Any, console: Console, job: str, definition: dict[str, Any]) -> None:
        self.engine = engine
        self.console = console
        self.job = job
        self.states = definition.get("States", {})
        self.seen_events = 0
        self.last_attempt_line = ""
        self.last_epoch = (-1, -1)
        self.last_queue_line = ""
        self.interruptions_seen = 0
        self.errors: list[dict[str, str]] = []

    def poll(self, execution_arn: str) -> None:
        events = list(self.engine.history(execution_arn))
        for event in events[self.seen_events :]:
            self._event(event)
        self.seen_events = len(events)
        self._table()
        self._interruptions()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            details = event.get("stateEnteredEventDetails", {})
            name = details.get("name", "?")
            line = f"▶ {name}"
            state = self.states.get(name, {})
            if state.get("Type") == "Wait":
                seconds = _wait_seconds(state, details.get("input"))
                if seconds is not None:
                    line += f" ({seconds} s)"
            self.console.say(line)
        elif kind in ("TaskFailed", "LambdaFunctionFailed", "TaskTimedOut"):
            failed: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            error, cause = failed.get("error", "?"), failed.get("cause", "") or ""
            self.errors.append({"error": error, "cause": cause})
            self.console.say(f"  ✗ {error}: {short_cause(cause)}")
        elif kind == "ExecutionFailed":
            details = event.get("executionFailedEventDetails", {})
            self.console.say(
                f"execution failed: {details.get('error', '')} {short_cause(details.get('cause', ''))}"
            )
        elif kind == "ExecutionAborted":
            self.console.say("execution aborted")
        elif kind == "ExecutionSucceeded":
            self.console.say("execution succeeded")

    def _table(self) -> None:
        item = self.engine.job_item(self.job)
        if item is None:
            return
        queued = queue_words(item.queue) if item.status == JobStatus.QUEUED else ""
        if queued and queued != self.last_queue_line:  # the instance-slot queue: where it waits
            self.console.say(f"  {queued}")
        self.last_queue_line = queued
        if item.current is not None and item.attempts:
            rec = next((a for a in reversed(item.attempts) if a.number == item.current.number), None)
            if rec is not None:
                where = f" on {rec.instance} ({rec.instance_type}, {rec.az})" if rec.instance else ""
                line = f"  attempt {rec.number} · {rec.capacity}{where}"
                if line != self.last_attempt_line:
                    self.last_attempt_line = line
                    self.console.say(line)
        progress = item.progress
        if progress is not None and progress.epochs and (progress.attempt, progress.epoch) != self.last_epoch:
            self.last_epoch = (progress.attempt, progress.epoch)
            losses = " ".join(f"{k} {v:.3f}" for k, v in progress.losses.items())
            metrics = " ".join(
                f"{k} {v:.3f}" for k, v in progress.metrics.items() if k in ("precision", "recall", "mAP50")
            )
            speed = f" · {progress.seconds_per_epoch:.1f} s/epoch" if progress.seconds_per_epoch else ""
            self.console.say(
                f"  epoch {progress.epoch}/{progress.epochs}  {losses}  {metrics}{speed}".rstrip()
            )

    def _interruptions(self) -> None:
        runner = self.engine.instances
        for record in runner.interruptions[self.interruptions_seen :]:
            self.console.say(
                f"  ⚡ spot interruption notice to {record.instance} (attempt {record.attempt}, "
                f"epoch {record.epoch}); it is terminated in {self.engine.notice_seconds:.0f} s"
            )
        self.interruptions_seen = len(runner.interruptions)


def _wait_seconds(state: dict[str, Any], raw_input: str | None) -> int | None:
    if "Seconds" in state:
        return int(state["Seconds"])
    path = state.get("SecondsPath")
    if not path or not raw_input:
        return None
    try:
        value: Any = json.loads(raw_input)
        for part in path.lstrip("$").strip(".").split("."):
            value = value[part]
        return int(value)
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------- run_local


def run_local(args: argparse.Namespace) -> int:
    """``spotyolo local JOB_DIR``: the whole pipeline on this machine, exit 0 only on success."""
    console = Console(quiet=args.json)
    job_dir = Path(args.job_dir)
    job, problems = check_job_dir(job_dir)
    if problems:
        print(f"{job_dir}: the job is not valid, nothing was started:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps({"status": "invalid", "job": job, "problems": problems}, indent=2))
        return INVALID
    if getattr(args, "chaos", None) is not None:
        return _run_chaos(job_dir, int(args.chaos), json_out=args.json, jobs=getattr(args, "jobs", 1))
    output = Path(args.output) if args.output else Path("outputs") / job
    interrupts = sorted(set(args.interrupt_at_epoch or []))
    console.say(f"job {job!r} from {job_dir} is valid")

    from spotyolo.local.engine import LocalEngine

    engine = LocalEngine(
        interrupt_at_epochs=interrupts,
        port=getattr(args, "engine_port", None),
        quota_instances=getattr(args, "max_instances", None),
    )
    stop = _install_sigint()
    started = time.monotonic()
    try:
        engine.start()
        console.say(
            f"local AWS emulator on {engine.endpoint} · state machine {engine.resources.state_machine_arn}"
        )
        summary = _run(engine, console, job, job_dir, output, args, stop)
    except KeyboardInterrupt:
        console.say("interrupted: stopping the run and the emulator")
        summary = {"status": "interrupted", "job": job}
    finally:
        engine.stop()
        _check_nothing_left(engine, console)
    summary["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    if summary["status"] == "interrupted":
        return INTERRUPTED
    return OK if summary.get("success") else FAILED


def _run_chaos(job_dir: Path, seed: int, *, json_out: bool, jobs: int = 1) -> int:
    """``--chaos SEED``: the job under SEED's fault schedule; exit 0 only if every guarantee held.
    ``--jobs K`` (2 or more): K copies of it through the instance-slot queue (the queue campaign)."""
    if jobs > 1:
        from spotyolo.local.queuecampaign import run_queue_seed

        summary = run_queue_seed(job_dir, seed, jobs=jobs)
    else:
        from spotyolo.local.campaign import run_seed

        summary = run_seed(job_dir, seed)
    if json_out:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"seed {seed}: {summary['outcome']} in {summary['seconds']} s")
        if jobs > 1:
            print(
                f"  {jobs} jobs uploaded {summary['uploaded']}; EC2 quota {summary['quota']} instance(s), "
                f"max_instances {summary['max_instances']}; at most {summary['most_instances']} instance(s) "
                "seen at once"
            )
        for fault in summary["faults"]:
            fired = f"fired at {fault['at_seconds']} s: {fault['where']}" if fault["fired"] else "not fired"
            print(f"  fault {fault['plan']}: {fired}")
        for violation in summary["violations"] or ["every guarantee held"]:
            print(f"  {violation}")
    return OK if not summary["violations"] else FAILED


def _install_sigint() -> threading.Event:
    """Ctrl-C sets an event the follow loop checks (then a second Ctrl-C raises as usual)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return event
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        event.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    return event


def _seed_previous_weights(engine: Any, job: str, output: Path, console: Console) -> bool:
    """The emulator starts empty each run; weights already copied to ``output`` stand for the
    bucket's ``weights/<job>/``, so an already-trained job is skipped as on AWS (unless --force)."""
    if not (output / BEST).is_file():
        return False
    s3 = engine.client("s3")
    for path in sorted(p for p in output.iterdir() if p.is_file()):
        s3.upload_file(str(path), engine.resources.bucket, weights_key(job, path.name))
    console.say(f"weights of a previous run found in {output} (use --force to retrain)")
    return True


def _run(
    engine: Any,
    console: Console,
    job: str,
    job_dir: Path,
    output: Path,
    args: argparse.Namespace,
    stop: threading.Event,
) -> dict[str, Any]:
    if not args.force:
        _seed_previous_weights(engine, job, output, console)
    files = sum(1 for p in job_dir.rglob("*") if p.is_file())
    console.say(f"uploading {files} files to s3://{engine.resources.bucket}/jobs/{job}/ (config.yaml last)")
    last_report = [0.0]

    def progress(done: int, total: int, size: int) -> None:
        now = time.monotonic()
        if done == total or now - last_report[0] > 1.0:
            last_report[0] = now
            console.say(f"  uploaded {done}/{total} files ({size / 1e6:.1f} MB)")

    engine.upload_job(job_dir, job, progress=progress)
    execution = engine.wait_for_execution(job, timeout=60)
    console.say(f"config.yaml uploaded: execution {execution.rsplit(':', 1)[-1]} started")
    definition = json.loads(
        engine.client("stepfunctions").describe_state_machine(
            stateMachineArn=engine.resources.state_machine_arn
        )["definition"]
    )
    follower = Follower(engine, console, job, definition)
    while True:
        if stop.is_set():
            raise KeyboardInterrupt
        follower.poll(execution)
        described = engine.client("stepfunctions").describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            follower.poll(execution)
            break
        time.sleep(1.0)
    return _finish(engine, console, job, output, execution, described, follower)


def _finish(
    engine: Any,
    console: Console,
    job: str,
    output: Path,
    execution: str,
    described: dict[str, Any],
    follower: Follower,
) -> dict[str, Any]:
    status = described["status"]
    document: dict[str, Any] = {}
    if described.get("output"):
        try:
            document = json.loads(described["output"])
        except ValueError:
            document = {}
    state_summary: dict[str, Any] = document.get("summary") or {}
    if not state_summary and (document.get("job") or {}).get("already_trained"):
        state_summary = {"status": "skipped"}
    # the execution-status rule's cleanup runs after a failure: give it a moment
    deadline = time.monotonic() + 15
    notes = engine.wait_notifications(1, timeout=10)
    item = engine.job_item(job)
    while status != "SUCCEEDED" and item is not None and item.execution and time.monotonic() < deadline:
        time.sleep(0.5)
        item = engine.job_item(job)
    runner = engine.instances
    summary: dict[str, Any] = {
        "job": job,
        "execution": execution,
        "execution_status": status,
        "status": state_summary.get("status") or ("failed" if status != "SUCCEEDED" else "unknown"),
        "subject": notes[-1]["subject"] if notes else state_summary.get("subject"),
        "message": notes[-1]["message"] if notes else state_summary.get("message") or (item and item.message),
        "metrics": state_summary.get("metrics") or {},
        "target": state_summary.get("target"),
        "attempts": len(item.attempts) if item else 0,
        "interruptions": len(runner.interruptions) if runner else 0,
        "errors": follower.errors,
        "notifications": len(notes),
        "paths": {},
    }
    console.raw("")
    if notes:
        console.raw(f"── notification: {summary['subject']}")
        console.raw(str(summary["message"]))
    else:
        console.raw("── no notification arrived (see the errors above)")
    console.raw("")
    summary["success"] = status == "SUCCEEDED" and summary["status"] != "failed"
    if status == "SUCCEEDED":
        files = engine.download_prefix(weights_prefix(job), output)
        if files:
            summary["paths"] = {
                "output": str(output),
                "weights": str(output / BEST) if (output / BEST).exists() else None,
                "files": sorted(str(p) for p in files),
            }
            names = [p.relative_to(output).as_posix() for p in files]
            if any(n.startswith(f"{PLOTS_DIR}/") for n in names):
                summary["paths"]["plots"] = str(output / PLOTS_DIR)
            for line in copied_lines(job, output, names):
                console.say(line)
    logs = _keep_logs(engine, output / "logs")
    if logs:
        summary["paths"]["logs"] = str(output / "logs")
        if not summary["success"]:
            console.say(f"logs of the trainers and the Lambdas: {output / 'logs'}/")
    return summary


def copied_lines(job: str, output: Path, names: list[str]) -> list[str]:
    """What ``spotyolo local`` says of the files it copied from weights/<job>/ (``names``,
    relative to ``output``): the weights, then the plots (previous/plots/ is not listed)."""
    names = sorted(names)
    listed = ", ".join(n for n in names if PLOTS_DIR not in n.split("/"))
    lines = [f"weights/{job}/ copied to {output}/ ({listed})"]
    plots = [n.split("/", 1)[1] for n in names if n.startswith(f"{PLOTS_DIR}/")]
    if plots:
        lines.append(f"plots: {output / PLOTS_DIR}/ ({plot_names(plots)})")
    return lines


def _keep_logs(engine: Any, folder: Path) -> list[Path]:
    """Copy each attempt's trainer log and the Lambdas' log out of the engine's work folder
    (which goes away with the emulator)."""
    sources: list[tuple[Path, str]] = []
    runner = engine.instances
    for inst in runner.instances.values() if runner else []:
        sources.append((inst.log_path, f"trainer-attempt-{inst.attempt}-{inst.id}.log"))
    sources.append((engine.lambda_log, "lambdas.log"))
    kept = []
    for source, name in sources:
        if source.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / name)
            kept.append(folder / name)
    return kept


def _check_nothing_left(engine: Any, console: Console) -> None:
    runner = engine.instances
    if runner is not None and runner.live_processes():
        console.say(f"warning: trainer processes still alive: {runner.live_processes()}")


# ---------------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace, ready: Callable[[Any], None] | None = None) -> int:
    """``spotyolo local serve``: the emulator with the pipeline deployed, until Ctrl-C."""
    from spotyolo.local.engine import LocalEngine, PortInUse

    engine = LocalEngine(
        port=args.port,
        interrupt_at_epochs=sorted(set(args.interrupt_at_epoch or [])),
        quota_instances=getattr(args, "max_instances", None),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, lambda *_: stop.set())
    try:
        engine.start()
    except PortInUse as err:
        print(f"spotyolo local serve: {err}", file=sys.stderr)
        return FAILED
    try:
        print(serve_banner(engine), flush=True)
        if ready is not None:
            ready(engine)
        shown = 0
        while not stop.wait(1.0):
            notes = engine.notifications()
            for note in notes[shown:]:
                print(f"\n── notification: {note['subject']}\n{note['message']}\n", flush=True)
            shown = len(notes)
    finally:
        engine.stop()
        print("emulator stopped", flush=True)
    return OK


def serve_banner(engine: Any) -> str:
    r = engine.resources
    url = engine.endpoint
    aws = f"aws --endpoint-url {url}"
    return "\n".join(
        [
            f"spotyolo local emulator on {url} (Ctrl-C stops it and every trainer)",
            f"  bucket         {r.bucket}",
            f"  state machine  {r.state_machine_arn}",
            f"  job table      {r.table}",
            f"  topic          {r.topic_arn}",
            *(
                [f"  EC2 quotas     {engine.quota_instances} instances at once, spot and on-demand each"]
                if getattr(engine, "quota_instances", None) is not None
                else []
            ),
            "",
            "Credentials: any (e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local), region us-east-1.",
            f"The spotyolo commands find this emulator by its stack outputs: export AWS_ENDPOINT_URL={url}",
            "  spotyolo submit my-job --wait · spotyolo status · spotyolo logs my-job --follow · "
            "spotyolo weights my-job",
            "Or with the AWS CLI.",
            "Start training (config.yaml is the trigger; the upload settle window covers any upload order):",
            f"  {aws} s3 cp my-job s3://{r.bucket}/jobs/my-job/ --recursive",
            "Retrain a job whose weights exist:",
            f"  {aws} stepfunctions start-execution --state-machine-arn {r.state_machine_arn} "
            '--input \'{"job": "my-job", "force": true}\'',
            "Follow a run:",
            f"  {aws} stepfunctions list-executions --state-machine-arn {r.state_machine_arn}",
            f"  {aws} stepfunctions describe-execution --execution-arn <arn>",
            f"  {aws} stepfunctions get-execution-history --execution-arn <arn>",
            f'  {aws} dynamodb get-item --table-name {r.table} --key \'{{"job": {{"S": "my-job"}}}}\'',
            "Cancel:",
            f"  {aws} s3 rm s3://{r.bucket}/jobs/my-job/config.yaml",
            "Get the weights:",
            f"  {aws} s3 cp s3://{r.bucket}/weights/my-job/ outputs/my-job/ --recursive",
        ]
    )
