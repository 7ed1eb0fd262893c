"""Validate job under moto: input shapes, skip, settle, the lock, job.json, and the bad-job corpus."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from fake_settings import make_settings
from moto import mock_aws

from spotyolo.contract.env import Settings, SettingsMissing
from spotyolo.contract.errors import JobAlreadyRunning, JobInvalid, NotATrigger, UploadInProgress
from spotyolo.contract.lambdas import LambdaName
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, JobSpec
from spotyolo.local import moto_patches
from spotyolo.local.functions import load_handler
from spotyolo.steps.validate import make_run_id, refusal, validate_job

_spec = importlib.util.spec_from_file_location(
    "bad_jobs", Path(__file__).parents[1] / "unit" / "bad_jobs" / "__init__.py"
)
assert _spec and _spec.loader
bad_jobs = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bad_jobs", bad_jobs)
_spec.loader.exec_module(bad_jobs)

BUCKET, TABLE = "spotyolo-test", "spotyolo-jobs"
SETTINGS = make_settings(
    bucket=BUCKET, job_table=TABLE, trainer_image="123.dkr.ecr/trainer:1", settle_seconds=30
)


class Aws(SimpleNamespace):
    s3: Any
    dynamodb: Any
    sfn: Any
    machine: str
    ec2: Any = None
    quotas: Any = None


@pytest.fixture
def aws():
    # executions must stay RUNNING (they hold locks here): never let another test's emulator
    # config (execute_state_machine, process-wide in moto) run them to completion
    with mock_aws(config={"stepfunctions": {"execute_state_machine": False}}):
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        machine = sfn.create_state_machine(
            name="pipeline",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn=role,
        )["stateMachineArn"]
        ec2 = boto3.client("ec2", region_name="us-east-1")
        quotas = boto3.client("service-quotas", region_name="us-east-1")
        moto_patches.install_service_quotas()  # moto lacks GetAWSDefaultServiceQuota
        try:
            yield Aws(s3=s3, dynamodb=dynamodb, sfn=sfn, machine=machine, ec2=ec2, quotas=quotas)
        finally:
            moto_patches.uninstall()


def upload(aws: Aws, folder: Path, job: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"jobs/{job}/{path.relative_to(folder).as_posix()}"
            aws.s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())


def start(aws: Aws, name: str) -> str:
    """A real execution (RUNNING until stopped) to hold the lock."""
    return aws.sfn.start_execution(stateMachineArn=aws.machine, name=name, input="{}")["executionArn"]


def run(
    aws: Aws, payload: dict[str, Any], execution: str, *, later: float = 60, settings: Settings = SETTINGS
):
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=later)
    return validate_job(
        {"input": payload, "execution": execution},
        s3=aws.s3,
        dynamodb=aws.dynamodb,
        sfn=aws.sfn,
        ec2=aws.ec2,
        quotas=aws.quotas,
        settings=settings,
        now=now,
    )


def keys(aws: Aws, prefix: str) -> list[str]:
    return [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.fixture
def job(aws: Aws, tmp_path: Path) -> str:
    upload(aws, bad_jobs.make_job(tmp_path / "job"), "pets")
    return "pets"


EVENT = {"bucket": BUCKET, "key": "jobs/pets/config.yaml"}


def test_s3_event_validates_locks_and_writes_job_json(aws: Aws, job: str) -> None:
    execution = start(aws, "e1")
    out = run(aws, {**EVENT, "error": {"Error": "UploadInProgress"}}, execution)
    spec, attempt = JobSpec.model_validate(out["job"]), Attempt.model_validate(out["attempt"])
    assert spec.name == "pets" and spec.execution == execution and not spec.already_trained
    assert spec.stall_seconds == 1800 and isinstance(out["job"]["stall_seconds"], int)
    assert spec.instance_types == ["g5.xlarge"] and spec.image == SETTINGS.trainer_image
    assert spec.dataset.splits["train"].images == 3 and spec.dataset.splits["val"].images == 2
    assert attempt.number == 1 and attempt.capacity == "spot"  # spot-then-on-demand starts on spot
    assert attempt.seconds_left == 2 * 3600 and spec.deadline - attempt.seconds_left > 0
    assert spec.run_id.endswith(make_run_id(dt.datetime.now(dt.UTC), execution)[-8:])
    written = json.loads(
        aws.s3.get_object(Bucket=BUCKET, Key=f"runs/pets/{spec.run_id}/job.json")["Body"].read()
    )
    assert JobSpec.model_validate(written) == spec
    item = JobTable(aws.dynamodb, TABLE).get("pets")
    assert item and item.execution == execution and item.run_id == spec.run_id


def test_fresh_upload_waits_and_nothing_is_locked(aws: Aws, job: str) -> None:
    with pytest.raises(UploadInProgress, match="settle window 30 s"):
        run(aws, EVENT, start(aws, "e1"), later=0)
    assert JobTable(aws.dynamodb, TABLE).get("pets") is None and keys(aws, "runs/") == []


def test_a_config_uploaded_after_a_settled_dataset_starts_at_once(aws: Aws, tmp_path: Path) -> None:
    """The trigger's own age says nothing about the dataset: no wait once the dataset is settled."""
    folder = bad_jobs.make_job(tmp_path / "job")
    config = (folder / "config.yaml").read_bytes()
    (folder / "config.yaml").unlink()
    upload(aws, folder, "pets")
    time.sleep(1.2)
    aws.s3.put_object(Bucket=BUCKET, Key="jobs/pets/config.yaml", Body=config)
    quick = make_settings(bucket=BUCKET, job_table=TABLE, settle_seconds=1)
    out = run(aws, EVENT, start(aws, "e1"), later=0, settings=quick)
    assert out["job"]["name"] == "pets" and JobTable(aws.dynamodb, TABLE).get("pets") is not None


def test_open_multipart_upload_waits(aws: Aws, job: str) -> None:
    aws.s3.create_multipart_upload(Bucket=BUCKET, Key="jobs/pets/dataset/images/train/big.jpg")
    with pytest.raises(UploadInProgress, match="multipart"):
        run(aws, EVENT, start(aws, "e1"))


def test_an_abandoned_multipart_upload_is_refused_after_an_hour_of_quiet(aws: Aws, job: str) -> None:
    key = "jobs/pets/dataset/images/train/big.jpg"
    upload_id = aws.s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    with pytest.raises(UploadInProgress, match="multipart"):  # 59 min: maybe still on its way
        run(aws, EVENT, start(aws, "e1"), later=59 * 60)
    with pytest.raises(JobInvalid) as refused:  # nothing written for an hour: abandoned
        run(aws, EVENT, start(aws, "e2"), later=3601)
    message = str(refused.value)
    assert f"s3://{BUCKET}/{key}" in message and "nothing in jobs/pets/ was written for 1h00m" in message
    assert f"abort-multipart-upload --bucket {BUCKET} --key {key} --upload-id {upload_id}" in message
    assert "upload jobs/pets/config.yaml again" in message
    assert JobTable(aws.dynamodb, TABLE).get("pets") is None and keys(aws, "runs/") == []


def test_manual_start_does_not_wait_and_applies_overrides(aws: Aws, job: str) -> None:
    out = run(
        aws, {"job": "pets", "overrides": {"epochs": 7, "capacity": "on-demand"}}, start(aws, "e1"), later=0
    )
    assert out["job"]["config"]["epochs"] == 7 and out["attempt"]["capacity"] == "on-demand"


def test_bad_override_is_named_as_override(aws: Aws, job: str) -> None:
    with pytest.raises(JobInvalid, match=r"overrides: lr0: 3 is out of range"):
        run(aws, {"job": "pets", "overrides": {"lr0": 3}}, start(aws, "e1"))
    assert JobTable(aws.dynamodb, TABLE).get("pets") is None


def test_lock_is_reentrant_for_the_settle_loop(aws: Aws, job: str) -> None:
    execution = start(aws, "e1")
    first = run(aws, EVENT, execution)
    again = run(aws, EVENT, execution, later=200)
    assert again["job"]["run_id"] == first["job"]["run_id"]


def test_duplicate_start_is_refused_and_running_job_untouched(aws: Aws, job: str) -> None:
    first = run(aws, EVENT, start(aws, "e1"))
    table = JobTable(aws.dynamodb, TABLE)
    before = table.get("pets")
    with pytest.raises(JobAlreadyRunning, match="already being trained"):
        run(aws, {"job": "pets", "force": True}, start(aws, "e2"), later=120)
    assert table.get("pets") == before
    assert keys(aws, "runs/pets/") == [f"runs/pets/{first['job']['run_id']}/job.json"]


def test_lock_of_a_stopped_execution_is_taken_over(aws: Aws, job: str) -> None:
    old = start(aws, "e1")
    run(aws, EVENT, old)
    aws.sfn.stop_execution(executionArn=old)
    new = start(aws, "e2")
    out = run(aws, EVENT, new, later=120)
    assert JobTable(aws.dynamodb, TABLE).get("pets").execution == new  # type: ignore[union-attr]
    assert out["job"]["execution"] == new


class FailingSfn:
    """Step Functions whose DescribeExecution fails with ``code`` (throttled, denied, ...)."""

    def __init__(self, sfn: Any, code: str) -> None:
        self._sfn, self.code = sfn, code

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sfn, name)

    def describe_execution(self, **_: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "DescribeExecution")


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException"])
def test_a_lock_whose_holder_cannot_be_checked_is_never_taken_over(aws: Aws, job: str, code: str) -> None:
    first = run(aws, EVENT, start(aws, "e1"))
    table = JobTable(aws.dynamodb, TABLE)
    before = table.get("pets")
    blind = Aws(**{**vars(aws), "sfn": FailingSfn(aws.sfn, code)})
    with pytest.raises(JobAlreadyRunning, match=f"could not be checked.*{code}"):
        run(blind, {"job": "pets", "force": True}, start(aws, "e2"), later=120)
    assert table.get("pets") == before
    assert keys(aws, "runs/pets/") == [f"runs/pets/{first['job']['run_id']}/job.json"]


def test_lock_of_a_vanished_execution_is_taken_over(aws: Aws, job: str) -> None:
    gone = aws.machine.replace(":stateMachine:", ":execution:") + ":never-started"
    JobTable(aws.dynamodb, TABLE).acquire_lock("pets", gone, "run-x", lambda e: True)
    new = start(aws, "e2")
    run(aws, EVENT, new, later=120)
    assert JobTable(aws.dynamodb, TABLE).get("pets").execution == new  # type: ignore[union-attr]


def _instance(aws: Aws, job: str, run: str) -> str:
    tags = [{"Key": "app", "Value": "spotyolo"}, {"Key": "job", "Value": job}, {"Key": "run", "Value": run}]
    return str(
        aws.ec2.run_instances(
            ImageId="ami-03cf127a",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )


def _state(aws: Aws, instance: str) -> str:
    reservations = aws.ec2.describe_instances(InstanceIds=[instance])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def test_a_takeover_terminates_the_instances_of_the_run_it_replaces(aws: Aws, job: str) -> None:
    """Issue 9, hole 3: the replaced execution has ended but its clean up has not run yet."""
    stopped = start(aws, "e1")
    JobTable(aws.dynamodb, TABLE).acquire_lock("pets", stopped, "run-x", lambda e: True)
    replaced = _instance(aws, "pets", "run-x")
    unrelated = [_instance(aws, "pets", "run-older"), _instance(aws, "cats", "run-x")]
    aws.sfn.stop_execution(executionArn=stopped)
    new = start(aws, "e2")
    out = run(aws, EVENT, new, later=120)
    assert JobTable(aws.dynamodb, TABLE).get("pets").execution == new  # type: ignore[union-attr]
    assert out["job"]["run_id"] != "run-x"
    assert _state(aws, replaced) in ("shutting-down", "terminated")
    assert [_state(aws, i) for i in unrelated] == ["running", "running"]


def test_trained_job_is_skipped_without_lock_unless_forced(aws: Aws, job: str) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key="weights/pets/best.pt", Body=b"w")
    out = run(aws, EVENT, start(aws, "e1"))
    assert out["job"]["already_trained"] is True
    assert JobTable(aws.dynamodb, TABLE).get("pets") is None and keys(aws, "runs/") == []
    forced = run(aws, {"job": "pets", "force": True}, start(aws, "e2"))
    assert forced["job"]["already_trained"] is False and forced["job"]["force"] is True


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"bucket": "other", "key": "jobs/pets/config.yaml"}, "not this deployment's bucket"),
        ({"bucket": BUCKET, "key": "jobs/Bad Name/config.yaml"}, "job name 'Bad Name' is not allowed"),
        ({"job": "pets", "bucket": "other"}, "not this deployment's bucket"),
        ({"job": "pets", "frce": True}, "execution input is not understood"),
        ({"job": "nothing-here"}, "config.yaml: missing"),
    ],
)
def test_bad_inputs_are_refused(aws: Aws, job: str, payload: dict[str, Any], needle: str) -> None:
    with pytest.raises(JobInvalid, match=needle):
        run(aws, payload, start(aws, "e1"))
    assert keys(aws, "runs/") == []


@pytest.mark.parametrize(
    "key",
    [
        "jobs/pets/dataset/config.yaml",
        "jobs/pets/a/b/config.yaml",
        "jobs/config.yaml",
        "other/jobs/x/config.yaml",
    ],
)
def test_a_key_that_is_not_a_trigger_ends_quietly(aws: Aws, job: str, key: str) -> None:
    """EventBridge's '*' matches '/' too: a nested config.yaml reaches Validate, which says so by
    name (NotATrigger: the state machine ends quietly, no notification) and touches nothing."""
    with pytest.raises(NotATrigger, match="not a job trigger"):
        run(aws, {"bucket": BUCKET, "key": key}, start(aws, "e1"))
    assert keys(aws, "runs/") == [] and JobTable(aws.dynamodb, TABLE).get("pets") is None


@pytest.mark.parametrize(
    ("payload", "subject"),
    [
        ({"bucket": BUCKET, "key": "jobs/bad/config.yaml"}, "spotyolo: bad not started (JobInvalid)"),
        ({"job": "bad"}, "spotyolo: bad not started (JobInvalid)"),
        (
            {"bucket": BUCKET, "key": "jobs/Bad Name/config.yaml"},
            "spotyolo: Bad Name not started (JobInvalid)",
        ),
    ],
)
def test_the_refusal_names_the_job_in_its_subject(
    aws: Aws, tmp_path: Path, payload: dict, subject: str
) -> None:
    folder = bad_jobs.make_job(tmp_path / "job")
    (folder / "config.yaml").write_text(bad_jobs.CONFIG + "epochz: 3\n")
    upload(aws, folder, "bad")
    with pytest.raises(JobInvalid) as caught:
        run(aws, payload, start(aws, "e1"))
    words = json.loads(str(refusal(payload, caught.value)))
    assert words["subject"] == subject
    assert words["message"] == str(caught.value)


def test_a_refusal_subject_fits_sns_however_long_the_name() -> None:
    key = "jobs/" + "x" * 900 + "é\n/config.yaml"
    words = json.loads(str(refusal({"bucket": BUCKET, "key": key}, JobAlreadyRunning("busy"))))
    assert len(words["subject"]) < 100 and words["subject"].endswith("x... not started (JobAlreadyRunning)")
    assert words["subject"].isascii() and "\n" not in words["subject"]


@pytest.mark.parametrize(
    "bad_key",
    ["dataset/../../other/x.txt", "dataset/images/../../../../etc/passwd", "dataset//root/x.jpg"],
)
def test_a_dataset_key_that_escapes_is_refused_by_name_before_spend(aws: Aws, job: str, bad_key: str) -> None:
    aws.s3.put_object(Bucket=BUCKET, Key=f"jobs/pets/{bad_key}", Body=b"x")
    with pytest.raises(JobInvalid) as caught:
        run(aws, EVENT, start(aws, "e1"))
    assert f"jobs/pets/{bad_key}: key has" in str(caught.value)
    assert keys(aws, "runs/") == [] and JobTable(aws.dynamodb, TABLE).get("pets") is None


def test_the_state_document_stays_small_with_lvis_many_classes(aws: Aws, tmp_path: Path) -> None:
    folder = bad_jobs.make_job(tmp_path / "job")
    names = ", ".join(f"a_rather_long_category_name_{i}" for i in range(1203))
    (folder / "dataset/data.yaml").write_text(f"train: images/train\nval: images/val\nnames: [{names}]\n")
    upload(aws, folder, "lvis")
    out = run(aws, {"bucket": BUCKET, "key": "jobs/lvis/config.yaml"}, start(aws, "e1"))
    state = json.dumps(out)
    assert out["job"]["dataset"]["classes"] == 1203
    assert "category_name" not in state and len(state) < 4000, len(state)


def test_a_hostile_label_makes_a_refusal_of_a_few_kb(aws: Aws, tmp_path: Path) -> None:
    folder = bad_jobs.make_job(tmp_path / "job")
    (folder / "dataset/labels/train/a.txt").write_text("0 " + "9" * 300_000 + " 0.5 0.2 0.2\n")
    for i in range(60):
        (folder / f"dataset/images/train/x{i}.jpg").write_bytes(b"img")
        (folder / f"dataset/labels/train/x{i}.txt").write_text("5 0.5 0.5 0.2 0.2\n" * 40)
    upload(aws, folder, "bad")
    with pytest.raises(JobInvalid) as caught:
        run(aws, {"bucket": BUCKET, "key": "jobs/bad/config.yaml"}, start(aws, "e1"))
    message = str(caught.value)
    assert "(300000 chars)" in message and len(message) < 8000
    assert re.search(r"\.\.\. and \d+ more in \d+ files \(2401 in total", message), message[-300:]
    cause = json.dumps(
        {"errorMessage": str(refusal({"job": "bad"}, caught.value)), "errorType": "JobInvalid"}
    )
    assert len(cause) < 32_768


def test_invalid_job_still_uploading_waits_then_is_refused(aws: Aws, tmp_path: Path) -> None:
    folder = bad_jobs.make_job(tmp_path / "job")
    (folder / "dataset" / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    upload(aws, folder, "pets")
    with pytest.raises(UploadInProgress):
        run(aws, EVENT, start(aws, "e1"), later=0)
    with pytest.raises(
        JobInvalid, match=r"jobs/pets/dataset/labels/train/orphan\.txt: label file without an image"
    ):
        run(aws, EVENT, start(aws, "e2"), later=60)


@pytest.mark.parametrize("case", bad_jobs.CASES, ids=[c.id for c in bad_jobs.CASES])
def test_bad_job_corpus_on_s3(aws: Aws, tmp_path: Path, case: Any) -> None:
    folder = bad_jobs.make_job(tmp_path / "job")
    case.mutate(folder)
    upload(aws, folder, "bad")
    with pytest.raises(JobInvalid) as caught:
        run(aws, {"bucket": BUCKET, "key": "jobs/bad/config.yaml"}, start(aws, "e1"))
    location = f"jobs/bad/{case.file}" + (f":{case.line}" if case.line else "")
    assert location in str(caught.value) and case.needle in str(caught.value)
    assert JobTable(aws.dynamodb, TABLE).get("bad") is None, "an invalid job took the lock"
    assert keys(aws, "runs/") == [], "an invalid job wrote a job.json"


def test_handler_with_powertools_and_parser(aws: Aws, job: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in make_settings(bucket=BUCKET, job_table=TABLE, settle_seconds=0).to_env().items():
        monkeypatch.setenv(name, value)
    from spotyolo.steps import common

    common._client.cache_clear()
    handler = load_handler(LambdaName.VALIDATE)  # functions/validate.py, as Lambda loads it
    execution = start(aws, "e1")
    out = handler({"input": EVENT, "execution": execution}, None)
    assert out["job"]["name"] == "pets" and out["attempt"]["number"] == 1
    with pytest.raises(JobInvalid):
        handler({"input": {"job": "pets", "overrides": {"epoch": 3}}, "execution": execution}, None)
    common._client.cache_clear()


@pytest.mark.parametrize("name", list(LambdaName))
def test_a_lambda_without_its_environment_fails_at_cold_start(
    name: LambdaName, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in make_settings().to_env():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("BUCKET", BUCKET)
    with pytest.raises(SettingsMissing, match="JOB_TABLE, TOPIC_ARN"):
        load_handler(name)


@pytest.mark.parametrize("vcpus", [0.0, 2.0])
def test_a_job_no_quota_lets_launch_is_refused_naming_the_quotas(
    aws: Aws, job: str, vcpus: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spot-then-on-demand g5.xlarge (4 vCPUs) in an account whose G and VT quotas, spot and on
    demand, are below 4 vCPUs: refused at Validate, before any lock, file or wait."""
    monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_vcpus", vcpus)
    with pytest.raises(JobInvalid) as refused:
        run(aws, EVENT, start(aws, "e-quota"))
    message = str(refused.value)
    assert '"All G and VT Spot Instance Requests" (L-3819A6DF)' in message
    assert '"Running On-Demand G and VT instances" (L-DB2E81BA)' in message
    assert f"is {vcpus:g} vCPUs (g5.xlarge needs 4 vCPUs)" in message
    assert "Service Quotas console" in message
    assert (
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF "
        "--desired-value 4" in message
    )
    assert JobTable(aws.dynamodb, TABLE).get(job) is None and keys(aws, "runs/") == []


def test_a_quota_that_fits_or_is_unknown_never_refuses(
    aws: Aws, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_vcpus", 4.0)  # one g5.xlarge
    first = start(aws, "e-fits")
    assert run(aws, EVENT, first)["job"]["name"] == job
    aws.sfn.stop_execution(executionArn=first)  # its lock may be taken over
    # unknown (no value): the launch will tell
    monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_vcpus", None)
    assert run(aws, EVENT, start(aws, "e-unknown"))["job"]["name"] == job


def test_spot_then_on_demand_starts_on_demand_when_the_spot_quota_allows_none(aws: Aws, job: str) -> None:
    """A spot quota of 0 is a shortage that will not pass: the first attempt goes on demand
    instead of waiting out the launch backoff on spot."""
    from botocore.stub import Stubber

    quotas = boto3.client("service-quotas", region_name="us-east-1")
    stubber = Stubber(quotas)
    for code, value in (("L-3819A6DF", 0.0), ("L-DB2E81BA", 16.0)):  # spot, then on demand
        stubber.add_response("get_service_quota", {"Quota": {"QuotaCode": code, "Value": value}})
    with stubber:
        out = run(Aws(**{**vars(aws), "quotas": quotas}), EVENT, start(aws, "e-od"))
        stubber.assert_no_pending_responses()
    assert Attempt.model_validate(out["attempt"]).capacity == "on-demand"
