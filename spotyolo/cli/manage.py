"""``spotyolo cancel | retrain | weights | logs JOB``: acting on one job by its name."""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from spotyolo.cli import exits
from spotyolo.cli.deployment import Deployment, connect
from spotyolo.cli.exits import CliError
from spotyolo.cli.follow import Follower
from spotyolo.cli.jobs import executions_of, job_item
from spotyolo.contract.layout import config_key, previous_weights_prefix, weights_prefix
from spotyolo.contract.outputs import trainer_log_stream
from spotyolo.core.awserrors import error_code
from spotyolo.core.config import inspect_config
from spotyolo.core.fleet import run_instances_of
from spotyolo.core.yamlsafe import problems_error

# ---------------------------------------------------------------------- cancel


def run_cancel(args: argparse.Namespace) -> int:
    """Delete ``config.yaml`` (the pipeline's cancel path: the cancel Lambda stops the execution,
    terminates the instance and releases the lock), then wait until that is done."""
    deployment = connect(args.stack, args.endpoint_url)
    item = job_item(deployment, args.job)
    running = executions_of(deployment, args.job, status="RUNNING")
    if item.execution is None and not running:
        raise CliError(
            f"job {args.job!r} is not running ({item.status.value}): nothing to cancel", exits.NOT_FOUND
        )
    execution = item.execution or running[0]["executionArn"]
    s3, sfn = deployment.client("s3"), deployment.client("stepfunctions")
    s3.delete_object(Bucket=deployment.bucket, Key=config_key(args.job))
    if item.execution is None:  # not yet holding the lock (waiting for its upload to settle)
        sfn.stop_execution(executionArn=execution, error="Cancelled", cause=f"spotyolo cancel {args.job}")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = deployment.table().get(args.job)
        live = run_instances_of(
            deployment.client("ec2"), args.job, states=["pending", "running", "shutting-down"]
        )
        status = sfn.describe_execution(executionArn=execution)["status"]
        if now is not None and now.execution is None and not live and status != "RUNNING":
            print(
                f"cancelled {args.job}: execution {execution.rsplit(':', 1)[-1]} {status.lower()}, "
                "its instance terminated and the job's lock released. "
                f"jobs/{args.job}/config.yaml was deleted: `spotyolo submit` uploads it again."
            )
            return exits.OK
        time.sleep(1.0)
    raise CliError(
        f"cancel of {args.job} asked (config.yaml deleted) but the clean up did not finish within "
        f"{args.timeout:.0f} s: see `spotyolo status {args.job}`",
        exits.BUSY,
    )


# ---------------------------------------------------------------------- retrain


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, each value read as YAML (``epochs=30``, ``capacity=on-demand``,
    ``instance_types=[g5.xlarge,g6.xlarge]``); ``target.min=0.6`` sets one key of a mapping."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {pair!r}: write key=value, e.g. --set epochs=30", exits.INVALID)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        top, _, sub = key.strip().partition(".")
        if sub:
            nested = overrides.setdefault(top, {})
            if not isinstance(nested, dict):
                raise CliError(f"--set {pair!r}: {top} is set twice", exits.INVALID)
            nested[sub] = value
        else:
            overrides[top] = value
    return overrides


def run_retrain(args: argparse.Namespace) -> int:
    """Check the overrides against the job's config.yaml as Validate will, then start an
    execution with ``{"job", "force": true, "overrides"}``."""
    deployment = connect(args.stack, args.endpoint_url)
    item = job_item(deployment, args.job)
    overrides = parse_sets(args.set or [])
    key = config_key(args.job)
    try:
        text = deployment.client("s3").get_object(Bucket=deployment.bucket, Key=key)["Body"].read()
    except ClientError as err:
        if error_code(err) in ("NoSuchKey", "404"):
            raise CliError(
                f"{key} is not in the bucket (cancelled?): `spotyolo submit DIR` uploads the job again",
                exits.NOT_FOUND,
            ) from err
        raise
    if overrides.get("target") and isinstance(overrides["target"], dict):
        current = (yaml.safe_load(text) or {}).get("target")
        if isinstance(current, dict):
            overrides["target"] = {**current, **overrides["target"]}
    config, problems = inspect_config(text, f"s3://{deployment.bucket}/{key}", overrides=overrides)
    if problems or config is None:
        raise CliError(
            f"{problems_error(problems, f'job {args.job} with --set')}\nnothing was started", exits.INVALID
        )
    if item.execution is not None:
        raise CliError(
            f"job {args.job!r} is running (execution {item.execution.rsplit(':', 1)[-1]}): "
            f"wait for it, or `spotyolo cancel {args.job}` first",
            exits.BUSY,
        )
    payload = {"job": args.job, "force": True, "overrides": overrides, "bucket": deployment.bucket}
    name = (
        re.sub(r"[^A-Za-z0-9_-]", "-", args.job)[:40]
        + f"-retrain-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    )
    arn: str = deployment.client("stepfunctions").start_execution(
        stateMachineArn=deployment.state_machine, name=name, input=json.dumps(payload)
    )["executionArn"]
    result: dict[str, Any] = {"job": args.job, "execution": arn, "overrides": overrides}
    if not args.json:
        shown = " ".join(f"{k}={v}" for k, v in overrides.items()) or "no overrides"
        print(f"retraining {args.job} ({shown}): execution {name} started")
    code = exits.OK
    if args.wait:
        result.update(Follower(deployment, args.job, arn, quiet=args.json).run())
        code = exits.OK if result["success"] else exits.FAILED
    elif not args.json:
        print(f"follow it: spotyolo status {args.job} · spotyolo logs {args.job} --follow")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return code


# ---------------------------------------------------------------------- weights


def run_weights(args: argparse.Namespace) -> int:
    """Download ``weights/<job>/`` (weights, metrics, plots; not ``previous/``)."""
    deployment = connect(args.stack, args.endpoint_url)
    s3 = deployment.client("s3")
    prefix, previous = weights_prefix(args.job), previous_weights_prefix(args.job)
    dest = Path(args.to) if args.to else Path("outputs") / args.job
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=deployment.bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []) if not o["Key"].startswith(previous))
    if not keys:
        job_item(deployment, args.job)  # an unknown job says so
        raise CliError(
            f"job {args.job!r} has no weights yet: see `spotyolo status {args.job}`", exits.NOT_FOUND
        )
    written = []
    for key in sorted(keys):
        target = dest / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(deployment.bucket, key, str(target))
        written.append(target)
    if args.json:
        print(json.dumps({"job": args.job, "to": str(dest), "files": [str(p) for p in written]}, indent=2))
    else:
        listed = ", ".join(p.relative_to(dest).as_posix() for p in written)
        print(f"{len(written)} files of weights/{args.job}/ in {dest}/: {listed}")
    return exits.OK


# ---------------------------------------------------------------------- logs


def run_logs(args: argparse.Namespace) -> int:
    """The trainer's CloudWatch log stream of one attempt (the current or last by default)."""
    deployment = connect(args.stack, args.endpoint_url)
    item = job_item(deployment, args.job)
    if not item.run_id or not item.attempts:
        raise CliError(f"job {args.job!r} has no attempt yet: no trainer log", exits.NOT_FOUND)
    number = args.attempt or item.attempts[-1].number
    if number not in {a.number for a in item.attempts}:
        known = ", ".join(str(a.number) for a in item.attempts)
        raise CliError(
            f"job {args.job!r} has no attempt {number} in run {item.run_id} (attempts: {known})",
            exits.NOT_FOUND,
        )
    stream = trainer_log_stream(args.job, item.run_id, number)
    reader = _LogReader(deployment.client("logs"), deployment.log_group, stream)
    shown = reader.read()
    while args.follow and _attempt_running(deployment, args.job, item.run_id, number):
        time.sleep(1.0)
        shown += reader.read()
    if args.follow:
        time.sleep(1.0)  # the last lines the log driver sends as the trainer exits
    shown += reader.read()
    if not shown and not reader.exists:
        raise CliError(
            f"no log stream {stream} in {deployment.log_group} yet (the instance may still be booting)",
            exits.NOT_FOUND,
        )
    return exits.OK


def _attempt_running(deployment: Deployment, job: str, run_id: str, number: int) -> bool:
    item = deployment.table().get(job)
    return bool(
        item and item.run_id == run_id and item.execution and item.current and item.current.number == number
    )


class _LogReader:
    def __init__(self, logs: Any, group: str, stream: str) -> None:
        self.logs, self.group, self.stream = logs, group, stream
        self.token: str | None = None
        self.exists = False

    def read(self) -> int:
        """Print the events that arrived since the last read; how many."""
        shown = 0
        while True:
            kwargs: dict[str, Any] = {
                "logGroupName": self.group,
                "logStreamName": self.stream,
                "startFromHead": True,
            }
            if self.token:
                kwargs["nextToken"] = self.token
            try:
                page = self.logs.get_log_events(**kwargs)
            except ClientError as err:
                if error_code(err) == "ResourceNotFoundException":
                    return shown
                raise
            self.exists = True
            for event in page["events"]:
                print(event["message"], flush=True)
            shown += len(page["events"])
            if page.get("nextForwardToken") in (None, self.token) or not page["events"]:
                self.token = page.get("nextForwardToken") or self.token
                return shown
            self.token = page["nextForwardToken"]
