"""The fault campaign of the instance-slot queue: several jobs at once in an account whose EC2
quota allows one instance (issue 12's capacity queue, docs/ARCHITECTURE.md), under a seed's
queue schedule (:func:`spotyolo.local.chaos.draw_queue_schedule`): faults of the slot-queue
Lambda, a queued job cancelled or stopped, a quota refusal, and the single job's faults
anywhere in the account.

``run_queue_seed(job_dir, seed, jobs=3)`` returns the summary of ``spotyolo local JOB --chaos
SEED --jobs 3``: the faults, and every invariant that did not hold, as plain sentences. Checked
after each run: each job's own guarantees (:data:`spotyolo.local.campaign.INVARIANTS`), and the
queue's: every job ends, the live instances (sampled) never exceed what the account allows,
the slot holders never exceed the count, no slot held and no waiter left in the slot table, and
the slots granted in the order the jobs asked (their tickets).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spotyolo.contract.env import TrainerVar
from spotyolo.contract.layout import CONFIG_NAME
from spotyolo.contract.status import JobStatus
from spotyolo.core.slots import SlotQueue
from spotyolo.local import campaign
from spotyolo.local.campaign import NOTICE_SECONDS, Observed
from spotyolo.local.chaos import (
    TRAINER_APP_ID,
    Chaos,
    Fault,
    Kind,
    Point,
    QueueSchedule,
    draw_queue_schedule,
)
from spotyolo.local.engine import ACCOUNT, REGION, LocalEngine

#: jobs in a queue seed
QUEUE_JOBS = 3
#: how often the sampler reads the live instances and the semaphore
SAMPLE_SECONDS = 0.1
#: the state whose task token the slot's grant answers
WAIT_STATE = "Wait for an instance slot"
#: set (to anything): a seed that broke an invariant keeps its folder (the engine's lambdas.log,
#: each trainer's log) and names it in the summary's ``kept``
KEEP_VAR = "SPOTYOLO_CHAOS_KEEP"
#: the leftovers of the slot table (checked once for the account, not per job)
SLOT_LEFTOVERS = ("instance slot held", "queued for an instance slot")


# ---------------------------------------------------------------------- sampling


@dataclass
class Sampled:
    """What the sampler saw: the most instances live at once, the most slot holders, and the
    first samples over the limits."""

    samples: int = 0
    most_instances: int = 0
    most_holders: int = 0
    over_limit: list[str] = field(default_factory=list)
    over_count: list[str] = field(default_factory=list)


class Sampler(threading.Thread):
    """Reads the emulated EC2 (every live instance of the account, even one not yet visible to
    DescribeInstances) and the semaphore every ``SAMPLE_SECONDS``."""

    def __init__(self, engine: LocalEngine, limit: int) -> None:
        super().__init__(name="spotyolo-queue-sampler", daemon=True)
        self.engine, self.limit = engine, limit
        self.seen = Sampled()
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        slots = _slots(self.engine)
        while not self.stop.wait(SAMPLE_SECONDS):
            try:
                self._sample(slots)
            except Exception:  # the engine stopping under it; a missed sample is no finding
                continue

    def _sample(self, slots: SlotQueue) -> None:
        live = _live_instances()
        sem = slots.semaphore()
        seen, at = self.seen, f"{time.monotonic() - self.started_at:.1f} s"
        seen.samples += 1
        seen.most_instances = max(seen.most_instances, len(live))
        seen.most_holders = max(seen.most_holders, len(sem.holders))
        if len(live) > self.limit and len(seen.over_limit) < 3:
            seen.over_limit.append(f"{', '.join(sorted(live))} at {at}")
        if len(sem.holders) > sem.slots and len(seen.over_count) < 3:
            seen.over_count.append(f"{len(sem.holders)} holders of {sem.slots} slot(s) at {at}")


def _live_instances() -> list[str]:
    """The account's pending or running instances, from the emulator's own state."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[ACCOUNT][REGION]
    for _ in range(5):  # the emulator's threads may change the dict while this reads it
        try:
            return [i.id for i in list(backend.all_instances()) if i.state in ("pending", "running")]
        except RuntimeError:
            continue
    return []


def _slots(engine: LocalEngine) -> SlotQueue:
    return SlotQueue(
        engine.client("dynamodb"),
        engine.resources.slot_table,
        sfn=engine.client("stepfunctions"),
        count=lambda *_: None,
    )


# ---------------------------------------------------------------------- running a seed


@dataclass
class QueueRun:
    """One queue seed: its schedule, its jobs (upload order) and their folders."""

    schedule: QueueSchedule
    chaos: Chaos
    jobs: list[str]
    folders: dict[str, Path]
    uploaded: list[str] = field(default_factory=list)


def run_queue_seed(
    job_dir: str | os.PathLike[str],
    seed: int,
    *,
    jobs: int = QUEUE_JOBS,
    limit_seconds: float = 600.0,
    trainer_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    folder = Path(job_dir)
    base = folder.resolve().name
    config = yaml.safe_load((folder / CONFIG_NAME).read_text()) or {}
    epochs = int(config.get("epochs", 100))
    schedule = draw_queue_schedule(seed, epochs, jobs)
    chaos = Chaos(schedule, epochs)
    workdir = Path(tempfile.mkdtemp(prefix=f"spotyolo-queue-chaos-{seed}-"))
    names = [f"{base}-{k}" for k in range(1, jobs + 1)]
    folders = {}
    for name in names:  # the same job under K names
        folders[name] = workdir / "jobs" / name
        shutil.copytree(folder, folders[name])
    run = QueueRun(schedule, chaos, names, folders)
    env = {"AWS_SDK_UA_APP_ID": TRAINER_APP_ID, TrainerVar.IMDS_POLL_SECONDS: "0.25", **(trainer_env or {})}
    engine = LocalEngine(
        workdir=workdir / "engine", settle_seconds=1, notice_seconds=NOTICE_SECONDS, poll_seconds=0.5,
        trainer_env=env, faults=chaos, quota_instances=schedule.quota, max_instances=schedule.max_instances,
    )  # fmt: skip
    seen = {name: Observed(job=name, config=config) for name in names}
    grants: list[dict[str, Any]] = []
    sampler = Sampler(engine, schedule.limit)
    left: dict[str, list[str]] = {}
    started = time.monotonic()
    try:
        engine.start()
        chaos.started = time.monotonic()
        sampler.start()
        deadline = started + limit_seconds
        _upload(engine, run, deadline)
        hung = not _drive(engine, run, deadline)
        sampler.stop.set()
        sampler.join(5)
        for name in names:
            seen[name].hung = hung
            campaign._observe(engine, seen[name])
            left = {k: seen[name].leftovers.pop(k, []) for k in SLOT_LEFTOVERS}
        grants = _grants(engine, names)
    finally:
        sampler.stop.set()
        engine.stop()
        alive = engine.instances.live_processes() if engine.instances else []
        for observed in seen.values():
            observed.alive_after_stop = alive
    violations = _violations(run, seen, sampler.seen, grants, left)
    kept = str(workdir) if violations and os.environ.get(KEEP_VAR) else None
    if kept is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "seed": seed,
        "jobs": names,
        "status": "chaos",
        "mode": "queue",
        "quota": schedule.quota,
        "max_instances": schedule.max_instances,
        "uploaded": "together" if schedule.together else "one after another",
        "outcome": _outcome(seen),
        "success": not violations,
        "faults": [f.report() for f in chaos.faults],
        "violations": violations,
        "most_instances": sampler.seen.most_instances,
        "most_slot_holders": sampler.seen.most_holders,
        "samples": sampler.seen.samples,
        "grants": [{k: g[k] for k in ("job", "ticket", "execution")} for g in grants],
        "executions": {
            n: [{k: e[k] for k in ("name", "status", "error", "run_id", "refused")} for e in o.executions]
            for n, o in seen.items()
        },
        "notifications": {n: [f"{m['subject']}" for m in o.notifications] for n, o in seen.items()},
        "trainers": {n: [campaign._trainer_summary(t) for t in o.trainers] for n, o in seen.items()},
        "kept": kept,
        "seconds": round(time.monotonic() - started, 1),
    }


def _outcome(seen: dict[str, Observed]) -> str:
    """The last execution's status of each job, counted: ``SUCCEEDED 2, ABORTED 1``."""
    ends: dict[str, int] = {}
    for observed in seen.values():
        final = campaign._final_run(observed)
        status = final["status"] if final else "none"
        ends[status] = ends.get(status, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(ends.items()))


def _upload(engine: LocalEngine, run: QueueRun, deadline: float) -> None:
    """Upload the jobs in order: all at once, or each once the one before took its ticket (or ended)."""
    for name in run.jobs:
        engine.upload_job(run.folders[name], name)
        run.uploaded.append(name)
        if run.schedule.together:
            continue
        until = min(deadline, time.monotonic() + 90)
        while time.monotonic() < until and not _asked(engine, name):
            _tick(engine, run)
            time.sleep(0.1)


def _asked(engine: LocalEngine, job: str) -> bool:
    """The job's execution took its ticket, or ended without one."""
    item = engine.job_item(job)
    if item is not None and item.queue is not None:
        return True
    executions = engine.executions(job)
    return bool(executions) and all(e["status"] != "RUNNING" for e in executions)


def _tick(engine: LocalEngine, run: QueueRun) -> None:
    """The campaign's user: a queued job's planned cancel or stop, then every action due."""
    for ordinal, name in enumerate(run.jobs, start=1):
        if name not in run.uploaded:
            continue
        item = engine.job_item(name)
        if item is not None and item.status == JobStatus.QUEUED:
            run.chaos.at(Point.USER, name, ordinal=ordinal, state="queued")
    while run.chaos.user_actions:
        _act(engine, run, run.chaos.user_actions.pop(0))


def _act(engine: LocalEngine, run: QueueRun, fault: Fault) -> None:
    if fault.kind is Kind.QUEUED_STOP:
        sfn = engine.client("stepfunctions")
        for execution in engine.executions(fault.subject):
            if execution["status"] == "RUNNING":
                sfn.stop_execution(
                    executionArn=execution["executionArn"], cause="stopped by the user (queued)"
                )
        return
    if fault.kind is Kind.QUEUED_CANCEL:
        job = fault.subject
        cancel = Fault(Kind.CANCEL, fault.target)
    else:  # a cancel or a takeover at an instance's phase: that instance's job
        runner = engine.instances
        inst = runner.instances.get(fault.subject) if runner else None
        if inst is None:
            return
        job, cancel = inst.job, fault
    campaign._user_action(engine, run.folders[job], job, cancel)


def _drive(engine: LocalEngine, run: QueueRun, deadline: float) -> bool:
    """True once every job's executions ended and nothing is left, for ``QUIET_SECONDS``."""
    return campaign.wait_quiet(
        lambda: _tick(engine, run), lambda: all(_settled(engine, name) for name in run.jobs), deadline
    )


def _settled(engine: LocalEngine, job: str) -> bool:
    executions = engine.executions(job)
    return (
        bool(executions)
        and all(e["status"] != "RUNNING" for e in executions)
        and _status_rule_ran(engine, executions)
        and not any(campaign._leftovers(engine, job).values())
    )


def _status_rule_ran(engine: LocalEngine, executions: list[Any]) -> bool:
    """Every execution that did not succeed had its execution-status rule's clean up invoked: it
    may come late (its slot and lock may be free already, after a takeover), and what it tells
    the user is judged only after it ran; one that never comes shows as a hang (``ends``)."""
    ran = {
        str(event.get("detail", {}).get("executionArn"))
        for name, event in list(engine.invocations)
        if name == "cleanup" and isinstance(event, dict)
    }
    return all(
        e["executionArn"] in ran for e in executions if e["status"] in ("FAILED", "ABORTED", "TIMED_OUT")
    )


def _grants(engine: LocalEngine, jobs: list[str]) -> list[dict[str, Any]]:
    """Every slot granted, oldest first: the execution, its job, its ticket, when."""
    out = []
    for job in jobs:
        for execution in engine.executions(job):
            state = ""
            for event in engine.history(execution["executionArn"]):
                entered = event.get("stateEnteredEventDetails", {}).get("name")
                state = entered or state
                if event["type"] == "TaskSucceeded" and state == WAIT_STATE:
                    output = json.loads(event.get("taskSucceededEventDetails", {}).get("output") or "{}")
                    out.append(
                        {
                            "job": job,
                            "execution": execution["name"],
                            "ticket": int(output.get("ticket", -1)),
                            "at": event["timestamp"].timestamp(),
                        }
                    )
    return sorted(out, key=lambda g: g["at"])


# ---------------------------------------------------------------------- the invariants


def _violations(
    run: QueueRun,
    seen: dict[str, Observed],
    sampled: Sampled,
    grants: list[dict[str, Any]],
    left: dict[str, list[str]],
) -> list[str]:
    found: list[str] = []
    for name, observed in seen.items():
        for check in campaign.INVARIANTS:
            for sentence in check(observed):
                head, _, rest = sentence.partition(": ")
                found.append(f"{head}: job {name}: {rest}")
    found += [s for check in QUEUE_INVARIANTS for s in check(run, seen, sampled, grants, left)]
    return list(dict.fromkeys(found))


QueueCheck = Callable[
    [QueueRun, dict[str, Observed], Sampled, list[dict[str, Any]], dict[str, list[str]]], list[str]
]


def instances_within_the_limit(run: QueueRun, _: Any, sampled: Sampled, *__: Any) -> list[str]:
    schedule = run.schedule
    if not sampled.over_limit:
        return []
    return [
        f"instances_within_the_limit: {sampled.most_instances} instances ran at once "
        f"({'; '.join(sampled.over_limit)}), but the account allows {schedule.limit} "
        f"(EC2 quota {schedule.quota}, max_instances {schedule.max_instances})"
    ]


def slots_within_the_count(_: Any, __: Any, sampled: Sampled, *___: Any) -> list[str]:
    if not sampled.over_count:
        return []
    return [f"slots_within_the_count: more slots held than the count ({'; '.join(sampled.over_count)})"]


def slot_table_empty(*args: Any) -> list[str]:
    left: dict[str, list[str]] = args[4]
    return [f"slot_table_empty: {what} at the end: {', '.join(ids)}" for what, ids in left.items() if ids]


def granted_in_order(run: QueueRun, _: Any, __: Any, grants: list[dict[str, Any]], *___: Any) -> list[str]:
    """Each execution's first slot goes in ticket order (one put back after QuotaExceeded keeps its
    ticket and is granted again at the front: tests/unit/test_slots.py); uploaded one after
    another, the jobs' tickets follow the upload order."""
    found = []
    highest: dict[str, Any] | None = None
    granted: set[str] = set()
    for grant in grants:
        if grant["execution"] in granted:  # put back after QuotaExceeded: at the front, by design
            continue
        granted.add(grant["execution"])
        if highest is not None and grant["ticket"] < highest["ticket"]:
            found.append(
                f"granted_in_order: {grant['execution']} (ticket {grant['ticket']}) got its slot after "
                f"{highest['execution']} (ticket {highest['ticket']}), which asked later"
            )
        if highest is None or grant["ticket"] > highest["ticket"]:
            highest = grant
    if not run.schedule.together:
        first: dict[str, int] = {}
        for grant in sorted(grants, key=lambda g: g["ticket"]):
            first.setdefault(grant["job"], grant["ticket"])
        asked = [job for job in run.jobs if job in first]
        if sorted(asked, key=first.__getitem__) != asked:
            found.append(
                f"granted_in_order: uploaded one after another ({', '.join(run.jobs)}), the jobs took "
                f"tickets {[first[j] for j in asked]}"
            )
    return found


def one_instance_at_a_time(run: QueueRun, seen: dict[str, Observed], *_: Any) -> list[str]:
    """With one instance allowed, no trainers of two jobs trained at once (read from their logs)."""
    if run.schedule.limit != 1:
        return []
    spans = []
    for name, observed in seen.items():
        for trainer in observed.trainers:
            interval = campaign._epochs_of(trainer["log"])[2]
            if interval is not None:
                spans.append((interval, name, trainer["instance"]))
    return [
        f"one_instance_at_a_time: {ia} (job {ja}) and {ib} (job {jb}) trained at the same time"
        for i, ((a0, a1), ja, ia) in enumerate(spans)
        for (b0, b1), jb, ib in spans[i + 1 :]
        if ja != jb and a0 < b1 and b0 < a1
    ]


#: the queue's invariants, checked once per seed (each job's own are campaign.INVARIANTS)
QUEUE_INVARIANTS: list[QueueCheck] = [
    instances_within_the_limit,
    slots_within_the_count,
    slot_table_empty,
    granted_in_order,
    one_instance_at_a_time,
]
