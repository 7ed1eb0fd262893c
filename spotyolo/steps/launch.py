"""Launch trainer: record the attempt and its task token, then start one instance.

Event ``{"job": JobSpec, "attempt": Attempt, "token": "<task token>"}`` (Launch trainer's
Payload). Returns ``{"instance", "instance_type", "capacity", "az", "reused"}``, which nobody
reads: the state waits for the trainer's SendTaskSuccess/Failure on the token.

One EC2 Fleet ``instant`` request, on AWS and in the emulator alike: the configured types
(times the configured subnets) as overrides of the launch template, price-capacity-optimized
for spot, in the configured order for on-demand, root volume sized from the dataset. A
retried invocation never starts a second instance: an instance tagged with this job, run and
attempt is looked up first (moto ignores ClientToken), and the ClientToken is derived from
the execution, the attempt and the launch round (AWS returns the first fleet for it).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, SecretStr

from spotyolo.contract.env import Settings
from spotyolo.contract.errors import ErrorName, JobAlreadyRunning, LaunchFailed, NoCapacity, QuotaExceeded
from spotyolo.core.fleet import instance_tags, run_instances_of
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, AttemptRecord, Capacity, JobSpec
from spotyolo.core.quotas import quota_for
from spotyolo.steps.common import hide, logger, metrics, retrying

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client

#: root device of the ECS-optimized GPU AMIs (Amazon Linux) the launch template uses
ROOT_DEVICE = "/dev/xvda"
#: dataset bytes are stored twice on the instance (download + Ultralytics' label/image caches)
DATASET_DISK_FACTOR = 2

#: EC2 error codes meaning "no capacity in any pool right now"
CAPACITY_CODES = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "SpotMaxPriceTooLow",
    "UnfulfillableCapacity",
}
#: EC2 error codes meaning "the account's limit says no"
QUOTA_CODES = {
    "MaxSpotInstanceCountExceeded",
    "VcpuLimitExceeded",
    "InstanceLimitExceeded",
    "SpotInstanceRequestLimitExceeded",
}
#: EC2 error codes meaning "asked too often": asked again after a short wait, never a quota
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
#: seconds between CreateFleet tries while throttled (15 s in all; botocore retried each too)
THROTTLE_DELAYS = (1.0, 2.0, 4.0, 8.0)


#: EC2 is eventually consistent: an instance CreateFleet just returned may not be found yet
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidVolume.NotFound"})
#: seconds between tries of a call on the new instance (7.5 s in all; the Lambda has 120)
NOT_FOUND_DELAYS = (0.5, 1.0, 2.0, 4.0)


class RootEbs(TypedDict):
    """The root volume every instance gets: encrypted, and deleted with the instance (the types
    say so: a mutation or an edit to False is a type error, not a silent leak of data or money)."""

    VolumeSize: int
    VolumeType: Literal["gp3"]
    Encrypted: Literal[True]
    DeleteOnTermination: Literal[True]


class RootVolume(TypedDict):
    DeviceName: str
    Ebs: RootEbs


class OneInstance(TypedDict):
    """An attempt is one instance: a fleet never asks for more (a surplus is terminated)."""

    TotalTargetCapacity: Literal[1]
    DefaultTargetCapacityType: Capacity


class LaunchEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job: JobSpec
    attempt: Attempt
    #: secret: shown masked by the model, and hidden from every log line
    token: SecretStr


def client_token(execution: str, attempt: Attempt) -> str:
    seed = f"{execution}|{attempt.number}|{attempt.launch_waits}"
    if attempt.requeues:  # a relaunch after the slot queue: a new request, not the refused one
        seed += f"|requeue-{attempt.requeues}"
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"spotyolo-{digest[:48]}"


def root_volume_gb(dataset_bytes: int, base_gb: int) -> int:
    return base_gb + math.ceil(dataset_bytes * DATASET_DISK_FACTOR / 2**30)


def quota_name(instance_type: str, capacity: Capacity) -> str:
    """The Service Quotas entry that limits ``instance_type`` (what the user asks to raise)."""
    quota = quota_for(instance_type, capacity)
    if quota is not None:
        return str(quota)
    family = instance_type.split(".")[0].lower()
    kind = "Spot Instance Requests" if capacity == "spot" else "Running On-Demand"
    return f"the EC2 {kind} quota of the {family} family"


def _details(codes: list[tuple[str, str]]) -> str:
    return "; ".join(sorted({f"{c}: {m}" for c, m in codes}))


def launch_error(codes: list[tuple[str, str]], attempt: Attempt) -> NoCapacity | QuotaExceeded | LaunchFailed:
    """The error EC2's codes stand for, naming what to do.

    Only quota and capacity codes are worth another launch round later (QuotaExceeded,
    NoCapacity); anything else (permissions, a bad parameter, throttling that outlasted the
    retries) is LaunchFailed at once, in EC2's own words.
    """
    types = ", ".join(attempt.instance_types)
    quota = [(c, m) for c, m in codes if c in QUOTA_CODES]
    if quota:
        names = sorted({quota_name(t, attempt.capacity) for t in attempt.instance_types})
        return QuotaExceeded(
            f"the account's EC2 quota stops a {attempt.capacity} launch of {types} ({_details(quota)}). "
            f"Request an increase of {' / '.join(names)} in the Service Quotas console "
            "(the quota counts vCPUs), or choose instance_types the quota allows"
        )
    if not codes or any(c in CAPACITY_CODES for c, _ in codes):
        return NoCapacity(
            f"no {attempt.capacity} capacity for {types} in the configured subnets "
            f"({_details(codes) or 'the fleet returned no instance'}); "
            "more instance_types or subnets in other availability zones give EC2 more pools"
        )
    if all(c in THROTTLE_CODES for c, _ in codes):
        hint = (
            f"EC2 kept throttling the account's requests for {sum(THROTTLE_DELAYS):g} s; start the job later"
        )
    else:
        hint = "fix what EC2 names (permissions, the launch template, instance_types) and start the job again"
    return LaunchFailed(f"EC2 refused the {attempt.capacity} launch of {types} ({_details(codes)}); {hint}")


def fleet_request(job: JobSpec, attempt: Attempt, cfg: Settings, execution: str) -> dict[str, Any]:
    if not cfg.launch_template_id:
        raise ValueError("LAUNCH_TEMPLATE_ID is not set for the launch function: deploy with the CDK app")
    image = job.image or cfg.trainer_image
    tags = [{"Key": k, "Value": v} for k, v in instance_tags(job, attempt, image).items()]
    volume: RootVolume = {
        "DeviceName": ROOT_DEVICE,
        "Ebs": {
            "VolumeSize": root_volume_gb(job.dataset.bytes, cfg.root_volume_base_gb),
            "VolumeType": "gp3",
            "Encrypted": True,
            "DeleteOnTermination": True,
        },
    }
    overrides: list[dict[str, Any]] = []
    for priority, instance_type in enumerate(attempt.instance_types):
        subnets: list[str | None] = list(cfg.subnet_ids) or [None]
        for subnet in subnets:
            override: dict[str, Any] = {"InstanceType": instance_type, "BlockDeviceMappings": [volume]}
            if subnet:
                override["SubnetId"] = subnet
            if attempt.capacity == "on-demand":
                override["Priority"] = float(priority)
            overrides.append(override)
    target: OneInstance = {"TotalTargetCapacity": 1, "DefaultTargetCapacityType": attempt.capacity}
    request: dict[str, Any] = {
        "Type": "instant",
        "ClientToken": client_token(execution, attempt),
        "LaunchTemplateConfigs": [
            {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateId": cfg.launch_template_id,
                    "Version": cfg.launch_template_version or "$Latest",
                },
                "Overrides": overrides,
            }
        ],
        "TargetCapacitySpecification": target,
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "fleet", "Tags": tags},
        ],
    }
    if attempt.capacity == "spot":
        request["SpotOptions"] = {"AllocationStrategy": "price-capacity-optimized"}
    else:
        request["OnDemandOptions"] = {"AllocationStrategy": "prioritized"}
    return request


def _record_attempt(table: JobTable, job: JobSpec, attempt: Attempt, token: str) -> None:
    item = table.get(job.name)
    if not item or item.execution != job.execution:
        holder = item.execution if item else None
        raise JobAlreadyRunning(
            f"job {job.name!r} is no longer held by this execution (held by {holder or 'nobody'}: "
            "cancelled or taken over); nothing was launched"
        )
    open_record = any(r.number == attempt.number and not r.end for r in item.attempts)
    if open_record and item.current and item.current.number == attempt.number:
        # a retried Launch trainer: same attempt, new task token
        table.replace_token(job.name, job.execution, attempt.number, token)
        return
    record = AttemptRecord(number=attempt.number, capacity=attempt.capacity)
    if not table.start_attempt(job.name, job.execution, record, token):
        raise JobAlreadyRunning(f"job {job.name!r}: the lock moved while launching; nothing was launched")


class Launched(NamedTuple):
    """The instance an instant fleet started, as its CreateFleet response says."""

    instance: str
    instance_type: str
    az: str | None
    subnet: str | None
    #: more instances than the one asked for (never expected; terminated at once)
    surplus: list[str]


def launched_instance(response: dict[str, Any]) -> Launched | None:
    """The fleet's instance from the response alone: a describe of it may not find it yet."""
    groups = [g for g in response.get("Instances", []) if g.get("InstanceIds")]
    if not groups:
        return None
    ids = [i for g in groups for i in g["InstanceIds"]]
    override = groups[0].get("LaunchTemplateAndOverrides", {}).get("Overrides", {})
    return Launched(
        instance=ids[0],
        instance_type=groups[0].get("InstanceType") or override.get("InstanceType", ""),
        az=override.get("AvailabilityZone"),
        subnet=override.get("SubnetId"),
        surplus=ids[1:],
    )


def _create_fleet(ec2: Any, request: dict[str, Any]) -> dict[str, Any]:
    """CreateFleet, asked again after a short wait while EC2 throttles (raised, or as the
    response's only errors).

    A throttled request was not processed, so it is asked again with its ClientToken; a try
    EC2 answered used its token up, so the next gets one derived from it. A retried invocation
    repeats the same tokens and never starts a second fleet.
    """
    answered = 0

    def once() -> dict[str, Any]:
        nonlocal answered
        token = request["ClientToken"] + (f"-{answered}" if answered else "")
        response: dict[str, Any] = ec2.create_fleet(**{**request, "ClientToken": token})
        errors = response.get("Errors", [])
        if launched_instance(response) or not errors:
            return response
        if all(e.get("ErrorCode") in THROTTLE_CODES for e in errors):
            answered += 1
            code, message = errors[0]["ErrorCode"], errors[0].get("ErrorMessage", "")
            raise ClientError({"Error": {"Code": code, "Message": message}}, "CreateFleet")
        return response

    return retrying(once, THROTTLE_CODES, THROTTLE_DELAYS)


def _refused(
    table: JobTable, job: JobSpec, attempt: Attempt, codes: list[tuple[str, str]]
) -> NoCapacity | QuotaExceeded | LaunchFailed:
    """Close the attempt with the error EC2's codes stand for, and return it to raise."""
    error = launch_error(codes, attempt)
    table.end_attempt(job.name, job.execution, attempt.number, ErrorName(error.error_name))
    metrics.add_metric(name="LaunchRefused", unit=MetricUnit.Count, value=1)
    return error


def _az_of_subnet(ec2: Any, subnet: str | None) -> str | None:
    """The AZ of the subnet EC2 chose (it prices spot time); unknown is no reason to fail."""
    if not subnet:
        return None
    try:
        return str(ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["AvailabilityZone"])
    except (ClientError, KeyError, IndexError):
        return None


def _tag_volumes(ec2: Any, instance: str, tags: list[dict[str, str]]) -> None:
    """Instant fleets tag instances only: tag the root volume after launch (cost allocation).

    Cosmetic, so it never fails a launch; the new instance may not be visible yet, so both
    calls are retried a few seconds first.
    """
    try:
        described = retrying(
            lambda: ec2.describe_instances(InstanceIds=[instance]), NOT_FOUND_CODES, NOT_FOUND_DELAYS
        )["Reservations"][0]["Instances"][0]
        volumes = [m["Ebs"]["VolumeId"] for m in described.get("BlockDeviceMappings", []) if "Ebs" in m]
        if volumes:
            retrying(lambda: ec2.create_tags(Resources=volumes, Tags=tags), NOT_FOUND_CODES, NOT_FOUND_DELAYS)
    except ClientError as err:
        logger.warning("could not tag the root volume", extra={"instance": instance, "error": str(err)})


def launch(event: LaunchEvent, *, ec2: EC2Client, table: JobTable, cfg: Settings) -> dict[str, Any]:
    job, attempt = event.job, event.attempt
    token = event.token.get_secret_value()
    hide(token)
    _record_attempt(table, job, attempt, token)

    existing = run_instances_of(ec2, job.name, job.run_id, attempt.number)
    if existing:
        instance = existing[0]
        logger.info("instance of this attempt already exists", extra={"instance": instance["InstanceId"]})
        table.set_instance(
            job.name,
            job.execution,
            attempt.number,
            instance["InstanceId"],
            instance["InstanceType"],
            instance.get("Placement", {}).get("AvailabilityZone"),
        )
        return {
            "instance": instance["InstanceId"],
            "instance_type": instance["InstanceType"],
            "capacity": attempt.capacity,
            "az": instance.get("Placement", {}).get("AvailabilityZone"),
            "reused": True,
        }

    request = fleet_request(job, attempt, cfg, job.execution)
    try:
        response = _create_fleet(ec2, request)
    except ClientError as err:
        error = err.response.get("Error", {})
        raise _refused(table, job, attempt, [(error.get("Code", ""), error.get("Message", ""))]) from err
    launched = launched_instance(response)
    if launched is None:
        codes = [(e.get("ErrorCode", ""), e.get("ErrorMessage", "")) for e in response.get("Errors", [])]
        raise _refused(table, job, attempt, codes)
    az = launched.az or _az_of_subnet(ec2, launched.subnet)
    # recorded first: a surplus instance's termination event then never passes for this one's
    table.set_instance(job.name, job.execution, attempt.number, launched.instance, launched.instance_type, az)
    if launched.surplus:  # TotalTargetCapacity is 1; never pay for a surplus
        retrying(
            lambda: ec2.terminate_instances(InstanceIds=launched.surplus), NOT_FOUND_CODES, NOT_FOUND_DELAYS
        )
    _tag_volumes(ec2, launched.instance, request["TagSpecifications"][0]["Tags"])
    metrics.add_metric(name="InstancesLaunched", unit=MetricUnit.Count, value=1)
    logger.info(
        "launched",
        extra={
            "instance": launched.instance,
            "type": launched.instance_type,
            "capacity": attempt.capacity,
            "attempt": attempt.number,
            "az": az,
        },
    )
    return {
        "instance": launched.instance,
        "instance_type": launched.instance_type,
        "capacity": attempt.capacity,
        "az": az,
        "reused": False,
    }
