"""The state machine definition: structure, placeholders, and the validator catching real mistakes."""

from __future__ import annotations

import copy
import json

import pytest

from spotyolo.contract.asl import (
    PLACEHOLDERS,
    AslError,
    load_asl_text,
    placeholders,
    render_asl,
    validate_definition,
)
from spotyolo.contract.errors import ERROR_NAMES
from spotyolo.core.models import Summary
from spotyolo.core.slots import QUEUE_TIMEOUT_SECONDS

ARNS = {name: f"arn:aws:lambda:us-east-1:123456789012:function:{name}" for name in PLACEHOLDERS}
ARNS["TopicArn"] = "arn:aws:sns:us-east-1:123456789012:spotyolo"


def definition() -> dict:
    return json.loads(load_asl_text())


def test_the_definition_is_sound_and_uses_exactly_the_contract_placeholders() -> None:
    assert validate_definition(definition()) == []
    assert placeholders(load_asl_text()) == set(PLACEHOLDERS)
    rendered = json.loads(render_asl(ARNS))
    assert rendered["States"]["Launch trainer"]["Parameters"]["FunctionName"] == ARNS["LaunchFunctionArn"]
    assert "${" not in json.dumps(rendered)


def test_render_refuses_missing_substitutions() -> None:
    partial = {k: v for k, v in ARNS.items() if k != "TopicArn"}
    with pytest.raises(AslError, match=r"placeholders not substituted: TopicArn"):
        render_asl(partial)


def test_the_graph_follows_the_design() -> None:
    states = definition()["States"]
    launch = states["Launch trainer"]
    assert launch["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert launch["HeartbeatSecondsPath"] == "$.attempt.heartbeat_seconds"
    assert launch["TimeoutSecondsPath"] == "$.attempt.seconds_left"
    routes = {tuple(c["ErrorEquals"]): c["Next"] for c in launch["Catch"]}
    assert routes == {
        ("SpotInterrupted", "InstanceLost"): "Prepare retry",
        ("NoCapacity",): "Prepare launch retry",
        ("QuotaExceeded",): "Back to the queue",
        ("States.HeartbeatTimeout", "States.Timeout"): "Clean up after failure",
        ("States.ALL",): "Clean up after failure",
    }
    # issue 12: a slot is taken before the first launch only; retries and launch rounds keep it
    assert states["Already trained?"]["Default"] == "Wait for an instance slot"
    wait = states["Wait for an instance slot"]
    assert wait["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert wait["Next"] == "Launch trainer"
    assert wait["TimeoutSeconds"] == QUEUE_TIMEOUT_SECONDS
    assert {tuple(c["ErrorEquals"]): c["Next"] for c in wait["Catch"]} == {
        ("States.Timeout",): "Queue timed out",
        ("States.ALL",): "Clean up after failure",
    }
    assert states["Queue timed out"]["Parameters"]["Error"] == "QueueTimedOut"
    assert states["Prepare retry"]["Next"] == "Launch trainer"
    assert states["Wait for capacity"]["Next"] == "Launch trainer"
    put_back = states["Put back in the queue?"]
    assert states["Back to the queue"]["Next"] == "Put back in the queue?"
    assert put_back["Choices"][0]["Next"] == "Wait for an instance slot"
    assert put_back["Default"] == "Prepare launch retry"
    validate = {tuple(c["ErrorEquals"]): c["Next"] for c in states["Validate job"]["Catch"]}
    # a refused job (or a duplicate) never reaches a clean up: it must not unlock the running one
    assert validate[("JobInvalid", "JobAlreadyRunning")] == "Read refusal"
    assert (
        states["Read refusal"]["Next"] == "Read refusal words"
        and states["Read refusal words"]["Next"] == "Explain refusal"
        and states["Explain refusal"]["Next"] == "Notify failure"
    )
    # a config.yaml below jobs/<job>/ matches the rule's wildcard: it ends quietly, unnotified
    assert validate[("NotATrigger",)] == "Not a job trigger"
    assert states["Not a job trigger"]["Type"] == "Succeed"
    assert validate[("UploadInProgress",)] == "Wait for upload to finish"
    assert all(c["ResultPath"] == "$.error" for s in states.values() for c in s.get("Catch", []))
    # every error name of the contract that a step can raise is handled by a named route or States.ALL
    named = {e for s in states.values() for c in s.get("Catch", []) for e in c["ErrorEquals"]}
    assert {
        "JobInvalid",
        "JobAlreadyRunning",
        "UploadInProgress",
        "NotATrigger",
        "SpotInterrupted",
        "InstanceLost",
        "NoCapacity",
        "QuotaExceeded",
    } <= named
    assert set(ERROR_NAMES) >= named - {"States.ALL", "States.HeartbeatTimeout", "States.Timeout"}
    assert states["Job failed"]["ErrorPath"] == "$.summary.error"


def catcher(state: dict, error: str) -> str:
    """Where a state's Catch sends ``error`` (the first matching catcher, as Step Functions does)."""
    for catch in state["Catch"]:
        if error in catch["ErrorEquals"] or "States.ALL" in catch["ErrorEquals"]:
            return str(catch["Next"])
    raise AssertionError(f"{error} is not caught")


def test_a_refused_launch_that_waiting_cannot_fix_ends_the_job_with_a_clean_up() -> None:
    states = definition()["States"]
    assert catcher(states["Launch trainer"], "LaunchFailed") == "Clean up after failure"
    assert catcher(states["Launch trainer"], "NoCapacity") == "Prepare launch retry"


def test_summary_selectors_carry_every_summary_field() -> None:
    states = definition()["States"]
    for name in ("Check result", "Clean up after failure"):
        selected = {k.removesuffix(".$") for k in states[name]["ResultSelector"]}
        assert selected == set(Summary.model_fields), name


def test_every_lambda_task_retries_only_transient_errors_with_jitter() -> None:
    for name, state in definition()["States"].items():
        if "lambda:invoke" in state.get("Resource", ""):
            (retry,) = state["Retry"]
            assert retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] <= 5, name
            assert all(e.startswith("Lambda.") for e in retry["ErrorEquals"]), name


def test_every_notification_retries_sns_throttling() -> None:
    """Publish errors of the sns:publish integration are ``SNS.<Exception>``: a burst of jobs
    ending together is throttled (``SNS.ThrottledException``) and would lose the email."""
    notifies = [
        s for s in definition()["States"].values() if s.get("Resource") == "arn:aws:states:::sns:publish"
    ]
    assert len(notifies) == 3
    for state in notifies:
        (retry,) = state["Retry"]
        assert {"SNS.ThrottledException", "SNS.SdkClientException"} <= set(retry["ErrorEquals"])
        assert retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] >= 3


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (
            lambda d: d["States"]["Check result"].update(Next="Chek result"),
            "Next 'Chek result' is not a state",
        ),
        (
            lambda d: d["States"]["Launch trainer"]["Catch"].reverse(),
            "States.ALL must be alone in the last catcher",
        ),
        (
            lambda d: d["States"]["Launch trainer"]["Catch"][-1]["ErrorEquals"].append("NoCapacity"),
            "States.ALL must be alone",
        ),
        (
            lambda d: d["States"].update({"Orphan": {"Type": "Succeed", "Comment": "x"}}),
            "'Orphan': unreachable",
        ),
        (lambda d: d["States"]["Notify"].pop("Comment"), "'Notify': no Comment"),
        (lambda d: d.update(QueryLanguage="JSONata"), "QueryLanguage must be JSONPath"),
        (lambda d: d["States"]["Check result"].update(Assign={"x": 1}), "Assign is JSONata/variables"),
        (
            lambda d: d["States"]["Notify"]["Parameters"].update({"Message.$": "$.summary.lines[0].text"}),
            "use States.ArrayGetItem",
        ),
        (
            lambda d: d["States"]["Check result"]["Retry"][0]["ErrorEquals"].append("States.ALL"),
            "retries non-transient errors",
        ),
        (lambda d: d["States"]["Check result"]["Catch"][0].pop("ResultPath"), "has no ResultPath"),
    ],
)
def test_the_validator_finds_real_mistakes(breakage, problem: str) -> None:
    broken = copy.deepcopy(definition())
    breakage(broken)
    problems = validate_definition(broken)
    assert any(problem in p for p in problems), problems
