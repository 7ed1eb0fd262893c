"""IAM allows what AWS checks: every authorization of every AWS call the code makes, derived
from the real requests and evaluated against the synthesized roles' policies (docs/ARCHITECTURE.md,
"IAM: what the tests check").

moto enforces no IAM, so this is where a launch that AWS would refuse with UnauthorizedOperation
(a tag-on-create grant missing for one resource type, a wrong ARN, a condition that cannot
match) fails before a deploy.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from cdk_testing import REPO_ROOT, Synth
from iam_policy import Deployed, Request, condition_holds, decide, listed, refused
from iam_reference import (
    CONDITION_KEYS,
    FLEET_USERS_PAGE,
    TAG_ON_CREATE_PAGE,
    authorizations,
    create_fleet_requests,
    key_is_listed,
    request,
)
from moto import mock_aws
from test_stack import LAMBDAS, _calls

from spotyolo.contract import layout
from spotyolo.contract.env import Settings
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, ErrorInfo, JobConfig, JobSpec, TrainResult
from spotyolo.core.slots import SEMAPHORE, SlotQueue, Waiter, configured_slots
from spotyolo.core.slots import create_table as create_slot_table
from spotyolo.local import moto_patches
from spotyolo.local.imds import FakeMetadataService
from spotyolo.steps import cancel, check_result, cleanup, instance_lost, launch, prepare_retry, slot_queue
from spotyolo.steps.validate import validate_job
from spotyolo.trainer.main import Clients, TrainerEnv, TrainerRun

EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:SpotYolo-training-pipeline:run-1"


def function_id(synth: Synth, name: str) -> str:
    return synth.function_ids()[name]


def role_id(synth: Synth, name: str) -> str:
    return str(synth.resources[function_id(synth, name)]["Properties"]["Role"]["Fn::GetAtt"][0])


def settings_of(synth: Synth, deployed: Deployed, name: str) -> Settings:
    """The Settings the deployed Lambda reads at cold start: its environment, resolved."""
    env = deployed.resolve(
        synth.resources[function_id(synth, name)]["Properties"]["Environment"]["Variables"]
    )
    return Settings.from_env({**env, "AWS_REGION": "us-east-1"})


def launch_template_data(deployed: Deployed, template_id: str) -> dict[str, Any]:
    """The LaunchTemplateData of the template whose id is ``template_id``, resolved."""
    (found,) = [
        lt["Properties"]["LaunchTemplateData"]
        for logical_id, lt in deployed.resources.items()
        if lt["Type"] == "AWS::EC2::LaunchTemplate" and deployed.ref(logical_id) == template_id
    ]
    data: dict[str, Any] = deployed.resolve({k: v for k, v in found.items() if k != "UserData"})
    return data


def a_job(capacity: str) -> tuple[JobSpec, Attempt]:
    config = JobConfig.model_validate(
        {"model": "yolo11n.yaml", "epochs": 3, "target": {"metric": "recall", "min": 0.8}}
    )
    job = JobSpec(
        name="shapes",
        bucket="ignored",
        run_id="run-a",
        execution=EXECUTION,
        config=config,
        dataset={"bytes": 3 * 2**30, "files": 10},
        instance_types=["g6.xlarge", "g5.xlarge"],
        deadline=int(time.time()) + 3600,
        stall_seconds=600,
    )
    attempt = Attempt(
        number=1,
        capacity=capacity,
        instance_types=job.instance_types,
        seconds_left=3000,
        heartbeat_seconds=600,
    )
    return job, attempt


def fleet_authorizations(
    synth: Synth, capacity: str, template: dict[str, Any] | None = None
) -> list[Request]:
    """Everything EC2 authorizes for the CreateFleet request the launch step builds with the
    deployed launch Lambda's settings, from the synthesized launch template."""
    deployed = Deployed(template or synth.template)
    cfg = settings_of(synth, deployed, "launch")
    job, attempt = a_job(capacity)
    fleet = launch.fleet_request(job, attempt, cfg, EXECUTION)
    spec = fleet["LaunchTemplateConfigs"][0]["LaunchTemplateSpecification"]
    data = launch_template_data(deployed, spec["LaunchTemplateId"])
    return create_fleet_requests(fleet, data, deployed.role_of_profile)


@pytest.mark.parametrize("capacity", ["spot", "on-demand"])
def test_the_launch_role_allows_everything_ec2_checks_for_the_real_create_fleet_request(
    synth: Synth, capacity: str
) -> None:
    requests = fleet_authorizations(synth, capacity)
    kinds = {r.resource.split(":")[5].split("/")[0] for r in requests if r.action.startswith("ec2:")}
    assert {
        "fleet",
        "instance",
        "volume",
        "network-interface",
        "launch-template",
        "subnet",
        "security-group",
        "image",
    } <= kinds, kinds
    assert {r.action for r in requests} >= {
        "ec2:CreateFleet",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "iam:PassRole",
    }
    statements = Deployed(synth.template).statements_of_role(role_id(synth, "launch"))
    denied = refused(statements, requests)
    assert not denied, (
        f"AWS would refuse the launch ({FLEET_USERS_PAGE}, {TAG_ON_CREATE_PAGE}); the launch role "
        "(cdk/functions_construct.py _grant_launch) does not allow:\n" + "\n".join(denied)
    )


def test_a_launch_template_that_tags_volumes_needs_a_tag_on_create_grant(synth: Synth) -> None:
    """The check above can fail: a template tagging volumes at creation (what CDK's
    LaunchTemplate does by default) is refused unless the role may tag volumes then."""
    template = copy.deepcopy(synth.template)
    (lt,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::LaunchTemplate"]
    lt["Properties"]["LaunchTemplateData"]["TagSpecifications"] = [
        {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "SpotYolo/Trainer/LaunchTemplate"}]}
    ]
    statements = Deployed(template).statements_of_role(role_id(synth, "launch"))
    denied = refused(statements, fleet_authorizations(synth, "spot", template))
    assert denied and all(
        "ec2:CreateTags on arn:aws:ec2:us-east-1:123456789012:volume/" in d for d in denied
    ), denied


def test_every_condition_key_a_role_uses_is_one_aws_sends_for_that_action(synth: Synth) -> None:
    """A condition on a key the Service Authorization Reference does not list for the action
    (a typo, aws:RequestTag on a call that creates nothing) never holds: an Allow that never
    allows, or a Deny that never denies."""
    deployed = Deployed(synth.template)
    wrong = []
    for role in synth.of_type("AWS::IAM::Role"):
        for st in deployed.statements_of_role(role):
            for block in st.get("Condition", {}).values():
                for key in block:
                    wrong += [
                        f"{role}: {action} with {key} ({CONDITION_KEYS.get(action, ((), 'add it'))[1]})"
                        for action in listed(st.get("Action", []))
                        if not key_is_listed(action, key)
                    ]
    assert not wrong, "\n".join(wrong)


# --- the evaluator itself


def test_the_evaluator_follows_iams_rules() -> None:
    allow = {"Effect": "Allow", "Action": "ec2:*Instances", "Resource": "arn:aws:ec2:*:*:instance/*"}
    deny = {"Effect": "Deny", "NotAction": "ec2:RunInstances", "Resource": "*"}
    run = Request("ec2:RunInstances", "arn:aws:ec2:us-east-1:1:instance/i-1")
    term = Request("ec2:TerminateInstances", "arn:aws:ec2:us-east-1:1:instance/i-1")
    assert decide([allow], run) == "Allow"
    assert decide([allow, deny], term) == "ExplicitDeny"
    assert decide([allow], Request("ec2:RunInstances", "arn:aws:ec2:us-east-1:1:volume/v")) == "ImplicitDeny"
    ctx = {"aws:TagKeys": ["app", "job"], "aws:RequestTag/app": "spotyolo"}
    assert condition_holds("StringEquals", "aws:requesttag/APP", "spotyolo", ctx)  # keys ignore case
    assert not condition_holds("StringEquals", "aws:RequestTag/job", "x", ctx)  # absent: no match
    assert condition_holds("StringNotEquals", "aws:RequestTag/job", "x", ctx)
    assert condition_holds("StringEqualsIfExists", "aws:RequestTag/job", "x", ctx)
    assert condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["app", "job", "run"], ctx)
    assert not condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["app"], ctx)
    assert condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["app"], {})  # vacuous truth
    assert condition_holds("ForAnyValue:StringLike", "aws:TagKeys", ["jo*"], ctx)
    assert not condition_holds("ForAnyValue:StringLike", "aws:TagKeys", ["jo*"], {})
    assert condition_holds("Null", "aws:RequestTag/job", "true", ctx)
    assert condition_holds(
        "ArnLike", "aws:SourceArn", "arn:aws:s3:::b*", {"aws:SourceArn": "arn:aws:s3:::bkt"}
    )
    assert condition_holds("Bool", "aws:SecureTransport", False, {"aws:SecureTransport": "false"})
    assert key_is_listed("ec2:CreateTags", "ec2:CreateAction")
    assert key_is_listed("ec2:TerminateInstances", "ec2:ResourceTag/app")
    assert not key_is_listed("ec2:TerminateInstances", "aws:RequestTag/app")  # it creates nothing
    assert not key_is_listed("ec2:CreateFleet", "ec2:CreateAction")
    with pytest.raises(NotImplementedError):
        condition_holds("DateLessThan", "aws:CurrentTime", "2030-01-01", {})


# --- every other call: run each Lambda's logic and the trainer against moto with the deployed
# names (the synthesized environment, resolved), record each boto3 call's real parameters, and
# evaluate the authorizations they need against that part's role


class Recorder:
    """boto3 clients that record every call (``provide-client-params``: the parameters as the
    code passed them, before anything is sent) as the authorizations it needs."""

    def __init__(self, derive: Any) -> None:
        self.derive = derive
        self.calls: dict[str, list[tuple[str, list[Request]]]] = {}
        self.unknown: list[str] = []

    def clients(self, owner: str, *services: str) -> list[Any]:
        out = []
        for service in services:
            client = boto3.client(service, region_name="us-east-1")

            def hook(params: dict[str, Any], model: Any, _owner: str = owner, **_: Any) -> None:
                name = model.service_model.service_id.hyphenize()
                try:
                    requests = self.derive(name, model.name, _plain(params))
                except KeyError as err:
                    self.unknown.append(f"{_owner}: {err}")
                    return
                self.calls.setdefault(_owner, []).append((f"{name}.{model.name}", requests))

            client.meta.events.register("provide-client-params", hook)
            out.append(client)
        return out


def _plain(value: Any) -> Any:
    """A copy of the parameters' structure (bodies and file objects are kept, not copied)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def token_machine(sfn: Any, sqs: Any, iam: Any) -> tuple[str, str]:
    """A state machine that hands its task token to SQS and waits (a real token for the trainer)."""
    queue = sqs.create_queue(QueueName="tokens")["QueueUrl"]
    role = iam.create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    definition = {
        "StartAt": "Launch trainer",
        "States": {
            "Launch trainer": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody": {"token.$": "$$.Task.Token"}},
                "HeartbeatSeconds": 120,
                "TimeoutSeconds": 900,
                "End": True,
            }
        },
    }
    arn = sfn.create_state_machine(name="tokens", definition=json.dumps(definition), roleArn=role)[
        "stateMachineArn"
    ]
    return arn, queue


def real_token(sfn: Any, sqs: Any, machine: str, queue: str, name: str = "attempt-2") -> str:
    sfn.start_execution(stateMachineArn=machine, name=name, input="{}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", []):
            return str(json.loads(message["Body"])["token"])
        time.sleep(0.05)
    raise AssertionError("the token state machine never sent its token")


@dataclass
class Recorded:
    deployed: Deployed
    calls: dict[str, list[tuple[str, list[Request]]]]
    unknown: list[str]
    roles: dict[str, str]
    job: JobSpec


def upload(s3: Any, bucket: str, folder: Path, job: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.put_object(
                Bucket=bucket, Key=f"jobs/{job}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes()
            )


@pytest.fixture(scope="module")
def recorded(
    synth: Synth, shapes_job: Path, ultralytics_offline: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Recorded]:
    """One pipeline run, part by part: validate, launch, instance_lost, prepare_retry, launch,
    the trainer (a real one-epoch training), check_result, cleanup, cancel."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        moto_patches.install_service_quotas()  # moto lacks GetAWSDefaultServiceQuota
        try:
            yield _run_the_pipeline(synth, shapes_job, tmp_path_factory)
        finally:
            moto_patches.uninstall()


def _world(synth: Synth) -> tuple[Deployed, Settings, dict[str, Any]]:
    """The deployed resources in moto, under the names the synthesized template gives them."""
    ec2, s3, ddb, sns = (boto3.client(s, region_name="us-east-1") for s in ("ec2", "s3", "dynamodb", "sns"))
    lt_id = ec2.create_launch_template(
        LaunchTemplateName="trainer", LaunchTemplateData={"ImageId": "ami-03cf127a"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    env = synth.resources[function_id(synth, "launch")]["Properties"]["Environment"]["Variables"]
    subnet_ids = [part["Ref"] for part in env["SUBNET_IDS"]["Fn::Join"][1]]
    ids = {env["LAUNCH_TEMPLATE_ID"]["Ref"]: lt_id, **dict(zip(subnet_ids, subnets, strict=True))}
    deployed = Deployed(synth.template, ids)
    cfg = settings_of(synth, deployed, "launch")
    s3.create_bucket(Bucket=cfg.bucket)
    ddb.create_table(
        TableName=cfg.job_table,
        KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    create_slot_table(ddb, cfg.slot_table)
    assert sns.create_topic(Name=cfg.topic_arn.rsplit(":", 1)[1])["TopicArn"] == cfg.topic_arn
    return deployed, cfg, {"ec2": ec2, "s3": s3, "ddb": ddb}


def _run_the_pipeline(synth: Synth, shapes_job: Path, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    deployed, cfg, plain = _world(synth)
    (lt_logical,) = [k for k, v in synth.resources.items() if v["Type"] == "AWS::EC2::LaunchTemplate"]
    template_data = deployed.resolve(
        {
            k: v
            for k, v in synth.resources[lt_logical]["Properties"]["LaunchTemplateData"].items()
            if k != "UserData"
        }
    )

    def tags_of(resource_id: str) -> dict[str, str]:
        found = plain["ec2"].describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
        return {t["Key"]: t["Value"] for t in found}

    def derive(service: str, operation: str, params: dict[str, Any]) -> list[Request]:
        if (service, operation) == ("ec2", "CreateFleet"):
            return create_fleet_requests(params, template_data, deployed.role_of_profile)
        return authorizations(service, operation, params, tags_of)

    rec = Recorder(derive)
    (sm_logical,) = [k for k, v in synth.resources.items() if v["Type"] == "AWS::StepFunctions::StateMachine"]
    state_machine_arn = deployed.get_att(sm_logical, "Arn")
    execution = state_machine_arn.replace(":stateMachine:", ":execution:") + ":run-1"
    upload(plain["s3"], cfg.bucket, shapes_job, "shapes")
    one_epoch = (shapes_job / "config.yaml").read_text().replace("epochs: 2", "epochs: 1")
    assert "epochs: 1" in one_epoch
    plain["s3"].put_object(Bucket=cfg.bucket, Key="jobs/shapes/config.yaml", Body=one_epoch.encode())

    # validate: the lock is held by an execution that no longer exists (DescribeExecution)
    s3, ddb, sfn, ec2_v, quotas_v = rec.clients(
        "validate", "s3", "dynamodb", "stepfunctions", "ec2", "service-quotas"
    )
    JobTable(plain["ddb"], cfg.job_table).acquire_lock("shapes", execution + "-old", "run-0", lambda _: True)
    out = validate_job(
        {"input": {"bucket": cfg.bucket, "key": "jobs/shapes/config.yaml"}, "execution": execution},
        s3=s3,
        dynamodb=ddb,
        sfn=sfn,
        ec2=ec2_v,
        quotas=quotas_v,
        settings=cfg,
        now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120),
    )
    job, first = JobSpec.model_validate(out["job"]), Attempt.model_validate(out["attempt"])

    # launch attempt 1; its instance is lost; prepare_retry plans attempt 2 and terminates it
    ec2, ddb = rec.clients("launch", "ec2", "dynamodb")
    lost = launch.launch(
        launch.LaunchEvent(job=job, attempt=first, token="not-a-live-token"),
        ec2=ec2,
        table=JobTable(ddb, cfg.job_table),
        cfg=cfg,
    )["instance"]
    ec2_l, ddb_l, sfn_l = rec.clients("instance_lost", "ec2", "dynamodb", "stepfunctions")
    instance_lost.instance_lost(lost, "running", ec2=ec2_l, sfn=sfn_l, table=JobTable(ddb_l, cfg.job_table))
    ec2_r, ddb_r, pricing_r = rec.clients("prepare_retry", "ec2", "dynamodb", "pricing")
    retry = prepare_retry.prepare_retry(
        prepare_retry.RetryEvent(
            job=job,
            attempt=first,
            execution=execution,
            error=ErrorInfo(Error="SpotInterrupted", Cause="notice"),
        ),
        ec2=ec2_r,
        table=JobTable(ddb_r, cfg.job_table),
        cfg=cfg,
        pricing=pricing_r,
    )
    second = Attempt.model_validate(retry["attempt"])

    # attempt 2 with a real task token; the trainer trains it (two epochs) and reports
    sfn_plain, sqs, iam = (boto3.client(s, region_name="us-east-1") for s in ("stepfunctions", "sqs", "iam"))
    machine_and_queue = token_machine(sfn_plain, sqs, iam)
    token = real_token(sfn_plain, sqs, *machine_and_queue)
    launch.launch(
        launch.LaunchEvent(job=job, attempt=second, token=token),
        ec2=SurplusFleet(ec2, plain["ec2"]),
        table=JobTable(ddb, cfg.job_table),
        cfg=cfg,
    )
    _train(rec, job, second, cfg, tmp_path_factory.mktemp("trainer"))

    # check_result promotes; the execution-status rule cleans up and notifies; cancel
    s3_c, ec2_c, ddb_c, pricing_c = rec.clients("check_result", "s3", "ec2", "dynamodb", "pricing")
    result = TrainResult(metrics={"recall": 0.9}, best_epoch=1, epochs=1, seconds=9, attempt=second.number)
    check_result.check_result(
        check_result.CheckEvent(job=job, attempt=second, result=result, execution=execution),
        s3=s3_c,
        ec2=ec2_c,
        table=JobTable(ddb_c, cfg.job_table),
        pricing=pricing_c,
    )
    tokens = machine_and_queue
    ec2_u, ddb_u, sns_u, pricing_u, sfn_u, quotas_u = rec.clients(
        "cleanup", "ec2", "dynamodb", "sns", "pricing", "stepfunctions", "service-quotas"
    )
    # the slot this run held goes to the queue's next job; a leaked slot is reclaimed on the way
    _slot_scenario(plain["ddb"], cfg, execution, real_token(sfn_plain, sqs, *tokens, name="waiter-1"))
    status = cleanup.StatusChangeEvent.model_validate(
        {
            "version": "0",
            "id": "1",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "time": "2026-11-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "executionArn": execution,
                "status": "FAILED",
                "input": json.dumps({"job": job.model_dump(mode="json")}),
            },
        }
    )
    with _account_quota(instances=1):
        report = cleanup.from_status_event(
            status,
            ec2=ec2_u,
            table=JobTable(ddb_u, cfg.job_table),
            sns=sns_u,
            topic_arn=cfg.topic_arn,
            pricing=pricing_u,
            slots=_slot_queue(ddb_u, sfn_u, cfg, quotas_u, ec2_u),
        )
    assert report.get("owned"), report
    again = job.model_copy(update={"execution": execution + "-again", "run_id": "run-2"})
    JobTable(plain["ddb"], cfg.job_table).acquire_lock("shapes", again.execution, "run-2", lambda _: False)
    launch.launch(
        launch.LaunchEvent(job=again, attempt=first, token="tok-3"),
        ec2=ec2,
        table=JobTable(ddb, cfg.job_table),
        cfg=cfg,
    )
    # cancel acts only once config.yaml is really gone (HeadObject answers 404)
    plain["s3"].delete_object(Bucket=cfg.bucket, Key="jobs/shapes/config.yaml")
    s3_x, sfn_x, ec2_x, ddb_x, sns_x, pricing_x, quotas_x = rec.clients(
        "cancel", "s3", "stepfunctions", "ec2", "dynamodb", "sns", "pricing", "service-quotas"
    )
    _slot_scenario(plain["ddb"], cfg, again.execution, real_token(sfn_plain, sqs, *tokens, name="waiter-2"))
    with _account_quota(instances=1):
        cancelled = cancel.cancel(
            cfg.bucket,
            "jobs/shapes/config.yaml",
            s3=s3_x,
            pricing=pricing_x,
            sfn=sfn_x,
            ec2=ec2_x,
            sns=sns_x,
            table=JobTable(ddb_x, cfg.job_table),
            topic_arn=cfg.topic_arn,
            slots=_slot_queue(ddb_x, sfn_x, cfg, quotas_x, ec2_x),
        )
    assert cancelled["cancelled"], cancelled
    assert _slot_holders(plain["ddb"], cfg) == ["again-waiter"]
    # a third run waits for a slot (granted at once), then gives it back after QuotaExceeded
    _queue_and_requeue(
        rec, plain["ddb"], cfg, job, execution + "-third", real_token(sfn_plain, sqs, *tokens, name="w3")
    )
    roles = {name: role_id(synth, name) for name in LAMBDAS}
    _, profile = synth.one("AWS::IAM::InstanceProfile")
    roles["trainer"] = profile["Properties"]["Roles"][0]["Ref"]
    return Recorded(deployed, rec.calls, rec.unknown, roles, job)


def _slot_queue(ddb: Any, sfn: Any, cfg: Settings, quotas: Any, ec2: Any) -> SlotQueue:
    """The queue as the deployed Lambdas build it (spotyolo.steps.common.slot_queue): with no
    max_instances, its count is the account's quota, read with the Lambda's own clients."""
    count = configured_slots(cfg.max_instances, quotas, ec2)
    return SlotQueue(ddb, cfg.slot_table, sfn=sfn, count=count, jobs=JobTable(ddb, cfg.job_table))


@contextmanager
def _account_quota(instances: int) -> Iterator[None]:
    """The account's EC2 quotas allow ``instances`` of the test job's 4-vCPU type (the
    emulator's Service Quotas), while a slot Lambda reads the count: AWS's default value only,
    so the Lambda asks for the applied value and then for the default."""
    moto_patches.LIMITS.ec2_quota_vcpus = 4 * instances
    moto_patches.LIMITS.ec2_quota_applied = False
    try:
        yield
    finally:
        moto_patches.LIMITS.ec2_quota_vcpus = None
        moto_patches.LIMITS.ec2_quota_applied = True


def _slot_scenario(ddb: Any, cfg: Settings, holder: str, token: str) -> None:
    """One slot, held by ``holder`` and by a run whose execution is gone (a leak); a waiter
    queued: giving ``holder``'s slot back reclaims the leaked one and wakes the waiter."""
    queue = SlotQueue(ddb, cfg.slot_table, sfn=None, count=lambda *_: 1)  # type: ignore[arg-type]
    for leaked in (holder, holder + "-gone"):
        ddb.update_item(
            TableName=cfg.slot_table,
            Key=SEMAPHORE,
            UpdateExpression="SET holders = if_not_exists(holders, :none)",
            ExpressionAttributeValues={":none": {"M": {}}},
        )
        ddb.update_item(
            TableName=cfg.slot_table,
            Key=SEMAPHORE,
            UpdateExpression="SET holders.#e = :h",
            ExpressionAttributeNames={"#e": leaked},
            ExpressionAttributeValues={":h": {"M": {"ticket": {"N": "0"}}}},
        )
    queue.set_slots(1, "test", read=0)  # stale: the Lambda that pumps reads the quota again
    waits_for = {"attempt": {"instance_types": ["g5.xlarge"], "capacity": "spot"}}
    queue.register(Waiter(queue.new_ticket(), f"{holder}-waiter", "shapes-w", token, time.time(), waits_for))


def _slot_holders(ddb: Any, cfg: Settings) -> list[str]:
    holders = ddb.get_item(TableName=cfg.slot_table, Key=SEMAPHORE)["Item"]["holders"]["M"]
    return sorted(h.rsplit(":", 1)[-1].removeprefix("run-1-") for h in holders)


def _queue_and_requeue(
    rec: Recorder, plain_ddb: Any, cfg: Settings, job: JobSpec, execution: str, token: str
) -> None:
    ddb, sfn, quotas, ec2 = rec.clients("slot_queue", "dynamodb", "stepfunctions", "service-quotas", "ec2")
    JobTable(plain_ddb, cfg.job_table).acquire_lock(job.name, execution, "run-3", lambda _: False)
    third = job.model_copy(update={"execution": execution, "run_id": "run-3"})
    attempt = Attempt(
        number=1, capacity="spot", instance_types=third.instance_types, seconds_left=900, heartbeat_seconds=60
    )
    queue = _slot_queue(ddb, sfn, cfg, quotas, ec2)
    queue.set_slots(2, "test", read=0)  # stale: this pump reads the quota again
    event = slot_queue.EnqueueEvent(
        action="enqueue", job=third, attempt=attempt, token=token, execution=execution
    )
    with _account_quota(instances=2):
        out = slot_queue.enqueue(event, slots=queue, table=JobTable(ddb, cfg.job_table), now=time.time())
    assert execution in out["granted"], out
    requeue = slot_queue.RequeueEvent(action="requeue", job=third, attempt=attempt, execution=execution)
    # the other holder's execution is gone: the count is not what stopped the launch
    assert slot_queue.requeue(requeue, slots=queue) == {"requeued": False, "slots": None}


class SurplusFleet:
    """EC2 answering an instant fleet with one instance more than asked (tagged by the
    request, as EC2 would): the launch step terminates the surplus."""

    def __init__(self, ec2: Any, plain: Any) -> None:
        self._ec2, self._plain = ec2, plain

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ec2, name)

    def create_fleet(self, **request: Any) -> Any:
        response = self._ec2.create_fleet(**request)
        tags = [s for s in request["TagSpecifications"] if s["ResourceType"] == "instance"]
        extra = self._plain.run_instances(
            ImageId="ami-03cf127a", MinCount=1, MaxCount=1, TagSpecifications=tags
        )
        response["Instances"][0]["InstanceIds"].append(extra["Instances"][0]["InstanceId"])
        return response


def _train(rec: Recorder, job: JobSpec, attempt: Attempt, cfg: Settings, workdir: Path) -> None:
    """The trainer's attempt, in this process, with recorded clients (what the container runs)."""
    s3, ddb, sfn = rec.clients("trainer", "s3", "dynamodb", "stepfunctions")
    with FakeMetadataService(instance_id="i-0trainer") as imds:
        env = TrainerEnv.from_env(
            {
                "JOB": job.name,
                "RUN_ID": job.run_id,
                "ATTEMPT": str(attempt.number),
                "BUCKET": cfg.bucket,
                "JOB_TABLE": cfg.job_table,
                "AWS_REGION": "us-east-1",
                "SPOTYOLO_WORKDIR": str(workdir),
                "SPOTYOLO_HEARTBEAT_SECONDS": "1",
                "SPOTYOLO_IMDS_POLL_SECONDS": "0.05",
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
            }
        )

        def no_hard_exit(code: int) -> None:
            raise AssertionError(f"the watcher tried to end the process with {code}")

        code = TrainerRun(env, Clients(s3, ddb, sfn), hard_exit=no_hard_exit).run()
    assert code == 0, f"the trainer exited {code}: see its log in {workdir}"


def runtime_requests(synth: Synth, recorded: Recorded, owner: str) -> list[Request]:
    """What runs beside the code with the same role: a Lambda's runtime writes its log stream
    and (tracing active) X-Ray segments; on the instance, the user data pulls the image from
    ECR and Docker's awslogs driver writes the trainer's stream (stream name from the boot
    script: <job>/<run>/attempt-<n>). And the trainer's calls on paths a successful run does
    not take, with the values the code would send."""
    deployed, job = recorded.deployed, recorded.job
    if owner == "trainer":
        (logs_id,) = [k for k in synth.of_type("AWS::Logs::LogGroup") if k.startswith("TrainerLogs")]
        group = deployed.ref(logs_id)
        cfg = settings_of(synth, deployed, "launch")
        image = cfg.trainer_image
        repository = image.split("/", 1)[1].split(":")[0].split("@")[0]
        stream = f"{group}:log-stream:{job.name}/{job.run_id}/attempt-2"
        checkpoint = f"{cfg.bucket}/{layout.checkpoint_key(job.name, job.run_id)}"
        return [
            request("states:SendTaskFailure", None, why="the failure path: the attempt's error"),
            request(
                "s3:ListBucket",
                "s3:bucket",
                cfg.bucket,
                {"s3:prefix": layout.artifacts_prefix(job.name, job.run_id)},
                why="an attempt after one that finished training reports its artifacts",
            ),
            request("s3:AbortMultipartUpload", "s3:object", checkpoint, why="a failed multipart upload"),
            request("logs:CreateLogStream", "logs:log-stream", stream, why="docker awslogs driver"),
            request("logs:PutLogEvents", "logs:log-stream", stream, why="docker awslogs driver"),
            request("ecr:GetAuthorizationToken", None, why="aws ecr get-login-password"),
            *(
                request(a, "ecr:repository", repository, why=f"docker pull {image}")
                for a in (
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                )
            ),
        ]
    props = synth.resources[function_id(synth, owner)]["Properties"]
    group = deployed.resolve(props["LoggingConfig"]["LogGroup"])
    stream = f"{group}:log-stream:2026/11/29/[$LATEST]0123456789abcdef"
    out = [
        request("logs:CreateLogStream", "logs:log-stream", stream, why="the Lambda runtime's log stream"),
        request("logs:PutLogEvents", "logs:log-stream", stream, why="the Lambda runtime's log stream"),
    ]
    if props.get("TracingConfig", {}).get("Mode") == "Active":
        out += [
            Request(a, "*", {}, "X-Ray tracing")
            for a in ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
        ]
    return out


def test_every_recorded_call_is_one_the_reference_data_knows(recorded: Recorded) -> None:
    assert not recorded.unknown, "\n".join(recorded.unknown)


@pytest.mark.parametrize("owner", [*sorted(LAMBDAS), "trainer"])
def test_each_part_may_make_every_aws_call_it_made_with_the_resources_and_conditions_it_sent(
    synth: Synth, recorded: Recorded, owner: str
) -> None:
    calls = recorded.calls.get(owner, [])
    assert calls, f"{owner} made no AWS call in the recorded run"
    statements = recorded.deployed.statements_of_role(recorded.roles[owner])
    denied = [f"{call}: {line}" for call, requests in calls for line in refused(statements, requests)]
    denied += refused(statements, runtime_requests(synth, recorded, owner))
    where = (
        "cdk/trainer_construct.py (the instance role)" if owner == "trainer" else "cdk/functions_construct.py"
    )
    assert not denied, f"AWS would refuse {owner}'s calls; grant them in {where}:\n" + "\n".join(
        sorted(set(denied))
    )


@pytest.mark.parametrize("name", sorted(LAMBDAS))
def test_the_recorded_run_makes_every_call_the_code_can_make(recorded: Recorded, name: str) -> None:
    """The run above exercises every call the static scan of the Lambda's sources finds, so
    none of them escapes the resource and condition check."""
    made = {r.action for _, requests in recorded.calls.get(name, []) for r in requests}
    missing = _calls(name) - made
    assert not missing, (
        f"extend the recorded run in tests/infrastructure/test_iam.py to make {name} call {sorted(missing)}"
    )


def test_the_per_call_check_sees_resources_and_conditions(recorded: Recorded) -> None:
    """The check above can fail on a resource or a condition, not only on an action name."""
    trainer = recorded.deployed.statements_of_role(recorded.roles["trainer"])
    narrowed = [
        {**st, "Resource": [r.replace("/runs/*", "/runs/*/artifacts/*") for r in listed(st["Resource"])]}
        if "s3:PutObject" in st["Action"]
        else st
        for st in trainer
    ]
    uploads = [r for call, rs in recorded.calls["trainer"] for r in rs if r.action == "s3:PutObject"]
    denied = refused(narrowed, uploads)
    assert denied and all("/checkpoints/" in d for d in denied), denied

    cleanup_role = recorded.deployed.statements_of_role(recorded.roles["cleanup"])
    (terminate, *_) = [
        r for _, rs in recorded.calls["cleanup"] for r in rs if r.action == "ec2:TerminateInstances"
    ]
    assert terminate.context["ec2:ResourceTag/app"] == "spotyolo"
    untagged = Request(terminate.action, terminate.resource, {})
    assert refused(cleanup_role, [terminate]) == [] and refused(cleanup_role, [untagged])

    validate_role = recorded.deployed.statements_of_role(recorded.roles["validate"])
    (listing, *_) = [r for _, rs in recorded.calls["validate"] for r in rs if r.action == "s3:ListBucket"]
    assert listing.context == {"s3:prefix": "jobs/shapes/"}
    assert refused(validate_role, [Request(listing.action, listing.resource, {"s3:prefix": "runs/"})])


#: the trainer's boto3 methods (and the Step Functions calls it sends by name) -> IAM action
TRAINER_ACTIONS = {
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "download_file": "s3:GetObject",
    "upload_file": "s3:PutObject",
    "put_object": "s3:PutObject",
    "list_objects_v2": "s3:ListBucket",
    "get_item": "dynamodb:GetItem",
    "update_item": "dynamodb:UpdateItem",
    "send_task_heartbeat": "states:SendTaskHeartbeat",
    "send_task_success": "states:SendTaskSuccess",
    "send_task_failure": "states:SendTaskFailure",
}


def test_the_trainer_check_covers_every_call_its_code_can_make(synth: Synth, recorded: Recorded) -> None:
    sources = [*sorted((REPO_ROOT / "spotyolo/trainer").glob("*.py"))]
    sources += [REPO_ROOT / "spotyolo/core/jobtable.py", REPO_ROOT / "spotyolo/core/s3objects.py"]
    text = "\n".join(p.read_text() for p in sources)
    methods = set(re.findall(r"\.(\w+)\(", text)) | set(re.findall(r'"(send_task_\w+)"', text))
    calls = {TRAINER_ACTIONS[m] for m in methods if m in TRAINER_ACTIONS}
    checked = {r.action for _, rs in recorded.calls["trainer"] for r in rs}
    checked |= {r.action for r in runtime_requests(synth, recorded, "trainer")}
    assert calls and not calls - checked, sorted(calls - checked)
