"""Posix paths inside a job's dataset folder: users write them, so none may lead outside it."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator


def is_absolute(value: str) -> bool:
    """Posix, Windows (``C:``, ``\\``) or URL: never meaningful inside a job."""
    return value.startswith(("/", "\\")) or "://" in value or (len(value) > 1 and value[1] == ":")


def inside(path: str) -> bool:
    """Whether a normalised relative path stays in its folder."""
    return path != ".." and not path.startswith("../")


def norm(path: str) -> str:
    """Normalised posix path; the folder itself is ``""``."""
    out = posixpath.normpath(path) if path else "."
    return "" if out == "." else out


def parents(path: str) -> Iterator[str]:
    """Every folder above ``path``, nearest first (a listing has files only)."""
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)


def escaping_key(rel: str) -> str | None:
    """Why a dataset key (relative to ``dataset/``) cannot be downloaded where it belongs, if so.

    S3 keys are any text: ``dataset/../../x`` or ``dataset//etc/x`` would land outside the
    dataset folder on the instance (the trainer refuses them, after the instance is paid for).
    """
    if rel.startswith("/"):
        return "key has an empty segment ('dataset//...'), which leads to / on the instance: rename it"
    if "\\" in rel:
        return "key has a backslash: S3 keys use '/' between folders; upload it again with '/'"
    segments = rel.split("/")
    if ".." in segments:
        return "key has a '..' segment, which leads outside dataset/: rename it to a path inside dataset/"
    if "" in segments[:-1] or "." in segments:
        return "key has an empty segment ('//') or a '.' segment: rename it to a plain path inside dataset/"
    return None
