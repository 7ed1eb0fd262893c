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
