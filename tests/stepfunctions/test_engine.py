"""The local engine's own machinery, without training: the emulator, the EventBridge bridge,
Lambda routing and fault injection, instances as processes, interruptions, shutdown.

A tiny state machine (one Lambda task) and stand-in handlers isolate the engine from the
pipeline's Lambdas; tests/e2e runs the real ASL with the real trainer.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from spotyolo.local.engine import LocalEngine

TINY_ASL = {
    "Comment": "one Lambda call, retried on a throttled Lambda service",
    "StartAt": "Call",
    "States": {
        "Call": {
            "Type": "Task",
            "Comment": "the validate function",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${ValidateFunctionArn}", "Payload.$": "$"},
            "Retry": [
                {
                    "ErrorEquals": ["Lambda.TooManyRequestsException"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 2,
                    "JitterStrategy": "FULL",
                }
            ],
            "ResultSelector": {"value.$": "$.Payload"},
            "ResultPath": "$.result",
            "Next": "Done",
        },
        "Done": {"Type": "Succeed", "Comment": "ok"},
    },
}

# a stand-in trainer: records its environment and its IMDS view, then waits to be killed
STAND_IN = textwrap.dedent(
    """
    import json, os, sys, time, urllib.request
    out = os.path.join(os.environ["SPOTYOLO_WORKDIR"], "env.json")
    json.dump(dict(os.environ), open(out, "w"))
    if os.environ.get("STAND_IN_EXIT"):
        sys.exit(int(os.environ["STAND_IN_EXIT"]))
    time.sleep(600)
    """
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    folder = tmp_path_factory.mktemp("engine")
    asl = folder / "tiny.asl.json"
    asl.write_text(json.dumps(TINY_ASL))
    script = folder / "stand_in.py"
    script.write_text(STAND_IN)
    eng = LocalEngine(
        workdir=folder / "work",
        asl_path=asl,
        notice_seconds=1.0,
        trainer_command=[sys.executable, str(script)],
        poll_seconds=0.1,
    )
    calls: list[tuple[str, Any]] = []

    def recorder(name: str, fail_on: str | None = None) -> Callable[[Any, Any], Any]:
        def handler(event: Any, context: Any) -> Any:
            calls.append((name, event))
            if fail_on and fail_on in json.dumps(event):
                raise ValueError(f"{name} refused {fail_on}")
            return {"handled": name, "function": context.function_name}

        return handler

    eng.handlers.update(
        validate=recorder("validate", fail_on="broken"),
        cancel=recorder("cancel"),
        cleanup=recorder("cleanup"),
        instance_lost=recorder("instance_lost"),
    )
    eng.calls = calls  # type: ignore[attr-defined]
    eng.start()
    yield eng
    eng.stop()


def calls_of(engine: LocalEngine, name: str) -> list[Any]:
    return [event for n, event in engine.calls if n == name]  # type: ignore[attr-defined]


def make_job(root: Path, name: str) -> Path:
    job = root / name
    (job / "dataset" / "train" / "images").mkdir(parents=True)
    (job / "dataset" / "data.yaml").write_text("train: train/images\nval: train/images\nnames: [a]\n")
    (job / "dataset" / "train" / "images" / "a.png").write_bytes(b"png")
    (job / "config.yaml").write_text("model: yolo11n.yaml\n")
    return job


def test_config_upload_starts_one_execution_with_the_rule_input(engine: LocalEngine, tmp_path: Path) -> None:
    job = make_job(tmp_path, "bridge-start")
    engine.upload_job(job, trigger=False)
    time.sleep(1.0)
    assert engine.executions("bridge-start") == [], "only config.yaml is a trigger"

    engine.upload_job(job)
    arn = engine.wait_for_execution("bridge-start", timeout=15)
    done = engine.wait_done(arn, timeout=30)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["input"]) == {
        "bucket": engine.resources.bucket,
        "key": "jobs/bridge-start/config.yaml",
    }
    output = json.loads(done["output"])
    assert output["result"]["value"] == {"handled": "validate", "function": "spotyolo-validate"}
    time.sleep(1.0)
    assert len(engine.executions("bridge-start")) == 1


def test_uploads_keep_the_folder_layout_and_put_config_last(engine: LocalEngine, tmp_path: Path) -> None:
    job = make_job(tmp_path, "layout")
    keys: list[str] = []
    engine.upload_job(job, progress=lambda done, total, size: keys.append(f"{done}/{total}"))
    listed = engine.client("s3").list_objects_v2(Bucket=engine.resources.bucket, Prefix="jobs/layout/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "jobs/layout/config.yaml",
        "jobs/layout/dataset/data.yaml",
        "jobs/layout/dataset/train/images/a.png",
    ]
    assert keys == ["1/3", "2/3", "3/3"]
    engine.wait_done(engine.wait_for_execution("layout"), timeout=30)


def test_deleting_the_config_invokes_cancel(engine: LocalEngine, tmp_path: Path) -> None:
    engine.upload_job(make_job(tmp_path, "bridge-cancel"))
    engine.wait_done(engine.wait_for_execution("bridge-cancel"), timeout=30)
    engine.client("s3").delete_object(Bucket=engine.resources.bucket, Key="jobs/bridge-cancel/config.yaml")
    event = wait_for(
        lambda: [e for e in calls_of(engine, "cancel") if "bridge-cancel" in json.dumps(e)], what="cancel"
    )[0]
    assert event["detail-type"] == "Object Deleted"
    assert event["detail"]["object"]["key"] == "jobs/bridge-cancel/config.yaml"


def test_failed_execution_triggers_cleanup_like_the_status_rule(engine: LocalEngine) -> None:
    arn = engine.start_execution({"job": "broken"})
    assert engine.wait_done(arn, timeout=30)["status"] == "FAILED"
    event = wait_for(
        lambda: [e for e in calls_of(engine, "cleanup") if e["detail"]["executionArn"] == arn], what="cleanup"
    )[0]
    assert event["source"] == "aws.states"
    assert event["detail-type"] == "Step Functions Execution Status Change"
    assert event["detail"]["status"] == "FAILED"
    assert json.loads(event["detail"]["input"]) == {"job": "broken"}


def test_succeeded_execution_does_not_trigger_cleanup(engine: LocalEngine) -> None:
    arn = engine.start_execution({"job": "fine"})
    assert engine.wait_done(arn, timeout=30)["status"] == "SUCCEEDED"
    time.sleep(1.0)
    assert not [e for e in calls_of(engine, "cleanup") if e["detail"]["executionArn"] == arn]


def test_injected_lambda_throttle_is_retried_by_the_state_machine(engine: LocalEngine) -> None:
    engine.inject_fault("validate", "TooManyRequestsException", count=1)
    arn = engine.start_execution({"job": "throttled"})
    assert engine.wait_done(arn, timeout=30)["status"] == "SUCCEEDED"
    failures = [
        e["taskFailedEventDetails"]["error"] for e in engine.history(arn) if e["type"] == "TaskFailed"
    ]
    assert failures == ["Lambda.TooManyRequestsException"]


def _run_instance(engine: LocalEngine, job: str, attempt: int = 1) -> str:
    reservation = engine.client("ec2").run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "app", "Value": "spotyolo"},
                    {"Key": "job", "Value": job},
                    {"Key": "run", "Value": "run-1"},
                    {"Key": "attempt", "Value": str(attempt)},
                ],
            }
        ],
    )
    iid: str = reservation["Instances"][0]["InstanceId"]
    return iid


def _state(engine: LocalEngine, iid: str) -> str:
    from botocore.exceptions import ClientError

    try:
        described = engine.client("ec2").describe_instances(InstanceIds=[iid])
    except ClientError as err:  # just launched: EC2 does not know it yet (eventual consistency)
        assert err.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
        return "not yet visible"
    state: str = described["Reservations"][0]["Instances"][0]["State"]["Name"]
    return state


def test_a_new_instance_is_not_found_by_id_for_a_moment(engine: LocalEngine) -> None:
    assert engine.ec2_visible_after > 0
    iid = _run_instance(engine, "proc-visible")
    assert _state(engine, iid) == "not yet visible"
    wait_for(lambda: _state(engine, iid) != "not yet visible", what="visible")
    assert _state(engine, iid) in ("pending", "running")
    engine.client("ec2").terminate_instances(InstanceIds=[iid])


def test_an_instance_boots_from_its_launch_not_from_when_the_runner_first_lists_it(
    engine: LocalEngine,
) -> None:
    """EC2 boots an instance from its launch; the runner's describe cannot list it for
    ``ec2_visible_after`` (eventual consistency), and that must not lengthen the boot."""
    asked = time.monotonic()
    iid = _run_instance(engine, "proc-boot")
    answered = time.monotonic()
    inst = wait_for(lambda: engine.instances.instances.get(iid), what="listed by the runner")
    assert inst.started >= asked + engine.ec2_visible_after  # listed only once visible
    assert asked + engine.boot_seconds - 0.05 <= inst.boot_at <= answered + engine.boot_seconds + 0.05
    env_file = engine.workdir / "instances" / iid / "env.json"
    wait_for(lambda: env_file.exists(), what="trainer start")
    assert time.monotonic() >= inst.boot_at  # the trainer starts once booted, not before
    engine.client("ec2").terminate_instances(InstanceIds=[iid])


def test_an_instance_is_a_trainer_process_with_the_design_environment(engine: LocalEngine) -> None:
    iid = _run_instance(engine, "proc-env", attempt=2)
    env_file = engine.workdir / "instances" / iid / "env.json"
    env = json.loads(wait_for(lambda: env_file.exists() and env_file.read_text(), what="trainer start"))
    assert env["JOB"] == "proc-env" and env["RUN_ID"] == "run-1" and env["ATTEMPT"] == "2"
    assert env["BUCKET"] == engine.resources.bucket and env["JOB_TABLE"] == engine.resources.table
    assert env["AWS_ENDPOINT_URL"] == engine.endpoint
    assert env["SPOTYOLO_WORKDIR"] == str(engine.workdir / "instances" / iid)
    assert "STATE_MACHINE_ARN" not in env, "an instance sees only the trainer's environment"
    # its metadata service is the instance's own
    imds = env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    token_request = urllib.request.Request(
        imds + "latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    token = urllib.request.urlopen(token_request, timeout=5).read().decode()
    get = urllib.request.Request(
        imds + "latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
    )
    assert urllib.request.urlopen(get, timeout=5).read().decode() == iid

    # terminating the instance (as cleanup would) kills the process and feeds instance_lost
    engine.client("ec2").terminate_instances(InstanceIds=[iid])
    inst = engine.instances.instances[iid]
    wait_for(lambda: not inst.alive(), what="process killed")
    event = wait_for(
        lambda: [e for e in calls_of(engine, "instance_lost") if e["detail"]["instance-id"] == iid],
        what="instance_lost",
    )[0]
    assert event["detail-type"] == "EC2 Instance State-change Notification"
    assert event["detail"]["state"] in ("shutting-down", "terminated")


def test_a_process_that_exits_shuts_its_instance_down(engine: LocalEngine) -> None:
    engine.trainer_env["STAND_IN_EXIT"] = "1"
    try:
        iid = _run_instance(engine, "proc-crash")
        wait_for(lambda: _state(engine, iid) == "terminated", what="instance terminated")
    finally:
        engine.trainer_env.pop("STAND_IN_EXIT")
    assert engine.instances.instances[iid].exit_code == 1
    wait_for(
        lambda: [e for e in calls_of(engine, "instance_lost") if e["detail"]["instance-id"] == iid],
        what="instance_lost",
    )


def test_interruption_notice_then_termination_after_the_window(engine: LocalEngine) -> None:
    iid = _run_instance(engine, "proc-spot")
    inst = wait_for(lambda: engine.instances.instances.get(iid), what="boot")
    wait_for(lambda: inst.alive(), what="process")
    engine.instances.interrupt(iid, epoch=3)
    record = engine.instances.interruptions[-1]
    assert (record.instance, record.epoch) == (iid, 3)
    # the notice is served at once; the instance survives the notice window, then goes
    assert inst.imds._instance_action is not None and inst.imds._instance_action["action"] == "terminate"
    assert _state(engine, iid) == "running"
    wait_for(lambda: _state(engine, iid) == "terminated", timeout=10, what="termination")
    wait_for(lambda: not inst.alive(), what="process killed")
    assert record.terminated is not None and record.terminated - record.announced >= 0.9


def _spot_fleet(engine: LocalEngine) -> dict[str, Any]:
    response: dict[str, Any] = engine.client("ec2").create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": engine.resources.launch_template_id,
                    "Version": "$Latest",
                },
                "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}],
            }
        ],
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": "spot"},
        SpotOptions={"AllocationStrategy": "price-capacity-optimized"},
    )
    return response


def test_max_instances_is_the_accounts_quota_for_fleet_and_service_quotas(engine: LocalEngine) -> None:
    """`--max-instances N`: a launch past N live instances is refused with EC2's code, which
    Launch trainer reads as QuotaExceeded; Service Quotas answers N x 4 vCPUs; no flag, no limit.
    (Before test_stop_leaves_nothing_running: another engine's stop uninstalls moto's patches
    process-wide.)"""
    from spotyolo.contract.errors import QuotaExceeded
    from spotyolo.core.models import Attempt
    from spotyolo.core.quotas import instance_slots
    from spotyolo.steps import launch

    ec2, quotas = engine.client("ec2"), engine.client("service-quotas")  # type: ignore[call-overload]
    live = ec2.describe_instances(
        Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
            {"Name": "instance-lifecycle", "Values": ["spot"]},
        ]
    )["Reservations"]
    assert not live, "another test left a spot instance running"
    assert instance_slots(quotas, ec2, ["g5.xlarge"], "spot") is None  # no flag: unknown, no limit
    engine.limit_instances(1)
    launched = []
    try:
        assert quotas.get_service_quota(ServiceCode="ec2", QuotaCode="L-3819A6DF")["Quota"]["Value"] == 4.0
        assert instance_slots(quotas, ec2, ["g5.xlarge", "g6.xlarge"], "spot") == 1
        first = launch.launched_instance(_spot_fleet(engine))
        assert first is not None
        launched.append(first.instance)
        refused = _spot_fleet(engine)
        assert launch.launched_instance(refused) is None
        codes = [(e["ErrorCode"], e["ErrorMessage"]) for e in refused["Errors"]]
        assert {c for c, _ in codes} == {"MaxSpotInstanceCountExceeded"} and len(codes) == 2
        attempt = Attempt(
            number=1, capacity="spot", instance_types=["g5.xlarge"], seconds_left=60, heartbeat_seconds=30
        )
        assert isinstance(launch.launch_error(codes, attempt), QuotaExceeded)
    finally:
        engine.limit_instances(None)
    second = launch.launched_instance(_spot_fleet(engine))  # the default: no limit
    assert second is not None
    launched.append(second.instance)
    ec2.terminate_instances(InstanceIds=launched)


def test_stop_leaves_nothing_running(tmp_path: Path) -> None:
    asl = tmp_path / "tiny.asl.json"
    asl.write_text(json.dumps(TINY_ASL))
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    before = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "MOTO_PORT", "BUCKET")}
    eng = LocalEngine(asl_path=asl, trainer_command=[sys.executable, str(script)], poll_seconds=0.1)
    eng.start()
    workdir = eng.workdir
    iid = _run_instance(eng, "stop-me")
    inst = wait_for(lambda: eng.instances.instances.get(iid), what="boot")
    wait_for(lambda: inst.alive(), what="process")
    eng.stop()
    assert not inst.alive()
    assert {k: os.environ.get(k) for k in before} == before
    assert not workdir.exists(), "a temporary workdir is removed"
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(eng.endpoint + "/moto-api/", timeout=2)
