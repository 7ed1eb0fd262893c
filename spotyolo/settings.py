"""Deployment settings every Lambda reads from its environment (set by the CDK app or the
local engine). Read at call time, not import time, so the local engine can set them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from spotyolo.models import DEFAULT_INSTANCE_TYPES


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@dataclass(frozen=True)
class Settings:
    bucket: str = ""
    job_table: str = ""
    topic_arn: str = ""
    state_machine_arn: str = ""
    trainer_image: str = ""
    launch_template_id: str = ""
    launch_template_version: str = "$Latest"
    subnet_ids: list[str] = field(default_factory=list)
    default_instance_types: list[str] = field(default_factory=lambda: list(DEFAULT_INSTANCE_TYPES))
    #: an upload whose newest object is younger than this is still in progress
    settle_seconds: int = 30
    #: root volume = dataset bytes x factor + this many GiB (image, checkpoints, runs)
    root_volume_base_gb: int = 60
    #: first NoCapacity/QuotaExceeded backoff; doubles every round (capped at 15 minutes)
    launch_backoff_seconds: int = 60
    #: launch rounds after which NoCapacity/QuotaExceeded ends the job
    max_launch_waits: int = 5
    region: str = "us-east-1"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            bucket=env.get("BUCKET", ""),
            job_table=env.get("JOB_TABLE", ""),
            topic_arn=env.get("TOPIC_ARN", ""),
            state_machine_arn=env.get("STATE_MACHINE_ARN", ""),
            trainer_image=env.get("TRAINER_IMAGE", ""),
            launch_template_id=env.get("LAUNCH_TEMPLATE_ID", ""),
            launch_template_version=env.get("LAUNCH_TEMPLATE_VERSION", "$Latest"),
            subnet_ids=_list(env.get("SUBNET_IDS")),
            default_instance_types=_list(env.get("DEFAULT_INSTANCE_TYPES")) or list(DEFAULT_INSTANCE_TYPES),
            settle_seconds=int(env.get("SETTLE_SECONDS", "30")),
            root_volume_base_gb=int(env.get("ROOT_VOLUME_BASE_GB", "60")),
            launch_backoff_seconds=int(env.get("LAUNCH_BACKOFF_SECONDS", "60")),
            max_launch_waits=int(env.get("MAX_LAUNCH_WAITS", "5")),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )
