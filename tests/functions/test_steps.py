"""The step Lambdas' logic against moto (EC2 with a launch template, DynamoDB, S3, Step Functions)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fake_settings import make_settings
from moto import mock_aws

from spotyolo.contract.asl import load_asl_text
from spotyolo.contract.errors import (
    BudgetExceeded,
    Cancelled,
    JobAlreadyRunning,
    LaunchFailed,
    NoCapacity,
    QuotaExceeded,
    TooManyInterruptions,
    TrainerError,
)
from spotyolo.core import fleet, planning
from spotyolo.core.cost import run_cost
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, AttemptRecord, ErrorInfo, JobConfig, JobSpec, TrainResult
from spotyolo.steps import (
    cancel,
    check_result,
    cleanup,
    common,
    ending,
    instance_lost,
    launch,
    prepare_retry,
    validate,
)

EXEC = "arn:aws:states:us-east-1:123456789012:execution:pipeline:run-1"
OTHER = "arn:aws:states:us-east-1:123456789012:execution:pipeline:run-2"


def make_job(**config: Any) -> JobSpec:
    cfg = JobConfig.model_validate(
        {"model": "yolo11n.yaml", "epochs": 3, "target": {"metric": "recall", "min": 0.8}, **config}
    )
    return JobSpec(
        name="shapes",
        bucket="bkt",
        run_id="run-a",
        execution=EXEC,
        config=cfg,
        dataset={"bytes": 5 * 2**30, "files": 10},
        instance_types=["g5.xlarge", "g6.xlarge"],
        deadline=int(time.time()) + 3600,
        stall_seconds=600,
        image="repo/trainer:1",
    )


def attempt(number: int = 1, **kw: Any) -> Attempt:
    return Attempt(
        number=number,
        capacity=kw.pop("capacity", "spot"),
        instance_types=["g5.xlarge", "g6.xlarge"],
        seconds_left=3000,
        heartbeat_seconds=600,
        **kw,
    )


class Aws:
    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name="us-east-1")
        self.ddb = boto3.client("dynamodb", region_name="us-east-1")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.sns = boto3.client("sns", region_name="us-east-1")
        self.ddb.create_table(
            TableName="jobs",
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.table = JobTable(self.ddb, "jobs")
        self.s3.create_bucket(Bucket="bkt")
        lt = self.ec2.create_launch_template(
            LaunchTemplateName="t", LaunchTemplateData={"ImageId": "ami-03cf127a"}
        )
        self.cfg = make_settings(
            subnet_ids=[],  # the account's default subnets
            bucket="bkt",
            job_table="jobs",
            launch_template_id=lt["LaunchTemplate"]["LaunchTemplateId"],
            trainer_image="repo/trainer:1",
            root_volume_base_gb=40,
            launch_backoff_seconds=10,
            max_launch_waits=2,
        )

    def lock(self, execution: str = EXEC) -> None:
        self.table.acquire_lock("shapes", execution, "run-a", lambda e: True)

    def launch(self, job: JobSpec, att: Attempt, token: str = "tok-1", ec2: Any = None) -> dict[str, Any]:
        event = launch.LaunchEvent(job=job, attempt=att, token=token)
        return launch.launch(event, ec2=ec2 or self.ec2, table=self.table, cfg=self.cfg)


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # real SendTask* checks
        yield Aws()


# ---------------------------------------------------------------- launch


def test_launch_records_the_token_and_starts_one_tagged_spot_instance(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    out = aws.launch(job, attempt())
    item = aws.table.get("shapes")
    assert (
        item and item.current and item.current.token == "tok-1" and item.current.instance == out["instance"]
    )
    assert item.attempts[0].instance_type == "g5.xlarge" and item.attempts[0].outcome == "running"
    (inst,) = fleet.run_instances_of(aws.ec2, "shapes", "run-a", 1)
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags == {
        "app": "spotyolo",
        "job": "shapes",
        "run": "run-a",
        "attempt": "1",
        "image": "repo/trainer:1",
        "Name": "spotyolo-shapes-1",
    }
    assert inst["InstanceLifecycle"] == "spot"


def test_a_retried_launch_of_the_same_attempt_starts_no_second_instance(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    first = aws.launch(job, attempt(), token="tok-1")
    again = aws.launch(job, attempt(), token="tok-2")  # Step Functions retried the task: new token
    assert again["reused"] is True and again["instance"] == first["instance"]
    assert len(fleet.run_instances_of(aws.ec2, "shapes")) == 1
    item = aws.table.get("shapes")
    assert item and item.current and item.current.token == "tok-2" and len(item.attempts) == 1
    assert item.current.instance == first["instance"] and item.attempts[0].instance == first["instance"]
    assert item.attempts[0].outcome == "running" and item.status == "training"


def test_fleet_request_sizes_the_root_volume_and_orders_on_demand(aws: Aws) -> None:
    job = make_job()
    cfg = make_settings(
        launch_template_id="lt-1", subnet_ids=["subnet-a", "subnet-b"], root_volume_base_gb=40
    )
    spot = launch.fleet_request(job, attempt(), cfg, EXEC)
    overrides = spot["LaunchTemplateConfigs"][0]["Overrides"]
    assert [(o["InstanceType"], o["SubnetId"]) for o in overrides] == [
        ("g5.xlarge", "subnet-a"),
        ("g5.xlarge", "subnet-b"),
        ("g6.xlarge", "subnet-a"),
        ("g6.xlarge", "subnet-b"),
    ]
    assert overrides[0]["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 40 + 10  # 5 GiB dataset x 2
    assert spot["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized"}
    on_demand = launch.fleet_request(job, attempt(capacity="on-demand"), cfg, EXEC)
    assert on_demand["OnDemandOptions"] == {"AllocationStrategy": "prioritized"}
    assert [o["Priority"] for o in on_demand["LaunchTemplateConfigs"][0]["Overrides"]] == [0.0, 0.0, 1.0, 1.0]
    # every launch round has its own idempotency token, every retry of one round the same
    assert spot["ClientToken"] == launch.fleet_request(job, attempt(), cfg, EXEC)["ClientToken"]
    assert spot["ClientToken"] != launch.fleet_request(job, attempt(launch_waits=1), cfg, EXEC)["ClientToken"]


class RefusingEC2:
    def __init__(self, ec2: Any, code: str, message: str) -> None:
        self._ec2, self.code, self.message = ec2, code, message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def create_fleet(self, **_: Any) -> dict[str, Any]:
        return {"Instances": [], "Errors": [{"ErrorCode": self.code, "ErrorMessage": self.message}]}


def test_no_capacity_and_quota_errors_name_the_cause(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    with pytest.raises(NoCapacity, match=r"no spot capacity for g5\.xlarge, g6\.xlarge"):
        aws.launch(job, attempt(), ec2=RefusingEC2(aws.ec2, "InsufficientInstanceCapacity", "none left"))
    with pytest.raises(QuotaExceeded, match=r"All G and VT Spot Instance Requests.*L-3819A6DF"):
        aws.launch(job, attempt(), ec2=RefusingEC2(aws.ec2, "MaxSpotInstanceCountExceeded", "limit"))
    with pytest.raises(QuotaExceeded, match="L-DB2E81BA"):
        aws.launch(job, attempt(capacity="on-demand"), ec2=RefusingEC2(aws.ec2, "VcpuLimitExceeded", "vcpus"))
    item = aws.table.get("shapes")
    assert item and [a.outcome for a in item.attempts] == ["NoCapacity", "QuotaExceeded", "QuotaExceeded"]
    assert fleet.run_instances_of(aws.ec2, "shapes") == []


class LaggingEC2:
    """EC2 as AWS is right after CreateFleet: the new instance is not found for a while."""

    def __init__(self, ec2: Any, *, describes: int, tags: int) -> None:
        self._ec2, self.describes, self.tags = ec2, describes, tags

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    @staticmethod
    def _not_found(operation: str) -> ClientError:
        error = {"Code": "InvalidInstanceID.NotFound", "Message": "The instance ID does not exist"}
        return ClientError({"Error": error}, operation)

    def describe_instances(self, **kw: Any) -> Any:
        if "InstanceIds" in kw and self.describes > 0:  # by id: what eventual consistency hides
            self.describes -= 1
            raise self._not_found("DescribeInstances")
        return self._ec2.describe_instances(**kw)

    def create_tags(self, **kw: Any) -> Any:
        if self.tags > 0:
            self.tags -= 1
            raise self._not_found("CreateTags")
        return self._ec2.create_tags(**kw)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The launch's backoff sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(common, "sleep", slept.append, raising=False)
    return slept


def root_volume_tags(aws: Aws, instance: str) -> dict[str, str]:
    (described,) = aws.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    volume = described["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    (vol,) = aws.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    return {t["Key"]: t["Value"] for t in vol.get("Tags", [])}


def test_a_new_instance_not_yet_visible_to_ec2_is_launched_and_tagged(aws: Aws, sleeps: list[float]) -> None:
    aws.lock()
    subnet = aws.ec2.describe_subnets()["Subnets"][0]
    aws.cfg = dataclasses.replace(aws.cfg, subnet_ids=[subnet["SubnetId"]])
    lagging = LaggingEC2(aws.ec2, describes=2, tags=2)
    out = aws.launch(make_job(), attempt(), ec2=lagging)
    item = aws.table.get("shapes")
    assert item and item.current and item.current.instance == out["instance"]
    assert item.attempts[0].instance_type == "g5.xlarge" == out["instance_type"]
    assert item.attempts[0].az == subnet["AvailabilityZone"] == out["az"]
    assert root_volume_tags(aws, out["instance"])["job"] == "shapes"
    assert len(sleeps) == 4 and sum(sleeps) < 10  # short, bounded


def test_an_instance_that_stays_invisible_still_launches_after_a_bounded_wait(
    aws: Aws, sleeps: list[float]
) -> None:
    aws.lock()
    out = aws.launch(make_job(), attempt(), ec2=LaggingEC2(aws.ec2, describes=99, tags=99))
    item = aws.table.get("shapes")
    assert item and item.current and item.current.instance == out["instance"]
    assert item.attempts[0].outcome == "running"
    assert 0 < sum(sleeps) <= 30  # gave up on the cosmetic volume tag, well inside the Lambda's time


class ThrottledEC2:
    """EC2 that throttles the first ``times`` CreateFleet calls: raised, or in the Errors list."""

    def __init__(self, ec2: Any, times: int, *, raised: bool) -> None:
        self._ec2, self.times, self.raised = ec2, times, raised
        self.tokens: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def create_fleet(self, **kw: Any) -> Any:
        self.tokens.append(kw["ClientToken"])
        if len(self.tokens) > self.times:
            return self._ec2.create_fleet(**kw)
        if self.raised:
            error = {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}
            raise ClientError({"Error": error}, "CreateFleet")
        return {
            "Instances": [],
            "Errors": [{"ErrorCode": "RequestLimitExceeded", "ErrorMessage": "slow down"}],
        }


class RaisingEC2:
    """EC2 whose CreateFleet call itself fails with ``code``."""

    def __init__(self, ec2: Any, code: str, message: str) -> None:
        self._ec2, self.code, self.message = ec2, code, message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def create_fleet(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": self.code, "Message": self.message}}, "CreateFleet")


@pytest.mark.parametrize("wrapper", [RefusingEC2, RaisingEC2])
@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("UnauthorizedOperation", "You are not authorized to perform this operation."),
        ("InvalidParameterValue", "Invalid launch template: the AMI does not exist"),
    ],
)
def test_a_launch_error_that_waiting_cannot_fix_fails_at_once_with_ec2s_words(
    aws: Aws, sleeps: list[float], wrapper: Any, code: str, message: str
) -> None:
    aws.lock()
    with pytest.raises(LaunchFailed, match=f"{code}: {message}") as raised:
        aws.launch(make_job(), attempt(), ec2=wrapper(aws.ec2, code, message))
    assert "capacity" not in str(raised.value) and sleeps == []
    item = aws.table.get("shapes")
    assert item and [a.outcome for a in item.attempts] == ["LaunchFailed"]
    assert fleet.run_instances_of(aws.ec2, "shapes") == []
    # what "Clean up after failure" (the ASL's catch-all) tells the user
    cause = json.dumps({"errorMessage": str(raised.value), "errorType": "LaunchFailed"})
    doc = {"job": make_job().model_dump(mode="json"), "error": {"Error": "LaunchFailed", "Cause": cause}}
    event = cleanup.WorkflowCleanup(document=doc, execution=EXEC, outcome="failed")
    out = cleanup.from_workflow(event, ec2=aws.ec2, table=aws.table)
    assert out["error"] == "LaunchFailed" and out["released"] is True
    assert out["message"].startswith("shapes failed: EC2 refused to launch its instance.\n")
    assert f"{code}: {message}" in out["message"]


@pytest.mark.parametrize("raised", [True, False], ids=["raised", "in-errors"])
def test_a_throttled_launch_is_asked_again_and_starts_one_instance(
    aws: Aws, sleeps: list[float], raised: bool
) -> None:
    aws.lock()
    throttled = ThrottledEC2(aws.ec2, 2, raised=raised)
    out = aws.launch(make_job(), attempt(), ec2=throttled)
    assert out["reused"] is False and len(throttled.tokens) == 3 and len(sleeps) == 2
    assert len(fleet.run_instances_of(aws.ec2, "shapes")) == 1
    item = aws.table.get("shapes")
    assert item and item.attempts[0].outcome == "running"
    # idempotent: the first try has the round's token; a try EC2 answered used its token up,
    # so the next one gets its own (derived, so a retried invocation repeats them)
    assert throttled.tokens[0] == launch.client_token(EXEC, attempt())
    assert all(len(t) <= 64 for t in throttled.tokens)
    assert len(set(throttled.tokens)) == (1 if raised else 3)


@pytest.mark.parametrize("raised", [True, False], ids=["raised", "in-errors"])
def test_a_launch_throttled_for_good_is_not_called_a_quota_problem(
    aws: Aws, sleeps: list[float], raised: bool
) -> None:
    aws.lock()
    with pytest.raises(LaunchFailed, match="RequestLimitExceeded"):
        aws.launch(make_job(), attempt(), ec2=ThrottledEC2(aws.ec2, 99, raised=raised))
    assert 0 < sum(sleeps) <= 30  # a short, bounded wait inside the Lambda
    item = aws.table.get("shapes")
    assert item and [a.outcome for a in item.attempts] == ["LaunchFailed"]


def test_launch_without_the_lock_launches_nothing(aws: Aws) -> None:
    aws.lock(OTHER)
    with pytest.raises(JobAlreadyRunning, match=f"no longer held by this execution \\(held by {OTHER}"):
        aws.launch(make_job(), attempt())
    assert fleet.run_instances_of(aws.ec2, "shapes") == []


# ---------------------------------------------------------------- planning


def test_planning_ladder_interruptions_and_budget() -> None:
    job = make_job(capacity="spot-then-on-demand", max_interruptions=1, max_cost_usd=2.0)
    first = planning.first_attempt(job.config, job.instance_types, job.deadline)
    assert first.capacity == "spot" and first.number == 1 and 3500 < first.seconds_left <= 3600
    second = planning.next_attempt(job, first, "SpotInterrupted")
    assert (second.number, second.capacity, second.interruptions) == (2, "on-demand", 1)
    with pytest.raises(TooManyInterruptions, match="max_interruptions"):
        planning.next_attempt(job, second, "SpotInterrupted")
    with pytest.raises(BudgetExceeded, match=r"max_cost_usd \(\$2.00\)"):
        planning.next_attempt(job, first, "InstanceLost", cost_usd=2.5)
    with pytest.raises(BudgetExceeded, match="max_hours"):
        planning.next_attempt(job, first, "SpotInterrupted", now=job.deadline - 10)
    round1 = planning.next_launch_round(job, first, "NoCapacity", "none", backoff_seconds=30, max_waits=2)
    assert (round1.capacity, round1.wait_seconds, round1.launch_waits) == ("on-demand", 30, 1)
    round2 = planning.next_launch_round(job, round1, "NoCapacity", "none", backoff_seconds=30, max_waits=2)
    assert round2.wait_seconds == 60
    with pytest.raises(NoCapacity, match="gave up after 3 launch tries"):
        planning.next_launch_round(job, round2, "NoCapacity", "none", backoff_seconds=30, max_waits=2)


def launch_windows(job: JobSpec, att: Attempt) -> tuple[int, int]:
    """(HeartbeatSeconds, TimeoutSeconds) Launch trainer gets from this state document."""
    state = json.loads(load_asl_text())["States"]["Launch trainer"]
    doc = {"job": job.model_dump(mode="json"), "attempt": att.model_dump(mode="json")}

    def at(path: str) -> int:
        value: Any = doc
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        return int(value)

    return at(state["HeartbeatSecondsPath"]), at(state["TimeoutSecondsPath"])


def planned_job(**config: Any) -> JobSpec:
    """A job as Validate job plans it: deadline and stall window from its config, started now."""
    job = make_job(**config)
    return job.model_copy(
        update={
            "deadline": int(time.time() + job.config.max_hours * 3600),
            "stall_seconds": int(job.config.stall_hours * 3600),
        }
    )


def test_a_stall_window_longer_than_the_job_is_clamped_below_the_attempts_timeout() -> None:
    job = planned_job(max_hours=1)  # the default stall_hours (2) is longer than the whole job
    assert job.config.stall_hours == 2
    first = planning.first_attempt(job.config, job.instance_types, job.deadline)
    heartbeat, timeout = launch_windows(job, first)
    assert 0 < heartbeat < timeout <= 3600


def test_the_stall_window_of_a_late_attempt_is_clamped_below_what_is_left() -> None:
    job = planned_job(max_hours=24, stall_hours=2)
    first = planning.first_attempt(job.config, job.instance_types, job.deadline)
    assert launch_windows(job, first) == (7200, first.seconds_left)  # room enough: stall_hours as set
    late = planning.next_attempt(job, first, "SpotInterrupted", now=job.deadline - 1800)
    heartbeat, timeout = launch_windows(job, late)
    assert timeout == 1800 and 0 < heartbeat < timeout
    waited = planning.next_launch_round(
        job, first, "NoCapacity", "none", backoff_seconds=600, max_waits=3, now=job.deadline - 1800
    )
    heartbeat, timeout = launch_windows(job, waited)
    assert timeout == 1200 and 0 < heartbeat < timeout


def test_an_attempt_never_carries_a_heartbeat_as_long_as_its_timeout() -> None:
    older = {"number": 2, "capacity": "spot", "instance_types": ["g5.xlarge"], "seconds_left": 900}
    upgraded = Attempt.model_validate(older)  # written before heartbeat_seconds existed: still reads
    assert 0 < upgraded.heartbeat_seconds < upgraded.seconds_left
    with pytest.raises(ValueError, match="must be below seconds_left"):
        Attempt.model_validate({**older, "heartbeat_seconds": 900})


def test_an_attempt_times_out_when_what_is_left_of_max_cost_usd_is_spent() -> None:
    now = time.time()
    job = make_job(capacity="on-demand", max_hours=24, max_cost_usd=20.0)
    job = job.model_copy(update={"deadline": int(now) + 24 * 3600})
    hourly = 1.006  # g5.xlarge on demand, the dearer of the job's two types
    first = planning.first_attempt(job.config, job.instance_types, job.deadline, now=now)
    assert first.seconds_left <= 20.0 / hourly * 3600 < 24 * 3600  # ~19.9 h, not 24 h (~$24)
    assert first.seconds_left > 19 * 3600
    second = planning.next_attempt(job, first, "InstanceLost", cost_usd=15.0, now=now)
    assert 0.9 * 5.0 / hourly * 3600 < second.seconds_left <= 5.0 / hourly * 3600
    waiting = planning.next_launch_round(
        job, first, "NoCapacity", "none", backoff_seconds=30, max_waits=2, cost_usd=19.0, now=now
    )
    assert 0.9 * 1.0 / hourly * 3600 < waiting.seconds_left <= 1.0 / hourly * 3600  # waiting is free
    spot = make_job(capacity="spot", max_hours=24, max_cost_usd=20.0).config
    on_spot = planning.first_attempt(spot, job.instance_types, job.deadline, now=now)
    assert on_spot.seconds_left > first.seconds_left  # spot is cheaper, so the budget lasts longer
    too_little = r"\$0\.03 left of max_cost_usd \(\$20\.00\).*raise max_cost_usd"
    with pytest.raises(BudgetExceeded, match=too_little):
        planning.next_attempt(job, first, "InstanceLost", cost_usd=19.97, now=now)  # ~1.8 min of g5


def test_prepare_retry_closes_the_attempt_and_terminates_its_instance(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    aws.launch(job, attempt())
    event = prepare_retry.RetryEvent(
        job=job, attempt=attempt(), execution=EXEC, error=ErrorInfo(Error="SpotInterrupted", Cause="notice")
    )
    out = prepare_retry.prepare_retry(event, ec2=aws.ec2, table=aws.table, cfg=aws.cfg)
    assert out["attempt"]["number"] == 2 and out["attempt"]["interruptions"] == 1
    assert out["job"]["run_id"] == "run-a"
    item = aws.table.get("shapes")
    assert (
        item
        and item.attempts[0].outcome == "SpotInterrupted"
        and item.attempts[0].end
        and item.current is None
    )
    assert fleet.run_instances_of(aws.ec2, "shapes") == []
    cause = json.dumps({"errorMessage": "no g5 anywhere", "errorType": "NoCapacity"})
    waiting = prepare_retry.prepare_retry(
        prepare_retry.RetryEvent(
            job=job, attempt=attempt(2), error=ErrorInfo(Error="NoCapacity", Cause=cause)
        ),
        ec2=aws.ec2,
        table=aws.table,
        cfg=aws.cfg,
    )
    assert waiting["attempt"]["number"] == 2 and waiting["attempt"]["wait_seconds"] == 10


# ---------------------------------------------------------------- instance_lost


def test_instance_lost_fails_only_the_current_attempt(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    old = aws.launch(job, attempt(1), token="tok-1")["instance"]
    aws.table.end_attempt("shapes", EXEC, 1, "SpotInterrupted")
    new = aws.launch(job, attempt(2), token="tok-2")["instance"]
    sent: list[dict[str, Any]] = []

    class Sfn:
        def send_task_failure(self, **kw: Any) -> None:
            sent.append(kw)

    aws.ec2.terminate_instances(InstanceIds=[old])
    out = instance_lost.instance_lost(old, "terminated", ec2=aws.ec2, sfn=Sfn(), table=aws.table)
    assert out["outcome"] == "ignored" and sent == []  # an earlier attempt's instance: nothing happens
    foreign = aws.ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    assert (
        instance_lost.instance_lost(foreign, "terminated", ec2=aws.ec2, sfn=Sfn(), table=aws.table)["reason"]
        == "not a spotyolo instance"
    )
    aws.ec2.terminate_instances(InstanceIds=[new])
    out = instance_lost.instance_lost(new, "shutting-down", ec2=aws.ec2, sfn=Sfn(), table=aws.table)
    assert out["outcome"] == "failed task"
    assert sent[0]["taskToken"] == "tok-2" and sent[0]["error"] == "InstanceLost" and new in sent[0]["cause"]


def test_an_instance_lost_before_launch_recorded_it_still_fails_its_task(aws: Aws) -> None:
    """The instance dies at once and EC2's state-change event comes before Launch trainer wrote
    the instance into the job item (its token is there: it is recorded before the fleet is asked).
    Ignoring the event would leave the execution waiting for its stall timeout (hours); the
    instance carries its run and attempt in its tags, which is enough to fail the right task."""
    aws.lock()
    sent: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []

    class Sfn:
        def send_task_failure(self, **kw: Any) -> None:
            sent.append(kw)

    class DiesAtOnce:
        def __getattr__(self, name: str) -> Any:
            return getattr(aws.ec2, name)

        def create_fleet(self, **kw: Any) -> Any:
            response = aws.ec2.create_fleet(**kw)
            (instance,) = [i for g in response["Instances"] for i in g["InstanceIds"]]
            aws.ec2.terminate_instances(InstanceIds=[instance])
            outcomes.append(
                instance_lost.instance_lost(instance, "terminated", ec2=aws.ec2, sfn=Sfn(), table=aws.table)
            )
            return response

    aws.launch(make_job(), attempt(), token="tok-1", ec2=DiesAtOnce())
    assert [o["outcome"] for o in outcomes] == ["failed task"]
    assert [(m["taskToken"], m["error"]) for m in sent] == [("tok-1", "InstanceLost")]


def test_instance_lost_with_a_stale_token_is_fine(aws: Aws) -> None:
    aws.lock()
    inst = aws.launch(make_job(), attempt(), token="not-a-live-token")["instance"]
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    out = instance_lost.instance_lost(inst, "terminated", ec2=aws.ec2, sfn=sfn, table=aws.table)
    assert out["outcome"] == "stale"


# ---------------------------------------------------------------- check_result


def test_the_message_counts_the_whole_job_time_across_attempts() -> None:
    job = make_job().model_copy(update={"created": "2026-11-25T10:00:00Z"})
    started = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC).timestamp()
    assert check_result.job_seconds(job, now=started + 3723) == 3723
    result = TrainResult(metrics={"recall": 0.9}, best_epoch=5, epochs=6, seconds=40, attempt=2)
    summary = check_result.summarize(job, attempt(2, interruptions=1), result, 0.1, elapsed=3723)
    assert "6 epochs · 1h02m · 1 interruption" in summary.message


def test_check_result_promotes_weights_and_keeps_the_previous_ones(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    for name in ("best.pt", "last.pt", "results.csv", "metrics.json"):
        aws.s3.put_object(Bucket="bkt", Key=f"runs/shapes/run-a/artifacts/{name}", Body=name.encode())
    aws.s3.put_object(Bucket="bkt", Key="weights/shapes/best.pt", Body=b"old")
    result = TrainResult(
        metrics={"recall": 0.904, "mAP50": 0.938}, best_epoch=59, epochs=60, seconds=92, attempt=2
    )
    event = check_result.CheckEvent(
        job=job, attempt=attempt(2, interruptions=1), result=result, execution=EXEC
    )
    summary = check_result.check_result(event, s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert aws.s3.get_object(Bucket="bkt", Key="weights/shapes/best.pt")["Body"].read() == b"best.pt"
    assert aws.s3.get_object(Bucket="bkt", Key="weights/shapes/previous/best.pt")["Body"].read() == b"old"
    assert summary.message.startswith(
        "shapes complete: 90.4% recall (mAP50 0.938) · target recall ≥ 80.0% · "
        "60 epochs · 1m32s · 1 interruption"
    )
    assert summary.status == "complete" and summary.met_target is True


def test_check_result_without_best_pt_is_an_error(aws: Aws) -> None:
    result = TrainResult(metrics={"recall": 0.9}, best_epoch=1, epochs=1, seconds=1, attempt=1)
    event = check_result.CheckEvent(job=make_job(), attempt=attempt(), result=result)
    with pytest.raises(TrainerError, match=r"best\.pt is missing"):
        check_result.check_result(event, s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert "Contents" not in aws.s3.list_objects_v2(Bucket="bkt", Prefix="weights/")


def _put_run(aws: Aws, job: str = "shapes", run: str = "run-a") -> None:
    for name in ("best.pt", "last.pt", "results.csv"):
        key = f"runs/{job}/{run}/artifacts/{name}"
        aws.s3.put_object(Bucket="bkt", Key=key, Body=f"{run} {name}".encode())
    body = json.dumps({"job": job, "run_id": run, "metrics": {"recall": 0.9}})
    aws.s3.put_object(Bucket="bkt", Key=f"runs/{job}/{run}/artifacts/metrics.json", Body=body.encode())


def _put_old_weights(aws: Aws) -> None:
    for name in ("best.pt", "last.pt", "results.csv"):
        aws.s3.put_object(Bucket="bkt", Key=f"weights/shapes/{name}", Body=f"old {name}".encode())
    body = json.dumps({"job": "shapes", "run_id": "run-old", "metrics": {"recall": 0.7}})
    aws.s3.put_object(Bucket="bkt", Key="weights/shapes/metrics.json", Body=body.encode())


def _read(aws: Aws, key: str) -> bytes:
    return aws.s3.get_object(Bucket="bkt", Key=key)["Body"].read()  # type: ignore[no-any-return]


def _folder(aws: Aws, prefix: str) -> dict[str, Any]:
    """The weights a user would download from ``prefix``: file -> content (metrics.json parsed)."""
    out: dict[str, Any] = {}
    for name in ("best.pt", "last.pt", "results.csv", "metrics.json"):
        try:
            body = _read(aws, prefix + name)
        except aws.s3.exceptions.NoSuchKey:
            continue
        out[name] = json.loads(body)["run_id"] if name == "metrics.json" else body.decode()
    return out


NEW_SET = {
    "best.pt": "run-a best.pt",
    "last.pt": "run-a last.pt",
    "results.csv": "run-a results.csv",
    "metrics.json": "run-a",
}
OLD_SET = {
    "best.pt": "old best.pt",
    "last.pt": "old last.pt",
    "results.csv": "old results.csv",
    "metrics.json": "run-old",
}


def _check_event(**artifacts: str) -> check_result.CheckEvent:
    result = TrainResult(
        metrics={"recall": 0.9}, best_epoch=2, epochs=3, seconds=9, attempt=1, artifacts=artifacts
    )
    return check_result.CheckEvent(job=make_job(), attempt=attempt(), result=result, execution=EXEC)


def test_check_result_run_twice_keeps_the_weights_from_before_the_run(aws: Aws) -> None:
    aws.lock()
    _put_run(aws)
    _put_old_weights(aws)
    for _ in range(2):  # Step Functions retries Check result on a transient Lambda error
        check_result.check_result(_check_event(), s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert _folder(aws, "weights/shapes/") == NEW_SET
    assert _folder(aws, "weights/shapes/previous/") == OLD_SET


def test_check_result_refuses_artifacts_outside_the_runs_own_prefix(aws: Aws) -> None:
    aws.lock()
    _put_run(aws)
    _put_run(aws, job="other", run="run-x")
    _put_old_weights(aws)
    event = _check_event(**{"best.pt": "runs/other/run-x/artifacts/best.pt"})
    refused = r"best\.pt at s3://bkt/runs/other/run-x/artifacts/best\.pt, outside .*runs/shapes/run-a/"
    with pytest.raises(TrainerError, match=refused):
        check_result.check_result(event, s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert _folder(aws, "weights/shapes/") == OLD_SET  # nothing published
    assert _folder(aws, "weights/shapes/previous/") == {}


class FailingOnceS3:
    """An S3 client whose writes fail once, after ``allowed`` of them went through."""

    def __init__(self, s3: Any, allowed: int) -> None:
        self._s3, self.allowed = s3, allowed

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._s3, name)
        if name not in ("copy_object", "put_object", "delete_object"):
            return call

        def write(**kw: Any) -> Any:
            self.allowed -= 1
            if self.allowed == -1:
                raise ConnectionError("Lambda ran out of time")
            return call(**kw)

        return write


@pytest.mark.parametrize("allowed", [1, 4, 5, 6])  # while keeping the old set, after, while publishing
def test_a_promotion_cut_short_is_completed_by_the_retry(aws: Aws, allowed: int) -> None:
    aws.lock()
    _put_run(aws)
    _put_old_weights(aws)
    with pytest.raises(ConnectionError):
        check_result.check_result(
            _check_event(), s3=FailingOnceS3(aws.s3, allowed), ec2=aws.ec2, table=aws.table
        )
    # until metrics.json names this run, weights/<job>/ still says it holds the old run
    assert _folder(aws, "weights/shapes/")["metrics.json"] == "run-old"
    check_result.check_result(_check_event(), s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert _folder(aws, "weights/shapes/") == NEW_SET
    assert _folder(aws, "weights/shapes/previous/") == OLD_SET


def test_a_first_promotion_cut_short_keeps_no_previous_weights(aws: Aws) -> None:
    aws.lock()
    _put_run(aws)
    with pytest.raises(ConnectionError):  # best.pt is published, the rest is not
        check_result.check_result(_check_event(), s3=FailingOnceS3(aws.s3, 2), ec2=aws.ec2, table=aws.table)
    check_result.check_result(_check_event(), s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert _folder(aws, "weights/shapes/") == NEW_SET
    assert _folder(aws, "weights/shapes/previous/") == {"metrics.json": None}  # nothing was there before


# ---------------------------------------------------------------- cleanup and cancel


def _recording_sns(published: list[dict[str, Any]]) -> Callable[[], Any]:
    """An SNS client that keeps what it is asked to publish."""

    class Sns:
        def publish(self, **kw: Any) -> None:
            published.append(kw)

    return Sns


def _status_event(execution: str, status: str) -> cleanup.StatusChangeEvent:
    """What the execution-status rule delivers when an execution of job "shapes" ends."""
    return cleanup.StatusChangeEvent.model_validate(
        {
            "version": "0",
            "id": "1",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "1",
            "time": "2026-11-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {"executionArn": execution, "status": status, "input": json.dumps({"job": "shapes"})},
        }
    )


def test_cleanup_is_idempotent_and_touches_only_its_own_run(aws: Aws) -> None:
    aws.lock()
    job = make_job()
    aws.launch(job, attempt())
    doc = {
        "job": job.model_dump(mode="json"),
        "attempt": attempt().model_dump(),
        "error": {"Error": "TrainingDiverged", "Cause": "loss is nan at epoch 3"},
    }
    # a refused duplicate's status-rule cleanup: the item names another execution, nothing happens
    stranger = _status_event(OTHER, "FAILED")
    out = cleanup.from_status_event(stranger, ec2=aws.ec2, table=aws.table, sns=aws.sns, topic_arn="")
    assert out["owned"] is False and out["terminated"] == []
    assert len(fleet.run_instances_of(aws.ec2, "shapes")) == 1
    event = cleanup.WorkflowCleanup(document=doc, execution=EXEC, outcome="failed")
    first = cleanup.from_workflow(event, ec2=aws.ec2, table=aws.table)
    assert first["released"] is True and len(first["terminated"]) == 1
    assert first["error"] == "TrainingDiverged" and first["status"] == "failed"
    assert "training diverged" in first["message"] and "loss is nan at epoch 3" in first["message"]
    assert "1 attempt" in first["message"]
    second = cleanup.from_workflow(event, ec2=aws.ec2, table=aws.table)
    assert second["released"] is False and second["terminated"] == []
    item = aws.table.get("shapes")
    assert (
        item
        and item.execution is None
        and item.current is None
        and item.attempts[0].outcome == "TrainingDiverged"
    )


def test_an_attempt_stopped_by_max_cost_usd_says_so(aws: Aws) -> None:
    aws.lock()
    now = time.time()
    job = make_job(capacity="on-demand", max_hours=24, max_cost_usd=1.0)
    job = job.model_copy(update={"deadline": int(now) + 20 * 3600})
    started = now - 3600  # the budget paid for ~58 min of g5.xlarge: the task timed out just now
    att = planning.first_attempt(job.config, job.instance_types, job.deadline, now=started)
    aws.launch(job, att)
    doc = {
        "job": job.model_dump(mode="json"),
        "attempt": att.model_dump(mode="json"),
        "error": {"Error": "States.Timeout", "Cause": ""},
    }
    event = cleanup.WorkflowCleanup(document=doc, execution=EXEC, outcome="failed")
    out = cleanup.from_workflow(event, ec2=aws.ec2, table=aws.table)
    assert out["error"] == "BudgetExceeded" and "max_cost_usd ($1.00" in out["message"]
    assert "stall" not in out["message"]
    item = aws.table.get("shapes")
    assert item and item.attempts[0].outcome == "BudgetExceeded"


def test_cleanup_after_a_new_run_took_the_job_leaves_it_alone(aws: Aws) -> None:
    aws.lock()
    old_job = make_job()
    aws.table.release_lock("shapes", EXEC, "failed")
    aws.table.acquire_lock("shapes", OTHER, "run-b", lambda e: True)
    new_job = make_job().model_copy(update={"run_id": "run-b", "execution": OTHER})
    aws.launch(new_job, attempt(), token="tok-new")
    doc = {"job": old_job.model_dump(mode="json"), "error": {"Error": "States.Timeout"}}
    out = cleanup.from_workflow(
        cleanup.WorkflowCleanup(document=doc, execution=EXEC, outcome="failed"), ec2=aws.ec2, table=aws.table
    )
    assert out["released"] is False and out["terminated"] == []
    item = aws.table.get("shapes")
    assert item and item.execution == OTHER and item.current and item.current.token == "tok-new"


def test_cancel_stops_and_cleans_up(aws: Aws) -> None:
    aws.lock()
    aws.launch(make_job(), attempt())
    stopped: list[dict[str, Any]] = []

    class Sfn:
        def stop_execution(self, **kw: Any) -> None:
            stopped.append(kw)

    out = cancel.cancel(
        "bkt",
        "jobs/shapes/config.yaml",
        s3=aws.s3,
        sfn=Sfn(),
        ec2=aws.ec2,
        sns=aws.sns,
        table=aws.table,
        topic_arn="",
    )
    assert (
        out["cancelled"] is True and stopped[0]["executionArn"] == EXEC and stopped[0]["error"] == "Cancelled"
    )
    assert fleet.run_instances_of(aws.ec2, "shapes") == []
    item = aws.table.get("shapes")
    assert item and item.status == "cancelled" and item.execution is None
    assert (
        cancel.cancel(
            "bkt",
            "jobs/shapes/dataset/data.yaml",
            s3=aws.s3,
            sfn=Sfn(),
            ec2=aws.ec2,
            sns=aws.sns,
            table=aws.table,
            topic_arn="",
        )["cancelled"]
        is False
    )


def test_a_cancel_raced_by_the_status_rules_clean_up_is_announced_once(aws: Aws) -> None:
    """Cancel stops the execution, and the execution-status rule's clean up of that ABORTED
    execution runs while Cancel's own clean up is between reading the job item and releasing the
    lock: both saw the lock held. Only the one whose release wins may tell the user (the fault
    campaign's seed 17 got two "cancelled" messages)."""
    aws.lock()
    aws.launch(make_job(), attempt())
    published: list[dict[str, Any]] = []
    Sns = _recording_sns(published)

    aborted = _status_event(EXEC, "ABORTED")

    class StatusRuleMeanwhile:
        """EC2 for Cancel: while it terminates, the status rule's clean up runs to the end."""

        def __init__(self) -> None:
            self.raced = False

        def __getattr__(self, name: str) -> Any:
            return getattr(aws.ec2, name)

        def terminate_instances(self, **kw: Any) -> Any:
            if not self.raced:
                self.raced = True
                cleanup.from_status_event(aborted, ec2=aws.ec2, table=aws.table, sns=Sns(), topic_arn="topic")
            return aws.ec2.terminate_instances(**kw)

    ec2 = StatusRuleMeanwhile()
    out = cancel.cancel(
        "bkt",
        "jobs/shapes/config.yaml",
        s3=aws.s3,
        sfn=RecordingSfn(),
        ec2=ec2,
        sns=Sns(),
        table=aws.table,
        topic_arn="topic",
    )
    assert ec2.raced and out["cancelled"] is True
    assert [m["Subject"] for m in published] == ["spotyolo: shapes cancelled (Cancelled)"]
    assert fleet.run_instances_of(aws.ec2, "shapes") == []


class RecordingSfn:
    def __init__(self) -> None:
        self.stopped: list[dict[str, Any]] = []

    def stop_execution(self, **kw: Any) -> None:
        self.stopped.append(kw)


def _cancel(aws: Aws, sfn: RecordingSfn) -> dict[str, Any]:
    return cancel.cancel(
        "bkt",
        "jobs/shapes/config.yaml",
        s3=aws.s3,
        sfn=sfn,  # type: ignore[arg-type]
        ec2=aws.ec2,
        sns=aws.sns,
        table=aws.table,
        topic_arn="",
    )


def test_cancel_leaves_a_run_alone_while_its_config_is_there(aws: Aws) -> None:
    """Issue 9, hole 7: a Deleted event delivered after the re-upload that started this run."""
    aws.lock()
    aws.launch(make_job(), attempt())
    aws.s3.put_object(Bucket="bkt", Key="jobs/shapes/config.yaml", Body=b"epochs: 3\n")
    sfn = RecordingSfn()
    out = _cancel(aws, sfn)
    assert out["cancelled"] is False and "there again" in out["reason"]
    assert sfn.stopped == [] and len(fleet.run_instances_of(aws.ec2, "shapes")) == 1
    item = aws.table.get("shapes")
    assert item and item.execution == EXEC and item.status == "training"


def test_a_cancel_claimed_first_keeps_check_result_from_publishing(aws: Aws) -> None:
    aws.lock()
    _put_run(aws)
    _put_old_weights(aws)
    assert aws.table.claim_cancel("shapes", EXEC)  # Cancel is between its claim and its stop
    with pytest.raises(Cancelled, match="nothing was published"):
        check_result.check_result(_check_event(), s3=aws.s3, ec2=aws.ec2, table=aws.table)
    assert _folder(aws, "weights/shapes/") == OLD_SET
    assert _folder(aws, "weights/shapes/previous/") == {}


def test_a_cancel_after_check_result_claimed_the_run_comes_too_late(aws: Aws) -> None:
    aws.lock()
    aws.launch(make_job(), attempt())
    assert aws.table.claim_publication("shapes", EXEC)  # Check result is publishing
    sfn = RecordingSfn()
    out = _cancel(aws, sfn)
    assert out["cancelled"] is False and "publishing its weights" in out["reason"]
    assert sfn.stopped == []
    item = aws.table.get("shapes")
    assert item and item.execution == EXEC and item.status == "publishing"


def test_run_cost_counts_launched_attempts_only() -> None:
    records = [
        AttemptRecord(
            number=1,
            capacity="spot",
            instance_type="g5.xlarge",
            start="2026-11-01T00:00:00Z",
            end="2026-11-01T01:00:00Z",
            outcome="SpotInterrupted",
        ),
        AttemptRecord(number=2, capacity="on-demand", outcome="NoCapacity"),
        AttemptRecord(
            number=2,
            capacity="on-demand",
            instance_type="g5.xlarge",
            start="2026-11-01T01:00:00Z",
            end="2026-11-01T01:30:00Z",
            outcome="succeeded",
        ),
    ]
    assert run_cost(records) == pytest.approx(1.006 * 0.4 + 1.006 * 0.5)


# ---------------------------------------------------------------- eventual consistency, secrets


def test_a_lost_instance_ec2_does_not_know_yet_still_fails_its_task(aws: Aws, sleeps: list[float]) -> None:
    """A spot instance can end within seconds of its launch: its state-change event may come
    before DescribeInstances finds it. Ignoring it as "unknown" left the job waiting a whole
    stall window."""
    aws.lock()
    inst = aws.launch(make_job(), attempt(), token="tok-1")["instance"]
    sent: list[dict[str, Any]] = []

    class Sfn:
        def send_task_failure(self, **kw: Any) -> None:
            sent.append(kw)

    lagging = LaggingEC2(aws.ec2, describes=2, tags=0)
    out = instance_lost.instance_lost(inst, "terminated", ec2=lagging, sfn=Sfn(), table=aws.table)
    assert out["outcome"] == "failed task" and sent[0]["error"] == "InstanceLost"
    assert 0 < sum(sleeps) < 10


def test_a_clean_up_right_after_a_launch_terminates_the_instance_no_query_lists_yet(aws: Aws) -> None:
    """A tag query does not list an instance EC2 has not propagated: a cancel right after the
    launch left it running (and billing). The job table names it: that is enough."""
    from spotyolo.local import moto_patches

    aws.lock()
    job = make_job()
    inst = aws.launch(job, attempt())["instance"]
    moto_patches.install(lambda name, event: None)
    moto_patches.LIMITS.ec2_visible_after = 60.0
    try:
        assert fleet.run_instances_of(aws.ec2, "shapes") == []  # what EC2 shows at this moment
        report = ending.clean_up(
            "shapes",
            EXEC,
            run_id="run-a",
            outcome="Cancelled",
            error=None,
            job=job,
            summary=None,
            ec2=aws.ec2,
            table=aws.table,
        )
    finally:
        moto_patches.LIMITS.ec2_visible_after = 0.0
        moto_patches.uninstall()
    assert report.terminated == [inst]
    (described,) = aws.ec2.describe_instances(InstanceIds=[inst])["Reservations"][0]["Instances"]
    assert described["State"]["Name"] in ("shutting-down", "terminated")


def test_the_task_token_never_reaches_a_log_line(aws: Aws) -> None:
    """Whoever reads a task token can answer the task: no Lambda log line may hold it."""
    import io
    import logging

    token = "AQCEAAAAKgAAAAMAAAAAAAAAAS3cr3tT0k3n" * 8
    aws.lock()
    event = launch.LaunchEvent(job=make_job(), attempt=attempt(), token=token)
    assert token not in repr(event) and token not in str(event.model_dump())
    written = io.StringIO()  # what Lambda would send to CloudWatch Logs (Powertools' JSON lines)
    handlers = [h for h in common.logger._logger.handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.setStream(written) for h in handlers]
    try:
        launch.launch(event, ec2=aws.ec2, table=aws.table, cfg=aws.cfg)
        common.logger.info(
            "answering %s", token, extra={"taskToken": token, "detail": {"cause": f"for {token}"}}
        )
        common.logger.warning("a problem", extra={"token": "anything"})
    finally:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.setStream(stream)
    out = written.getvalue()
    assert handlers and '"launched"' in out and "[task token]" in out
    assert token not in out and "anything" not in out


def test_a_stopped_execution_whose_lock_was_taken_over_before_its_clean_up_is_announced_once(
    aws: Aws,
) -> None:
    """The user stops execution A and uploads config.yaml again; the new execution's Validate
    takes over A's lock (A has ended) before the execution-status rule's clean up of A runs. That
    clean up no longer owns the lock, and nobody told the user A ended (the queue fault campaign,
    seed 6: a takeover of the third job). The lock's takeover and A's clean up decide it between
    them: exactly one notification for A, even when the status rule delivers twice."""
    aws.lock()
    aws.launch(make_job(), attempt())
    published: list[dict[str, Any]] = []
    Sns = _recording_sns(published)

    retire = validate._retire(aws.ec2, "shapes")
    assert aws.table.acquire_lock("shapes", OTHER, "run-b", lambda e: False, retire=retire) == "run-b"
    for _ in range(2):  # the status rule's clean up of A, delivered twice
        cleanup.from_status_event(
            _status_event(EXEC, "ABORTED"), ec2=aws.ec2, table=aws.table, sns=Sns(), topic_arn="topic"
        )
    assert [m["Subject"] for m in published] == ["spotyolo: shapes cancelled (Cancelled)"]
    assert "run-a" in published[0]["Message"]  # it names the run that was stopped
    item = aws.table.get("shapes")
    assert item and item.execution == OTHER and item.run_id == "run-b"  # the new run is untouched
    assert fleet.run_instances_of(aws.ec2, "shapes", "run-a") == []


def test_a_stopped_execution_whose_lock_was_taken_over_while_its_clean_up_ran_is_announced_once(
    aws: Aws,
) -> None:
    """The other interleaving: the status rule's clean up of A reads the item while A still holds
    the lock, terminates A's instance, and the new execution's Validate takes the lock over
    before that clean up releases it. Its release fails, so it does not tell the user; the
    takeover kept A's run, and the clean up must tell from that (the queue campaign, seed 18,
    whose folder kept the logs: "cleaned up ... released: false" and no notification)."""
    aws.lock()
    aws.launch(make_job(), attempt())
    published: list[dict[str, Any]] = []
    Sns = _recording_sns(published)

    retire = validate._retire(aws.ec2, "shapes")

    class TakeoverMeanwhile(JobTable):
        def release_lock(self, job: str, execution: str, status: str) -> bool:
            aws.table.acquire_lock("shapes", OTHER, "run-b", lambda e: False, retire=retire)
            return super().release_lock(job, execution, status)

    aborted = _status_event(EXEC, "ABORTED")
    racing = TakeoverMeanwhile(aws.ddb, "jobs")
    cleanup.from_status_event(aborted, ec2=aws.ec2, table=racing, sns=Sns(), topic_arn="topic")
    assert [m["Subject"] for m in published] == ["spotyolo: shapes cancelled (Cancelled)"]
    # delivered again: no second word
    cleanup.from_status_event(aborted, ec2=aws.ec2, table=aws.table, sns=Sns(), topic_arn="topic")
    assert len(published) == 1
    item = aws.table.get("shapes")
    assert item and item.execution == OTHER and item.run_id == "run-b"
