"""Getting the job's files onto this machine: the dataset, a model file, the data.yaml.

The download is parallel and skips files already present with the same size (a retried
attempt on a reused volume, or the local engine's second attempt, starts at once), and it
offers a heartbeat to the caller as files arrive: a download is progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from spotyolo.contract import layout
from spotyolo.contract.errors import DatasetError, JobInvalid
from spotyolo.core.awserrors import error_code
from spotyolo.core.dataset import write_local_data_yaml
from spotyolo.core.s3objects import object_exists

if TYPE_CHECKING:  # the stubs are a development dependency: not in the trainer image
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0
#: objects smaller than this come with one GetObject (a dataset is mostly small files: the
#: transfer manager's HeadObject and set-up per file cost more than the file); bigger ones in
#: the transfer manager's parallel ranged parts (its default multipart threshold)
SINGLE_GET_BYTES = 8 * 1024 * 1024
#: a small object whose body broke off while it was read is asked for again (botocore retries
#: the request, not the body's read; the transfer manager retries both)
BODY_TRIES = 3
_BODY_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionClosedError)


def _download(s3: S3Client, bucket: str, key: str, size: int, path: Path) -> None:
    """``key`` to ``path``: one GetObject if it is small, else the transfer manager."""
    if size >= SINGLE_GET_BYTES:
        s3.download_file(bucket, key, str(path))
        return
    for attempt in range(1, BODY_TRIES + 1):
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except _BODY_ERRORS:
            if attempt == BODY_TRIES:
                raise
            continue
        path.write_bytes(body)
        return


def list_objects(s3: S3Client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix`` (folder markers skipped)."""
    out: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                out.append((obj["Key"], int(obj["Size"])))
    return out


def _local_path(root: Path, prefix: str, key: str) -> Path:
    rel = PurePosixPath(key[len(prefix) :])
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"s3 key {key!r} leaves the dataset folder: rename it under {prefix}")
    return root.joinpath(*rel.parts)


def download_dataset(
    s3: S3Client,
    bucket: str,
    job: str,
    dest: Path,
    *,
    tick: Callable[[], None] = lambda: None,
    workers: int = 16,
) -> tuple[int, int, int]:
    """Download ``jobs/<job>/dataset/`` into ``dest``; returns (files, downloaded, bytes).

    ``tick`` is called from this (the calling) thread as downloads complete and at least every
    second while they run: the caller heartbeats from it and may raise to abort.
    """
    prefix = layout.dataset_prefix(job)
    objects = list_objects(s3, bucket, prefix)
    if not objects:
        raise DatasetError(
            f"s3://{bucket}/{prefix} is empty: upload the dataset (data.yaml and its images/labels) there"
        )
    todo: list[tuple[str, int, Path]] = []
    for key, size in objects:
        path = _local_path(dest, prefix, key)
        if path.is_file() and path.stat().st_size == size:
            continue
        todo.append((key, size, path))
    total = sum(size for _, size, _ in todo)
    log.info(
        "dataset: %d files in s3://%s/%s, %d to download (%.1f MiB), %d already here",
        len(objects),
        bucket,
        prefix,
        len(todo),
        total / 2**20,
        len(objects) - len(todo),
    )

    def fetch(key: str, size: int, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            _download(s3, bucket, key, size, tmp)
        except ClientError as err:
            code = error_code(err)
            raise DatasetError(f"cannot download s3://{bucket}/{key}: {code}") from err
        tmp.replace(path)

    done = done_bytes = 0
    last_log = time.monotonic()
    start = last_log
    tick()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
        pending: dict[Future[None], int] = {
            pool.submit(fetch, key, size, path): size for key, size, path in todo
        }
        try:
            while pending:
                finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # raises DatasetError of that file
                    done += 1
                    done_bytes += pending.pop(future)
                tick()
                if time.monotonic() - last_log >= LOG_EVERY_SECONDS:
                    last_log = time.monotonic()
                    log.info("dataset: %d/%d files (%.1f MiB)", done, len(todo), done_bytes / 2**20)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if todo:
        log.info(
            "dataset: downloaded %d files (%.1f MiB) in %.1f s",
            done,
            done_bytes / 2**20,
            time.monotonic() - start,
        )
    return len(objects), done, done_bytes


def download_if_exists(s3: S3Client, bucket: str, key: str, dest: Path) -> bool:
    """Download ``key`` to ``dest``; False when there is no such object."""
    if not object_exists(s3, bucket, key):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    s3.download_file(bucket, key, str(tmp))
    tmp.replace(dest)
    return True


# ------------------------------------------------------------------ data.yaml


def local_data_yaml(dataset_dir: Path, out: Path) -> Path:
    """Resolve ``dataset_dir/data.yaml`` (Ultralytics or Roboflow style) into ``out`` with
    absolute local paths, by the same rules the Validate job state checked it with."""
    source = dataset_dir / layout.DATA_YAML
    if not source.is_file():
        raise DatasetError(
            f"{layout.DATASET_DIR}/{layout.DATA_YAML} is missing from the job; upload it next to the "
            "train/ and val/ folders"
        )
    try:
        return write_local_data_yaml(dataset_dir, out)
    except (JobInvalid, ValueError, OSError) as err:
        raise DatasetError(f"{source}: {err}") from err
