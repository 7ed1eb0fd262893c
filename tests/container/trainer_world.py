"""A small AWS world for the trainer: bucket, job table, and real task tokens from moto.

Each attempt gets a real token from a one-state machine whose Task is
``sqs:sendMessage.waitForTaskToken``: the token arrives in an SQS message, is stored in the
job table like Launch trainer does, and the execution's end shows what the trainer answered.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spotyolo.contract import layout
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import AttemptRecord, DatasetSummary, JobConfig, JobSpec

TABLE = "spotyolo-jobs"
BUCKET = "spotyolo-test"


def token_machine(
    sfn: Any, sqs: Any, iam: Any, *, heartbeat: int = 120, timeout: int = 900
) -> tuple[str, str]:
    """(state machine ARN, queue URL) of a machine that hands its task token to SQS and waits."""
    queue = sqs.create_queue(QueueName=f"tokens-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    try:
        role = iam.get_role(RoleName="sfn")["Role"]["Arn"]
    except Exception:
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {
        "StartAt": "Launch trainer",
        "States": {
            "Launch trainer": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                "HeartbeatSeconds": heartbeat,
                "TimeoutSeconds": timeout,
                "End": True,
            }
        },
    }
    arn = sfn.create_state_machine(
        name=f"tokens-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    return arn, queue


@dataclass
class World:
    s3: Any
    ddb: Any
    sfn: Any
    sqs: Any
    iam: Any
    machine: str
    queue: str

    @property
    def table(self) -> JobTable:
        return JobTable(self.ddb, TABLE)

    @classmethod
    def create(cls, s3: Any, ddb: Any, sfn: Any, sqs: Any, iam: Any, **machine: int) -> World:
        s3.create_bucket(Bucket=BUCKET)
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        arn, queue = token_machine(sfn, sqs, iam, **machine)
        return cls(s3, ddb, sfn, sqs, iam, arn, queue)

    # ------------------------------------------------------------ a job and its run

    def upload_job(self, job: str, job_dir: Path, run_id: str, **overrides: Any) -> JobSpec:
        """Upload config + dataset, write job.json and take the job's lock for ``run_id``."""
        raw = yaml.safe_load((job_dir / "config.yaml").read_text())
        raw.update(overrides)
        config = JobConfig(**raw)
        total = files = 0
        for path in sorted((job_dir / "dataset").rglob("*")):
            if path.is_file():
                rel = path.relative_to(job_dir / "dataset").as_posix()
                self.s3.upload_file(str(path), BUCKET, layout.dataset_prefix(job) + rel)
                total += path.stat().st_size
                files += 1
        self.s3.put_object(Bucket=BUCKET, Key=layout.config_key(job), Body=yaml.safe_dump(raw).encode())
        spec = JobSpec(
            name=job,
            bucket=BUCKET,
            run_id=run_id,
            execution=f"exec-{job}-{run_id}",
            config=config,
            dataset=DatasetSummary(files=files, bytes=total),
            instance_types=config.resolved_instance_types(),
            deadline=int(time.time()) + 3600,
            stall_seconds=int(config.stall_hours * 3600),
        )
        self.s3.put_object(Bucket=BUCKET, Key=layout.job_json_key(job, run_id), Body=spec.model_dump_json())
        self.table.acquire_lock(job, spec.execution, run_id, lambda _arn: True)
        return spec

    def start_attempt(self, spec: JobSpec, number: int) -> str:
        """Start an execution, store its token as attempt ``number``; returns the execution ARN."""
        execution = self.sfn.start_execution(
            stateMachineArn=self.machine, name=f"{spec.name}-{number}-{uuid.uuid4().hex[:6]}", input="{}"
        )["executionArn"]
        token = None
        for _ in range(100):
            for message in self.sqs.receive_message(QueueUrl=self.queue, WaitTimeSeconds=0).get(
                "Messages", []
            ):
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
                token = json.loads(message["Body"])["token"]
            if token:
                break
            time.sleep(0.05)
        assert token, "the token state machine never sent its token"
        record = AttemptRecord(number=number, capacity="spot")
        assert self.table.start_attempt(spec.name, spec.execution, record, token)
        return execution

    def outcome(self, execution: str, wait: float = 10.0) -> dict[str, Any]:
        """describe_execution once it is no longer RUNNING."""
        deadline = time.monotonic() + wait
        while True:
            described = self.sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING" or time.monotonic() > deadline:
                return described
            time.sleep(0.05)

    def env(self, spec: JobSpec, attempt: int, workdir: Path, **extra: str) -> dict[str, str]:
        return {
            "JOB": spec.name,
            "RUN_ID": spec.run_id,
            "ATTEMPT": str(attempt),
            "BUCKET": BUCKET,
            "JOB_TABLE": TABLE,
            "AWS_REGION": "us-east-1",
            "SPOTYOLO_WORKDIR": str(workdir),
            **extra,
        }
