"""Where a job's files come from: an S3 prefix or a local folder, read the same way.

Every S3 call of the dataset check is in this module.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset or the image
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True, slots=True)
class Entry:
    """One file: path relative to the source's root (posix), size, modification time (epoch s)."""

    path: str
    size: int
    mtime: float


class Source(Protocol):
    """A job's files: an S3 prefix or a local folder, read the same way."""

    def list(self, prefix: str = "") -> Iterable[Entry]:
        """Every file under ``prefix`` (relative to the root), recursively."""
        ...

    def read(self, path: str) -> bytes: ...

    def where(self, path: str) -> str:
        """How messages name ``path``: the S3 key, or the path relative to the job folder."""
        ...


class LocalSource:
    """A local folder (a job folder before upload, or a downloaded dataset)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def list(self, prefix: str = "") -> Iterable[Entry]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                rel = Path(full).relative_to(self.root).as_posix()
                yield Entry(rel, st.st_size, st.st_mtime)

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def where(self, path: str) -> str:
        return path


class S3Source:
    """Objects under ``prefix`` in ``bucket`` (paginated listing, plain GETs: thread-safe)."""

    def __init__(self, s3: S3Client, bucket: str, prefix: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def list(self, prefix: str = "") -> Iterable[Entry]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                modified = obj["LastModified"]
                mtime = modified.timestamp() if isinstance(modified, dt.datetime) else float(modified)
                yield Entry(obj["Key"][len(self.prefix) :], int(obj["Size"]), mtime)

    def read(self, path: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read()
        return body

    def where(self, path: str) -> str:
        return self.prefix + path


def local_exists(folder: Path) -> Callable[[str], bool]:
    """``exists(path)`` for a local folder: a file or folder (``""`` is the folder itself)."""

    def exists(path: str) -> bool:
        return (folder / path).exists() if path else folder.is_dir()

    return exists


def s3_exists(s3: S3Client, bucket: str, prefix: str) -> Callable[[str], bool]:
    """``exists(path)`` under an S3 prefix: a "folder" (any key below it) or that exact key."""

    def exists(path: str) -> bool:
        key = prefix + path
        response = s3.list_objects_v2(
            Bucket=bucket, Prefix=key.rstrip("/") + "/" if path else prefix, MaxKeys=1
        )
        if response.get("KeyCount", 0):
            return True
        response = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in response.get("Contents", []))

    return exists
