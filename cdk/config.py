"""What a user sets when deploying (``cdk deploy -c key=value`` or ``cdk.json`` "context").

Every key is optional; ``DeployConfig.from_context`` checks them all before anything is built,
so a typo fails the synth with a message naming the key and the fix instead of a broken stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotyolo.contract.env import DEFAULT_INSTANCE_TYPES

#: context keys a user may set, with what they do (shown in errors and the README)
CONTEXT_KEYS: dict[str, str] = {
    "stack_name": "CloudFormation stack name (default SpotYolo)",
    "email": "e-mail address(es) for notifications, comma separated (confirm the subscription mail)",
    "phone": "phone number(s) in E.164 form (+14155550100) for SMS notifications, comma separated",
    "instance_types": "default GPU instance types, comma separated (a job's config may override)",
    "vpc_id": "an existing VPC to launch trainers in (with subnet_ids)",
    "subnet_ids": "public subnets of vpc_id, comma separated, that auto-assign public IPv4",
    "bucket_name": "name of the job bucket (default: generated)",
    "root_volume_gb": "root volume base size in GiB (default 60; the launch adds the dataset size)",
    "settle_seconds": "an upload is complete when its newest object is this old (default 30)",
    "max_instances": "trainer instances at once, all jobs together; the others wait in a FIFO queue "
    "(default 0: as many as the account's EC2 quota allows)",
    "log_retention_days": "retention of every log group in days (default 30)",
    "trainer_image": "a prebuilt trainer image URI to use instead of building container/Dockerfile",
    "lambda_wheels": "a folder of manylinux wheels for the Lambda asset (offline synth)",
}

_EMAIL_RE = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
_PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_ID_RE = {"vpc_id": re.compile(r"^vpc-[0-9a-f]{8,17}$"), "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$")}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STACK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


class ConfigError(ValueError):
    """A context value that cannot work; the message names the key and the fix."""


def _list(key: str, value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        items = [str(v).strip() for v in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # -c instance_types='["g5.xlarge"]'
            try:
                return _list(key, json.loads(text))
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"context {key}={value!r}: not a JSON list ({e}); use a comma separated list instead"
                ) from e
        items = [v.strip() for v in text.split(",")]
    else:
        raise ConfigError(f"context {key}={value!r}: expected a comma separated string or a list")
    return [v for v in items if v]


def _check_all(key: str, values: list[str], pattern: re.Pattern[str], example: str) -> list[str]:
    for v in values:
        if not pattern.match(v):
            raise ConfigError(f"context {key}: {v!r} is not valid; expected something like {example}")
    return values


def _int(key: str, value: Any, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"context {key}={value!r}: expected a whole number ({low}..{high})") from e
    if not low <= number <= high:
        raise ConfigError(f"context {key}={number}: must be between {low} and {high}")
    return number


@dataclass(frozen=True)
class DeployConfig:
    stack_name: str = "SpotYolo"
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    instance_types: list[str] = field(default_factory=lambda: list(DEFAULT_INSTANCE_TYPES))
    vpc_id: str | None = None
    subnet_ids: list[str] = field(default_factory=list)
    bucket_name: str | None = None
    root_volume_gb: int = 60
    settle_seconds: int = 30
    #: instances at once for all jobs (0: the account's EC2 quota decides; docs/ARCHITECTURE.md)
    max_instances: int = 0
    log_retention_days: int = 30
    trainer_image: str | None = None
    lambda_wheels: str | None = None

    @classmethod
    def from_context(cls, get: Callable[[str], Any] | Mapping[str, Any]) -> DeployConfig:
        """Read and check every key; ``get`` is ``node.try_get_context`` or a plain mapping."""
        lookup: Callable[[str], Any] = get.get if isinstance(get, Mapping) else get

        def value(key: str) -> Any:
            v = lookup(key)
            return v.strip() if isinstance(v, str) else v

        stack_name = value("stack_name") or "SpotYolo"
        if not _STACK_RE.match(stack_name):
            raise ConfigError(
                f"context stack_name={stack_name!r}: use letters, digits and '-', "
                "starting with a letter (e.g. SpotYolo-team-a)"
            )
        emails = _check_all("email", _list("email", value("email")), _EMAIL_RE, "me@example.com")
        phones = _check_all(
            "phone",
            _list("phone", value("phone")),
            _PHONE_RE,
            "+14155550100 (E.164: '+', country code, number, no spaces)",
        )
        types = _check_all(
            "instance_types",
            _list("instance_types", value("instance_types")),
            _INSTANCE_TYPE_RE,
            "g5.xlarge,g6.xlarge",
        )
        vpc_id = value("vpc_id") or None
        subnets = _check_all(
            "subnet_ids",
            _list("subnet_ids", value("subnet_ids")),
            _ID_RE["subnet"],
            "subnet-0123456789abcdef0",
        )
        if vpc_id and not _ID_RE["vpc_id"].match(vpc_id):
            raise ConfigError(f"context vpc_id={vpc_id!r}: expected something like vpc-0123456789abcdef0")
        if bool(vpc_id) != bool(subnets):
            raise ConfigError(
                "context vpc_id and subnet_ids go together: pass both (public subnets of "
                "that VPC that auto-assign public IPv4), or neither to create a small "
                "VPC with public subnets and no NAT gateway"
            )
        bucket = value("bucket_name") or None
        if bucket and (not _BUCKET_RE.match(bucket) or ".." in bucket):
            raise ConfigError(
                f"context bucket_name={bucket!r}: 3-63 characters of a-z, 0-9, '.', '-', "
                "starting and ending with a letter or digit"
            )
        retention = _int("log_retention_days", value("log_retention_days"), 30, 1, 3653)
        if retention not in _RETENTION_DAYS:
            raise ConfigError(
                f"context log_retention_days={retention}: CloudWatch accepts only "
                f"{', '.join(map(str, _RETENTION_DAYS))}"
            )
        return cls(
            stack_name=stack_name,
            emails=emails,
            phones=phones,
            instance_types=types or list(DEFAULT_INSTANCE_TYPES),
            vpc_id=vpc_id,
            subnet_ids=subnets,
            bucket_name=bucket,
            root_volume_gb=_int("root_volume_gb", value("root_volume_gb"), 60, 30, 16000),
            settle_seconds=_int("settle_seconds", value("settle_seconds"), 30, 0, 3600),
            max_instances=_int("max_instances", value("max_instances"), 0, 0, 10000),
            log_retention_days=retention,
            trainer_image=value("trainer_image") or None,
            lambda_wheels=value("lambda_wheels") or None,
        )
