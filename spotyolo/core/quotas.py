"""The account's EC2 quotas that limit a launch: which Service Quotas entry counts an instance,
how many vCPUs it takes, and how many instances the quota lets run at once.

EC2's instance quotas count vCPUs, per group of families and per purchase option (spot,
on-demand), per region: an instance of ``n`` vCPUs fits when ``n`` more fit under the quota of
its group. Sources (read 2026-11):

- https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-limits.html ("Spot Instance
  quotas": All G and VT / All P4, P3 and P2 (formerly "All P") / All P5 / All Standard (A, C, D,
  H, I, M, R, T, Z) Spot Instance Requests, "managed in terms of the number of vCPUs"; a refused
  spot request says "Max spot instance count exceeded");
- on-demand: the Running On-Demand Standard / G and VT / P instances quotas, also in vCPUs; a
  refused launch is ``VcpuLimitExceeded`` ("You have requested more vCPU capacity than your
  current vCPU limit of N allows for the instance bucket that the specified instance type
  belongs to", as EC2 answers it);
- https://docs.aws.amazon.com/cli/latest/userguide/cli_service-quotas_code_examples.html
  (``get-aws-default-service-quota`` of ``L-1216C47A`` "Running On-Demand Standard (A, C, D, H,
  I, M, R, T, Z) instances", usage metric ``Resource: vCPU``); the other L- codes as the Service
  Quotas console lists them under "Amazon Elastic Compute Cloud (Amazon EC2)".

Reading a quota: ``GetServiceQuota`` (the applied value); ``NoSuchResourceException`` there
means the quota has no applied value, so ``GetAWSDefaultServiceQuota`` is asked next. Anything
else (``AccessDenied``, throttling, a family not listed here, a type DescribeInstanceTypes does
not know) is *unknown*: never a reason to refuse a job or to count slots.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from botocore.exceptions import BotoCoreError, ClientError

from spotyolo.core.models import Capacity, CapacityPlan

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client

#: a boto3 ``service-quotas`` client (its stubs are not installed)
QuotasClient = Any

SERVICE_CODE = "ec2"
CONSOLE_URL = "https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas"


@dataclass(frozen=True)
class Quota:
    """One Service Quotas entry of EC2 (``ServiceCode`` ``ec2``), in vCPUs."""

    code: str
    name: str
    capacity: Capacity

    def __str__(self) -> str:
        return f'"{self.name}" ({self.code})'

    def increase_command(self, vcpus: int) -> str:
        return (
            f"aws service-quotas request-service-quota-increase --service-code {SERVICE_CODE} "
            f"--quota-code {self.code} --desired-value {vcpus}"
        )


G_VT_SPOT = Quota("L-3819A6DF", "All G and VT Spot Instance Requests", "spot")
G_VT_ON_DEMAND = Quota("L-DB2E81BA", "Running On-Demand G and VT instances", "on-demand")
P_SPOT = Quota("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests", "spot")
P5_SPOT = Quota("L-C4BD4855", "All P5 Spot Instance Requests", "spot")
P_ON_DEMAND = Quota("L-417A185B", "Running On-Demand P instances", "on-demand")
STANDARD_SPOT = Quota("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "spot")
STANDARD_ON_DEMAND = Quota(
    "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "on-demand"
)
#: every quota this module reads (the local engine emulates exactly these)
QUOTAS: tuple[Quota, ...] = (
    G_VT_SPOT,
    G_VT_ON_DEMAND,
    P_SPOT,
    P5_SPOT,
    P_ON_DEMAND,
    STANDARD_SPOT,
    STANDARD_ON_DEMAND,
)

#: the letters that open a family name (g4dn -> g, vt1 -> vt, inf2 -> inf, im4gn -> im)
_SERIES = re.compile(r"^[a-z]+")
#: the Standard group's series: A, C, D, H, I (with im/is), M, R, T, Z; dl, inf, trn, f, x, u,
#: mac, hpc are groups of their own, not read here
_STANDARD = frozenset({"a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"})
_P_OLD = frozenset({"p2", "p3", "p3dn", "p4d", "p4de"})
_P5 = frozenset({"p5", "p5e", "p5en"})


def quota_for(instance_type: str, capacity: Capacity) -> Quota | None:
    """The quota that counts ``instance_type`` launched as ``capacity``, or None (not known here)."""
    family = instance_type.split(".")[0].lower()
    match = _SERIES.match(family)
    series = match.group(0) if match else ""
    spot = capacity == "spot"
    if series in ("g", "gr", "vt"):
        return G_VT_SPOT if spot else G_VT_ON_DEMAND
    if series == "p":
        if not spot:
            return P_ON_DEMAND
        return P_SPOT if family in _P_OLD else P5_SPOT if family in _P5 else None
    if series in _STANDARD:
        return STANDARD_SPOT if spot else STANDARD_ON_DEMAND
    return None


def capacities(plan: str) -> list[Capacity]:
    """The purchase options a capacity plan may launch with (``spot-then-on-demand``: both)."""
    if plan not in get_args(CapacityPlan):
        raise ValueError(f"capacity {plan!r}: allowed {', '.join(get_args(CapacityPlan))}")
    return [c for c in get_args(Capacity) if c in plan]


def instance_vcpus(ec2: EC2Client, instance_types: list[str]) -> dict[str, int]:
    """The vCPUs of each type DescribeInstanceTypes knows (a type it does not know, or a call
    that fails, is left out: unknown)."""
    types = sorted(set(instance_types))
    if not types:
        return {}
    try:
        described = ec2.describe_instance_types(InstanceTypes=types)["InstanceTypes"]  # type: ignore[arg-type]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "InvalidInstanceType" or len(types) == 1:
            return {}
        return {k: v for t in types for k, v in instance_vcpus(ec2, [t]).items()}  # one by one
    except BotoCoreError:
        return {}
    return {
        str(t["InstanceType"]): int(t["VCpuInfo"]["DefaultVCpus"])
        for t in described
        if t.get("VCpuInfo", {}).get("DefaultVCpus")
    }


def quota_value(quotas: QuotasClient, quota: Quota) -> float | None:
    """The quota's value in vCPUs: the applied value, else AWS's default, else None (unknown)."""
    asks = (
        lambda: quotas.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=quota.code),
        lambda: quotas.get_aws_default_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=quota.code),
    )
    for ask in asks:
        try:
            value = ask()["Quota"].get("Value")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NoSuchResourceException":
                continue  # no applied value: AWS's default is the one in force
            return None
        except BotoCoreError:
            return None
        return float(value) if value is not None else None
    return None


def _slots(quotas: QuotasClient, vcpus: dict[str, int], types: list[str], capacity: Capacity) -> int | None:
    """Instances of ``types`` that may run at once as ``capacity``: each quota the types fall
    under holds ``value // vCPUs`` of the largest of them (the fleet may launch any), and the
    quotas add up (separate pools of vCPUs)."""
    largest: dict[Quota, int] = {}
    for instance_type in types:
        quota = quota_for(instance_type, capacity)
        if quota is None or instance_type not in vcpus:
            return None
        largest[quota] = max(largest.get(quota, 0), vcpus[instance_type])
    total = 0
    for quota, size in largest.items():
        value = quota_value(quotas, quota)
        if value is None:
            return None
        total += math.floor(value / size)
    return total


def instance_slots(
    quotas_client: Any, ec2_client: Any, instance_types: list[str], capacity: str
) -> int | None:
    """How many instances of the job's types the account's quota allows at once for
    ``capacity`` (``spot``, ``on-demand``, ``spot-then-on-demand``), or None when that cannot be
    known.

    ``spot-then-on-demand`` launches on spot first, so its slots are the spot ones; when spot
    allows none, its jobs can only run on demand, so they are the on-demand ones.
    """
    if not instance_types:
        return None
    vcpus = instance_vcpus(ec2_client, instance_types)
    plan = capacities(capacity)
    spot = _slots(quotas_client, vcpus, instance_types, plan[0])
    if len(plan) == 1 or spot != 0:
        return spot
    return _slots(quotas_client, vcpus, instance_types, plan[1])


@dataclass(frozen=True)
class Shortfall:
    """One quota too small for the smallest of the job's types it counts."""

    quota: Quota
    value: float
    #: the job's types under this quota, with their vCPUs
    types: dict[str, int]

    @property
    def needed(self) -> int:
        return min(self.types.values())


def shortfalls(
    quotas_client: Any, ec2_client: Any, instance_types: list[str], capacity: str
) -> list[Shortfall]:
    """The quotas that stop every launch the job allows, or ``[]`` when any type and capacity
    it allows fits (or may fit: an unknown quota or vCPU count is never a reason to refuse)."""
    vcpus = instance_vcpus(ec2_client, instance_types)
    found: dict[Quota, Shortfall] = {}
    values: dict[Quota, float | None] = {}
    for cap in capacities(capacity):
        for instance_type in instance_types:
            quota = quota_for(instance_type, cap)
            if quota is None or instance_type not in vcpus:
                return []
            if quota not in values:
                values[quota] = quota_value(quotas_client, quota)
            value = values[quota]
            if value is None or value >= vcpus[instance_type]:
                return []
            old = found.get(quota)
            found[quota] = Shortfall(
                quota, value, {**(old.types if old else {}), instance_type: vcpus[instance_type]}
            )
    return list(found.values())


def explain(shortfalls: list[Shortfall], capacity: str) -> str:
    """Why no launch can ever succeed, and how to raise each quota (console and CLI)."""
    parts = []
    for s in shortfalls:
        by_size: dict[int, list[str]] = {}
        for name, n in sorted(s.types.items()):
            by_size.setdefault(n, []).append(name)
        types = ", ".join(
            f"{names[0]} needs {n} vCPUs" if len(names) == 1 else f"{', '.join(names)} need {n} vCPUs each"
            for n, names in sorted(by_size.items())
        )
        parts.append(
            f"{s.quota} is {s.value:g} vCPUs ({types}): raise it to at least {s.needed} with "
            f"`{s.quota.increase_command(s.needed)}`"
        )
    return (
        f"the account's EC2 quotas allow no {capacity} instance of this job's instance_types, so "
        f"it could never launch: {'; '.join(parts)}. Request the increase in the Service Quotas "
        f"console ({CONSOLE_URL}, in this region) or with the command; then upload the job again, "
        "or choose instance_types / capacity that a quota allows"
    )
