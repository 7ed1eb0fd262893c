"""What Ultralytics reads: its image formats, and where it looks for an image's label file.

The Lambda has no Ultralytics, so its rule data is copied into ``spotyolo/core/data``.
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from pathlib import Path
from typing import Any

RULES_FILE = Path(__file__).parents[1] / "data" / "ultralytics_rules.json"


@cache
def rules() -> dict[str, Any]:
    """Ultralytics' rule data copied into spotyolo/core/data (the Lambda has no Ultralytics)."""
    data: dict[str, Any] = json.loads(RULES_FILE.read_text())
    return data


def img_formats() -> frozenset[str]:
    return frozenset(rules()["img_formats"])


def is_image(path: str) -> bool:
    """Ultralytics' test: the suffix, any case, is one of its image formats."""
    return path.rpartition(".")[2].lower() in img_formats() and "." in posixpath.basename(path)


def label_path(image: str) -> str:
    """Ultralytics' img2label_paths for a posix path: last ``/images/`` -> ``/labels/``, suffix -> .txt."""
    full = "/" + image
    sa, sb = "/images/", "/labels/"
    if sa in full:
        full = sb.join(full.rsplit(sa, 1))
    return full.rsplit(".", 1)[0][1:] + ".txt"
