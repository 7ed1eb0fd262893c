"""``python -m spotyolo.trainer`` as a real process against a moto server, as the local engine runs it."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer
from trainer_world import World

from spotyolo.local.imds import FakeMetadataService
from spotyolo.trainer.outcome import ExitCode

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    saved_config = copy.deepcopy(default_user_config)  # the POST below changes it process-wide
    previous = os.environ.get("MOTO_PORT")
    os.environ["MOTO_PORT"] = str(port)  # the state machine's own SQS call goes back to this server
    url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(
        f"{url}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()
    try:
        yield url
    finally:
        moto.stop()
        default_user_config.clear()
        default_user_config.update(saved_config)
        if previous is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = previous


def test_token_no_longer_valid_stops_the_process_within_one_heartbeat(
    server: str, shapes_job: Path, tmp_path: Path, ultralytics_offline: Path
):
    clients = {
        name: boto3.client(name, endpoint_url=server)
        for name in ("s3", "dynamodb", "stepfunctions", "sqs", "iam")
    }
    world = World.create(
        clients["s3"], clients["dynamodb"], clients["stepfunctions"], clients["sqs"], clients["iam"]
    )
    spec = world.upload_job("cancelled", shapes_job, "r1", epochs=40)
    execution = world.start_attempt(spec, 1)
    with FakeMetadataService(instance_id="i-0process") as imds:
        env = {
            **os.environ,
            **world.env(spec, 1, tmp_path / "work"),
            "AWS_ENDPOINT_URL": server,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
            "SPOTYOLO_HEARTBEAT_SECONDS": str(INTERVAL),
            "PYTHONUNBUFFERED": "1",
        }
        log = (tmp_path / "trainer.out").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "spotyolo.trainer"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:  # wait until it trains
                progress = world.table.get("cancelled").progress
                if progress and progress.epoch >= 1:
                    break
                assert process.poll() is None, (tmp_path / "trainer.out").read_text()
                assert time.monotonic() < deadline, "the trainer never finished an epoch"
                time.sleep(0.2)
            # nobody waits any more (the job was cancelled, or its token timed out); moto ends the
            # execution asynchronously: the token is invalid once it is no longer RUNNING
            world.sfn.stop_execution(executionArn=execution, error="Cancelled")
            while world.sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
                time.sleep(0.05)
            stopped = time.monotonic()
            invalid_at = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
            code = process.wait(timeout=60)
            elapsed = time.monotonic() - stopped
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    output = (tmp_path / "trainer.out").read_text()
    assert code == ExitCode.TASK_GONE, output
    # the next heartbeat (at a batch end, at most one interval later) fails; then a prompt exit
    assert elapsed < INTERVAL + 4, (
        f"took {elapsed:.1f} s to stop (token invalid at {invalid_at}):\n{output[-3000:]}"
    )
    assert "InvalidToken" in output or "TaskTimedOut" in output
    progress = world.table.get("cancelled").progress
    assert progress is not None and progress.epoch < 40
