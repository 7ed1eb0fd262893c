"""IAM allows what AWS checks: every authorization of every AWS call the code makes, derived
from the real requests and evaluated against the synthesized roles' policies (docs/ARCHITECTURE.md,
"IAM: what the tests check").

moto enforces no IAM, so this is where a launch that AWS would refuse with UnauthorizedOperation
(a tag-on-create grant missing for one resource type, a wrong ARN, a condition that cannot
match) fails before a deploy.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from cdk_testing import Synth
from iam_policy import Deployed, Request, condition_holds, decide, refused
from iam_reference import FLEET_USERS_PAGE, TAG_ON_CREATE_PAGE, create_fleet_requests

from spotyolo.contract.env import Settings
from spotyolo.core.models import Attempt, JobConfig, JobSpec
from spotyolo.steps import launch

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
    with pytest.raises(NotImplementedError):
        condition_holds("DateLessThan", "aws:CurrentTime", "2030-01-01", {})
