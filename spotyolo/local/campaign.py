"""One run of the fault campaign: a job through the local engine under a seed's fault schedule
(:mod:`spotyolo.local.chaos`), then the user's guarantees checked as named invariants.

``run_seed(job_dir, seed)`` returns the ``--json`` summary of ``spotyolo local JOB --chaos
SEED``: what was injected where (``faults``) and every invariant that did not hold
(``violations``, plain sentences, each starting with the invariant's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from spotyolo.contract.env import TrainerVar
from spotyolo.contract.layout import BEST, CONFIG_NAME, METRICS_JSON, weights_prefix
from spotyolo.core.slots import SlotQueue
from spotyolo.local.chaos import TRAINER_APP_ID, Chaos, Fault, Kind, draw_schedule
from spotyolo.local.engine import LocalEngine, execution_name

#: the spot notice in a campaign run (2 minutes on AWS)
NOTICE_SECONDS = 6.0
#: the run id the campaign gives the model published before the run
PRIOR_RUN = "prior-run-of-the-campaign"
#: after every execution ended: how long things must stay settled (a late event or a
#: notification may still come)
QUIET_SECONDS = 5.0
#: what success and failure leave in the job table
SUCCESS_STATUSES = {"complete", "below target", "skipped"}


@dataclass
class Observed:
    """What the run left behind, read before the engine stopped."""

    job: str
    config: dict[str, Any]
    hung: bool = False
    executions: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)
    prior: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    item: dict[str, Any] = field(default_factory=dict)
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    trainers: list[dict[str, Any]] = field(default_factory=list)
    alive_after_stop: list[str] = field(default_factory=list)
    #: the run weights/metrics.json names
    metrics_run: str | None = None


# ---------------------------------------------------------------------- running a seed


def run_seed(
    job_dir: str | os.PathLike[str],
    seed: int,
    *,
    limit_seconds: float = 300.0,
    trainer_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    folder = Path(job_dir)
    job = folder.resolve().name
    config = yaml.safe_load((folder / CONFIG_NAME).read_text()) or {}
    epochs = int(config.get("epochs", 100))
    chaos = Chaos(draw_schedule(seed, epochs), epochs)
    workdir = Path(tempfile.mkdtemp(prefix=f"spotyolo-chaos-{seed}-"))
    env = {
        "AWS_SDK_UA_APP_ID": TRAINER_APP_ID,  # so the emulator's front door knows the trainer
        TrainerVar.IMDS_POLL_SECONDS: "0.25",
        **(trainer_env or {}),
    }
    engine = LocalEngine(
        workdir=workdir, settle_seconds=1, notice_seconds=NOTICE_SECONDS, poll_seconds=0.5,
        trainer_env=env, faults=chaos,
    )  # fmt: skip
    seen = Observed(job=job, config=config)
    started = time.monotonic()
    try:
        engine.start()
        chaos.started = time.monotonic()
        if chaos.schedule.prior_weights:
            seen.prior = _publish_prior(engine, job)
        _start(engine, folder, job, prior=chaos.schedule.prior_weights)
        seen.hung = not _drive(engine, chaos, folder, job, started + limit_seconds)
        _observe(engine, seen)
    finally:
        engine.stop()
        seen.alive_after_stop = engine.instances.live_processes() if engine.instances else []
        shutil.rmtree(workdir, ignore_errors=True)
    violations = [sentence for check in INVARIANTS for sentence in check(seen)]
    final = _final_run(seen)
    return {
        "seed": seed,
        "job": job,
        "status": "chaos",
        "outcome": final["status"] if final else "none",
        "success": not violations,
        "faults": [f.report() for f in chaos.faults],
        "prior_weights": chaos.schedule.prior_weights,
        "violations": violations,
        "executions": [
            {k: e[k] for k in ("name", "status", "error", "run_id", "refused")} for e in seen.executions
        ],
        "notifications": [f"{n['subject']}: {_short(n.get('message'))}" for n in seen.notifications],
        "trainers": [_trainer_summary(t) for t in seen.trainers],
        "seconds": round(time.monotonic() - started, 1),
    }


def _short(text: object, limit: int = 400) -> str:
    words = " ".join(str(text or "").split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def _trainer_summary(trainer: dict[str, Any]) -> dict[str, Any]:
    done, checkpointed, _ = _epochs_of(trainer["log"])
    lines = [line for line in trainer["log"].splitlines() if _TS.match(line)]
    return {
        "instance": trainer["instance"],
        "run": trainer["run"],
        "attempt": trainer["attempt"],
        "epochs_trained": done,
        "checkpointed": sorted(checkpointed),
        "from_scratch": "training from the start" in trainer["log"],
        "last_line": _short(lines[-1] if lines else "", 200),
    }


def _publish_prior(engine: LocalEngine, job: str) -> dict[str, str]:
    """A model published before this run (what previous/ must keep): name -> md5."""
    s3, bucket, prefix = engine.client("s3"), engine.resources.bucket, weights_prefix(job)
    files = {
        BEST: os.urandom(4096),
        "last.pt": os.urandom(4096),
        "results.csv": b"epoch,metrics/recall(B)\n1,0.5\n",
        METRICS_JSON: json.dumps({"run_id": PRIOR_RUN, "note": "published before the campaign run"}).encode(),
    }
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    return {name: hashlib.md5(body).hexdigest() for name, body in files.items()}


def _start(engine: LocalEngine, folder: Path, job: str, *, prior: bool) -> None:
    """Upload the job as a user would; with a model published already, that run is skipped,
    and the user retrains by hand (force), as ``spotyolo``'s README says."""
    engine.upload_job(folder, job)
    first = engine.wait_for_execution(job, timeout=60)
    if prior:
        engine.wait_done(first, timeout=120)
        payload = {"job": job, "force": True, "bucket": engine.resources.bucket}
        engine.start_execution(payload, name=execution_name(job))


def _user_action(engine: LocalEngine, folder: Path, job: str, fault: Fault) -> None:
    """What the campaign's user does: delete config.yaml (cancel), or stop the execution and
    upload config.yaml again (a new run takes over)."""
    s3, bucket = engine.client("s3"), engine.resources.bucket
    key = f"jobs/{job}/{CONFIG_NAME}"
    if fault.kind is Kind.CANCEL:
        s3.delete_object(Bucket=bucket, Key=key)
        return
    sfn = engine.client("stepfunctions")
    for execution in engine.executions(job):
        if execution["status"] == "RUNNING":
            sfn.stop_execution(executionArn=execution["executionArn"], cause="stopped by the user (takeover)")
    s3.upload_file(str(folder / CONFIG_NAME), bucket, key)


def wait_quiet(act: Callable[[], None], settled: Callable[[], bool], deadline: float) -> bool:
    """Call ``act`` (the user's actions) every half second; True once ``settled`` has held for
    ``QUIET_SECONDS`` (a late event could still arrive), False at the deadline."""
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        act()
        if not settled():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            return True
        time.sleep(0.5)
    return False


def _drive(engine: LocalEngine, chaos: Chaos, folder: Path, job: str, deadline: float) -> bool:
    """Carry out the user's actions; True once everything settled, False at the deadline."""

    def act() -> None:
        while chaos.user_actions:
            _user_action(engine, folder, job, chaos.user_actions.pop(0))

    def settled() -> bool:
        executions = engine.executions(job)
        return (
            bool(executions)
            and all(e["status"] != "RUNNING" for e in executions)
            and not any(_leftovers(engine, job).values())
        )

    return wait_quiet(act, settled, deadline)


# ---------------------------------------------------------------------- observing


def _notifications(engine: LocalEngine, job: str) -> list[dict[str, Any]]:
    named = re.compile(rf"(?<![a-z0-9._-]){re.escape(job)}(?![a-z0-9_-])")
    return [n for n in engine.notifications() if named.search(f"{n.get('subject')}\n{n.get('message')}")]


def _leftovers(engine: LocalEngine, job: str) -> dict[str, list[str]]:
    item = engine.job_item(job)
    slots = SlotQueue(
        engine.client("dynamodb"),
        engine.resources.slot_table,
        sfn=engine.client("stepfunctions"),
        count=lambda *_: None,
    )
    return {
        "instance slot held": sorted(slots.semaphore().holders),
        "queued for an instance slot": [w.execution for w in slots.waiters()],
        "instances pending or running": [i["InstanceId"] for i in engine.running_instances()],
        "trainer processes alive": engine.instances.live_processes() if engine.instances else [],
        "lock held": [item.execution] if item and item.execution else [],
        "task token outstanding": [job] if item and item.current and item.current.token else [],
        "executions running": [e["executionArn"] for e in engine.executions(job) if e["status"] == "RUNNING"],
    }


def _md5s(engine: LocalEngine, prefix: str) -> dict[str, str]:
    s3, bucket = engine.client("s3"), engine.resources.bucket
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"][len(prefix) :]] = hashlib.md5(body).hexdigest()
    return found


def _execution_facts(engine: LocalEngine, execution: Any) -> dict[str, Any]:
    arn = execution["executionArn"]
    described = engine.client("stepfunctions").describe_execution(executionArn=arn)
    facts: dict[str, Any] = {
        "name": execution["name"],
        "arn": arn,
        "status": described["status"],
        "error": described.get("error"),
        "start": execution["startDate"].timestamp(),
        "stop": described["stopDate"].timestamp() if described.get("stopDate") else None,
        "run_id": None,
        "refused": False,
        "skipped": False,
    }
    for event in engine.history(arn):
        entered = event.get("stateEnteredEventDetails", {}).get("name")
        if entered in ("Read refusal", "Explain refusal"):
            facts["refused"] = True
        exited = event.get("stateExitedEventDetails", {})
        if exited.get("name") == "Validate job" and exited.get("output"):
            job = json.loads(exited["output"]).get("job")
            if isinstance(job, dict) and job.get("run_id"):
                facts["run_id"] = job.get("run_id")
                facts["skipped"] = bool(job.get("already_trained"))
    return facts


def _observe(engine: LocalEngine, seen: Observed) -> None:
    job = seen.job
    seen.executions = sorted(
        (_execution_facts(engine, e) for e in engine.executions(job)), key=lambda e: e["start"]
    )
    seen.notifications = _notifications(engine, job)
    seen.weights = _md5s(engine, weights_prefix(job))
    if METRICS_JSON in seen.weights:
        s3, key = engine.client("s3"), weights_prefix(job) + METRICS_JSON
        body = s3.get_object(Bucket=engine.resources.bucket, Key=key)["Body"].read()
        seen.metrics_run = json.loads(body).get("run_id")
    for facts in seen.executions:
        if facts["run_id"]:
            seen.artifacts[facts["run_id"]] = _md5s(engine, f"runs/{job}/{facts['run_id']}/artifacts/")
    item = engine.job_item(job)
    seen.item = item.model_dump(mode="json") if item else {}
    seen.leftovers = _leftovers(engine, job)
    runner = engine.instances
    for inst in runner.instances.values() if runner else []:
        if inst.job != job:  # another job's (the queue campaign runs several)
            continue
        try:
            text = inst.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        seen.trainers.append(
            {"instance": inst.id, "run": inst.tags.get("run", ""), "attempt": inst.attempt, "log": text}
        )


# ---------------------------------------------------------------------- the invariants


def _final_run(seen: Observed) -> dict[str, Any] | None:
    """The newest execution that was not refused (the run the user is told about last)."""
    runs = [e for e in seen.executions if not e["refused"]]
    return runs[-1] if runs else None


def _published_chain(seen: Observed) -> list[str | None]:
    """The run ids weights/ should have held, oldest first: the prior model, then each run
    that succeeded and trained (not a skip)."""
    chain: list[str | None] = [PRIOR_RUN if seen.prior else None]
    chain += [e["run_id"] for e in seen.executions if e["status"] == "SUCCEEDED" and not e["skipped"]]
    return chain


def ends(seen: Observed) -> list[str]:
    if seen.hung:
        return ["ends: the run had not settled when the campaign's time limit came (a hang)"]
    if not seen.executions:
        return ["ends: no execution started for the job"]
    return []


def nothing_left(seen: Observed) -> list[str]:
    left = seen.leftovers.items()
    found = [f"nothing_left: {what} at the end: {', '.join(ids)}" for what, ids in left if ids]
    if seen.alive_after_stop:
        found.append(f"nothing_left: trainers alive after the engine stopped: {seen.alive_after_stop}")
    return found


def refused_only_while_another_runs(seen: Observed) -> list[str]:
    """A start refused as JobAlreadyRunning must have met another execution of the job that
    was running at some time during its own life (a duplicate delivery of one upload may start
    just after it and win the lock while its Validate job is retried); otherwise the user's
    upload was dropped for nothing."""
    found = []
    for refused in (e for e in seen.executions if e["error"] == "JobAlreadyRunning"):
        end = refused["stop"] if refused["stop"] is not None else float("inf")
        others = [e for e in seen.executions if e is not refused and e["start"] < end]
        if not any(e["stop"] is None or e["stop"] > refused["start"] for e in others):
            found.append(
                f"refused_only_while_another_runs: execution {refused['name']} was refused as "
                "JobAlreadyRunning although no other execution of the job was running when it started"
            )
    return found


def one_notification_per_execution(seen: Observed) -> list[str]:
    ended, told = len(seen.executions), len(seen.notifications)
    if told != ended:
        subjects = "; ".join(str(n.get("subject")) for n in seen.notifications) or "none"
        return [
            f"one_notification_per_execution: {ended} execution(s) of the job ended but {told} "
            f"notification(s) named it ({subjects})"
        ]
    return []


def failure_names_its_cause(seen: Observed) -> list[str]:
    found = []
    for e in seen.executions:
        named = any(str(e["error"]) in f"{n.get('subject')} {n.get('message')}" for n in seen.notifications)
        if e["status"] == "FAILED" and e["error"] and not named:
            found.append(
                f"failure_names_its_cause: execution {e['name']} failed with {e['error']}, "
                "which no notification names"
            )
    return found


def published_weights_are_the_runs(seen: Observed) -> list[str]:
    expected = _published_chain(seen)[-1]
    if expected is None or expected == PRIOR_RUN:
        return []
    found = []
    missing = {BEST, "last.pt", "results.csv", METRICS_JSON} - set(seen.weights)
    if missing:
        found.append(f"published_weights_are_the_runs: weights/ lacks {sorted(missing)} after run {expected}")
    if seen.metrics_run != expected:
        found.append(
            f"published_weights_are_the_runs: weights/metrics.json names run {seen.metrics_run}, "
            f"not {expected}"
        )
    artifacts = seen.artifacts.get(expected, {})
    if BEST in seen.weights and artifacts.get(BEST) != seen.weights[BEST]:
        found.append(
            f"published_weights_are_the_runs: weights/best.pt is not the best.pt of run {expected}, "
            "the run that succeeded"
        )
    return found


def previous_keeps_the_last_good_model(seen: Observed) -> list[str]:
    chain = _published_chain(seen)
    if len(chain) < 2 or chain[-1] is None:
        return []
    before = chain[-2]
    previous = {k[len("previous/") :]: v for k, v in seen.weights.items() if k.startswith("previous/")}
    if before == PRIOR_RUN and previous.get(BEST) != seen.prior.get(BEST):
        return ["previous_keeps_the_last_good_model: previous/best.pt is not the model published before"]
    earlier = seen.artifacts.get(before or "", {}).get(BEST)
    if before is not None and before != PRIOR_RUN and previous.get(BEST) != earlier:
        return [f"previous_keeps_the_last_good_model: previous/best.pt is not run {before}'s best.pt"]
    return []


def weights_untouched_without_success(seen: Observed) -> list[str]:
    if _published_chain(seen)[-1] not in (None, PRIOR_RUN):
        return []
    if seen.weights != seen.prior:
        changed = sorted(set(seen.weights.items()) ^ set(seen.prior.items()))
        names = sorted({k for k, _ in changed})
        return [f"weights_untouched_without_success: no run succeeded, yet weights/ changed ({names})"]
    return []


def status_matches_the_execution(seen: Observed) -> list[str]:
    final = _final_run(seen)
    status = seen.item.get("status")
    if final is None or final["status"] == "RUNNING":
        return []
    wanted = {
        "SUCCEEDED": SUCCESS_STATUSES,
        "FAILED": {"failed"},
        "ABORTED": {"cancelled", "failed"},
        "TIMED_OUT": {"failed"},
    }.get(final["status"], set())
    if status not in wanted:
        return [
            f"status_matches_the_execution: the job table says {status!r} but execution {final['name']} "
            f"ended {final['status']}"
        ]
    return []


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+) ")
_EPOCH = re.compile(r"spotyolo\.trainer\.monitor: epoch (\d+)/(\d+)")


def _epochs_of(log: str) -> tuple[list[int], set[int], tuple[float, float] | None]:
    """(epochs completed, epochs whose checkpoint was uploaded, training interval) of a log."""
    done: list[int] = []
    checkpointed: set[int] = set()
    start = end = None
    for line in log.splitlines():
        stamp = _TS.match(line)
        when = datetime.fromisoformat(stamp.group(1)).timestamp() if stamp else None
        if "training epochs" in line and when is not None:
            start = start or when
            end = when
        match = _EPOCH.search(line)
        if match:
            done.append(int(match.group(1)))
            end = when or end
        elif "checkpoint uploaded" in line and done:
            checkpointed.add(done[-1])
    interval = (start, end) if start is not None and end is not None else None
    return done, checkpointed, interval


def checkpointed_work_is_not_redone(seen: Observed) -> list[str]:
    found = []
    by_run: dict[str, list[dict[str, Any]]] = {}
    for trainer in seen.trainers:
        by_run.setdefault(trainer["run"], []).append(trainer)
    for run, trainers in by_run.items():
        saved: set[int] = set()
        for trainer in sorted(trainers, key=lambda t: t["attempt"]):
            done, checkpointed, _ = _epochs_of(trainer["log"])
            again = sorted(set(done) & saved)
            if again:
                found.append(
                    f"checkpointed_work_is_not_redone: run {run} attempt {trainer['attempt']} trained "
                    f"epoch(s) {again} again although an earlier attempt had uploaded their checkpoint"
                )
            if saved and "training from the start" in trainer["log"]:
                found.append(
                    f"checkpointed_work_is_not_redone: run {run} attempt {trainer['attempt']} restarted from "
                    f"epoch 0 although epochs {sorted(saved)} were checkpointed"
                )
            saved |= checkpointed
    return found


def one_trainer_at_a_time(seen: Observed) -> list[str]:
    spans = []
    for trainer in seen.trainers:
        _, _, interval = _epochs_of(trainer["log"])
        if interval is not None:
            spans.append((interval, trainer))
    found = []
    for i, ((a0, a1), ta) in enumerate(spans):
        for (b0, b1), tb in spans[i + 1 :]:
            if a0 < b1 and b0 < a1:
                found.append(
                    f"one_trainer_at_a_time: {ta['instance']} (run {ta['run']} attempt {ta['attempt']}) and "
                    f"{tb['instance']} (run {tb['run']} attempt {tb['attempt']}) trained at the same time"
                )
    return found


def one_success_per_run(seen: Observed) -> list[str]:
    counts: dict[str, int] = {}
    for trainer in seen.trainers:
        if "success sent" in trainer["log"]:
            counts[trainer["run"]] = counts.get(trainer["run"], 0) + 1
    return [
        f"one_success_per_run: {n} trainers of run {run} reported success (trained twice)"
        for run, n in counts.items()
        if n > 1
    ]


def cost_within_budget(seen: Observed) -> list[str]:
    budget, cost = seen.config.get("max_cost_usd"), seen.item.get("cost_usd")
    if budget is not None and cost is not None and float(cost) > float(budget) + 1e-9:
        return [f"cost_within_budget: the run cost ${cost:.4f}, over max_cost_usd ${float(budget):.4f}"]
    return []


#: every invariant checked after a campaign run, by name (README, "Guarantees")
INVARIANTS: list[Callable[[Observed], list[str]]] = [
    ends,
    nothing_left,
    one_notification_per_execution,
    failure_names_its_cause,
    refused_only_while_another_runs,
    published_weights_are_the_runs,
    previous_keeps_the_last_good_model,
    weights_untouched_without_success,
    status_matches_the_execution,
    checkpointed_work_is_not_redone,
    one_trainer_at_a_time,
    one_success_per_run,
    cost_within_budget,
]
