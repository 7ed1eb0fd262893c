"""``spotyolo submit DIR``: check the job here, upload it, and say which execution trains it.

The checks are the Validate step's (``spotyolo validate``): a bad job fails before a byte is
uploaded. The upload ends with ``config.yaml``, whose arrival starts the execution; the command
finds that execution by its input (the start rule's ``{"bucket", "key"}``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from spotyolo.cli import exits
from spotyolo.cli.deployment import Deployment, connect
from spotyolo.cli.exits import CliError
from spotyolo.cli.follow import Follower
from spotyolo.cli.jobs import check_name, input_job
from spotyolo.cli.upload import upload_job
from spotyolo.contract.layout import config_key
from spotyolo.core.config import inspect_job
from spotyolo.core.dataset import LocalSource
from spotyolo.core.yamlsafe import problems_error


def check_folder(folder: Path, job: str) -> None:
    """The Validate step's checks on the local folder; a bad job raises (nothing uploaded)."""
    if not folder.is_dir():
        raise CliError(f"{folder}: not a folder; give the job folder (config.yaml + dataset/)", exits.INVALID)
    check_name(job)
    config, _summary, problems = inspect_job(LocalSource(folder))
    if problems or config is None:
        raise CliError(
            f"{problems_error(problems, f'job folder {folder}')}\nnothing was uploaded", exits.INVALID
        )


def run_submit(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    job = args.job or folder.resolve().name
    check_folder(folder, job)
    deployment = connect(args.stack, args.endpoint_url)
    before = _execution_arns(deployment)
    started = time.monotonic()
    report = upload_job(deployment.client("s3"), deployment.bucket, job, folder)  # progress: stderr
    execution = wait_for_started(deployment, job, before)
    follow = f"spotyolo status {job} · spotyolo logs {job} --follow"
    if not args.json:
        print(
            f"{job}: {report.uploaded} files uploaded, {report.skipped} already there "
            f"({report.bytes / 1e6:.1f} MB, {time.monotonic() - started:.1f} s)"
        )
        print(f"execution {execution.rsplit(':', 1)[-1]} started")
        if not deployment.local:
            region = execution.split(":")[3]
            print(
                f"console: https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution}"
            )
        print(
            f"follow it: {follow}" if not args.wait else "following it (Ctrl-C stops following, not the run):"
        )
    result: dict[str, Any] = {
        "job": job,
        "execution": execution,
        "uploaded": report.uploaded,
        "skipped": report.skipped,
        "bytes": report.bytes,
    }
    code = exits.OK
    if args.wait:
        result.update(Follower(deployment, job, execution, quiet=args.json).run())
        code = exits.OK if result["success"] else exits.FAILED
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return code


def _execution_arns(deployment: Deployment) -> set[str]:
    sfn = deployment.client("stepfunctions")
    listed = sfn.list_executions(stateMachineArn=deployment.state_machine, maxResults=100)["executions"]
    return {e["executionArn"] for e in listed}


def wait_for_started(deployment: Deployment, job: str, before: set[str], timeout: float = 60.0) -> str:
    """The execution the upload of ``config.yaml`` started (EventBridge takes a moment)."""
    sfn = deployment.client("stepfunctions")
    key = config_key(job)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = sfn.list_executions(stateMachineArn=deployment.state_machine, maxResults=20)["executions"]
        for execution in listed:
            if execution["executionArn"] in before:
                continue
            raw = sfn.describe_execution(executionArn=execution["executionArn"]).get("input")
            if input_job(raw) == job and key in (raw or ""):
                return str(execution["executionArn"])
        time.sleep(1.0)
    raise CliError(
        f"{key} was uploaded but no execution started: check the stack's upload rule "
        "(EventBridge notifications on the bucket) and its DeadLetterQueueUrl output",
        exits.BUSY,
    )
