"""``spotyolo status [JOB]``: the table of jobs, or one job's attempts and the states its
execution went through (the console's event list), from the job table and the execution history."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from spotyolo.cli import exits
from spotyolo.cli.deployment import Deployment, connect
from spotyolo.cli.jobs import all_items, clock, executions_of, job_item, parse_time, table
from spotyolo.contract.errors import ErrorName
from spotyolo.contract.layout import weights_prefix
from spotyolo.contract.status import JobStatus
from spotyolo.core.cost import attempt_seconds, cost_report, price_fn, run_cost
from spotyolo.core.models import JobItem, QueueInfo
from spotyolo.core.slots import queue_words

_METRIC_ORDER = ("mAP50", "mAP50-95", "recall", "precision")


def job_row(item: JobItem, now: dt.datetime | None = None) -> dict[str, Any]:
    """What the table shows of one job, as data."""
    now = now or dt.datetime.now(dt.UTC)
    running = item.execution is not None
    last = item.attempts[-1] if item.attempts else None
    progress = item.progress
    metrics: dict[str, float] = dict(progress.metrics if progress else {})
    metrics.update((item.result or {}).get("metrics") or {})
    metric = next(((k, metrics[k]) for k in _METRIC_ORDER if k in metrics), None)
    starts = [t for t in (parse_time(a.start) for a in item.attempts) if t]
    ends = [t for t in (parse_time(a.end) for a in item.attempts) if t]
    elapsed = None
    if starts:
        end = now if running else (max(ends) if ends else now)
        elapsed = (end - min(starts)).total_seconds()
    # the recorded spend when the run is over; the same seconds on-demand: what spot saved
    cost = cost_report(item.attempts, price_fn(), now, cost_usd=item.cost_usd)
    return {
        "job": item.job,
        "state": item.status.value,
        "running": running,
        "attempt": last.number if last else None,
        "capacity": last.capacity if last else None,
        "epoch": progress.epoch if progress else None,
        "epochs": progress.epochs if progress else None,
        "metric": {"name": metric[0], "value": metric[1]} if metric else None,
        "elapsed_seconds": round(elapsed, 1) if elapsed is not None else None,
        "cost_usd": cost.cost_usd,
        "on_demand_usd": cost.on_demand_usd,
        "saving_percent": cost.saving_pct,
        "cost": cost.words() if item.attempts else None,
        "interruptions": sum(1 for a in item.attempts if a.outcome == ErrorName.SPOT_INTERRUPTED),
        "message": item.message,
        # the instance-slot queue: its place while it waits (docs/ARCHITECTURE.md, "Capacity queue")
        "queue": (
            {
                "position": item.queue.position,
                "ahead": item.queue.ahead,
                "running": item.queue.running,
                "slots": item.queue.slots,
            }
            if item.status == JobStatus.QUEUED and item.queue and item.queue.position
            else None
        ),
    }


def _money(row: dict[str, Any]) -> str:
    if row["cost_usd"] is None:
        return "-"
    saving = f" (-{row['saving_percent']}%)" if row.get("saving_percent") else ""
    return f"${row['cost_usd']:.2f}{saving}"


def jobs_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        ["JOB", "STATE", "ATTEMPT", "CAPACITY", "EPOCH", "LAST METRIC", "ELAPSED", "COST", "INTERRUPTIONS"]
    ]
    for r in rows:
        epoch = f"{r['epoch']}/{r['epochs']}" if r["epochs"] else "-"
        metric = f"{r['metric']['name']} {r['metric']['value']:.3f}" if r["metric"] else "-"
        queue = r.get("queue")
        state = f"queued {queue['position']} ({queue['ahead']} ahead)" if queue else r["state"]
        lines.append(
            [
                r["job"],
                state,
                str(r["attempt"] or "-"),
                str(r["capacity"] or "-"),
                epoch,
                metric,
                clock(r["elapsed_seconds"]),
                _money(r),
                str(r["interruptions"]),
            ]
        )
    return table(lines, right=(2, 4, 6, 7, 8))


def job_detail(deployment: Deployment, job: str) -> dict[str, Any]:
    item = job_item(deployment, job)
    now = dt.datetime.now(dt.UTC)
    price = price_fn()
    attempts = [
        {
            "attempt": a.number,
            "instance": a.instance,
            "instance_type": a.instance_type,
            "az": a.az,
            "capacity": a.capacity,
            "seconds": round(attempt_seconds(a, now), 1) if a.start else None,
            "cost_usd": run_cost([a], price, now),
            "outcome": str(a.outcome),
        }
        for a in item.attempts
    ]
    arn = item.execution
    if arn is None:
        found = executions_of(deployment, job, limit=50)
        arn = found[0]["executionArn"] if found else None
    states = _states(deployment, arn) if arn else []
    plots = _plots(deployment, job)
    return {
        **job_row(item, now),
        "run_id": item.run_id,
        "execution": arn,
        "attempts": attempts,
        "states": states,
        "plots": plots,
    }


def _states(deployment: Deployment, arn: str) -> list[dict[str, Any]]:
    """Each state entered, with its time and how it ended (the console's event list)."""
    sfn = deployment.client("stepfunctions")
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events.extend(page["events"])
    rows: list[dict[str, Any]] = []
    for event in events:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            rows.append(
                {
                    "state": event["stateEnteredEventDetails"]["name"],
                    "entered": event["timestamp"],
                    "error": None,
                }
            )
        elif kind.endswith("Failed") or kind.endswith("TimedOut") or kind == "ExecutionAborted":
            details: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            target = rows[-1] if rows else {"state": kind}
            target["error"] = details.get("error") or kind
            if not rows:
                rows.append(target)
        elif kind.startswith("Execution") and kind != "ExecutionStarted":
            rows.append(
                {
                    "state": kind.removeprefix("Execution").lower(),
                    "entered": event["timestamp"],
                    "error": None,
                }
            )
    return rows


def _plots(deployment: Deployment, job: str) -> list[str]:
    prefix = weights_prefix(job) + "plots/"
    listed = deployment.client("s3").list_objects_v2(Bucket=deployment.bucket, Prefix=prefix)
    return [obj["Key"][len(prefix) :] for obj in listed.get("Contents", [])]


def detail_text(detail: dict[str, Any]) -> str:
    head = [
        f"{detail['job']}: {detail['state']}"
        + (f" · epoch {detail['epoch']}/{detail['epochs']}" if detail["epochs"] else ""),
        f"  run {detail['run_id'] or '-'} · execution {(detail['execution'] or '-').rsplit(':', 1)[-1]}",
        f"  cost {detail['cost'] or '$0.00'} (on-demand ${detail['on_demand_usd']:.2f}) · "
        f"{detail['interruptions']} interruption(s) · "
        f"elapsed {clock(detail['elapsed_seconds'])}",
    ]
    if detail.get("queue"):
        q = detail["queue"]
        head.append("  " + queue_words(QueueInfo(ticket=0, **q)))
    if detail.get("message"):
        head.append(f"  {detail['message'].splitlines()[0]}")
    parts = ["\n".join(head)]
    if detail["attempts"]:
        rows = [["ATTEMPT", "TYPE", "AZ", "CAPACITY", "SECONDS", "COST", "OUTCOME"]]
        for a in detail["attempts"]:
            secs = "-" if a["seconds"] is None else f"{a['seconds']:.0f}"
            rows.append(
                [
                    str(a["attempt"]),
                    a["instance_type"] or "-",
                    a["az"] or "-",
                    a["capacity"],
                    secs,
                    f"${a['cost_usd']:.2f}",
                    a["outcome"],
                ]
            )
        parts.append(table(rows, right=(0, 4, 5)))
    if detail["states"]:
        start = detail["states"][0]["entered"]
        rows = [["+TIME", "STATE", "ERROR"]]
        for s in detail["states"]:
            rows.append([clock((s["entered"] - start).total_seconds()), s["state"], s["error"] or ""])
        parts.append(table(rows, right=(0,)))
    if detail["plots"]:
        parts.append("plots: " + ", ".join(detail["plots"]))
    return "\n\n".join(parts)


def run_status(args: argparse.Namespace) -> int:
    deployment = connect(args.stack, args.endpoint_url)
    if args.job:
        detail = job_detail(deployment, args.job)
        print(json.dumps(detail, indent=2, default=str) if args.json else detail_text(detail))
        return exits.OK
    rows = [job_row(item) for item in all_items(deployment)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print(f"no jobs yet in stack {deployment.stack!r}: spotyolo submit DIR starts one")
    else:
        print(jobs_table(rows))
    return exits.OK
