"""Launch trainer as the account sees it: what the fleet request pays for and protects (one
instance, encrypted root volume deleted with it, the job's pinned image, this run's own
instance), and how each EC2 refusal, returned or raised, reaches the user. One emulator world
for the module; each test uses its own job name."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fake_settings import make_settings
from moto import mock_aws

from spotyolo.contract.env import Settings
from spotyolo.contract.errors import Cancelled, JobAlreadyRunning, LaunchFailed, NoCapacity, QuotaExceeded
from spotyolo.core import fleet
from spotyolo.core.cost import price_fn, run_cost
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, JobConfig, JobSpec, TrainResult
from spotyolo.steps import check_result, common, launch

EXEC = "arn:aws:states:us-east-1:123456789012:execution:pipeline:run-1"
GIB = 2**30
_names = itertools.count()


class World:
    def __init__(self) -> None:
        self.ec2 = boto3.client("ec2", region_name="us-east-1")
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="jobs",
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.table = JobTable(ddb, "jobs")
        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.s3.create_bucket(Bucket="bkt")
        lt = self.ec2.create_launch_template(
            LaunchTemplateName="t", LaunchTemplateData={"ImageId": "ami-03cf127a"}
        )
        self.cfg = make_settings(
            subnet_ids=[],
            bucket="bkt",
            job_table="jobs",
            launch_template_id=lt["LaunchTemplate"]["LaunchTemplateId"],
            trainer_image="repo/trainer:latest",
            root_volume_base_gb=40,
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with mock_aws():
        yield World()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The launch's backoff sleeps, recorded instead of slept (in every test: a launch that
    waits where it should not fails on what it recorded, not by being slow)."""
    slept: list[float] = []
    monkeypatch.setattr(common, "sleep", slept.append)
    return slept


def make_job(
    name: str | None = None, *, run_id: str = "run-a", image: str = "repo/trainer:pinned", **config: Any
) -> JobSpec:
    return JobSpec(
        name=name or f"job-{next(_names)}",
        bucket="bkt",
        run_id=run_id,
        execution=EXEC,
        config=JobConfig.model_validate({"model": "yolo11n.yaml", **config}),
        dataset={"bytes": 5 * GIB, "files": 10},
        instance_types=["g5.xlarge", "g6.xlarge"],
        deadline=int(time.time()) + 3600,
        stall_seconds=600,
        image=image,
    )


def make_attempt(
    number: int = 1, capacity: str = "spot", types: list[str] | None = None, **kw: Any
) -> Attempt:
    return Attempt(
        number=number,
        capacity=capacity,  # type: ignore[arg-type]
        instance_types=types or ["g5.xlarge", "g6.xlarge"],
        seconds_left=3000,
        heartbeat_seconds=600,
        **kw,
    )


class Recording:
    """EC2 that records the CreateFleet requests (and may answer or raise instead of EC2)."""

    def __init__(self, ec2: Any, answer: Any = None) -> None:
        self._ec2, self.answer = ec2, answer
        self.requests: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def create_fleet(self, **kw: Any) -> Any:
        self.requests.append(kw)
        if isinstance(self.answer, Exception):
            raise self.answer
        if callable(self.answer):
            return self.answer(kw)
        return self._ec2.create_fleet(**kw)


def run_launch(
    world: World,
    job: JobSpec,
    att: Attempt,
    ec2: Any = None,
    cfg: Settings | None = None,
    *,
    token: str = "tok-1",
    table: JobTable | None = None,
) -> Any:
    world.table.acquire_lock(job.name, job.execution, job.run_id, lambda e: True)
    event = launch.LaunchEvent(job=job, attempt=att, token=token)
    return launch.launch(event, ec2=ec2 or world.ec2, table=table or world.table, cfg=cfg or world.cfg)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """What the launch Lambda logs (its records, after the token filter)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    launch.logger.addHandler(handler)
    yield records
    launch.logger.removeHandler(handler)


# ------------------------------------------------------------------ the fleet request


def test_the_fleet_asks_for_one_instance_with_an_encrypted_root_volume_deleted_with_it(world: World) -> None:
    job = make_job()
    ec2 = Recording(world.ec2)
    out = run_launch(world, job, make_attempt(), ec2=ec2)
    (request,) = ec2.requests
    assert request["Type"] == "instant"
    assert request["TargetCapacitySpecification"] == {
        "TotalTargetCapacity": 1,
        "DefaultTargetCapacityType": "spot",
    }
    overrides = request["LaunchTemplateConfigs"][0]["Overrides"]
    assert [o["InstanceType"] for o in overrides] == ["g5.xlarge", "g6.xlarge"]
    for override in overrides:
        assert "SubnetId" not in override and "Priority" not in override  # spot: EC2 picks the pool
        assert override["BlockDeviceMappings"] == [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "VolumeSize": 50,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ]
    spec = request["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    assert spec == {"LaunchTemplateId": world.cfg.launch_template_id, "Version": "$Latest"}
    assert len(fleet.run_instances_of(world.ec2, job.name)) == 1 and out["reused"] is False


def test_the_instance_runs_the_image_pinned_for_the_run_and_carries_its_tags(world: World) -> None:
    job = make_job(image="repo/trainer@sha256:abc")
    ec2 = Recording(world.ec2)
    out = run_launch(world, job, make_attempt(), ec2=ec2)
    expected = {
        "app": "spotyolo",
        "job": job.name,
        "run": "run-a",
        "attempt": "1",
        "image": "repo/trainer@sha256:abc",
        "Name": f"spotyolo-{job.name}-1",
    }
    for spec in ec2.requests[0]["TagSpecifications"]:
        assert {t["Key"]: t["Value"] for t in spec["Tags"]} == expected
    assert [s["ResourceType"] for s in ec2.requests[0]["TagSpecifications"]] == ["instance", "fleet"]
    (inst,) = fleet.run_instances_of(world.ec2, job.name, "run-a", 1)
    assert inst["InstanceId"] == out["instance"]
    assert {t["Key"]: t["Value"] for t in inst["Tags"]}["image"] == "repo/trainer@sha256:abc"
    # a job recorded without an image (older execution) runs the deployment's
    request = launch.fleet_request(make_job(image=""), make_attempt(), world.cfg, EXEC)
    assert {t["Key"]: t["Value"] for t in request["TagSpecifications"][0]["Tags"]}[
        "image"
    ] == "repo/trainer:latest"


def test_on_demand_tries_the_types_in_the_configured_order_over_every_subnet(world: World) -> None:
    cfg = make_settings(
        launch_template_id="lt-1", launch_template_version="7", subnet_ids=["subnet-a", "subnet-b"]
    )
    request = launch.fleet_request(make_job(), make_attempt(capacity="on-demand"), cfg, EXEC)
    overrides = request["LaunchTemplateConfigs"][0]["Overrides"]
    assert [(o["InstanceType"], o["SubnetId"], o["Priority"]) for o in overrides] == [
        ("g5.xlarge", "subnet-a", 0.0),
        ("g5.xlarge", "subnet-b", 0.0),
        ("g6.xlarge", "subnet-a", 1.0),
        ("g6.xlarge", "subnet-b", 1.0),
    ]
    assert (
        request["OnDemandOptions"] == {"AllocationStrategy": "prioritized"} and "SpotOptions" not in request
    )
    assert request["TargetCapacitySpecification"] == {
        "TotalTargetCapacity": 1,
        "DefaultTargetCapacityType": "on-demand",
    }
    assert request["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]["Version"] == "7"
    unset = dataclasses.replace(cfg, launch_template_version="")  # LAUNCH_TEMPLATE_VERSION=""
    latest = launch.fleet_request(make_job(), make_attempt(), unset, EXEC)
    assert latest["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]["Version"] == "$Latest"
    spot = launch.fleet_request(make_job(), make_attempt(), cfg, EXEC)
    assert (
        spot["SpotOptions"] == {"AllocationStrategy": "price-capacity-optimized"}
        and "OnDemandOptions" not in spot
    )


def test_a_deployment_without_a_launch_template_launches_nothing() -> None:
    cfg = make_settings(launch_template_id="")
    with pytest.raises(ValueError) as refused:
        launch.fleet_request(make_job(), make_attempt(), cfg, EXEC)
    assert str(refused.value) == (
        "LAUNCH_TEMPLATE_ID is not set for the launch function: deploy with the CDK app"
    )


@pytest.mark.parametrize(
    ("dataset", "gb"), [(0, 40), (1, 41), (GIB // 2, 41), (GIB // 2 + 1, 42), (5 * GIB, 50)]
)
def test_the_root_volume_holds_the_dataset_twice(dataset: int, gb: int) -> None:
    assert launch.root_volume_gb(dataset, 40) == gb


def test_each_launch_round_has_its_own_idempotency_token() -> None:
    base = launch.client_token(EXEC, make_attempt())
    assert base.startswith("spotyolo-") and len(base) == 9 + 48
    assert base == launch.client_token(EXEC, make_attempt())
    others = {
        launch.client_token(EXEC + "x", make_attempt()),
        launch.client_token(EXEC, make_attempt(2)),
        launch.client_token(EXEC, make_attempt(launch_waits=1)),
    }
    assert base not in others and len(others) == 3


# ------------------------------------------------------------------ the run's own instance


class DiesBeforeRecording(JobTable):
    """The Lambda runs out of time after EC2 started the instance, before it was recorded."""

    def set_instance(self, *args: Any, **kwargs: Any) -> bool:
        raise TimeoutError("Task timed out after 120.00 seconds")


def test_a_launch_cut_short_after_ec2_started_the_instance_is_finished_by_the_retry(
    world: World, logged: list[logging.LogRecord]
) -> None:
    """Step Functions retries the task with a new token: the retry finds this attempt's
    instance, records it (type and zone: what the attempt costs), and the trainer finds the new
    token; no second instance is paid for."""
    job = make_job()
    cut_short = DiesBeforeRecording(world.table.client, world.table.table_name)
    with pytest.raises(TimeoutError):
        run_launch(world, job, make_attempt(), token="tok-1", table=cut_short)
    (started,) = fleet.run_instances_of(world.ec2, job.name)
    out = run_launch(world, job, make_attempt(), token="tok-2")
    assert out == {
        "instance": started["InstanceId"],
        "instance_type": started["InstanceType"],
        "capacity": "spot",
        "az": started["Placement"]["AvailabilityZone"],
        "reused": True,
    }
    assert len(fleet.run_instances_of(world.ec2, job.name)) == 1
    item = world.table.get(job.name)
    assert item and item.status == "training" and item.current
    assert (item.current.number, item.current.instance) == (1, started["InstanceId"])
    (record,) = item.attempts
    assert (record.instance, record.instance_type, record.az, record.outcome) == (
        started["InstanceId"],
        started["InstanceType"],
        started["Placement"]["AvailabilityZone"],
        "running",
    )
    assert record.start  # paid for from now on
    assert world.table.token_for(job.name, "run-a", 1) == "tok-2"
    reused = [r for r in logged if r.getMessage() == "instance of this attempt already exists"]
    assert [r.__dict__["instance"] for r in reused] == [started["InstanceId"]]


def test_the_trainer_finds_the_token_of_the_launch_that_started_it(world: World) -> None:
    job = make_job()
    run_launch(world, job, make_attempt(), token="tok-first")
    assert world.table.token_for(job.name, "run-a", 1) == "tok-first"
    again = run_launch(world, job, make_attempt(), token="tok-retried")  # the task was retried
    assert again["reused"] is True and world.table.token_for(job.name, "run-a", 1) == "tok-retried"


def test_the_task_token_a_launch_holds_never_reaches_its_log(
    world: World, logged: list[logging.LogRecord]
) -> None:
    """Whoever reads a task token can answer the task: once a launch holds one, no log line of
    the Lambda shows it, even one that quotes it."""
    token = f"AQCEAAAAKgAAAAMAAAAA-{next(_names)}-secret"
    run_launch(world, make_job(), make_attempt(), token=token)
    launch.logger.info(f"the task {token} was answered")
    assert logged and not [r for r in logged if token in r.getMessage()]
    assert logged[-1].getMessage() == "the task [task token] was answered"


def test_a_later_attempt_never_takes_over_an_earlier_attempts_instance(world: World) -> None:
    """Attempt 1's instance is still up (its clean up is late): attempt 2 starts its own."""
    job = make_job()
    first = run_launch(world, job, make_attempt(1))
    world.table.end_attempt(job.name, EXEC, 1, "SpotInterrupted")
    second = run_launch(world, job, make_attempt(2), token="tok-2")
    assert second["reused"] is False and second["instance"] != first["instance"]
    item = world.table.get(job.name)
    assert item and [(a.number, a.instance) for a in item.attempts] == [
        (1, first["instance"]),
        (2, second["instance"]),
    ]


def test_a_second_launch_round_of_an_attempt_gets_its_own_record(world: World) -> None:
    """After a NoCapacity round the attempt is launched again (on-demand now): its own record,
    so the first round costs nothing and the second is paid from its instance's start."""
    job = make_job()
    with pytest.raises(NoCapacity):
        run_launch(
            world, job, make_attempt(), ec2=Recording(world.ec2, _raised("InsufficientInstanceCapacity"))
        )
    out = run_launch(world, job, make_attempt(capacity="on-demand", launch_waits=1), token="tok-2")
    assert out["reused"] is False
    item = world.table.get(job.name)
    assert item and [(a.number, a.capacity, a.outcome, a.instance) for a in item.attempts] == [
        (1, "spot", "NoCapacity", None),
        (1, "on-demand", "running", out["instance"]),
    ]
    assert world.table.token_for(job.name, "run-a", 1) == "tok-2"


def test_a_launch_for_a_job_another_execution_holds_says_which_and_launches_nothing(world: World) -> None:
    job = make_job()
    world.table.acquire_lock(job.name, EXEC + "-other", "run-other", lambda e: True)
    event = launch.LaunchEvent(job=job, attempt=make_attempt(), token="tok")
    with pytest.raises(JobAlreadyRunning) as refused:
        launch.launch(event, ec2=world.ec2, table=world.table, cfg=world.cfg)
    assert str(refused.value) == (
        f"job {job.name!r} is no longer held by this execution (held by {EXEC}-other: cancelled or "
        "taken over); nothing was launched"
    )
    assert fleet.run_instances_of(world.ec2, job.name) == []


def test_a_lock_lost_while_the_attempt_is_recorded_launches_nothing(world: World) -> None:
    class LockMoves(JobTable):
        def start_attempt(self, job: str, *args: Any) -> bool:
            self.release_lock(job, EXEC, "cancelled")  # a cancel won just now
            return super().start_attempt(job, *args)

    job = make_job()
    moving = LockMoves(world.table.client, world.table.table_name)
    with pytest.raises(JobAlreadyRunning) as refused:
        run_launch(world, job, make_attempt(), table=moving)
    assert str(refused.value) == (f"job {job.name!r}: the lock moved while launching; nothing was launched")
    assert fleet.run_instances_of(world.ec2, job.name) == []


def test_a_retried_launch_reuses_only_this_runs_instance(world: World) -> None:
    name = f"job-{next(_names)}"
    old = make_job(name, run_id="run-old")
    first = run_launch(world, old, make_attempt())
    world.table.release_lock(name, EXEC, "failed")  # the old run's instance is still up (being cleaned up)
    new = make_job(name, run_id="run-new").model_copy(update={"execution": EXEC + "-2"})
    out = run_launch(world, new, make_attempt())
    assert out["reused"] is False and out["instance"] != first["instance"]
    (mine,) = fleet.run_instances_of(world.ec2, name, "run-new", 1)
    assert mine["InstanceId"] == out["instance"]
    again = run_launch(world, new, make_attempt())  # Step Functions retried the task
    assert again["reused"] is True and again["instance"] == out["instance"]
    assert (again["instance_type"], again["capacity"]) == (out["instance_type"], "spot")
    item = world.table.get(name)
    assert item and item.current and item.current.instance == out["instance"]
    assert [a.instance for a in item.attempts] == [out["instance"]]


def test_a_launch_for_a_job_nobody_holds_launches_nothing(world: World) -> None:
    job = make_job()
    event = launch.LaunchEvent(job=job, attempt=make_attempt(), token="tok")
    with pytest.raises(JobAlreadyRunning, match=r"no longer held by this execution \(held by nobody"):
        launch.launch(event, ec2=world.ec2, table=world.table, cfg=world.cfg)
    assert fleet.run_instances_of(world.ec2, job.name) == []


def test_the_job_is_launching_while_the_fleet_is_asked_and_training_once_it_started(world: World) -> None:
    job = make_job()
    seen: list[str] = []

    def answer(request: dict[str, Any]) -> Any:
        item = world.table.get(job.name)
        assert item
        seen.append(item.status)
        return world.ec2.create_fleet(**request)

    run_launch(world, job, make_attempt(), ec2=Recording(world.ec2, answer))
    item = world.table.get(job.name)
    assert seen == ["launching"] and item and item.status == "training"


def test_a_surplus_instance_is_terminated_at_once(world: World) -> None:
    job = make_job()

    def two(request: dict[str, Any]) -> Any:
        spec = {**request["TargetCapacitySpecification"], "TotalTargetCapacity": 2}
        return world.ec2.create_fleet(**{**request, "TargetCapacitySpecification": spec})

    class NotFoundAtFirst(Recording):
        """The surplus instance is not known to TerminateInstances yet (eventual consistency)."""

        missed = 0

        def terminate_instances(self, **kw: Any) -> Any:
            if not self.missed:
                self.missed += 1
                error = {"Code": "InvalidInstanceID.NotFound", "Message": "not found"}
                raise ClientError({"Error": error}, "TerminateInstances")
            return self._ec2.terminate_instances(**kw)

    out = run_launch(world, job, make_attempt(), ec2=NotFoundAtFirst(world.ec2, two))
    live = fleet.run_instances_of(world.ec2, job.name, states=["pending", "running"])
    assert [i["InstanceId"] for i in live] == [out["instance"]]


def test_an_instance_described_without_its_volumes_yet_still_launches(world: World) -> None:
    """Tagging the root volume is cosmetic: EC2 describing the new instance before its block
    device mappings are filled in never fails the launch (the instance is paid for already)."""

    class NoMappingsYet(Recording):
        def describe_instances(self, **kw: Any) -> Any:
            out = self._ec2.describe_instances(**kw)
            for reservation in out["Reservations"]:
                for instance in reservation["Instances"]:
                    instance.pop("BlockDeviceMappings", None)
            return out

    job = make_job()
    out = run_launch(world, job, make_attempt(), ec2=NoMappingsYet(world.ec2))
    item = world.table.get(job.name)
    assert item and item.status == "training" and item.current and item.current.instance == out["instance"]


def test_the_attempt_records_the_zone_of_the_subnet_ec2_chose(
    world: World, logged: list[logging.LogRecord]
) -> None:
    """The zone prices the attempt's spot time; a fleet response that names only the subnet
    is looked up."""
    subnets = world.ec2.describe_subnets()["Subnets"]
    chosen = next(s for s in subnets if s["AvailabilityZone"] != subnets[0]["AvailabilityZone"])
    cfg = dataclasses.replace(world.cfg, subnet_ids=[chosen["SubnetId"]])

    class OnlyTheSubnet(Recording):
        def create_fleet(self, **kw: Any) -> Any:
            out = self._ec2.create_fleet(**kw)
            for group in out["Instances"]:
                group["LaunchTemplateAndOverrides"]["Overrides"].pop("AvailabilityZone", None)
            return out

    job = make_job()
    out = run_launch(world, job, make_attempt(), ec2=OnlyTheSubnet(world.ec2), cfg=cfg)
    item = world.table.get(job.name)
    zone = chosen["AvailabilityZone"]
    assert item and item.attempts[0].az == zone
    # the task's output (in the execution's history) and the log line say what was started
    assert out == {
        "instance": item.attempts[0].instance,
        "instance_type": "g5.xlarge",
        "capacity": "spot",
        "az": zone,
        "reused": False,
    }
    (line,) = [r for r in logged if r.getMessage() == "launched"]
    said = {k: line.__dict__[k] for k in ("instance", "type", "capacity", "attempt", "az")}
    assert said == {
        "instance": out["instance"],
        "type": "g5.xlarge",
        "capacity": "spot",
        "attempt": 1,
        "az": zone,
    }


def test_cloudwatch_counts_each_started_instance_and_each_refused_launch(world: World) -> None:
    """The operator's view: one InstancesLaunched per instance started, one LaunchRefused per
    launch EC2 refused (the Lambda's embedded metrics)."""
    common.metrics.clear_metrics()
    run_launch(world, make_job(), make_attempt())
    with pytest.raises(NoCapacity):
        run_launch(
            world, make_job(), make_attempt(), ec2=Recording(world.ec2, _raised("UnfulfillableCapacity"))
        )
    emitted = common.metrics.serialize_metric_set()
    common.metrics.clear_metrics()
    (declared,) = emitted["_aws"]["CloudWatchMetrics"]
    assert {m["Name"]: m["Unit"] for m in declared["Metrics"]} == {
        "InstancesLaunched": "Count",
        "LaunchRefused": "Count",
    }
    assert (emitted["InstancesLaunched"], emitted["LaunchRefused"]) == ([1.0], [1.0])


class Lagging(Recording):
    """EC2 right after CreateFleet: the new instance is not found by id for a few calls."""

    def __init__(self, ec2: Any, misses: int) -> None:
        super().__init__(ec2)
        self.misses = {"DescribeInstances": misses, "CreateTags": misses}

    def _maybe_missing(self, operation: str) -> None:
        if self.misses[operation] > 0:
            self.misses[operation] -= 1
            error = {"Code": "InvalidInstanceID.NotFound", "Message": "The instance ID does not exist"}
            raise ClientError({"Error": error}, operation)

    def describe_instances(self, **kw: Any) -> Any:
        if "InstanceIds" in kw:
            self._maybe_missing("DescribeInstances")
        return self._ec2.describe_instances(**kw)

    def create_tags(self, **kw: Any) -> Any:
        self._maybe_missing("CreateTags")
        return self._ec2.create_tags(**kw)


def volume_tags(world: World, instance: str) -> dict[str, str]:
    (described,) = world.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"]
    (volume,) = [m["Ebs"]["VolumeId"] for m in described["BlockDeviceMappings"]]
    (vol,) = world.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    return {t["Key"]: t["Value"] for t in vol.get("Tags", [])}


@pytest.mark.parametrize("misses", [0, 2], ids=["visible", "not-yet-visible"])
def test_the_root_volume_carries_the_runs_tags_for_cost_allocation(
    world: World, sleeps: list[float], misses: int
) -> None:
    """Instant fleets tag instances only; the volume is tagged after launch, also while EC2 does
    not find the new instance yet (a short, bounded wait)."""
    job = make_job()
    out = run_launch(world, job, make_attempt(), ec2=Lagging(world.ec2, misses))
    tags = volume_tags(world, out["instance"])
    assert (tags["job"], tags["run"], tags["attempt"]) == (job.name, "run-a", "1")
    assert len(sleeps) == 2 * misses and sum(sleeps) < 10


def test_an_instance_that_stays_invisible_still_launches_untagged(
    world: World, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    warned: list[tuple[str, Any]] = []
    monkeypatch.setattr(launch.logger, "warning", lambda message, **kw: warned.append((message, kw)))
    job = make_job()
    out = run_launch(world, job, make_attempt(), ec2=Lagging(world.ec2, 99))
    # the operator's log says which instance went untagged, and why
    ((message, kw),) = warned
    assert message == "could not tag the root volume" and kw["extra"]["instance"] == out["instance"]
    assert "InvalidInstanceID.NotFound" in kw["extra"]["error"]
    item = world.table.get(job.name)
    assert item and item.status == "training" and item.current and item.current.instance == out["instance"]
    assert "job" not in volume_tags(world, out["instance"])
    assert 0 < sum(sleeps) <= 30  # gave up on the cosmetic tag, well inside the Lambda's time


class Throttled(Recording):
    """EC2 that throttles the first ``times`` CreateFleet calls: raised, or as the only errors."""

    def __init__(self, ec2: Any, times: int, *, raised: bool) -> None:
        super().__init__(ec2)
        self.times, self.raised = times, raised

    def create_fleet(self, **kw: Any) -> Any:
        self.requests.append(kw)
        if len(self.requests) > self.times:
            return self._ec2.create_fleet(**kw)
        if self.raised:
            raise _raised("RequestLimitExceeded", "Request limit exceeded.")
        return {
            "Instances": [],
            "Errors": [{"ErrorCode": "RequestLimitExceeded", "ErrorMessage": "slow down"}],
        }


@pytest.mark.parametrize("raised", [True, False], ids=["raised", "in-errors"])
def test_a_throttled_launch_is_asked_again_with_care_for_its_token(
    world: World, sleeps: list[float], raised: bool
) -> None:
    job = make_job()
    ec2 = Throttled(world.ec2, 2, raised=raised)
    out = run_launch(world, job, make_attempt(), ec2=ec2)
    assert out["reused"] is False and len(ec2.requests) == 3 and sleeps == [1.0, 2.0]
    assert [i["InstanceId"] for i in fleet.run_instances_of(world.ec2, job.name)] == [out["instance"]]
    tokens = [r["ClientToken"] for r in ec2.requests]
    base = launch.client_token(EXEC, make_attempt())
    # a raised throttle was not processed: same token; an answered one used its token up
    assert tokens == ([base] * 3 if raised else [base, base + "-1", base + "-2"])


@pytest.mark.parametrize("raised", [True, False], ids=["raised", "in-errors"])
def test_a_launch_throttled_for_good_fails_in_a_bounded_time_and_is_not_a_quota(
    world: World, sleeps: list[float], raised: bool
) -> None:
    job = make_job()
    with pytest.raises(LaunchFailed, match="EC2 kept throttling the account's requests for 15 s") as failed:
        run_launch(world, job, make_attempt(), ec2=Throttled(world.ec2, 99, raised=raised))
    words = "Request limit exceeded." if raised else "slow down"
    assert f"(RequestLimitExceeded: {words})" in str(failed.value)  # in EC2's own words
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    item = world.table.get(job.name)
    assert item and [a.outcome for a in item.attempts] == ["LaunchFailed"]


# ------------------------------------------------------------------ EC2's refusals


def _raised(code: str, message: str = "EC2 says no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "CreateFleet")


@pytest.mark.parametrize(
    ("code", "error", "says"),
    [
        ("InsufficientInstanceCapacity", NoCapacity, r"no spot capacity for g5\.xlarge, g6\.xlarge in the"),
        ("UnfulfillableCapacity", NoCapacity, "more instance_types or subnets in other availability zones"),
        ("SpotMaxPriceTooLow", NoCapacity, "SpotMaxPriceTooLow: EC2 says no"),
        (
            "MaxSpotInstanceCountExceeded",
            QuotaExceeded,
            r"All G and VT Spot Instance Requests\" \(L-3819A6DF\)",
        ),
        ("VcpuLimitExceeded", QuotaExceeded, "Service Quotas console"),
        ("UnauthorizedOperation", LaunchFailed, "fix what EC2 names"),
        (
            "InvalidLaunchTemplateId.NotFound",
            LaunchFailed,
            r"EC2 refused the spot launch of g5\.xlarge, g6\.xlarge",
        ),
    ],
)
def test_an_ec2_error_raised_by_the_call_is_classified_like_a_returned_one(
    world: World, code: str, error: type, says: str
) -> None:
    for how in ("raised", "returned"):
        job = make_job()
        answer: Any = (
            _raised(code)
            if how == "raised"
            else (lambda _: {"Instances": [], "Errors": [{"ErrorCode": code, "ErrorMessage": "EC2 says no"}]})
        )
        with pytest.raises(error, match=says) as caught:
            run_launch(world, job, make_attempt(), ec2=Recording(world.ec2, answer))
        assert f"{code}: EC2 says no" in str(caught.value)
        item = world.table.get(job.name)
        assert item and [a.outcome for a in item.attempts] == [error.__name__]
        assert fleet.run_instances_of(world.ec2, job.name) == []


def test_a_fleet_that_returns_nothing_and_no_error_is_no_capacity(world: World) -> None:
    job = make_job()
    with pytest.raises(NoCapacity, match=r"\(the fleet returned no instance\)"):
        run_launch(world, job, make_attempt(), ec2=Recording(world.ec2, lambda _: {"Instances": []}))


def test_launch_error_names_the_most_useful_cause() -> None:
    att = make_attempt()
    capacity = ("InsufficientInstanceCapacity", "none in us-east-1a")
    quota = ("VcpuLimitExceeded", "vcpus")
    other = ("InvalidParameterValue", "bad")
    assert type(launch.launch_error([capacity, quota], att)) is QuotaExceeded
    assert type(launch.launch_error([other, capacity], att)) is NoCapacity
    assert type(launch.launch_error([other], att)) is LaunchFailed
    both = launch.launch_error(
        [capacity, capacity, ("InsufficientInstanceCapacity", "none in us-east-1b")], att
    )
    assert (
        "(InsufficientInstanceCapacity: none in us-east-1a; InsufficientInstanceCapacity: none in us-east-1b)"
        in str(both)
    )
    throttled = launch.launch_error([("Throttling", "slow"), ("RequestLimitExceeded", "slow")], att)
    assert type(throttled) is LaunchFailed and "EC2 kept throttling the account's requests for 15 s" in str(
        throttled
    )
    mixed = launch.launch_error([("Throttling", "slow"), other], att)
    assert "fix what EC2 names" in str(mixed) and "throttling" not in str(mixed)
    on_demand = launch.launch_error(
        [quota], make_attempt(capacity="on-demand", types=["g5.xlarge", "p3.2xlarge"])
    )
    assert "stops a on-demand launch of g5.xlarge, p3.2xlarge (VcpuLimitExceeded: vcpus)" in str(on_demand)
    assert '"Running On-Demand G and VT instances" (L-DB2E81BA) / "Running On-Demand P instances"' in str(
        on_demand
    )


def test_each_launch_error_tells_the_user_what_to_do() -> None:
    """The whole message the user reads in the notification, for each kind of refusal."""
    att = make_attempt()
    quota = launch.launch_error([("VcpuLimitExceeded", "vcpus")], att)
    assert str(quota) == (
        "the account's EC2 quota stops a spot launch of g5.xlarge, g6.xlarge (VcpuLimitExceeded: vcpus). "
        'Request an increase of "All G and VT Spot Instance Requests" (L-3819A6DF) in the Service Quotas '
        "console (the quota counts vCPUs), or choose instance_types the quota allows"
    )
    capacity = launch.launch_error([("InsufficientInstanceCapacity", "none")], att)
    assert str(capacity) == (
        "no spot capacity for g5.xlarge, g6.xlarge in the configured subnets "
        "(InsufficientInstanceCapacity: none); more instance_types or subnets in other availability "
        "zones give EC2 more pools"
    )
    other = launch.launch_error([("InvalidParameterValue", "bad")], att)
    assert str(other) == (
        "EC2 refused the spot launch of g5.xlarge, g6.xlarge (InvalidParameterValue: bad); fix what EC2 "
        "names (permissions, the launch template, instance_types) and start the job again"
    )
    throttled = launch.launch_error([("Throttling", "slow")], att)
    assert str(throttled) == (
        "EC2 refused the spot launch of g5.xlarge, g6.xlarge (Throttling: slow); EC2 kept throttling the "
        "account's requests for 15 s; start the job later"
    )


@pytest.mark.parametrize(
    ("instance_type", "capacity", "quota"),
    [
        ("g5.xlarge", "spot", '"All G and VT Spot Instance Requests" (L-3819A6DF)'),
        ("G6.xlarge", "spot", '"All G and VT Spot Instance Requests" (L-3819A6DF)'),
        ("vt1.3xlarge", "on-demand", '"Running On-Demand G and VT instances" (L-DB2E81BA)'),
        ("p4d.24xlarge", "on-demand", '"Running On-Demand P instances" (L-417A185B)'),
        ("p3.2xlarge", "spot", '"All P4, P3 and P2 Spot Instance Requests" (L-7212CCBC)'),
        ("p4de.24xlarge", "spot", '"All P4, P3 and P2 Spot Instance Requests" (L-7212CCBC)'),
        ("p4d.24xlarge", "spot", '"All P4, P3 and P2 Spot Instance Requests" (L-7212CCBC)'),
        ("p3dn.24xlarge", "spot", '"All P4, P3 and P2 Spot Instance Requests" (L-7212CCBC)'),
        ("p2.xlarge", "spot", '"All P4, P3 and P2 Spot Instance Requests" (L-7212CCBC)'),
        ("p5.48xlarge", "spot", '"All P5 Spot Instance Requests" (L-C4BD4855)'),
        (
            "c5.xlarge",
            "on-demand",
            '"Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" (L-1216C47A)',
        ),
        (
            "m7i.large",
            "spot",
            '"All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests" (L-34B43A08)',
        ),
        ("inf2.xlarge", "spot", "the EC2 Spot Instance Requests quota of the inf2 family"),
        ("dl1.24xlarge", "on-demand", "the EC2 Running On-Demand quota of the dl1 family"),
    ],
)
def test_the_quota_to_raise_is_named(instance_type: str, capacity: str, quota: str) -> None:
    assert launch.quota_name(instance_type, capacity) == quota


def test_the_instance_is_read_from_the_fleet_response() -> None:
    response = {
        "Instances": [
            {"InstanceIds": []},
            {
                "InstanceIds": ["i-1", "i-2"],
                "LaunchTemplateAndOverrides": {
                    "Overrides": {
                        "InstanceType": "g6.xlarge",
                        "AvailabilityZone": "us-east-1c",
                        "SubnetId": "s-1",
                    }
                },
            },
        ]
    }
    assert launch.launched_instance(response) == launch.Launched(
        "i-1", "g6.xlarge", "us-east-1c", "s-1", ["i-2"]
    )
    typed = {"Instances": [{"InstanceIds": ["i-3"], "InstanceType": "g5.xlarge"}]}
    assert launch.launched_instance(typed) == launch.Launched("i-3", "g5.xlarge", None, None, [])
    assert launch.launched_instance({"Instances": [{"InstanceIds": []}]}) is None
    assert launch.launched_instance({}) is None


# ------------------------------------------------------------------ what the run cost, in the notification


def test_the_notification_says_what_the_launched_attempts_cost_and_if_the_target_was_missed(
    world: World,
) -> None:
    job = make_job(target={"metric": "recall", "min": 0.95})
    att = make_attempt(capacity="on-demand")
    run_launch(world, job, att)
    world.table.end_attempt(job.name, EXEC, 1, "succeeded")
    for name in ("best.pt", "last.pt"):
        world.s3.put_object(Bucket="bkt", Key=f"runs/{job.name}/run-a/artifacts/{name}", Body=b"w")
    result = TrainResult(metrics={"recall": 0.9, "mAP50": 0.8}, best_epoch=4, epochs=5, seconds=30, attempt=1)
    event = check_result.CheckEvent(job=job, attempt=att, result=result, execution=EXEC)
    summary = check_result.check_result(event, s3=world.s3, ec2=world.ec2, table=world.table)
    item = world.table.get(job.name)
    assert item and item.attempts[0].start and item.attempts[0].instance_type == "g5.xlarge"
    expected = run_cost(item.attempts, price_fn(world.ec2))
    assert expected > 0 and summary.cost_usd == expected  # at least a minute of g5.xlarge on demand
    # every attempt ran on-demand: the cost, and no saving to claim
    assert f" · ${expected:.2f} on-demand\n" in summary.message
    assert "less than on-demand" not in summary.message and "on spot" not in summary.message
    assert summary.status == "below target" and summary.met_target is False
    assert summary.message.startswith(
        f"{job.name} below target: 90.0% recall (mAP50 0.800) · target recall ≥ 95.0%"
    )


def test_a_run_cancelled_before_check_result_claimed_it_publishes_nothing(world: World) -> None:
    """Whichever claims the run first wins: after a cancel's claim, Check result publishes
    nothing, says why, and the weights already there stay as they were."""
    job = make_job()
    att = make_attempt()
    run_launch(world, job, att)
    for name in ("best.pt", "last.pt"):
        world.s3.put_object(Bucket="bkt", Key=f"runs/{job.name}/run-a/artifacts/{name}", Body=b"new")
    world.s3.put_object(Bucket="bkt", Key=f"weights/{job.name}/best.pt", Body=b"old")
    assert world.table.claim_cancel(job.name, EXEC)
    result = TrainResult(metrics={"mAP50": 0.8}, best_epoch=4, epochs=5, seconds=30, attempt=1)
    event = check_result.CheckEvent(job=job, attempt=att, result=result, execution=EXEC)
    with pytest.raises(Cancelled) as cancelled:
        check_result.check_result(event, s3=world.s3, ec2=world.ec2, table=world.table)
    assert str(cancelled.value) == (
        f"run run-a of job {job.name} was cancelled (s3://bkt/jobs/{job.name}/config.yaml deleted) or "
        "taken over by a newer run before its weights were published: nothing was published, "
        f"s3://bkt/weights/{job.name}/ is as it was"
    )
    listed = world.s3.list_objects_v2(Bucket="bkt", Prefix=f"weights/{job.name}/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(f"weights/{job.name}/best.pt", 3)]


class ListedPrices:
    """The Price List API, answering one on-demand price for every type."""

    def __init__(self, usd: str) -> None:
        self.usd = usd

    def get_products(self, **_: Any) -> dict[str, Any]:
        term = {"priceDimensions": {"d": {"unit": "Hrs", "pricePerUnit": {"USD": self.usd}}}}
        return {"FormatVersion": "aws_v1", "PriceList": [json.dumps({"terms": {"OnDemand": {"t": term}}})]}


def _trained(world: World, job: JobSpec, att: Attempt, **artifacts: bytes) -> check_result.CheckEvent:
    """The job's attempt launched and ended well, its files in the run's artifacts/."""
    run_launch(world, job, att)
    world.table.end_attempt(job.name, EXEC, att.number, "succeeded")
    base = f"runs/{job.name}/run-a/artifacts/"
    reported = {}
    for name, body in {"best.pt": b"w", "last.pt": b"w", **artifacts}.items():
        world.s3.put_object(Bucket="bkt", Key=base + name, Body=body)
        reported[name] = base + name
    result = TrainResult(
        metrics={"mAP50": 0.8}, best_epoch=4, epochs=5, seconds=30, attempt=att.number, artifacts=reported
    )
    return check_result.CheckEvent(job=job, attempt=att, result=result, execution=EXEC)


def test_the_notification_prices_each_attempt_from_what_aws_charges(world: World) -> None:
    """Spot time at EC2's spot price history for the attempt's type and zone, on-demand time at
    the Price List API's price: not the dated table's estimates; metrics.json says the same."""
    from spotyolo.core import cost

    cost._ON_DEMAND_CACHE.clear()
    spot_job, spot = make_job(), make_attempt()
    summary = check_result.check_result(
        _trained(world, spot_job, spot), s3=world.s3, ec2=world.ec2, table=world.table
    )
    item = world.table.get(spot_job.name)
    assert item
    charged = run_cost(item.attempts, price_fn(world.ec2))
    assert summary.cost_usd == round(charged, 4) != round(run_cost(item.attempts, price_fn()), 4)
    on_demand_job, on_demand = make_job(), make_attempt(capacity="on-demand")
    event = _trained(world, on_demand_job, on_demand)
    try:
        summary = check_result.check_result(
            event, s3=world.s3, ec2=world.ec2, table=world.table, pricing=ListedPrices("60.0")
        )
    finally:
        cost._ON_DEMAND_CACHE.clear()
    assert 1.0 <= summary.cost_usd < 1.5  # a minute at least, at $60 an hour
    published = world.s3.get_object(Bucket="bkt", Key=f"weights/{on_demand_job.name}/metrics.json")
    assert json.loads(published["Body"].read())["cost_usd"] == summary.cost_usd


def test_the_notification_gives_the_whole_jobs_time_and_where_its_plots_are(
    world: World, logged: list[logging.LogRecord]
) -> None:
    job = make_job().model_copy(
        update={
            "created": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3723)).strftime("%Y-%m-%dT%H:%M:%SZ")
        }
    )
    event = _trained(world, job, make_attempt(), **{"results.png": b"png", "confusion_matrix.png": b"png"})
    common.metrics.clear_metrics()
    summary = check_result.check_result(event, s3=world.s3, ec2=world.ec2, table=world.table)
    emitted = common.metrics.serialize_metric_set()
    common.metrics.clear_metrics()
    # the operator's view: CloudWatch counts the trained job, the log says how it ended
    assert emitted["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [{"Name": "JobsTrained", "Unit": "Count"}]
    assert emitted["JobsTrained"] == [1.0]
    (line,) = [r for r in logged if r.getMessage() == "result"]
    said = {k: line.__dict__[k] for k in ("job", "status", "metrics")}
    assert said == {"job": job.name, "status": "complete", "metrics": {"mAP50": 0.8}}
    first, weights, plots = summary.message.split("\n")
    assert " · 5 epochs · 1h02m · " in first  # since the run was accepted, not the last attempt's 30 s
    assert weights == f"weights: s3://bkt/weights/{job.name}/best.pt"
    assert plots == f"plots: s3://bkt/weights/{job.name}/plots/ (results.png, confusion_matrix.png)"
