"""Fails loudly when a moto upgrade changes what stepfunctions/moto_patches.py relies on."""

from __future__ import annotations

import inspect
import io
import json
import time
import zipfile
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction
from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackEndpoint
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from moto.stepfunctions.responses import StepFunctionResponse

from spotyolo.contract.errors import JobInvalid
from spotyolo.local import moto_patches


def test_moto_still_has_what_the_patches_replace() -> None:
    import moto

    assert moto.__version__ == "5.2.5", "moto moved: re-check stepfunctions/moto_patches.py and this test"
    assert list(inspect.signature(LambdaFunction._invoke_lambda).parameters) == ["self", "event"]
    assert list(inspect.signature(CallbackEndpoint.setup_heartbeat_endpoint).parameters) == [
        "self",
        "heartbeat_seconds",
    ]
    assert list(inspect.signature(CallbackEndpoint.notify_heartbeat).parameters) == ["self"]
    assert "cause" in inspect.signature(StepFunctionsParserBackend.send_task_failure).parameters
    for name in ("send_task_failure", "stop_execution"):
        assert callable(getattr(StepFunctionResponse, name))
    # the bugs patched are still there (delete the patch when one of these fails)
    assert "cause" not in inspect.getsource(StepFunctionResponse.send_task_failure)
    assert "docker" in inspect.getsource(LambdaFunction._invoke_lambda)


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    original = LambdaFunction._invoke_lambda
    update_item = DynamoDBBackend.update_item
    moto_patches.install(lambda n, e: 1)
    moto_patches.install(lambda n, e: 2)
    try:
        assert moto_patches.installed() and LambdaFunction._invoke_lambda is not original
        assert DynamoDBBackend.update_item is not update_item  # patch 13: atomic writes
    finally:
        moto_patches.uninstall()
    assert LambdaFunction._invoke_lambda is original and not moto_patches.installed()
    assert DynamoDBBackend.update_item is update_item


def test_dynamodb_writes_are_still_unlocked_in_moto() -> None:
    """Patch 12 is still needed: moto checks a condition and writes with no lock of its own
    (delete the patch when this fails)."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
        source = inspect.getsource(getattr(DynamoDBBackend, name))
        assert "lock" not in source.lower(), name


def router(name: str, event: dict) -> dict:
    mode = event.get("mode")
    if mode == "invalid":
        raise JobInvalid("config.yaml line 3: unknown key 'epochz' (did you mean 'epochs'?)")
    if mode == "service":
        raise moto_patches.LambdaServiceError()
    if mode == "wait":
        return {"waiting": True}
    return {"function": name, "event": event}


@pytest.fixture
def sfn_world() -> Iterator[tuple]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        moto_patches.install(router)
        try:
            iam = boto3.client("iam", region_name="us-east-1")
            role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
            code = io.BytesIO()
            with zipfile.ZipFile(code, "w") as zf:
                zf.writestr("x.py", "")
            arn = boto3.client("lambda", region_name="us-east-1").create_function(
                FunctionName="step",
                Runtime="python3.13",
                Role=role,
                Handler="x.h",
                Code={"ZipFile": code.getvalue()},
            )["FunctionArn"]
            yield boto3.client("stepfunctions", region_name="us-east-1"), arn, role
        finally:
            moto_patches.uninstall()


def run(sfn, definition: dict, role: str, payload: dict, name: str) -> dict:
    machine = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role)[
        "stateMachineArn"
    ]
    arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(payload))["executionArn"]
    for _ in range(200):
        out = sfn.describe_execution(executionArn=arn)
        if out["status"] != "RUNNING":
            return out
        time.sleep(0.05)
    raise AssertionError("still running")


def test_lambda_results_and_errors_look_like_aws(sfn_world) -> None:
    sfn, arn, role = sfn_world
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": arn, "Payload": {"mode.$": "$.mode"}},
        "End": True,
    }
    ok = run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {"mode": "ok"}, "ok")
    assert json.loads(ok["output"])["Payload"] == {"function": "step", "event": {"mode": "ok"}}
    bad = run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {"mode": "invalid"}, "bad")
    assert bad["error"] == "JobInvalid"
    cause = json.loads(bad["cause"])
    assert list(cause)[:2] == ["errorMessage", "errorType"] and "epochz" in cause["errorMessage"]
    svc = run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {"mode": "service"}, "svc")
    assert svc["error"] == "Lambda.ServiceException"


def token_task(function_arn: str) -> dict:
    """One waitForTaskToken Lambda task with a heartbeat window, its token in the payload."""
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": function_arn, "Payload": {"token.$": "$$.Task.Token"}},
        "HeartbeatSeconds": 30,
        "End": True,
    }


def test_task_failure_keeps_its_cause_and_an_early_answer_is_not_lost(sfn_world) -> None:
    sfn, arn, role = sfn_world

    def answer_during_invoke(name: str, event: dict) -> dict:
        # the "trainer" answers before the Lambda returns: moto used to time out on the heartbeat
        sfn.send_task_failure(taskToken=event["token"], error="TrainingDiverged", cause="loss is nan")
        return {}

    moto_patches.install(answer_during_invoke)
    task = token_task(arn)
    started = time.time()
    out = run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {}, "early")
    assert out["error"] == "TrainingDiverged" and out["cause"] == "loss is nan"
    assert time.time() - started < 10


def test_a_heartbeat_during_the_invocation_is_accepted_as_on_aws(sfn_world) -> None:
    """A trainer that boots while Launch trainer is still being invoked heartbeats at once: AWS
    accepts it (the task waits for that token); moto answered InvalidToken (no timer yet)."""
    sfn, arn, role = sfn_world
    answers: list[str] = []

    def heartbeat_during_invoke(name: str, event: dict) -> dict:
        try:
            sfn.send_task_heartbeat(taskToken=event["token"])
            answers.append("ok")
        except sfn.exceptions.InvalidToken:
            answers.append("InvalidToken")
        sfn.send_task_success(taskToken=event["token"], output="{}")
        return {}

    moto_patches.install(heartbeat_during_invoke)
    task = token_task(arn)
    run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {}, "early-heartbeat")
    assert answers == ["ok"]
    with pytest.raises(sfn.exceptions.InvalidToken):  # a token nobody waits for is still refused
        sfn.send_task_heartbeat(taskToken="no-such-token")


def test_stop_execution_ends_a_task_token_wait(sfn_world) -> None:
    sfn, arn, role = sfn_world
    moto_patches.install(lambda name, event: {})
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": arn, "Payload": {"token.$": "$$.Task.Token"}},
        "HeartbeatSeconds": 60,
        "End": True,
    }
    machine = sfn.create_state_machine(
        name="stop", definition=json.dumps({"StartAt": "A", "States": {"A": task}}), roleArn=role
    )["stateMachineArn"]
    arn_ = sfn.start_execution(stateMachineArn=machine, name="stop", input="{}")["executionArn"]
    time.sleep(0.5)
    started = time.time()
    sfn.stop_execution(executionArn=arn_, error="Cancelled", cause="config.yaml deleted")
    out = sfn.describe_execution(executionArn=arn_)
    assert (
        out["status"] == "ABORTED" and out["error"] == "Cancelled" and out["cause"] == "config.yaml deleted"
    )
    assert time.time() - started < 10


# ---------------------------------------------------------------- AWS's limits (moto has none)


def test_the_new_patches_still_fit_moto() -> None:
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.responses.tags import TagResponse
    from moto.sns.models import SNSBackend
    from moto.stepfunctions.parser import models as parser_models
    from moto.stepfunctions.parser.asl.component.state.state import CommonStateField

    assert list(inspect.signature(SNSBackend.publish).parameters)[:2] == ["self", "message"]
    assert "subject" in inspect.signature(SNSBackend.publish).parameters
    assert list(inspect.signature(CommonStateField._eval_body).parameters) == ["self", "env"]
    assert list(inspect.signature(InstanceBackend.describe_instances).parameters) == ["self", "filters"]
    assert "cloud_watch_logging_session=None" in inspect.getsource(parser_models.StepFunctionsParserBackend)
    for owner, name in ((InstanceResponse, "describe_instances"), (TagResponse, "create_tags")):
        assert callable(getattr(owner, name))
    # still missing upstream (delete the patch when one of these fails)
    assert "len(subject) > 100" in inspect.getsource(SNSBackend.publish)  # AWS: less than 100, ASCII
    assert "len(message) >" in inspect.getsource(SNSBackend.publish)  # characters, AWS counts bytes


def client_error(call, *args, **kwargs) -> dict:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response["Error"]


def test_sns_publish_refuses_what_aws_refuses(sfn_world) -> None:
    sns = boto3.client("sns", region_name="us-east-1")
    topic = sns.create_topic(Name="t")["TopicArn"]
    sns.publish(TopicArn=topic, Subject="s" * 99, Message="é" * 131_072)  # 99 chars, 262 144 bytes
    for subject in ("s" * 100, "line\nbreak", "caf\u00e9", " leading space"):
        error = client_error(sns.publish, TopicArn=topic, Subject=subject, Message="m")
        assert error["Code"] == "InvalidParameter" and error["Message"] == "Invalid parameter: Subject"
    error = client_error(sns.publish, TopicArn=topic, Message="é" * 131_073)  # 262 146 bytes
    assert error["Code"] == "InvalidParameter" and "Message too long" in error["Message"]


def test_task_answers_are_bounded_as_on_aws(sfn_world) -> None:
    sfn, _, _ = sfn_world
    for kwargs, field in (
        ({"error": "E" * 257, "cause": "c"}, "error"),
        ({"error": "E", "cause": "c" * 32_769}, "cause"),
    ):
        error = client_error(sfn.send_task_failure, taskToken="t", **kwargs)
        assert error["Code"] == "ValidationException" and f"Value at '{field}'" in error["Message"]
    error = client_error(sfn.send_task_success, taskToken="t", output=json.dumps("x" * 262_200))
    assert error["Code"] == "ValidationException" and "'output'" in error["Message"]
    # within the limits, the token is what is wrong
    assert client_error(sfn.send_task_failure, taskToken="t", error="E" * 256, cause="c" * 32_768)[
        "Code"
    ] in ("InvalidToken", "TaskDoesNotExist")


def lambda_task(arn: str) -> dict:
    return {
        "StartAt": "A",
        "States": {
            "A": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": arn, "Payload": {"size.$": "$.size"}},
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }


def test_oversized_payloads_fail_as_on_aws(sfn_world) -> None:
    sfn, arn, role = sfn_world
    moto_patches.install(lambda name, event: "x" * event["size"])
    # a state's result over 256 KB: States.DataLimitExceeded, which no States.ALL catches
    out = run(sfn, lambda_task(arn), role, {"size": 300_000}, "big-state")
    assert out["status"] == "FAILED" and out["error"] == "States.DataLimitExceeded"
    # a Lambda response over 6 MB is the function's error (caught as any other)
    out = run(sfn, lambda_task(arn), role, {"size": 6_300_000}, "big-response")
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"])["error"]["Error"] == "Function.ResponseSizeTooLarge"
    # a request over 6 MB is refused before the function runs
    invoked: list[str] = []
    moto_patches.install(lambda name, event: invoked.append(name))
    lam = boto3.client("lambda", region_name="us-east-1")
    error = client_error(lam.invoke, FunctionName=arn, Payload=json.dumps({"blob": "x" * 6_300_000}))
    assert error["Code"] == "RequestEntityTooLargeException" and invoked == []


def test_an_execution_fails_at_the_history_limit(sfn_world, monkeypatch: pytest.MonkeyPatch) -> None:
    sfn, _, role = sfn_world
    monkeypatch.setattr(moto_patches.LIMITS, "history_events", 40)  # 25 000 on AWS: same rule, sooner
    loop = {"StartAt": "Again", "States": {"Again": {"Type": "Pass", "Next": "Again"}}}
    out = run(sfn, loop, role, {}, "forever")
    assert out["status"] == "FAILED" and out["error"] == "States.Runtime" and "history" in out["cause"]
    events = sfn.get_execution_history(executionArn=out["executionArn"], maxResults=1000)["events"]
    assert 40 <= len(events) <= 42 and events[-1]["type"] == "ExecutionFailed"


def logged(group: str) -> str:
    logs = boto3.client("logs", region_name="us-east-1")
    lines = []
    for stream in logs.describe_log_streams(logGroupName=group)["logStreams"]:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])["events"]
        lines.extend(e["message"] for e in events)
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("level", "with_data", "secret_logged"), [("ALL", True, True), ("ERROR", False, False)]
)
def test_a_state_machine_logs_as_its_logging_configuration_says(
    sfn_world, level: str, with_data: bool, secret_logged: bool
) -> None:
    sfn, arn, role = sfn_world
    moto_patches.install(lambda name, event: (_ for _ in ()).throw(JobInvalid("refused")))
    logs = boto3.client("logs", region_name="us-east-1")
    group = f"/aws/vendedlogs/states/{level}"
    logs.create_log_group(logGroupName=group)
    group_arn = f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:*"
    definition = {"StartAt": "A", "States": {"A": {**lambda_task(arn)["States"]["A"], "Catch": []}}}
    definition["States"]["A"]["Parameters"]["Payload"] = {"token.$": "$.token"}
    machine = sfn.create_state_machine(
        name=f"logged-{level}",
        definition=json.dumps(definition),
        roleArn=role,
        loggingConfiguration={
            "level": level,
            "includeExecutionData": with_data,
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group_arn}}],
        },
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"token": "SECRET-123"}))
    for _ in range(200):
        if sfn.describe_execution(executionArn=execution["executionArn"])["status"] != "RUNNING":
            break
        time.sleep(0.05)
    text = logged(group)
    assert "ExecutionFailed" in text  # every level logs the failure
    assert ("SECRET-123" in text) is secret_logged


def test_a_new_instance_is_not_found_for_a_while(sfn_world, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_patches.LIMITS, "ec2_visible_after", 1.0)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    iid = ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert client_error(ec2.describe_instances, InstanceIds=[iid])["Code"] == "InvalidInstanceID.NotFound"
    tags = [{"Key": "k", "Value": "v"}]
    assert client_error(ec2.create_tags, Resources=[iid], Tags=tags)["Code"] == "InvalidInstanceID.NotFound"
    listed = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert iid not in listed
    time.sleep(1.1)
    ec2.create_tags(Resources=[iid], Tags=tags)
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Tags"] == tags


def test_sns_throttling_is_retried_by_a_retrier_that_names_it(sfn_world) -> None:
    sfn, _, role = sfn_world
    topic = boto3.client("sns", region_name="us-east-1").create_topic(Name="t")["TopicArn"]
    publish = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sns:publish",
        "Parameters": {"TopicArn": topic, "Subject": "s", "Message": "m"},
        "End": True,
    }
    moto_patches.throttle_sns(1)
    out = run(sfn, {"StartAt": "N", "States": {"N": publish}}, role, {}, "unretried")
    assert out["status"] == "FAILED" and out["error"] == "SNS.ThrottledException"
    moto_patches.throttle_sns(2)
    retried = {**publish, "Retry": [{"ErrorEquals": ["SNS.ThrottledException"], "IntervalSeconds": 1}]}
    out = run(sfn, {"StartAt": "N", "States": {"N": retried}}, role, {}, "retried")
    assert out["status"] == "SUCCEEDED"


def test_spot_prices_are_what_a_spot_hour_roughly_costs(sfn_world) -> None:
    """moto prices a spot hour at $0.00001 (every local cost read $0.00, "100% less than
    on-demand"); the engine answers the dated table's estimate for each type and zone."""

    from spotyolo.core.cost import on_demand_price, price_fn, spot_estimate

    original = moto_patches._ORIGINALS["spot_price_history"]
    assert '"0.00001"' in inspect.getsource(original)  # still upstream (delete the patch when it fails)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    history = ec2.describe_spot_price_history(InstanceTypes=["g5.xlarge"], AvailabilityZone="us-east-1a")
    zones = {h["AvailabilityZone"] for h in history["SpotPriceHistory"]}
    assert zones == {"us-east-1a"}
    assert [float(h["SpotPrice"]) for h in history["SpotPriceHistory"]] == [
        pytest.approx(spot_estimate("g5.xlarge"), abs=1e-6)
    ] * len(history["SpotPriceHistory"])
    spot = price_fn(ec2)("g5.xlarge", "spot", "us-east-1a")
    assert 0.1 * on_demand_price("g5.xlarge") < spot < on_demand_price("g5.xlarge")


def test_the_quota_patches_still_fit_moto() -> None:
    """What patch 12 (the account's EC2 quotas) relies on; the behaviour is in
    tests/functions/test_quotas.py."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.responses.fleets import Fleets
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.servicequotas.responses import ServiceQuotasResponse

    assert list(inspect.signature(Fleets.create_fleet).parameters) == ["self"]
    assert list(inspect.signature(ServiceQuotasBackend.get_service_quota).parameters) == [
        "self",
        "service_code",
        "quota_code",
    ]
    assert INSTANCE_TYPES["g5.xlarge"]["VCpuInfo"]["DefaultVCpus"] == 4
    assert "filters" in inspect.signature(InstanceBackend.all_instances).parameters
    # still missing upstream (delete the patch when one of these fails): moto answers no EC2
    # quota, has no GetAWSDefaultServiceQuota, and an instant fleet never reports a quota error
    assert 'service_code == "vpc"' in inspect.getsource(ServiceQuotasBackend.get_service_quota)
    assert not hasattr(ServiceQuotasResponse, "get_aws_default_service_quota")
    assert "Errors" not in inspect.getsource(Fleets.create_fleet)


def test_service_quotas_answers_the_emulated_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError
    from moto.servicequotas.responses import ServiceQuotasResponse

    with mock_aws():
        moto_patches.install(router)
        try:
            sq = boto3.client("service-quotas", region_name="us-east-1")
            for call in (sq.get_service_quota, sq.get_aws_default_service_quota):
                with pytest.raises(ClientError, match="NoSuchResourceException"):  # no limit: unknown
                    call(ServiceCode="ec2", QuotaCode="L-3819A6DF")
            monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_vcpus", 8.0)
            for call in (sq.get_service_quota, sq.get_aws_default_service_quota):
                quota = call(ServiceCode="ec2", QuotaCode="L-DB2E81BA")["Quota"]
                assert quota["Value"] == 8.0 and quota["QuotaName"] == "Running On-Demand G and VT instances"
            with pytest.raises(ClientError, match="NoSuchResourceException"):  # not one spotyolo reads
                sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-0263D0A3")
            assert sq.get_service_quota(ServiceCode="vpc", QuotaCode="L-F678F1CE")["Quota"]  # moto's own
            # an account with only AWS's default values: no applied one, the default answers
            monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_applied", False)
            with pytest.raises(ClientError, match="NoSuchResourceException"):
                sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-DB2E81BA")
            assert (
                sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode="L-DB2E81BA")["Quota"]["Value"]
                == 8
            )
        finally:
            moto_patches.uninstall()
        assert not hasattr(ServiceQuotasResponse, "get_aws_default_service_quota")  # uninstalled
