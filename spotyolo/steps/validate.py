"""Validate job: the first state. Nothing may launch, lock or cost for a job that is wrong.

Order (docs/ARCHITECTURE.md, "The steps"): normalise the input → parse and check config.yaml
(+ overrides) and the
dataset → skip if ``weights/<job>/best.pt`` exists and not ``force`` → the account's EC2
quotas (a job none lets launch is ``JobInvalid``) → take the job lock
(taking over a lock whose execution has ended terminates that run's instances first) →
write ``runs/<job>/<run_id>/job.json`` → return ``{"job", "attempt"}``. The settle check
(S3-event input only: a fresh object other than the trigger, or an open multipart upload,
means the upload is still arriving → ``UploadInProgress``) runs on the listing *before* the
labels are read, so a big dataset is read once, not once per Wait round; a job that looks
invalid while its config.yaml is fresh also waits, since its dataset may still be arriving.
An open multipart upload in a folder quiet for ``ABANDONED_UPLOAD_SECONDS`` is ``JobInvalid``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ValidationError

from spotyolo.contract import layout
from spotyolo.contract.env import Settings
from spotyolo.contract.errors import (
    JobAlreadyRunning,
    JobInvalid,
    NotATrigger,
    SpotyoloError,
    UploadInProgress,
)
from spotyolo.core.config import inspect_job
from spotyolo.core.dataset import Entry, S3Source, bounded_listing
from spotyolo.core.fleet import terminate_run
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import EventInput, JobSpec, ManualInput
from spotyolo.core.planning import first_attempt, stall_seconds
from spotyolo.core.quotas import QuotasClient, Shortfall, capacities, explain, shortfalls
from spotyolo.core.s3objects import object_exists
from spotyolo.core.text import duration
from spotyolo.core.yamlsafe import problems_error, shown
from spotyolo.steps.common import logger

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient

#: an open multipart upload while nothing in the job's folder was written for this long is
#: abandoned, not slow: no dataset file takes an hour on its own, the folder's quiet time counts
#: from the trigger's upload (the execution's start) at the latest, and the lifecycle rule would
#: only abort the upload after a day, looping Validate and Wait all that time
ABANDONED_UPLOAD_SECONDS = 3600
#: SNS: a subject is one line of less than 100 characters
MAX_SUBJECT_CHARS = 99
SUBJECT_PREFIX = "spotyolo: "


class ValidateEvent(BaseModel):
    """What the Validate job state passes: the execution input and ``$$.Execution.Id``."""

    input: dict[str, Any]
    execution: str


def make_run_id(now: dt.datetime, execution: str) -> str:
    """``20261103T101500Z-1a2b3c4d``: sortable by start time, unique per execution."""
    name = execution.rsplit(":", 1)[-1]
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _parse_input(raw: Mapping[str, Any], settings: Settings) -> tuple[str, str, bool, dict[str, Any], bool]:
    """(bucket, job, force, overrides, from_event) from either input shape."""
    data = {k: v for k, v in raw.items() if k != "error"}  # left by the settle Wait loop
    try:
        if "key" in data or ("bucket" in data and "job" not in data):
            event = EventInput.model_validate(data)
            if not layout.is_config_key_shape(event.key):
                raise NotATrigger(
                    f"s3 key {shown(event.key)} is not a job trigger (jobs/<job>/{layout.CONFIG_NAME}): "
                    "nothing to do"
                )
            job = layout.job_from_config_key(event.key)
            bucket, force, overrides, from_event = event.bucket, False, {}, True
        else:
            manual = ManualInput.model_validate(data)
            job, force, overrides, from_event = manual.job, manual.force, dict(manual.overrides), False
            bucket = manual.bucket or settings.bucket
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()
        )
        raise JobInvalid(
            f"execution input is not understood ({details}). Start a job by uploading "
            'jobs/<job>/config.yaml, or with the input {"job": "<job>", "force": true, "overrides": {...}}'
        ) from None
    if not bucket:
        raise JobInvalid("no bucket: the input names none and the deployment's BUCKET is not set")
    if settings.bucket and bucket != settings.bucket:
        raise JobInvalid(
            f"bucket {bucket!r} is not this deployment's bucket ({settings.bucket!r}): upload the job there"
        )
    return bucket, job, force, overrides, from_event


def refusal(event_input: Mapping[str, Any], err: SpotyoloError) -> SpotyoloError:
    """The refusal as the state machine reads it: the same error, its message a JSON object
    ``{"subject", "message"}`` that "Explain refusal" puts into the notification.

    The subject names the job and is cut to SNS's limit (under 100 characters, one line) here:
    the state machine cannot cut a string, and a key's job segment may be 1000 characters.
    """
    job = _job_hint(event_input)
    tail = f" not started ({err.error_name})"
    room = MAX_SUBJECT_CHARS - len(SUBJECT_PREFIX) - len(tail)
    name = job if len(job) <= room else job[: room - 3] + "..."
    words = {"subject": f"{SUBJECT_PREFIX}{name}{tail}", "message": str(err)}
    return type(err)(json.dumps(words, ensure_ascii=False))


def _job_hint(event_input: Mapping[str, Any]) -> str:
    """The job an input names, as well as it can be read (printable ASCII, for a subject)."""
    job, key = event_input.get("job"), event_input.get("key")
    if not isinstance(job, str) and isinstance(key, str) and key.startswith("jobs/"):
        job = key.split("/")[1]
    text = job if isinstance(job, str) and job.strip() else "a job"
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[: MAX_SUBJECT_CHARS + 1])


def _unsettled(
    s3: S3Client,
    bucket: str,
    job: str,
    entries: list[Entry],
    now: dt.datetime,
    settle: int,
    *,
    count_trigger: bool,
) -> str | None:
    """Why the job's upload still looks in progress, or None.

    The trigger (``config.yaml``) is young by definition when its own upload started this
    execution, so its age says nothing about the dataset: it counts only when the job looks
    invalid (``count_trigger``), i.e. when the dataset may still be on its way behind it.
    """
    considered = [e for e in entries if count_trigger or e.path != layout.CONFIG_NAME]
    if considered:
        newest = max(considered, key=lambda e: e.mtime)
        age = now.timestamp() - newest.mtime
        if age < settle:
            return (
                f"jobs/{job}/{newest.path} was written {max(age, 0):.0f} s ago (settle window {settle} s): "
                "waiting for the upload to finish"
            )
    return _open_upload(s3, bucket, job, entries, now)


def _open_upload(s3: Any, bucket: str, job: str, entries: list[Entry], now: dt.datetime) -> str | None:
    """An open multipart upload: a reason to wait, or ``JobInvalid`` once it looks abandoned."""
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=layout.job_prefix(job)).get("Uploads", [])
    if not uploads:
        return None
    key, upload_id = uploads[0]["Key"], uploads[0]["UploadId"]
    quiet = now.timestamp() - max((e.mtime for e in entries), default=0.0)
    if quiet < ABANDONED_UPLOAD_SECONDS:
        return f"{key} is still being uploaded (an open multipart upload): waiting for it"
    raise JobInvalid(
        f"s3://{bucket}/{key} is an open multipart upload, but nothing in {layout.job_prefix(job)} was "
        f"written for {duration(quiet)}: it looks abandoned. Finish that upload, or abort it with "
        f"aws s3api abort-multipart-upload --bucket {bucket} --key {key} --upload-id {upload_id} "
        f"({len(uploads)} open; aws s3api list-multipart-uploads --bucket {bucket} --prefix "
        f"{layout.job_prefix(job)} lists them), then upload {layout.config_key(job)} again"
    )


def _is_running(sfn: SFNClient, job: str) -> Callable[[str], bool]:
    """Whether a lock's holder still runs; fails closed, so a live job's lock is never taken.

    Only ``ExecutionDoesNotExist`` means the holder is gone. Any other error (throttled,
    denied) leaves the lock alone and refuses this start, naming the error.
    """

    def is_running(execution: str) -> bool:
        try:
            return bool(sfn.describe_execution(executionArn=execution)["status"] == "RUNNING")
        except ClientError as err:
            error = err.response.get("Error", {})
            if error.get("Code") == "ExecutionDoesNotExist":
                return False
            raise JobAlreadyRunning(
                f"job {job!r} is locked by execution {execution}, whose status could not be checked "
                f"({error.get('Code')}: {error.get('Message')}); this start was refused and the lock "
                "left alone. Start the job again once that execution has ended"
            ) from err

    return is_running


def _retire(ec2: EC2Client, job: str) -> Callable[[str], None]:
    """Ends the run whose lock is being taken over: its execution has ended, but its clean up
    (the execution-status rule) may not have run yet, so its trainer may still be training."""

    def retire(old_run: str) -> None:
        terminated = terminate_run(ec2, job, old_run)
        logger.info("lock taken over", extra={"job": job, "replaced_run": old_run, "terminated": terminated})

    return retire


def _check_quotas(quotas: QuotasClient, ec2: EC2Client, spec: JobSpec) -> bool:
    """Refuse a job no quota of the account lets launch, before it waits or costs anything (an
    unknown quota never refuses: the launch will tell). True when only its second capacity fits
    (``spot-then-on-demand`` whose spot quota allows none of its types: it starts on demand)."""
    plan = capacities(spec.config.capacity)
    short: list[Shortfall] = []
    for capacity in plan:
        found = shortfalls(quotas, ec2, spec.instance_types, capacity)
        if not found:
            return capacity != plan[0]
        short += found
    raise JobInvalid(f"job {spec.name!r}: {explain(short, spec.config.capacity)}")


def validate_job(
    event: Mapping[str, Any],
    *,
    s3: S3Client,
    dynamodb: DynamoDBClient,
    sfn: SFNClient,
    ec2: EC2Client,
    quotas: QuotasClient,
    settings: Settings,
    now: dt.datetime,
) -> dict[str, Any]:
    """The logic of Validate job (clients passed in): returns ``{"job": JobSpec, "attempt": Attempt}``.

    Raises ``JobInvalid`` (nothing locked or written: also a job the account's EC2 quotas can
    never launch, ``spotyolo.core.quotas``), ``UploadInProgress`` (S3-event input whose files are
    still arriving) or ``JobAlreadyRunning`` (from the lock).
    """
    execution = str(event["execution"])
    bucket, job, force, overrides, from_event = _parse_input(event["input"], settings)

    source = S3Source(s3, bucket, layout.job_prefix(job))
    entries, too_many = bounded_listing(source)
    if too_many:
        raise problems_error([too_many], f"job {job!r} (s3://{bucket}/{layout.job_prefix(job)})")
    settle = settings.settle_seconds
    # files still arriving: wait before reading every label (a big dataset is read only once)
    if from_event and (unsettled := _unsettled(s3, bucket, job, entries, now, settle, count_trigger=False)):
        raise UploadInProgress(f"job {job!r}: {unsettled}")
    config, summary, problems = inspect_job(source, entries=entries, overrides=overrides)
    if problems or config is None:
        # a fresh config.yaml with a broken dataset: the dataset may still be on its way behind it
        if from_event and (
            unsettled := _unsettled(s3, bucket, job, entries, now, settle, count_trigger=True)
        ):
            raise UploadInProgress(f"job {job!r}: {unsettled}")
        raise problems_error(problems, f"job {job!r} (s3://{bucket}/{layout.job_prefix(job)})")

    run_id = make_run_id(now, execution)
    started = int(now.timestamp())
    deadline = started + max(1, int(config.max_hours * 3600))
    spec = JobSpec(
        name=job,
        bucket=bucket,
        run_id=run_id,
        execution=execution,
        config=config,
        dataset=summary,
        instance_types=config.resolved_instance_types(settings.default_instance_types),
        deadline=deadline,
        stall_seconds=stall_seconds(config),
        image=settings.trainer_image,
        force=force,
        created=now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    attempt = first_attempt(config, spec.instance_types, deadline, now=started)

    if not force and object_exists(s3, bucket, layout.weights_key(job, layout.BEST)):
        spec.already_trained = True
        logger.info("already trained: skipped", extra={"job": job})
        return {"job": spec.model_dump(mode="json"), "attempt": attempt.model_dump(mode="json")}

    if _check_quotas(quotas, ec2, spec):  # spot allows none of the types: on demand at once
        attempt = first_attempt(config, spec.instance_types, deadline, now=started, spot_unavailable=True)
    spec.run_id = JobTable(dynamodb, settings.job_table).acquire_lock(
        job, execution, run_id, _is_running(sfn, job), retire=_retire(ec2, job)
    )
    s3.put_object(
        Bucket=bucket,
        Key=layout.job_json_key(job, spec.run_id),
        Body=spec.model_dump_json(indent=1).encode(),
        ContentType="application/json",
    )
    logger.info("job validated", extra={"job": job, "run_id": spec.run_id, "images": summary.files})
    return {"job": spec.model_dump(mode="json"), "attempt": attempt.model_dump(mode="json")}
