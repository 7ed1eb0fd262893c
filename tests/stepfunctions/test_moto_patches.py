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
    assert "cause" in inspect.signature(StepFunctionsParserBackend.send_task_failure).parameters
    for name in ("send_task_failure", "stop_execution"):
        assert callable(getattr(StepFunctionResponse, name))
    # the bugs patched are still there (delete the patch when one of these fails)
    assert "cause" not in inspect.getsource(StepFunctionResponse.send_task_failure)
    assert "docker" in inspect.getsource(LambdaFunction._invoke_lambda)


def test_install_is_idempotent_and_uninstall_restores() -> None:
    original = LambdaFunction._invoke_lambda
    moto_patches.install(lambda n, e: 1)
    moto_patches.install(lambda n, e: 2)
    try:
        assert moto_patches.installed() and LambdaFunction._invoke_lambda is not original
    finally:
        moto_patches.uninstall()
    assert LambdaFunction._invoke_lambda is original and not moto_patches.installed()


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


def test_task_failure_keeps_its_cause_and_an_early_answer_is_not_lost(sfn_world) -> None:
    sfn, arn, role = sfn_world

    def answer_during_invoke(name: str, event: dict) -> dict:
        # the "trainer" answers before the Lambda returns: moto used to time out on the heartbeat
        sfn.send_task_failure(taskToken=event["token"], error="TrainingDiverged", cause="loss is nan")
        return {}

    moto_patches.install(answer_during_invoke)
    task = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": arn, "Payload": {"token.$": "$$.Task.Token"}},
        "HeartbeatSeconds": 30,
        "End": True,
    }
    started = time.time()
    out = run(sfn, {"StartAt": "A", "States": {"A": task}}, role, {}, "early")
    assert out["error"] == "TrainingDiverged" and out["cause"] == "loss is nan"
    assert time.time() - started < 10


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
