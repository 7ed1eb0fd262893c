"""Pydantic models of the execution input and of the state document (docs/ARCHITECTURE.md,
"The state document").

Every state reads and writes named parts of one JSON document:

``$.job`` :class:`JobSpec` · ``$.attempt`` :class:`Attempt` · ``$.result`` :class:`TrainResult` ·
``$.summary`` :class:`Summary` · ``$.error`` :class:`ErrorInfo`.

Each has an example in ``stepfunctions/examples/`` that a test validates against it. The job
table's item is :class:`JobItem`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spotyolo.contract.env import DEFAULT_INSTANCE_TYPES
from spotyolo.contract.errors import ErrorName
from spotyolo.contract.layout import check_job_name
from spotyolo.contract.status import FINAL_STATUSES, AttemptOutcome, JobStatus

Capacity = Literal["spot", "on-demand"]
CapacityPlan = Literal["spot", "on-demand", "spot-then-on-demand"]
MetricName = Literal["precision", "recall", "mAP50", "mAP50-95", "fitness"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- execution input


class EventInput(_Model):
    """From the EventBridge rule's input transformer: the uploaded ``config.yaml``."""

    bucket: str
    key: str


class ManualInput(_Model):
    """Started by hand or by the CLI: retrain ``job`` (``force`` retrains trained jobs)."""

    job: str
    force: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict)
    bucket: str | None = None  # defaults to the deployment's bucket

    @field_validator("job")
    @classmethod
    def _job_name(cls, value: str) -> str:
        return check_job_name(value)


# ---------------------------------------------------------------- $.job


class Target(_Model):
    """``target: {metric: recall, min: 0.80}``: shown in the notification."""

    metric: MetricName
    min: float = Field(ge=0.0, le=1.0)


class SplitSummary(_Model):
    images: int = 0
    labels: int = 0
    backgrounds: int = 0
    #: boxes/polygons of the split, all classes together (per class: ``DatasetSummary.per_class``)
    instances: int = 0

    @field_validator("instances", mode="before")
    @classmethod
    def _total(cls, value: Any) -> Any:
        """A job.json written before the state document dropped per-class counts: their sum."""
        return sum(value.values()) if isinstance(value, dict) else value


class DatasetSummary(_Model):
    """What Validate found in the dataset. The state document carries no per-class data (a
    dataset may have thousands of classes; the payload limit is 256 KB): ``names`` and
    ``per_class`` are kept for ``spotyolo validate`` and left out of every dump."""

    #: split name (train / val / test) -> counts
    splits: dict[str, SplitSummary] = Field(default_factory=dict)
    classes: int = 0
    files: int = 0
    bytes: int = 0
    #: things worth knowing that do not stop the job (e.g. a test split that is not there)
    warnings: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list, exclude=True)
    #: split -> class name -> instances
    per_class: dict[str, dict[str, int]] = Field(default_factory=dict, exclude=True)


class JobConfig(BaseModel):
    """The resolved ``config.yaml``: pipeline keys plus any Ultralytics train argument.

    Training arguments are kept as extra fields (flat, as the user wrote them), so
    ``model_dump()`` gives back the flat YAML shape. Parsing and checking user YAML is
    ``spotyolo.core.config``'s job; this model only carries the result.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    epochs: int = Field(default=100, ge=1)
    imgsz: int | list[int] = 640
    instance_type: str | None = None
    instance_types: list[str] | None = None
    capacity: CapacityPlan = "spot"
    max_interruptions: int = Field(default=5, ge=0)
    stall_hours: float = Field(default=2.0, gt=0)
    max_hours: float = Field(default=24.0, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    target: Target | None = None
    #: the period of the insurance checkpoint upload (at the first epoch end after it passed):
    #: what an instance lost without a notice costs at most, beyond the epoch in progress. 10:
    #: a 25-110 MB PUT takes seconds in-region and runs in the background, so 6 an hour cost
    #: nothing measurable, while a loss without a notice (rare: spot gives 2 minutes' warning)
    #: stays at about 10 GPU-minutes, cents on a g5.xlarge
    checkpoint_minutes: float = Field(default=10.0, ge=1, le=1440)

    #: keys that steer the pipeline and are never passed to Ultralytics
    PIPELINE_KEYS: ClassVar[tuple[str, ...]] = (
        "instance_type",
        "instance_types",
        "capacity",
        "max_interruptions",
        "stall_hours",
        "max_hours",
        "max_cost_usd",
        "target",
        "checkpoint_minutes",
    )

    def resolved_instance_types(self, default: list[str] | None = None) -> list[str]:
        if self.instance_types:
            return list(self.instance_types)
        if self.instance_type:
            return [self.instance_type]
        return list(default or DEFAULT_INSTANCE_TYPES)

    def train_args(self) -> dict[str, Any]:
        """The arguments for ``YOLO(model).train(**args)`` (without ``data``/paths)."""
        data = self.model_dump(exclude_none=True)
        for key in (*self.PIPELINE_KEYS, "model"):
            data.pop(key, None)
        return data


class JobSpec(_Model):
    """``$.job``: written by Validate job, read by every later state and by the trainer."""

    name: str
    bucket: str
    run_id: str
    execution: str
    config: JobConfig
    dataset: DatasetSummary
    instance_types: list[str]
    #: epoch seconds after which the whole job (all attempts) is out of time
    deadline: int
    #: stall_hours in integer seconds; each attempt's heartbeat window is this, kept below its timeout
    stall_seconds: int = Field(ge=1)
    #: trainer image URI, recorded once per run so every retry uses the same one
    image: str = ""
    force: bool = False
    #: true when weights/<job>/best.pt exists and force is not set: nothing is launched
    already_trained: bool = False
    created: str = ""


# ---------------------------------------------------------------- $.attempt


class Attempt(_Model):
    """``$.attempt``: the plan for one instance (Validate job makes the first, Prepare retry the rest)."""

    number: int = Field(ge=1)
    capacity: Capacity
    instance_types: list[str]
    #: TimeoutSecondsPath of Launch trainer: what is left of max_hours, and of max_cost_usd at
    #: the attempt's price, integer seconds
    seconds_left: int = Field(ge=1)
    #: HeartbeatSecondsPath of Launch trainer: the stall window, below ``seconds_left``
    heartbeat_seconds: int = Field(ge=1)
    #: epoch seconds at which max_cost_usd, not max_hours, ends the attempt (0: max_hours does)
    budget_end: int = 0
    interruptions: int = 0
    #: launch backoff rounds used for this attempt (NoCapacity / QuotaExceeded)
    launch_waits: int = 0
    #: seconds "Wait for capacity" sleeps before the next launch round (SecondsPath)
    wait_seconds: int = 0
    #: times a QuotaExceeded launch put this attempt back in the instance-slot queue (its
    #: relaunch needs a ClientToken of its own: EC2 answers a used one with the first response)
    requeues: int = 0

    @model_validator(mode="before")
    @classmethod
    def _older_document(cls, data: Any) -> Any:
        """An execution started before ``heartbeat_seconds`` existed still reads (its definition
        took the heartbeat from the job)."""
        if (
            isinstance(data, dict)
            and "heartbeat_seconds" not in data
            and isinstance(data.get("seconds_left"), int)
        ):
            return {**data, "heartbeat_seconds": max(1, data["seconds_left"] - 1)}
        return data

    @model_validator(mode="after")
    def _heartbeat_below_timeout(self) -> Attempt:
        """The States Language requires HeartbeatSeconds < TimeoutSeconds."""
        if self.heartbeat_seconds >= self.seconds_left:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be below "
                f"seconds_left ({self.seconds_left})"
            )
        return self


# ---------------------------------------------------------------- $.result


class TrainResult(_Model):
    """``$.result``: the trainer's SendTaskSuccess output."""

    metrics: dict[str, float]
    best_epoch: int
    epochs: int
    seconds: float
    attempt: int
    #: artifact name -> S3 key under runs/<job>/<run_id>/artifacts/
    artifacts: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- $.summary


class Summary(_Model):
    """``$.summary``: what the notification says, from Check result or Clean up."""

    status: JobStatus
    subject: str
    message: str
    metrics: dict[str, float] = Field(default_factory=dict)
    target: Target | None = None
    met_target: bool | None = None
    cost_usd: float = 0.0
    attempts: int = 0
    interruptions: int = 0
    weights: str | None = None

    @field_validator("status")
    @classmethod
    def _final(cls, value: JobStatus) -> JobStatus:
        if value not in FINAL_STATUSES:
            raise ValueError(
                f"a summary's status is how a run ended ({', '.join(FINAL_STATUSES)}), not {value}"
            )
        return value

    #: failures: the error that ended the run, as the execution's error (no ``States.`` prefix:
    #: a Fail state may not raise those; a missed heartbeat is ``TrainerStalled``)
    error: str | None = None


# ---------------------------------------------------------------- $.error


class ErrorInfo(BaseModel):
    """``$.error``: what every Catch writes (Step Functions' own shape)."""

    model_config = ConfigDict(extra="allow")

    Error: str
    Cause: str | None = None


# ---------------------------------------------------------------- the job table item


class AttemptRecord(_Model):
    number: int
    capacity: Capacity
    instance: str | None = None
    instance_type: str | None = None
    az: str | None = None
    start: str | None = None
    end: str | None = None
    #: launching | running | succeeded, or the error that ended it (SpotInterrupted, ...)
    outcome: AttemptOutcome | ErrorName = AttemptOutcome.LAUNCHING


class CurrentAttempt(_Model):
    number: int
    instance: str | None = None
    #: the task token of Launch trainer; never logged, never in tags or user data
    token: str | None = None


class Progress(_Model):
    epoch: int = 0
    epochs: int = 0
    losses: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    seconds_per_epoch: float | None = None
    attempt: int = 0
    updated: str = ""


class QueueInfo(_Model):
    """``JobItem.queue``: the job's place in the instance-slot queue (spotyolo/core/slots.py)."""

    #: the order of arrival: the oldest ticket gets the next free slot
    ticket: int
    #: 1 = next in line; None once the job holds a slot
    position: int | None = None
    #: queued jobs ahead of this one
    ahead: int = 0
    #: instances running (slots held) when this was written
    running: int = 0
    #: the slot count (max_instances, or the account's quota); None: no limit
    slots: int | None = None
    #: when the job (last) joined the queue, and when it got its slot
    since: str = ""
    granted: str | None = None


class ReplacedRun(_Model):
    """A run whose lock a new execution took over (its execution had ended) before the
    execution-status rule's clean up of it told the user: that clean up claims it and tells."""

    execution: str
    run_id: str
    attempts: list[AttemptRecord] = Field(default_factory=list)


class JobItem(_Model):
    """One item per job in the job table (docs/ARCHITECTURE.md, "The steps")."""

    job: str
    #: the execution ARN holding the job's lock; absent when nobody holds it
    execution: str | None = None
    status: JobStatus = JobStatus.IDLE
    run_id: str | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    current: CurrentAttempt | None = None
    progress: Progress | None = None
    #: the instance-slot queue: where the job waits, or the ticket of the slot it holds
    queue: QueueInfo | None = None
    result: dict[str, Any] | None = None
    message: str | None = None
    cost_usd: float | None = None
    #: the run a takeover replaced, until its clean up has told the user it ended
    replaced: ReplacedRun | None = None
    updated: str = ""
