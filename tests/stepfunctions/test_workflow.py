"""The real training_pipeline.asl.json executed by moto's state machine engine, in-process.

Lambda invocations go to the real handlers (functions/*.py) through spotyolo.local.moto_patches;
the EC2 "instance" is a thread here that reads its task token from the job table and answers
the way a trainer would (success, spot interruption, silence, divergence, a crash). Waits are
kept to seconds through the job's config (stall_hours) and the launch backoff settings.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spotyolo.contract import layout
from spotyolo.contract.asl import render_asl
from spotyolo.contract.env import Settings
from spotyolo.contract.lambdas import LAMBDAS
from spotyolo.core import fleet
from spotyolo.core.jobtable import JobTable
from spotyolo.core.slots import create_table as create_slot_table
from spotyolo.local import moto_patches
from spotyolo.local.functions import LambdaHandler, load_handlers
from spotyolo.steps import launch
from spotyolo.trainer.outcome import TaskGone
from spotyolo.trainer.task import TaskChannel, attempt_token

REGION = "us-east-1"
BUCKET = "spotyolo-test"
TABLE = "spotyolo-jobs"
SLOTS = "spotyolo-slots"
BASE_CONFIG = (
    "model: yolo11n.yaml\nepochs: 3\nimgsz: 64\nbatch: 8\nworkers: 0\nplots: false\n"
    "instance_types: [g5.xlarge, g6.xlarge]\ncapacity: spot\nmax_interruptions: 2\n"
    "stall_hours: 0.001\nmax_hours: 1\ntarget: {metric: recall, min: 0.8}\n"
)


def eventbridge(detail_type: str, source: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "0d2b4d7e-0000-0000-0000-000000000000",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-11-01T00:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


@dataclass
class FakeInstances:
    """Plays the trainer on every instance the pipeline launches: behaviour per attempt number."""

    world: World
    behaviour: dict[int, str] = field(default_factory=dict)
    #: behaviours of the next instances in launch order, before ``behaviour``
    queue: list[str] = field(default_factory=list)
    #: lets the "late" and "wait" trainers report
    release: threading.Event = field(default_factory=threading.Event)
    #: "late" trainers heartbeat while this is set
    beat: threading.Event = field(default_factory=threading.Event)
    heartbeats: int = 0
    #: instance -> how a "late" trainer ended: succeeded, gone (TaskGone) or killed
    late: dict[str, str] = field(default_factory=dict)
    job: str = "shapes"
    recall: float = 0.9
    seen: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                for inst in fleet.run_instances_of(self.world.ec2, self.job, states=["running"]):
                    if inst["InstanceId"] not in self.seen:
                        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                        self.seen[inst["InstanceId"]] = int(tags["attempt"])
                        what = self.queue.pop(0) if self.queue else self.behaviour.get(int(tags["attempt"]))
                        self._act(inst["InstanceId"], tags, what or "succeed")
                time.sleep(0.05)
        except BaseException as err:  # surfaced by the test
            self.errors.append(err)

    def _token(self, job: str, run: str, attempt: int) -> str:
        for _ in range(100):
            token = attempt_token(self.world.table, job, run, attempt)()
            if token:
                return token
            time.sleep(0.05)
        raise AssertionError(f"no task token for {job} attempt {attempt}")

    def _alive(self, instance_id: str) -> bool:
        (inst,) = [
            i
            for r in self.world.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            for i in r["Instances"]
        ]
        return inst["State"]["Name"] in ("pending", "running")

    def _results(self, job: str, run: str, attempt: int) -> dict[str, Any]:
        """Upload this run's artifacts; the trainer's SendTaskSuccess output."""
        artifacts = {}
        for name in layout.WEIGHT_FILES:
            key = layout.artifact_key(job, run, name)
            self.world.s3.put_object(Bucket=BUCKET, Key=key, Body=f"{name} of {run}".encode())
            artifacts[name] = key
        return {
            "metrics": {"precision": 0.9, "recall": self.recall, "mAP50": 0.938, "mAP50-95": 0.7},
            "best_epoch": 3,
            "epochs": 3,
            "seconds": 92.0,
            "attempt": attempt,
            "artifacts": artifacts,
        }

    def _late(self, instance_id: str, job: str, run: str, attempt: int) -> None:
        """A trainer that trains until ``release``, heartbeating and refreshing its token the
        way spotyolo.trainer does, then reports success; it dies with its instance."""
        try:
            token = self._token(job, run, attempt)
            for _ in range(200):  # moto knows the task's token once Launch trainer's Lambda returned
                try:
                    self.world.sfn.send_task_heartbeat(taskToken=token)
                    break
                except ClientError:
                    time.sleep(0.05)
            refresh = attempt_token(self.world.table, job, run, attempt)  # as spotyolo.trainer does
            channel = TaskChannel(self.world.sfn, token, 0.05, refresh=refresh)
            try:
                while not self.release.wait(0.05):
                    if not self._alive(instance_id):
                        self.late[instance_id] = "killed"
                        return
                    if not self.beat.is_set():  # between two heartbeats (a minute on EC2)
                        continue
                    try:
                        channel.heartbeat()
                        self.heartbeats += 1
                    except AttributeError:  # moto, in-process: an execution's worker ends before its stop
                        pass
                if not self._alive(instance_id):
                    self.late[instance_id] = "killed"
                    return
                channel.succeed(json.dumps(self._results(job, run, attempt)))
                self.late[instance_id] = "succeeded"
            except TaskGone:
                self.late[instance_id] = "gone"
        except BaseException as err:  # surfaced by the test
            self.errors.append(err)

    def _act(self, instance_id: str, tags: dict[str, str], what: str) -> None:
        job, run, attempt = tags["job"], tags["run"], int(tags["attempt"])
        sfn = self.world.sfn
        if what == "hang":
            return
        if what == "late":
            threading.Thread(target=self._late, args=(instance_id, job, run, attempt), daemon=True).start()
            return
        if what == "wait":  # reports like "succeed", once released
            self.release.wait(30)
            time.sleep(0.3)
        if what == "crash":  # dies without a word: EC2's state-change rule calls instance_lost
            self.world.ec2.terminate_instances(InstanceIds=[instance_id])
            self.world.invoke_event(
                "instance_lost",
                eventbridge(
                    "EC2 Instance State-change Notification",
                    "aws.ec2",
                    {"instance-id": instance_id, "state": "terminated"},
                ),
            )
            return
        token = self._token(job, run, attempt)
        if what == "interrupt":
            sfn.send_task_failure(taskToken=token, error="SpotInterrupted", cause="spot notice at epoch 2")
        elif what == "diverge":
            sfn.send_task_failure(taskToken=token, error="TrainingDiverged", cause="loss is nan at epoch 2")
        else:
            sfn.send_task_success(taskToken=token, output=json.dumps(self._results(job, run, attempt)))
        # the instance shuts itself down when the trainer exits
        self.world.ec2.terminate_instances(InstanceIds=[instance_id])


@dataclass
class World:
    s3: Any
    ec2: Any
    sfn: Any
    sqs: Any
    table: JobTable
    queue_url: str
    machine: str
    handlers: dict[str, LambdaHandler] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    overrides: dict[str, Callable[[dict[str, Any], Any], Any]] = field(default_factory=dict)

    def route(self, name: str, event: Any) -> Any:
        self.calls.append((name, event))
        handler = self.overrides.get(name) or self.handlers[name]
        return handler(event, moto_patches.LambdaContext(function_name=name))

    def invoke_event(self, name: str, event: dict[str, Any]) -> Any:
        return self.route(name, event)

    def upload_job(self, dataset: Path, config: str = BASE_CONFIG, job: str = "shapes") -> None:
        for path in dataset.rglob("*"):
            if path.is_file():
                key = layout.dataset_prefix(job) + path.relative_to(dataset).as_posix()
                self.s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        self.s3.put_object(Bucket=BUCKET, Key=layout.config_key(job), Body=config.encode())

    def start(self, name: str, payload: dict[str, Any] | None = None) -> str:
        body = json.dumps(payload or {"job": "shapes", "force": True})
        return str(
            self.sfn.start_execution(stateMachineArn=self.machine, name=name, input=body)["executionArn"]
        )

    def wait(self, arn: str, timeout: float = 40) -> dict[str, Any]:
        end = time.time() + timeout
        while time.time() < end:
            out = self.sfn.describe_execution(executionArn=arn)
            if out["status"] != "RUNNING":
                return dict(out)
            time.sleep(0.1)
        raise AssertionError(f"{arn} still running after {timeout} s")

    def messages(self) -> list[dict[str, Any]]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not got.get("Messages"):
                return out
            for m in got["Messages"]:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def states(self, arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]

    def live_instances(self, job: str = "shapes") -> list[dict[str, Any]]:
        return fleet.run_instances_of(self.ec2, job, states=["pending", "running"])

    def assert_nothing_left(self, job: str = "shapes") -> None:
        assert self.live_instances(job) == []
        item = self.table.get(job)
        assert item is not None and item.execution is None and item.current is None


@pytest.fixture(scope="module")
def deployed() -> Iterator[World]:
    """One emulator world per module: deployed once, emptied between tests (``world``)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _deploy(monkeypatch)


@pytest.fixture
def world(deployed: World) -> World:
    """The module's world, as a new deployment would find it."""
    w = deployed
    for page in w.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            w.s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    w.table.client.delete_item(TableName=TABLE, Key={"job": {"S": "shapes"}})
    for page in w.table.client.get_paginator("scan").paginate(TableName=SLOTS):
        for item in page.get("Items", []):
            w.table.client.delete_item(TableName=SLOTS, Key={"pk": item["pk"], "sk": item["sk"]})
    leftovers = [i["InstanceId"] for i in fleet.run_instances_of(w.ec2, "shapes")]
    if leftovers:
        w.ec2.terminate_instances(InstanceIds=leftovers)
    w.messages()
    w.calls.clear()
    w.overrides.clear()
    return w


def _deploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    env = {
        "BUCKET": BUCKET,
        "JOB_TABLE": TABLE,
        "SLOT_TABLE": SLOTS,
        "TRAINER_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotyolo:test",
        "SETTLE_SECONDS": "0",
        "LAUNCH_BACKOFF_SECONDS": "1",
        "MAX_LAUNCH_WAITS": "2",
        "ROOT_VOLUME_BASE_GB": "30",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        create_slot_table(ddb, SLOTS)
        ec2 = boto3.client("ec2", region_name=REGION)
        image = "ami-03cf127a"  # one of moto's default AMIs (describing them all takes seconds)
        template = ec2.create_launch_template(
            LaunchTemplateName="spotyolo-trainer",
            LaunchTemplateData={"ImageId": image, "InstanceInitiatedShutdownBehavior": "terminate"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        monkeypatch.setenv("LAUNCH_TEMPLATE_ID", template)
        sns = boto3.client("sns", region_name=REGION)
        topic = sns.create_topic(Name="spotyolo")["TopicArn"]
        monkeypatch.setenv("TOPIC_ARN", topic)
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="notifications")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="spotyolo", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("handler.py", "")
        arns = {}
        for name, spec in LAMBDAS.items():
            arn = lam.create_function(
                FunctionName=name,
                Runtime="python3.13",
                Role=role,
                Handler=spec.handler,
                Code={"ZipFile": code.getvalue()},
            )["FunctionArn"]
            if spec.placeholder:
                arns[spec.placeholder] = arn
        sfn = boto3.client("stepfunctions", region_name=REGION)
        definition = render_asl({**arns, "TopicArn": topic})
        machine = sfn.create_state_machine(name="training-pipeline", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        monkeypatch.setenv("SUBNET_IDS", ",".join(sorted(s["SubnetId"] for s in subnets)))
        w = World(
            s3=s3,
            ec2=ec2,
            sfn=sfn,
            sqs=sqs,
            table=JobTable(ddb, TABLE),
            queue_url=queue,
            machine=machine,
            handlers=dict(load_handlers()),  # functions/*.py, loaded with this world's environment
        )
        moto_patches.install(w.route)
        try:
            yield w
        finally:
            moto_patches.uninstall()


@pytest.fixture
def instances(world: World) -> Iterator[FakeInstances]:
    fake = FakeInstances(world)
    fake.start()
    yield fake
    fake.stop.set()
    if fake.thread:
        fake.thread.join(5)
    assert not fake.errors, fake.errors


@pytest.fixture
def shapes(world: World, shapes_dataset: Path) -> World:
    world.upload_job(shapes_dataset)
    return world


# ---------------------------------------------------------------- the happy path


def test_happy_path_promotes_weights_and_sends_one_message(shapes: World, instances: FakeInstances) -> None:
    w = shapes
    # weights of an earlier run: kept under previous/
    w.s3.put_object(Bucket=BUCKET, Key="weights/shapes/best.pt", Body=b"old best")
    out = w.wait(w.start("happy"))
    assert out["status"] == "SUCCEEDED", out
    doc = json.loads(out["output"])
    run_id = doc["job"]["run_id"]
    body = w.s3.get_object(Bucket=BUCKET, Key="weights/shapes/best.pt")["Body"].read()
    assert body == f"best.pt of {run_id}".encode()
    assert w.s3.get_object(Bucket=BUCKET, Key="weights/shapes/previous/best.pt")["Body"].read() == b"old best"
    assert {"weights/shapes/last.pt", "weights/shapes/results.csv", "weights/shapes/metrics.json"} <= {
        o["Key"] for o in w.s3.list_objects_v2(Bucket=BUCKET, Prefix="weights/shapes/")["Contents"]
    }
    messages = w.messages()
    assert len(messages) == 1
    assert messages[0]["Subject"] == "spotyolo: shapes complete"
    assert messages[0]["Message"].startswith(
        "shapes complete: 90.0% recall (mAP50 0.938) · target recall ≥ 80.0%"
    )
    # the whole job's wall time (seconds here), not the trainer's reported 92 s of training
    assert re.search(r"3 epochs · \d+s · ", messages[0]["Message"]), messages[0]["Message"]
    assert doc["summary"]["met_target"] is True and doc["summary"]["attempts"] == 1
    assert w.states(out["executionArn"]) == [
        "Validate job",
        "Already trained?",
        "Wait for an instance slot",
        "Launch trainer",
        "Check result",
        "Clean up",
        "Notify",
        "Trained",
    ]
    # the instance was a spot instance of the first type, with the contract's tags
    reservations = w.ec2.describe_instances(Filters=[{"Name": "tag:run", "Values": [run_id]}])["Reservations"]
    inst = reservations[0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags == {
        "app": "spotyolo",
        "job": "shapes",
        "run": run_id,
        "attempt": "1",
        "Name": "spotyolo-shapes-1",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotyolo:test",
    }
    assert inst["InstanceType"] == "g5.xlarge" and inst.get("InstanceLifecycle") == "spot"
    item = w.table.get("shapes")
    assert item and item.status == "complete" and item.attempts[0].outcome == "succeeded"
    w.assert_nothing_left()


def test_below_target_says_so(shapes: World, instances: FakeInstances) -> None:
    instances.recall = 0.5
    out = shapes.wait(shapes.start("below"))
    assert out["status"] == "SUCCEEDED"
    (message,) = shapes.messages()
    assert message["Subject"] == "spotyolo: shapes below target"
    assert message["Message"].startswith("shapes below target: 50.0% recall")


# ---------------------------------------------------------------- retries


def test_interruption_retries_on_a_new_instance(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "interrupt"}
    out = shapes.wait(shapes.start("interrupted"))
    assert out["status"] == "SUCCEEDED", out
    doc = json.loads(out["output"])
    assert doc["attempt"]["number"] == 2 and doc["attempt"]["interruptions"] == 1
    assert sorted(instances.seen.values()) == [1, 2]
    (message,) = shapes.messages()
    assert "1 interruption" in message["Message"]
    item = shapes.table.get("shapes")
    assert item and [(a.number, a.outcome) for a in item.attempts] == [
        (1, "SpotInterrupted"),
        (2, "succeeded"),
    ]
    assert shapes.states(out["executionArn"]).count("Prepare retry") == 1
    shapes.assert_nothing_left()


def test_too_many_interruptions_fail_with_a_message(
    world: World, instances: FakeInstances, shapes_dataset: Path
) -> None:
    world.upload_job(shapes_dataset, BASE_CONFIG.replace("max_interruptions: 2", "max_interruptions: 1"))
    instances.behaviour = {1: "interrupt", 2: "interrupt"}
    out = world.wait(world.start("too-many"))
    assert out["status"] == "FAILED"
    assert out["error"] == "TooManyInterruptions", (instances.errors, instances.seen)
    (message,) = world.messages()
    assert message["Subject"] == "spotyolo: shapes failed (TooManyInterruptions)"
    assert "more than max_interruptions (1)" in message["Message"]
    assert "2 attempts" in message["Message"]
    world.assert_nothing_left()


def test_a_long_job_name_still_gets_its_email_through_sns_throttling(
    world: World, shapes_dataset: Path
) -> None:
    """SNS refuses a subject of 100 characters or more: with the longest job name a failure's
    subject was 103, the publish failed and the user heard nothing. Throttled publishes retry."""
    job = "a-job-name-as-long-as-they-may-be-" + "x" * 29  # 63 characters
    assert layout.JOB_NAME_RE.match(job) and len(job) == 63
    world.upload_job(
        shapes_dataset, BASE_CONFIG.replace("max_interruptions: 2", "max_interruptions: 1"), job=job
    )
    fake = FakeInstances(world, behaviour={1: "interrupt", 2: "interrupt"}, job=job)
    fake.start()
    moto_patches.throttle_sns(2)  # the notification is throttled twice, then goes through
    try:
        out = world.wait(world.start("long-name", {"job": job, "force": True}), timeout=60)
        assert out["status"] == "FAILED" and out["error"] == "TooManyInterruptions", out
        (message,) = world.messages()
        subject = message["Subject"]
        assert moto_patches.valid_sns_subject(subject) and len(subject) == 99
        assert subject.startswith("spotyolo: a-job-name-as") and subject.endswith(
            " failed (TooManyInterruptions)"
        )
        assert world.states(out["executionArn"])[-2:] == ["Notify failure", "Job failed"]
        world.assert_nothing_left(job)
    finally:
        fake.stop.set()
        if fake.thread:
            fake.thread.join(5)
        world.table.client.delete_item(TableName=TABLE, Key={"job": {"S": job}})
    assert not fake.errors, fake.errors


def test_spot_then_on_demand_moves_to_on_demand_after_an_interruption(
    world: World, instances: FakeInstances, shapes_dataset: Path
) -> None:
    world.upload_job(shapes_dataset, BASE_CONFIG.replace("capacity: spot", "capacity: spot-then-on-demand"))
    instances.behaviour = {1: "interrupt"}
    out = world.wait(world.start("ladder"))
    assert out["status"] == "SUCCEEDED"
    item = world.table.get("shapes")
    assert item and [a.capacity for a in item.attempts] == ["spot", "on-demand"]


def test_no_capacity_backs_off_and_gives_up(shapes: World, instances: FakeInstances) -> None:
    real = launch.launch
    refusals = []

    class NoCapacityEC2:
        def __init__(self, ec2: Any) -> None:
            self._ec2 = ec2

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ec2, name)

        def create_fleet(self, **request: Any) -> dict[str, Any]:
            refusals.append(request["ClientToken"])
            return {
                "FleetId": "fleet-1",
                "Instances": [],
                "Errors": [
                    {"ErrorCode": "InsufficientInstanceCapacity", "ErrorMessage": "no g5 in us-east-1a"}
                ],
            }

    def refusing_launch(event: dict[str, Any], context: Any) -> Any:
        parsed = launch.LaunchEvent.model_validate(event)
        cfg = Settings.from_env()
        return real(parsed, ec2=NoCapacityEC2(shapes.ec2), table=shapes.table, cfg=cfg)

    shapes.overrides["launch"] = refusing_launch
    started = time.time()
    out = shapes.wait(shapes.start("no-capacity"))
    assert out["status"] == "FAILED" and out["error"] == "NoCapacity"
    # MAX_LAUNCH_WAITS=2: three launch rounds, waits of 1 + 2 s, each with its own ClientToken
    assert len(refusals) == 3 and len(set(refusals)) == 3
    assert time.time() - started >= 3
    assert shapes.states(out["executionArn"]).count("Wait for capacity") == 2
    (message,) = shapes.messages()
    assert (
        "gave up after 3 launch tries" in message["Message"]
        and "InsufficientInstanceCapacity" in message["Message"]
    )
    assert shapes.live_instances() == []
    shapes.assert_nothing_left()


# ---------------------------------------------------------------- failures


def test_stalled_trainer_times_out_and_is_cleaned_up(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "hang"}  # stall_hours 0.001 = 3 s heartbeat window
    out = shapes.wait(shapes.start("stalled"))
    assert out["status"] == "FAILED"
    assert out["error"] == "TrainerStalled"
    (message,) = shapes.messages()
    assert "made no progress for 3s (stall_hours in config.yaml)" in message["Message"]
    assert "Clean up after failure" in shapes.states(out["executionArn"])
    shapes.assert_nothing_left()  # the hung instance was terminated


def test_diverged_training_fails_without_a_second_instance(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "diverge"}
    out = shapes.wait(shapes.start("diverged"))
    assert out["status"] == "FAILED" and out["error"] == "TrainingDiverged"
    assert list(instances.seen.values()) == [1]
    (message,) = shapes.messages()
    assert "training diverged" in message["Message"] and "loss is nan at epoch 2" in message["Message"]
    shapes.assert_nothing_left()


def test_crashed_instance_is_lost_and_retried(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "crash"}
    out = shapes.wait(shapes.start("crashed"))
    assert out["status"] == "SUCCEEDED", out
    item = shapes.table.get("shapes")
    assert item and [a.outcome for a in item.attempts] == ["InstanceLost", "succeeded"]


def test_invalid_job_launches_nothing(world: World, shapes_dataset: Path) -> None:
    world.upload_job(shapes_dataset, BASE_CONFIG + "epochz: 3\n")
    out = world.wait(world.start("invalid"))
    assert out["status"] == "FAILED" and out["error"] == "JobInvalid"
    (message,) = world.messages()
    assert message["Subject"] == "spotyolo: shapes not started (JobInvalid)"
    assert "epochz" in message["Message"]
    assert "launch" not in [name for name, _ in world.calls]
    assert "cleanup" not in [name for name, _ in world.calls]
    assert world.live_instances() == []


def test_a_config_yaml_below_the_job_folder_ends_quietly(world: World, shapes_dataset: Path) -> None:
    """The start rule's wildcard (jobs/*/config.yaml) also matches jobs/x/dataset/config.yaml: the
    execution it starts ends at once, with nothing locked, written or sent."""
    world.upload_job(shapes_dataset, job="x")
    out = world.wait(world.start("nested", {"bucket": BUCKET, "key": "jobs/x/dataset/config.yaml"}))
    assert out["status"] == "SUCCEEDED"
    assert world.states(out["executionArn"]) == ["Validate job", "Not a job trigger"]
    assert world.messages() == []
    assert world.table.get("x") is None
    assert [
        o["Key"] for o in world.s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/").get("Contents", [])
    ] == []


def test_refused_duplicate_leaves_the_running_job_alone(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "hang"}
    first = shapes.start("first")
    for _ in range(200):
        holder = shapes.table.get("shapes")
        if holder and holder.current and holder.current.instance:
            break
        time.sleep(0.05)
    assert holder and holder.execution == first and holder.current and holder.current.token
    out = shapes.wait(shapes.start("second"))
    assert out["status"] == "FAILED" and out["error"] == "JobAlreadyRunning"
    assert "cleanup" not in [name for name, _ in shapes.calls]
    after = shapes.table.get("shapes")
    assert after and after.execution == first and after.current == holder.current
    assert len(shapes.live_instances()) == 1
    (message,) = shapes.messages()
    assert "already being trained" in message["Message"]
    # the first run stalls out on its own and cleans up
    assert shapes.wait(first)["status"] == "FAILED"
    shapes.assert_nothing_left()


def test_transient_lambda_error_is_retried(shapes: World, instances: FakeInstances) -> None:
    failures = []

    def flaky_check(event: dict[str, Any], context: Any) -> Any:
        if not failures:
            failures.append(1)
            raise moto_patches.LambdaServiceError("Lambda is having a moment")
        return shapes.handlers["check_result"](event, context)

    shapes.overrides["check_result"] = flaky_check
    out = shapes.wait(shapes.start("transient"))
    assert out["status"] == "SUCCEEDED"
    events = shapes.sfn.get_execution_history(executionArn=out["executionArn"], maxResults=1000)["events"]
    failed = [e for e in events if e["type"] == "TaskFailed"]
    assert failed and failed[0]["taskFailedEventDetails"]["error"] == "Lambda.ServiceException"
    assert len(shapes.messages()) == 1


def test_already_trained_job_is_skipped(world: World, shapes_dataset: Path) -> None:
    world.upload_job(shapes_dataset)
    world.s3.put_object(Bucket=BUCKET, Key="weights/shapes/best.pt", Body=b"trained")
    out = world.wait(world.start("skip", {"job": "shapes"}))
    assert out["status"] == "SUCCEEDED"
    (message,) = world.messages()
    assert message["Subject"] == "spotyolo: shapes already trained"
    assert "delete weights/shapes/" in message["Message"]
    assert world.live_instances() == []


def test_cancel_stops_the_run_and_cleans_up(shapes: World, instances: FakeInstances) -> None:
    instances.behaviour = {1: "hang"}
    arn = shapes.start("to-cancel")
    for _ in range(100):
        if shapes.live_instances():
            break
        time.sleep(0.05)
    shapes.s3.delete_object(Bucket=BUCKET, Key="jobs/shapes/config.yaml")
    result = shapes.invoke_event(
        "cancel",
        eventbridge(
            "Object Deleted",
            "aws.s3",
            {"bucket": {"name": BUCKET}, "object": {"key": "jobs/shapes/config.yaml"}},
        ),
    )
    assert result["cancelled"] is True and result["execution"] == arn
    stopped = shapes.sfn.describe_execution(executionArn=arn)
    assert stopped["status"] == "ABORTED" and stopped["error"] == "Cancelled"
    shapes.assert_nothing_left()
    assert shapes.table.get("shapes").status == "cancelled"  # type: ignore[union-attr]
    (message,) = shapes.messages()
    assert message["Subject"] == "spotyolo: shapes cancelled (Cancelled)"
    # the stopped execution sends nothing more, and a second delete finds nothing to cancel
    time.sleep(1)
    assert shapes.messages() == []
    again = shapes.invoke_event(
        "cancel",
        eventbridge(
            "Object Deleted",
            "aws.s3",
            {"bucket": {"name": BUCKET}, "object": {"key": "jobs/shapes/config.yaml"}},
        ),
    )
    assert again["cancelled"] is False


# ---------------------------------------------------------------- takeover (issue 9, hole 3)


def _wait_until(what: Callable[[], Any], timeout: float = 20) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_takeover_ends_the_replaced_run_and_publishes_only_its_own(
    world: World, instances: FakeInstances, shapes_dataset: Path
) -> None:
    """Execution A is stopped by hand and its status-rule clean up has not run yet (late, or
    being retried) when a new upload's execution B takes the job over. A's trainer is still
    training: it must neither answer B's task nor train on, and B publishes B's weights."""
    w = world
    # a stall window of 36 s: a slow machine must not time A out before it is stopped
    w.upload_job(shapes_dataset, BASE_CONFIG.replace("stall_hours: 0.001", "stall_hours: 0.01"))
    instances.queue = ["late", "wait"]
    instances.beat.set()
    a = w.start("replaced")
    try:
        _takeover(w, instances, a)
    finally:  # nothing may outlive the test in the module's world
        instances.release.set()
        for arn in (a, w.machine.replace(":stateMachine:", ":execution:") + ":takes-over"):
            try:
                if w.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
                    w.sfn.stop_execution(executionArn=arn)
            except ClientError:
                pass


def _takeover(w: World, instances: FakeInstances, a: str) -> None:
    a_item = _wait_until(lambda: (i := w.table.get("shapes")) and i.current and i.current.instance and i)
    a_run, a_instance = a_item.run_id, a_item.current.instance
    _wait_until(lambda: instances.heartbeats > 0)
    instances.beat.clear()
    w.sfn.stop_execution(executionArn=a, error="Stopped", cause="stopped from the console")
    # the execution-status rule's clean up of A is not delivered (yet): B finds A's lock
    b = w.start("takes-over")
    launched = lambda: (i := w.table.get("shapes")) and i.execution == b and i.current and i.current.instance  # noqa: E731
    _wait_until(launched)
    instances.beat.set()  # A's trainer heartbeats again: its token is gone, it looks it up again
    time.sleep(0.5)
    instances.release.set()
    out = w.wait(b)
    assert out["status"] == "SUCCEEDED", out
    b_run = json.loads(out["output"])["job"]["run_id"]
    assert b_run != a_run
    best = w.s3.get_object(Bucket=BUCKET, Key="weights/shapes/best.pt")["Body"].read()
    assert best == f"best.pt of {b_run}".encode()
    published = json.loads(w.s3.get_object(Bucket=BUCKET, Key="weights/shapes/metrics.json")["Body"].read())
    assert published["run_id"] == b_run
    # A's instance was ended by the takeover; its trainer never reported into B's task
    assert instances.late.get(a_instance) in ("killed", "gone"), instances.late
    (described,) = [
        i for r in w.ec2.describe_instances(InstanceIds=[a_instance])["Reservations"] for i in r["Instances"]
    ]
    assert described["State"]["Name"] in ("shutting-down", "terminated")
    w.assert_nothing_left()


# ---------------------------------------------------------------- cancel: only the right run (hole 7)


def _deleted_event() -> dict[str, Any]:
    return eventbridge(
        "Object Deleted", "aws.s3", {"bucket": {"name": BUCKET}, "object": {"key": "jobs/shapes/config.yaml"}}
    )


def _delete_and_cancel(w: World) -> dict[str, Any]:
    """The user deletes config.yaml and the rule invokes Cancel (in its own thread, as Lambda does)."""
    w.s3.delete_object(Bucket=BUCKET, Key=layout.config_key("shapes"))
    got: dict[str, Any] = {}

    def call() -> None:
        try:
            got.update(w.invoke_event("cancel", _deleted_event()))
        except BaseException as err:
            got["raised"] = repr(err)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(20)
    return got


def test_a_late_delete_event_does_not_cancel_the_reuploaded_run(
    shapes: World, instances: FakeInstances
) -> None:
    """config.yaml was deleted and uploaded again; the Deleted event arrives after the new run
    started. config.yaml is there: the run the user just started goes on."""
    instances.behaviour = {1: "hang"}
    arn = shapes.start("reuploaded")
    _wait_until(shapes.live_instances)
    result = shapes.invoke_event("cancel", _deleted_event())
    assert result["cancelled"] is False and "config.yaml" in result["reason"], result
    assert shapes.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    item = shapes.table.get("shapes")
    assert item and item.execution == arn and len(shapes.live_instances()) == 1
    assert shapes.messages() == []
    assert shapes.wait(arn)["error"] == "TrainerStalled"  # the hung instance ends it (3 s)


def test_a_cancel_during_publication_comes_too_late(
    shapes: World, instances: FakeInstances, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check result has begun to publish when config.yaml is deleted: the run completes, its
    weights are whole, and the user hears "complete", not "cancelled"."""
    from spotyolo.steps import check_result

    real = check_result.promote
    cancels: list[dict[str, Any]] = []

    def promote_with_a_cancel(*args: Any, **kwargs: Any) -> Any:
        cancels.append(_delete_and_cancel(shapes))
        return real(*args, **kwargs)

    monkeypatch.setattr(check_result, "promote", promote_with_a_cancel)
    out = shapes.wait(shapes.start("publishing"))
    assert out["status"] == "SUCCEEDED", out
    run_id = json.loads(out["output"])["job"]["run_id"]
    assert cancels and cancels[0]["cancelled"] is False and "publish" in cancels[0]["reason"], cancels
    assert shapes.s3.get_object(Bucket=BUCKET, Key="weights/shapes/best.pt")["Body"].read() == (
        f"best.pt of {run_id}".encode()
    )
    item = shapes.table.get("shapes")
    assert item and item.status == "complete"
    (message,) = shapes.messages()
    assert message["Subject"] == "spotyolo: shapes complete"
    shapes.assert_nothing_left()


def test_a_cancel_before_publication_publishes_nothing(shapes: World, instances: FakeInstances) -> None:
    """config.yaml is deleted after the trainer reported but before Check result publishes:
    the run is cancelled, and weights/ keeps what it had."""
    shapes.s3.put_object(Bucket=BUCKET, Key="weights/shapes/best.pt", Body=b"old best")
    cancels: list[dict[str, Any]] = []
    checked = threading.Event()

    def cancel_first(event: dict[str, Any], context: Any) -> Any:
        try:
            cancels.append(_delete_and_cancel(shapes))
            return shapes.handlers["check_result"](event, context)
        finally:
            checked.set()

    shapes.overrides["check_result"] = cancel_first
    arn = shapes.start("cancelled-late")
    assert checked.wait(30)  # the stopped execution's Check result still runs to its end, as on AWS
    out = shapes.wait(arn)
    assert cancels and cancels[0]["cancelled"] is True, cancels
    # ABORTED on AWS; moto lets the stopped execution's in-flight Check result, which raised
    # Cancelled, turn ABORTED into FAILED when it ends after the stop (a late Lambda error)
    assert out["status"] in ("ABORTED", "FAILED") and out["error"] == "Cancelled", out
    assert shapes.s3.get_object(Bucket=BUCKET, Key="weights/shapes/best.pt")["Body"].read() == b"old best"
    assert "Contents" not in shapes.s3.list_objects_v2(Bucket=BUCKET, Prefix="weights/shapes/previous/")
    item = shapes.table.get("shapes")
    assert item and item.status == "cancelled"
    time.sleep(0.5)
    (message,) = shapes.messages()
    assert message["Subject"] == "spotyolo: shapes cancelled (Cancelled)"
    shapes.assert_nothing_left()


# ---------------------------------------------------------------- the instance-slot queue (issue 12)


def _slot_items(w: World) -> tuple[list[str], list[str]]:
    """(holders' execution names, queued executions' names) in the slot table."""
    from spotyolo.core.slots import SEMAPHORE

    sem = w.table.client.get_item(TableName=SLOTS, Key=SEMAPHORE, ConsistentRead=True).get("Item", {})
    holders = sorted(h.rsplit(":", 1)[1] for h in sem.get("holders", {}).get("M", {}))
    queued = w.table.client.query(
        TableName=SLOTS,
        KeyConditionExpression="pk = :q",
        ExpressionAttributeValues={":q": {"S": "queue"}},
        ConsistentRead=True,
    )["Items"]
    return holders, [q["execution"]["S"].rsplit(":", 1)[1] for q in queued]


def _queued(w: World, job: str) -> Any:
    def place() -> Any:
        item = w.table.get(job)
        return item.queue if item and item.status == "queued" and item.queue and item.queue.position else None

    return _wait_until(place)


@pytest.fixture
def one_slot(world: World, shapes_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The deployment's max_instances is 1; jobs shapes, b and c are uploaded (a stall window of
    3 minutes: a running job holds its slot while the test looks at the queue)."""
    monkeypatch.setenv("MAX_INSTANCES", "1")
    config = BASE_CONFIG.replace("stall_hours: 0.001", "stall_hours: 0.05")
    world.upload_job(shapes_dataset, config)
    for job in ("b", "c"):
        world.table.client.delete_item(TableName=TABLE, Key={"job": {"S": job}})
        world.upload_job(shapes_dataset, config, job=job)
    yield world
    for job in ("b", "c"):
        leftovers = [i["InstanceId"] for i in fleet.run_instances_of(world.ec2, job)]
        if leftovers:
            world.ec2.terminate_instances(InstanceIds=leftovers)


def test_a_queued_job_waits_for_the_slot_and_a_cancel_while_queued_wakes_no_one(
    one_slot: World, instances: FakeInstances
) -> None:
    w = one_slot
    instances.behaviour = {1: "wait"}
    c_instances = FakeInstances(w, job="c")
    c_instances.start()
    try:
        first = w.start("holder")
        _wait_until(w.live_instances)
        b = w.start("queued-b", {"job": "b", "force": True})
        assert _queued(w, "b").position == 1
        c = w.start("queued-c", {"job": "c", "force": True})
        place = _queued(w, "c")
        assert (place.position, place.ahead, place.running, place.slots) == (2, 1, 1, 1)
        assert _slot_items(w) == (["holder"], ["queued-b", "queued-c"])
        # b is cancelled while it waits: it leaves the queue; c moves up but is not woken
        w.s3.delete_object(Bucket=BUCKET, Key=layout.config_key("b"))
        deleted = eventbridge(
            "Object Deleted", "aws.s3", {"bucket": {"name": BUCKET}, "object": {"key": "jobs/b/config.yaml"}}
        )
        result = w.invoke_event("cancel", deleted)
        assert result["cancelled"] is True and result["execution"] == b
        assert w.sfn.describe_execution(executionArn=b)["status"] == "ABORTED"
        assert _slot_items(w) == (["holder"], ["queued-c"])
        assert _queued(w, "c").position == 1
        assert w.sfn.describe_execution(executionArn=c)["status"] == "RUNNING" and not w.live_instances("c")
        assert len(w.live_instances()) == 1
        # the holder finishes: its slot goes to c, which trains and succeeds
        instances.release.set()
        assert w.wait(first)["status"] == "SUCCEEDED"
        out = w.wait(c)
        assert out["status"] == "SUCCEEDED", out
        assert w.states(c)[:4] == [
            "Validate job",
            "Already trained?",
            "Wait for an instance slot",
            "Launch trainer",
        ]
        assert _slot_items(w) == ([], [])
        item = w.table.get("b")
        assert item and item.status == "cancelled" and item.execution is None and item.attempts == []
    finally:
        c_instances.stop.set()
        assert not c_instances.errors, c_instances.errors


def test_an_execution_stopped_while_queued_leaves_the_queue(
    one_slot: World, instances: FakeInstances
) -> None:
    w = one_slot
    instances.behaviour = {1: "wait"}
    first = w.start("holder-2")
    _wait_until(w.live_instances)
    b = w.start("stopped-b", {"job": "b", "force": True})
    _queued(w, "b")
    w.sfn.stop_execution(executionArn=b, error="Stopped", cause="by hand")
    assert w.wait(b)["status"] == "ABORTED"
    # the execution-status rule's clean up
    detail = {"executionArn": b, "status": "ABORTED", "input": json.dumps({"job": "b", "force": True})}
    w.invoke_event("cleanup", eventbridge("Step Functions Execution Status Change", "aws.states", detail))
    assert _slot_items(w) == (["holder-2"], [])
    item = w.table.get("b")
    assert item and item.execution is None and item.status == "cancelled"
    (message,) = w.messages()
    assert message["Subject"] == "spotyolo: b cancelled (Cancelled)"
    instances.release.set()
    assert w.wait(first)["status"] == "SUCCEEDED"
    assert _slot_items(w) == ([], [])


def test_quota_exceeded_while_holding_a_slot_lowers_the_count_and_requeues(
    one_slot: World, instances: FakeInstances, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_instances says 2 but the account allows 1: b's launch is refused for the quota while
    a runs. b goes back to the front of the queue (count now 1), not to a failure, and
    launches when a's slot frees."""
    w = one_slot
    monkeypatch.setenv("MAX_INSTANCES", "2")
    instances.behaviour = {1: "wait"}
    b_instances = FakeInstances(w, job="b")
    b_instances.start()
    real = launch.launch
    tokens: list[str] = []

    class QuotaOnce:
        def __init__(self, ec2: Any) -> None:
            self._ec2 = ec2

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ec2, name)

        def create_fleet(self, **request: Any) -> dict[str, Any]:
            tokens.append(request["ClientToken"])
            if len(tokens) == 1:
                error = {"ErrorCode": "VcpuLimitExceeded", "ErrorMessage": "You have requested more vCPU"}
                return {"FleetId": "fleet-q", "Instances": [], "Errors": [error]}
            return dict(self._ec2.create_fleet(**request))

    def launch_b(event: dict[str, Any], context: Any) -> Any:
        parsed = launch.LaunchEvent.model_validate(event)
        ec2 = QuotaOnce(w.ec2) if parsed.job.name == "b" else w.ec2
        return real(parsed, ec2=ec2, table=w.table, cfg=Settings.from_env())

    w.overrides["launch"] = launch_b
    try:
        first = w.start("holder-3")
        _wait_until(w.live_instances)
        b = w.start("quota-b", {"job": "b", "force": True})
        place = _queued(w, "b")  # back in the queue, first in line, behind the running job
        assert (place.position, place.running, place.slots) == (1, 1, 1)
        assert w.sfn.describe_execution(executionArn=b)["status"] == "RUNNING"
        assert _slot_items(w) == (["holder-3"], ["quota-b"])
        instances.release.set()
        assert w.wait(first)["status"] == "SUCCEEDED"
        out = w.wait(b)
        assert out["status"] == "SUCCEEDED", out
        states = w.states(b)
        assert states.count("Wait for an instance slot") == 2 and "Back to the queue" in states
        assert "Prepare launch retry" not in states
        assert len(tokens) == 2 and len(set(tokens)) == 2  # the relaunch is a new request
        item = w.table.get("b")
        assert item and [a.outcome for a in item.attempts] == ["QuotaExceeded", "succeeded"]
        assert _slot_items(w) == ([], [])
    finally:
        b_instances.stop.set()
        assert not b_instances.errors, b_instances.errors
