"""The environment variables of the deployment, written and read by one model each.

:class:`Settings` is what every Lambda reads: the CDK app writes it (``to_env``, with CDK
tokens as values) and so does the local engine; a Lambda reads it with ``from_env`` at cold
start, which fails at once, naming each missing variable, instead of at the first call.
:class:`TrainerVar` names the trainer container's environment (the instance's user data and
the local engine set it; ``spotyolo.trainer`` reads it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum

#: the instance types tried when a job names none (cheapest NVIDIA GPUs with 24/24/16 GB)
DEFAULT_INSTANCE_TYPES = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]


class SettingsMissing(RuntimeError):
    """A required environment variable is not set (a deployment defect, not a user error)."""


def _env(name: str, *, required: bool = False, kind: str = "str") -> dict[str, object]:
    return {"env": name, "required": required, "kind": kind}


@dataclass(frozen=True)
class Settings:
    bucket: str = field(metadata=_env("BUCKET", required=True))
    job_table: str = field(metadata=_env("JOB_TABLE", required=True))
    topic_arn: str = field(metadata=_env("TOPIC_ARN", required=True))
    trainer_image: str = field(metadata=_env("TRAINER_IMAGE", required=True))
    launch_template_id: str = field(metadata=_env("LAUNCH_TEMPLATE_ID", required=True))
    subnet_ids: list[str] = field(metadata=_env("SUBNET_IDS", required=True, kind="list"))
    #: the instance-slot queue (spotyolo/core/slots.py): a semaphore item and one item per waiter
    slot_table: str = field(metadata=_env("SLOT_TABLE", required=True))
    launch_template_version: str = field(default="$Latest", metadata=_env("LAUNCH_TEMPLATE_VERSION"))
    default_instance_types: list[str] = field(
        default_factory=lambda: list(DEFAULT_INSTANCE_TYPES),
        metadata=_env("DEFAULT_INSTANCE_TYPES", kind="list"),
    )
    #: an upload whose newest object is younger than this is still in progress
    settle_seconds: int = field(default=30, metadata=_env("SETTLE_SECONDS", kind="int"))
    #: root volume = dataset bytes x factor + this many GiB (image, checkpoints, runs)
    root_volume_base_gb: int = field(default=60, metadata=_env("ROOT_VOLUME_BASE_GB", kind="int"))
    #: first NoCapacity/QuotaExceeded backoff; doubles every round (capped at 15 minutes)
    launch_backoff_seconds: int = field(default=60, metadata=_env("LAUNCH_BACKOFF_SECONDS", kind="int"))
    #: launch rounds after which NoCapacity/QuotaExceeded ends the job
    max_launch_waits: int = field(default=5, metadata=_env("MAX_LAUNCH_WAITS", kind="int"))
    #: instances running at once, all jobs together (the deploy option max_instances); 0: as
    #: many as the account's EC2 quota allows (spotyolo.core.quotas), no limit when unknown
    max_instances: int = field(default=0, metadata=_env("MAX_INSTANCES", kind="int"))
    #: set by the Lambda runtime (AWS_REGION), never by the deployment
    region: str = field(default="us-east-1", metadata=_env("AWS_REGION"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; raises :class:`SettingsMissing` naming every missing variable."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        missing: list[str] = []
        for f in fields(cls):
            name, kind = str(f.metadata["env"]), f.metadata["kind"]
            raw = env.get(name) or (env.get("AWS_DEFAULT_REGION") if name == "AWS_REGION" else None)
            if not raw:
                if f.metadata["required"]:
                    missing.append(name)
                continue
            if kind == "list":
                values[f.name] = [v.strip() for v in raw.split(",") if v.strip()]
            elif kind == "int":
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        if missing:
            raise SettingsMissing(
                f"environment variable(s) {', '.join(missing)} not set: the deployment (cdk/ or the local "
                "engine) sets every one of them"
            )
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The variables that give back these settings (``region`` is the runtime's own)."""
        env: dict[str, str] = {}
        for f in fields(self):
            if f.name == "region":
                continue
            value = getattr(self, f.name)
            env[str(f.metadata["env"])] = ",".join(value) if isinstance(value, list) else str(value)
        return env


class TrainerVar(StrEnum):
    """The trainer container's environment."""

    JOB = "JOB"
    RUN_ID = "RUN_ID"
    ATTEMPT = "ATTEMPT"
    BUCKET = "BUCKET"
    JOB_TABLE = "JOB_TABLE"
    #: where datasets, runs and checkpoints go (default /opt/spotyolo/work)
    WORKDIR = "SPOTYOLO_WORKDIR"
    #: "1" on a GPU instance: preflight refuses a machine without CUDA
    EXPECT_GPU = "SPOTYOLO_EXPECT_GPU"
    HEARTBEAT_SECONDS = "SPOTYOLO_HEARTBEAT_SECONDS"
    IMDS_POLL_SECONDS = "SPOTYOLO_IMDS_POLL_SECONDS"
    INTERRUPT_GRACE_SECONDS = "SPOTYOLO_INTERRUPT_GRACE_SECONDS"
    #: the checkpoint upload period in seconds, over config.yaml's checkpoint_minutes (tests, benches)
    CHECKPOINT_SECONDS = "SPOTYOLO_CHECKPOINT_SECONDS"
    IMDS_ENDPOINT = "AWS_EC2_METADATA_SERVICE_ENDPOINT"


#: what the trainer cannot start without
TRAINER_REQUIRED = (
    TrainerVar.JOB,
    TrainerVar.RUN_ID,
    TrainerVar.ATTEMPT,
    TrainerVar.BUCKET,
    TrainerVar.JOB_TABLE,
)
