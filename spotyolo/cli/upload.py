"""Uploading a job folder: in parallel, with a progress bar (files and bytes), skipping files
already in the bucket with the same size and SHA-256, ``config.yaml`` last (its upload is the
trigger, so the pipeline sees a complete job).

Each object is put with ``ChecksumSHA256`` (S3 verifies it on arrival and keeps it) and the
same digest in its metadata (what the emulator returns): the next submit compares either.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError

from spotyolo.contract.layout import CONFIG_NAME, job_prefix

_WORKERS = 8
_SKIP = {".DS_Store", "Thumbs.db"}


@dataclass
class UploadReport:
    files: int = 0
    bytes: int = 0
    uploaded: int = 0
    skipped: int = 0


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


class Progress:
    """One redrawn line on a terminal, a line every few seconds otherwise; silent when quiet."""

    def __init__(self, total_files: int, total_bytes: int, quiet: bool, stream: TextIO | None = None) -> None:
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.bytes = 0
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.lock = threading.Lock()

    def add(self, size: int) -> None:
        with self.lock:
            self.files += 1
            self.bytes += size
            self._draw(self.files == self.total_files)

    def _draw(self, final: bool) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self.last < (0.1 if self.tty else 2.0)):
            return
        self.last = now
        share = self.bytes / self.total_bytes if self.total_bytes else 1.0
        bar = "█" * int(share * 24) + "·" * (24 - int(share * 24))
        line = (
            f"uploading {bar} {share:4.0%}  {self.files}/{self.total_files} files  "
            f"{self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB"
        )
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


def upload_job(s3: Any, bucket: str, job: str, folder: Path, *, quiet: bool = False) -> UploadReport:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _SKIP)
    config = folder / CONFIG_NAME
    rest = [p for p in files if p != config]
    prefix = job_prefix(job)
    existing = _sizes(s3, bucket, prefix)
    report = UploadReport(files=len(files), bytes=sum(p.stat().st_size for p in files))
    progress = Progress(len(files), report.bytes, quiet)
    lock = threading.Lock()

    def put(path: Path, always: bool = False) -> None:
        key = prefix + path.relative_to(folder).as_posix()
        size = path.stat().st_size
        digest = _sha256(path)
        same = not always and existing.get(key) == size and _same_digest(s3, bucket, key, digest)
        if not same:
            with open(path, "rb") as body:
                s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=body,
                    ChecksumSHA256=base64.b64encode(digest).decode(),
                    Metadata={"sha256": digest.hex()},
                )
        with lock:
            report.skipped += same
            report.uploaded += not same
        progress.add(size)

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        list(pool.map(put, rest))
    if config.is_file():  # the trigger, once everything else is in; always sent: it starts the run
        put(config, always=True)
    return report


def _sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"]] = obj["Size"]
    return sizes


def _same_digest(s3: Any, bucket: str, key: str, digest: bytes) -> bool:
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError:
        return False
    if head.get("ChecksumSHA256"):
        return bool(head["ChecksumSHA256"] == base64.b64encode(digest).decode())
    return bool(head.get("Metadata", {}).get("sha256") == digest.hex())
