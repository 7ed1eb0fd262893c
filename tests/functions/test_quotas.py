"""The account's EC2 quotas (spotyolo.core.quotas) against the emulator's Service Quotas and EC2
Fleet (spotyolo.local.moto_patches), and Validate's refusal of a job no quota lets launch."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from spotyolo.contract.errors import QuotaExceeded
from spotyolo.core import quotas
from spotyolo.core.models import Attempt
from spotyolo.local import moto_patches
from spotyolo.steps import launch


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    with mock_aws():
        moto_patches.install(lambda name, event: None)
        try:
            yield SimpleNamespace(
                sq=boto3.client("service-quotas", region_name="us-east-1"),
                ec2=boto3.client("ec2", region_name="us-east-1"),
                limit=lambda vcpus: monkeypatch.setattr(moto_patches.LIMITS, "ec2_quota_vcpus", vcpus),
            )
        finally:
            moto_patches.uninstall()


def test_instance_slots_divide_the_quota_by_the_largest_types_vcpus(aws: SimpleNamespace) -> None:
    aws.limit(8.0)  # two g5.xlarge (4 vCPUs each)
    assert quotas.instance_vcpus(aws.ec2, ["g5.xlarge", "g5.2xlarge"]) == {"g5.xlarge": 4, "g5.2xlarge": 8}
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge"], "spot") == 2
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"], "on-demand") == 2
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge", "g5.2xlarge"], "spot") == 1  # any may launch
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge"], "spot-then-on-demand") == 2
    # two quotas (G and VT, Standard) are two pools of vCPUs
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge", "m5.xlarge"], "spot") == 4
    aws.limit(2.0)
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge"], "spot") == 0


def test_unknown_quotas_or_types_are_none_never_zero(aws: SimpleNamespace) -> None:
    # no limit: Service Quotas has no value for the codes (NoSuchResource, then the default too)
    assert quotas.quota_value(aws.sq, quotas.G_VT_SPOT) is None
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge"], "spot") is None
    aws.limit(8.0)
    # a family not read here, a type DescribeInstanceTypes does not know: unknown
    assert quotas.instance_slots(aws.sq, aws.ec2, ["inf2.xlarge"], "spot") is None
    assert quotas.instance_slots(aws.sq, aws.ec2, ["g5.xlarge", "g99.xlarge"], "spot") is None
    assert quotas.instance_vcpus(aws.ec2, ["g5.xlarge", "g99.xlarge"]) == {"g5.xlarge": 4}


def _stubbed(answers: list[tuple[str, Any]]) -> Any:
    client = boto3.client(
        "service-quotas", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    stubber = Stubber(client)
    for method, answer in answers:
        if isinstance(answer, str):
            stubber.add_client_error(method, service_error_code=answer, http_status_code=400)
        else:
            stubber.add_response(method, {"Quota": {"QuotaCode": "L-3819A6DF", "Value": answer}})
    stubber.activate()
    return client


def test_a_quota_without_an_applied_value_falls_back_to_awss_default(aws: SimpleNamespace) -> None:
    client = _stubbed(
        [("get_service_quota", "NoSuchResourceException"), ("get_aws_default_service_quota", 0.0)]
    )
    assert quotas.instance_slots(client, aws.ec2, ["g5.xlarge"], "spot") == 0
    client = _stubbed([("get_service_quota", 12.0)])
    assert quotas.instance_slots(client, aws.ec2, ["g5.xlarge"], "spot") == 3
    for error in ("AccessDeniedException", "TooManyRequestsException"):
        assert (
            quotas.instance_slots(_stubbed([("get_service_quota", error)]), aws.ec2, ["g5.xlarge"], "spot")
            is None
        )
    client = _stubbed(
        [
            ("get_service_quota", "NoSuchResourceException"),
            ("get_aws_default_service_quota", "NoSuchResourceException"),
        ]
    )
    assert quotas.instance_slots(client, aws.ec2, ["g5.xlarge"], "spot") is None


def test_spot_then_on_demand_counts_on_demand_slots_when_spot_allows_none(aws: SimpleNamespace) -> None:
    spot_zero = _stubbed([("get_service_quota", 0.0), ("get_service_quota", 16.0)])
    assert quotas.instance_slots(spot_zero, aws.ec2, ["g5.xlarge"], "spot-then-on-demand") == 4
    assert (
        quotas.shortfalls(
            _stubbed([("get_service_quota", 0.0), ("get_service_quota", 16.0)]),
            aws.ec2,
            ["g5.xlarge"],
            "spot-then-on-demand",
        )
        == []
    )


def _fleet(ec2: Any, capacity: str, instance_type: str = "g5.xlarge") -> dict[str, Any]:
    template = ec2.describe_launch_templates()["LaunchTemplates"]
    template_id = (
        template[0]["LaunchTemplateId"]
        if template
        else ec2.create_launch_template(
            LaunchTemplateName="t", LaunchTemplateData={"ImageId": "ami-12c6146b"}
        )["LaunchTemplate"]["LaunchTemplateId"]
    )
    response: dict[str, Any] = ec2.create_fleet(
        Type="instant",
        LaunchTemplateConfigs=[
            {
                "LaunchTemplateSpecification": {"LaunchTemplateId": template_id, "Version": "$Latest"},
                "Overrides": [{"InstanceType": instance_type}],
            }
        ],
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": capacity},
    )
    return response


def _attempt(capacity: str) -> Attempt:
    return Attempt(
        number=1, capacity=capacity, instance_types=["g5.xlarge"], seconds_left=60, heartbeat_seconds=30
    )


def test_the_fleet_refuses_a_launch_past_the_quota_with_ec2s_codes(aws: SimpleNamespace) -> None:
    aws.limit(4.0)  # one g5.xlarge, spot and on-demand each
    first = launch.launched_instance(_fleet(aws.ec2, "spot"))
    assert first is not None
    refused = _fleet(aws.ec2, "spot")
    assert launch.launched_instance(refused) is None
    codes = [(e["ErrorCode"], e["ErrorMessage"]) for e in refused["Errors"]]
    assert codes == [("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")]
    assert refused["Errors"][0]["LaunchTemplateAndOverrides"]["Overrides"]["InstanceType"] == "g5.xlarge"
    error = launch.launch_error(codes, _attempt("spot"))
    assert isinstance(error, QuotaExceeded) and "L-3819A6DF" in str(error)

    on_demand = launch.launched_instance(_fleet(aws.ec2, "on-demand"))  # its own quota
    assert on_demand is not None
    again = _fleet(aws.ec2, "on-demand")
    assert [e["ErrorCode"] for e in again["Errors"]] == ["VcpuLimitExceeded"]
    assert "vCPU limit of 4 allows" in again["Errors"][0]["ErrorMessage"]
    assert isinstance(launch.launch_error([("VcpuLimitExceeded", "")], _attempt("on-demand")), QuotaExceeded)
    assert launch.launched_instance(_fleet(aws.ec2, "spot", "m5.xlarge")) is not None  # another quota

    aws.ec2.terminate_instances(InstanceIds=[first.instance])  # a terminated instance frees its vCPUs
    assert launch.launched_instance(_fleet(aws.ec2, "spot")) is not None


def test_without_a_limit_the_fleet_launches_as_before(aws: SimpleNamespace) -> None:
    launched = [launch.launched_instance(_fleet(aws.ec2, "spot")) for _ in range(5)]
    assert all(launched) and len({i.instance for i in launched if i}) == 5


def test_the_refusal_names_each_quota_its_value_the_vcpus_and_the_command(aws: SimpleNamespace) -> None:
    aws.limit(4.0)
    assert quotas.shortfalls(aws.sq, aws.ec2, ["g5.xlarge", "g5.2xlarge"], "spot") == []  # one fits
    aws.limit(2.0)
    short = quotas.shortfalls(aws.sq, aws.ec2, ["g5.xlarge", "g6.xlarge", "g5.2xlarge"], "spot")
    assert [(s.quota, s.value, s.needed) for s in short] == [(quotas.G_VT_SPOT, 2.0, 4)]
    text = quotas.explain(short, "spot")
    assert '"All G and VT Spot Instance Requests" (L-3819A6DF) is 2 vCPUs' in text
    assert "(g5.xlarge, g6.xlarge need 4 vCPUs each, g5.2xlarge needs 8 vCPUs)" in text
    assert "--quota-code L-3819A6DF --desired-value 4" in text and "Service Quotas console" in text
