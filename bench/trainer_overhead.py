"""What the trainer costs on top of plain Ultralytics, on the sample job.

    .venv/bin/python bench/trainer_overhead.py [--epochs 60] [--repeat 1]

Generates the shapes dataset (examples/generate_shapes.py, its default counts at the config's
imgsz), then
times, in one invocation and on the same machine:

- plain: ``yolo detect train`` with examples/shapes/config.yaml's training arguments;
- trainer: ``python -m spotyolo.trainer`` on the same job against the AWS emulator (moto's server in
  its own process): token from the job table, dataset download, the checkpoint to S3 by the
  default policy (``checkpoint_minutes`` 10: here only after the last epoch), progress to the
  table every epoch, heartbeats, the interruption watcher polling a fake metadata service,
  artifacts and SendTaskSuccess at the end;
- with ``--every-epoch``, also the trainer with a checkpoint upload after every epoch
  (``SPOTYOLO_CHECKPOINT_SECONDS=0.001``, the policy before issue 11), for comparison.

All are wall times of the whole process (Python start and imports included). Prints a
Markdown row for bench/README.md. Goal: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotyolo.contract import layout  # noqa: E402
from spotyolo.core.jobtable import JobTable  # noqa: E402
from spotyolo.core.models import AttemptRecord, DatasetSummary, JobConfig, JobSpec  # noqa: E402
from spotyolo.local.imds import FakeMetadataService  # noqa: E402

BUCKET, TABLE, JOB, RUN = "bench", "bench-jobs", "shapes", "bench-run"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_shapes", ROOT / "examples" / "generate_shapes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOTO_PORT": str(port)}  # the state machine's SQS call comes back here
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
            urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/config", data=body, method="POST"))
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto server did not start")


def run_plain(data_yaml: Path, args: dict[str, Any], model: str, out: Path, env: dict[str, str]) -> float:
    cmd = [
        str(Path(sys.executable).parent / "yolo"),
        "detect",
        "train",
        f"data={data_yaml}",
        f"model={model}",
    ]
    cmd += [f"{k}={v}" for k, v in args.items()]
    cmd += [f"project={out}", "name=plain", "exist_ok=True"]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def task_token(clients: dict[str, Any], name: str, heartbeat_seconds: int) -> tuple[str, str]:
    """A real task token: a one-state machine (execution ``name``) hands it to SQS and waits on
    it. Returns (execution ARN, token)."""
    sfn, sqs = clients["stepfunctions"], clients["sqs"]
    queue = sqs.create_queue(QueueName=f"tokens-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    role = clients["iam"].create_role(RoleName=f"sfn-{uuid.uuid4().hex[:6]}", AssumeRolePolicyDocument="{}")
    definition = {
        "StartAt": "Launch trainer",
        "States": {
            "Launch trainer": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                "HeartbeatSeconds": heartbeat_seconds,
                "TimeoutSeconds": 7200,
                "End": True,
            }
        },
    }
    machine = sfn.create_state_machine(
        name=f"bench-{uuid.uuid4().hex[:6]}", definition=json.dumps(definition), roleArn=role["Role"]["Arn"]
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name=name, input="{}")["executionArn"]
    token = None
    while token is None:
        messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
        token = json.loads(messages[0]["Body"])["token"] if messages else None
    return execution, token


def stage_job(
    clients: dict[str, Any], dataset: Path, bucket: str = BUCKET, table: str = TABLE, job: str = JOB
) -> int:
    """The bucket, the job table and the job's dataset in S3, as an upload leaves them: the
    dataset's size in bytes."""
    clients["s3"].create_bucket(Bucket=bucket)
    clients["dynamodb"].create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    total = 0
    for path in sorted(dataset.rglob("*")):
        if path.is_file():
            key = layout.dataset_prefix(job) + path.relative_to(dataset).as_posix()
            clients["s3"].upload_file(str(path), bucket, key)
            total += path.stat().st_size
    return total


def run_trainer(
    dataset: Path,
    config: JobConfig,
    url: str,
    work: Path,
    env: dict[str, str],
    attempt_no: int,
    show_log: bool = False,
    extra_env: dict[str, str] | None = None,
) -> float:
    clients: dict[str, Any] = {
        n: boto3.client(n, endpoint_url=url) for n in ("s3", "dynamodb", "stepfunctions", "sqs", "iam")
    }
    s3, sfn = clients["s3"], clients["stepfunctions"]
    table = JobTable(clients["dynamodb"], TABLE)
    run_id = f"{RUN}-{attempt_no}"
    if attempt_no == 1:
        (work / "dataset-bytes").write_text(str(stage_job(clients, dataset)))
    total = int((work / "dataset-bytes").read_text())
    spec = JobSpec(
        name=JOB,
        bucket=BUCKET,
        run_id=run_id,
        execution=f"exec-{run_id}",
        config=config,
        dataset=DatasetSummary(bytes=total),
        instance_types=config.resolved_instance_types(),
        deadline=int(time.time()) + 7200,
        stall_seconds=int(config.stall_hours * 3600),
    )
    s3.put_object(Bucket=BUCKET, Key=layout.job_json_key(JOB, run_id), Body=spec.model_dump_json())
    if attempt_no > 1:
        table.release_lock(JOB, f"exec-{RUN}-{attempt_no - 1}", "complete")
    table.acquire_lock(JOB, spec.execution, run_id, lambda _arn: True)

    execution, token = task_token(clients, run_id, spec.stall_seconds)
    table.start_attempt(JOB, spec.execution, AttemptRecord(number=1, capacity="spot"), token)

    with FakeMetadataService(instance_id="i-0bench") as imds:
        trainer_env = {
            **env,
            "JOB": JOB,
            "RUN_ID": run_id,
            "ATTEMPT": "1",
            "BUCKET": BUCKET,
            "JOB_TABLE": TABLE,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
            "SPOTYOLO_WORKDIR": str(work / run_id),
            **(extra_env or {}),
        }
        start = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-m", "spotyolo.trainer"],
            env=trainer_env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode
        seconds = time.perf_counter() - start
    if show_log:
        print((work / run_id / JOB / run_id / "trainer.log").read_text())
    status = sfn.describe_execution(executionArn=execution)["status"]
    if code != 0 or status != "SUCCEEDED":
        raise RuntimeError(f"trainer exited {code}, execution {status}: see {work / run_id}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs than config.yaml's 60")
    parser.add_argument("--repeat", type=int, default=1, help="run each side N times, keep the fastest")
    parser.add_argument("--show-log", action="store_true", help="print the trainer's run log")
    parser.add_argument(
        "--every-epoch", action="store_true", help="also time the trainer uploading a checkpoint every epoch"
    )
    options = parser.parse_args()

    raw = yaml.safe_load((ROOT / "examples" / "shapes" / "config.yaml").read_text())
    if options.epochs:
        raw["epochs"] = options.epochs
    config = JobConfig(**raw)
    args = config.train_args()
    with tempfile.TemporaryDirectory(prefix="spotyolo-bench-") as tmp:
        work = Path(tmp)
        generator = _generator()
        data_yaml = generator.generate(
            work / "dataset", size=config.imgsz, seed=0
        )  # the demo's default counts
        counts = {
            split: len(list((work / "dataset" / split / "images").iterdir())) for split in ("train", "val")
        }
        env = {
            **os.environ,
            "YOLO_OFFLINE": "1",
            "YOLO_CONFIG_DIR": str(work / "yolo-config"),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(
            {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        )
        os.environ["YOLO_CONFIG_DIR"] = env["YOLO_CONFIG_DIR"]
        from spotyolo.trainer.offline import prepare_ultralytics

        prepare_ultralytics(env["YOLO_CONFIG_DIR"])
        port = free_port()
        server = start_moto(port)
        plain: list[float] = []
        ours: list[float] = []
        every: list[float] = []
        try:
            for _ in range(options.repeat):  # alternate, so drift in machine load hits both
                plain.append(run_plain(data_yaml, args, config.model, work / "plain", env))
                print(f"plain yolo detect train: {plain[-1]:.2f} s", flush=True)
                ours.append(
                    run_trainer(
                        work / "dataset",
                        config,
                        f"http://127.0.0.1:{port}",
                        work,
                        env,
                        len(ours) + len(every) + 1,
                        options.show_log,
                    )
                )
                print(f"python -m spotyolo.trainer:       {ours[-1]:.2f} s", flush=True)
                if options.every_epoch:
                    every.append(
                        run_trainer(
                            work / "dataset",
                            config,
                            f"http://127.0.0.1:{port}",
                            work,
                            env,
                            len(ours) + len(every) + 1,
                            extra_env={"SPOTYOLO_CHECKPOINT_SECONDS": "0.001"},
                        )
                    )
                    print(f"  the same, a checkpoint every epoch: {every[-1]:.2f} s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
    best_plain, best_ours = min(plain), min(ours)
    print(
        f"| trainer: sample job ({config.epochs} epochs, {config.model}, {config.imgsz} px, "
        f"{counts['train']}/{counts['val']} images) | "
        f"{best_ours:.2f} s | `yolo detect train`: {best_plain:.2f} s | {best_ours / best_plain:.2f} |"
    )
    if every:
        print(
            f"| the same, a checkpoint upload after every epoch | {min(every):.2f} s | "
            f"`yolo detect train`: {best_plain:.2f} s | {min(every) / best_plain:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
