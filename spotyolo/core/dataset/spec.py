"""What a data.yaml means: its split paths, class names and ``nc``, resolved in a job's folder.

Accepts Ultralytics-style yamls (``path``, ``train``, ``val``, optional ``test``, ``names`` as a
list or a dict, ``nc``) and Roboflow exports (``train: ../train/images`` where the folder really
is ``dataset/train/images``: like Ultralytics, a missing ``../x`` is retried as ``x``; the
``roboflow:`` block is ignored). Paths never resolve outside the folder holding data.yaml.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from spotyolo.contract.layout import DATA_YAML
from spotyolo.core.dataset.paths import inside, is_absolute, norm
from spotyolo.core.dataset.sources import local_exists, s3_exists
from spotyolo.core.yamlsafe import Problem, YamlRefused, load_mapping, problems_error, shown

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset or the image
    from mypy_boto3_s3 import S3Client

SPLITS = ("train", "val", "test")
#: data.yaml is small; the same cap wherever it is read
MAX_DATA_YAML_BYTES = 1024 * 1024

#: classes at most. The largest public detection vocabularies are V3Det (13 204), LVIS (1 203),
#: Open Images (601) and Objects365 (365); past this a data.yaml is a mistake, and ``nc:
#: 10000000`` would otherwise make ten million names (gigabytes) in a 512 MB Lambda
MAX_CLASSES = 20_000
#: characters of one class name (Ultralytics draws them on plots and writes them into weights)
MAX_CLASS_NAME_CHARS = 200

Exists = Callable[[str], bool]


@dataclass
class DataSpec:
    """What a data.yaml means.

    ``splits``: split name (train / val / test) -> list of image folders or ``.txt`` image
    lists, posix paths relative to the folder holding data.yaml (``[""]`` is that folder).
    """

    splits: dict[str, list[str]]
    names: list[str]
    nc: int
    channels: int = 3
    #: splits named in data.yaml but left out (a missing optional test split), with why
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Report:
    """The problems found so far, placed at the line of the key they are about."""

    where: str
    marks: dict[str, tuple[int, int]]
    problems: list[Problem] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __call__(self, key: str | None, message: str) -> None:
        mark = self.marks.get(key) if key else None
        line, column = mark if mark else (None, None)
        self.problems.append(Problem(self.where, message, line, column))


def resolve_spec(
    data: Mapping[str, Any],
    exists: Exists,
    *,
    where: str = DATA_YAML,
    marks: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[DataSpec, list[Problem]]:
    """Resolve a parsed data.yaml against ``exists(path)`` (file or folder, relative to its folder).

    Returns the spec and the problems found (empty when it is usable).
    """
    report = _Report(where, dict(marks or {}))
    names, nc = _classes(data, report)
    channels = _channels(data.get("channels", 3), report)
    root = _root(data.get("path"), report)
    splits = _splits(_with_val_alias(data, report), root, exists, report)
    spec = DataSpec(
        splits=splits, names=names, nc=nc or len(names), channels=channels, skipped=report.skipped
    )
    return spec, report.problems


# ---- classes: names and nc


def _classes(data: Mapping[str, Any], report: _Report) -> tuple[list[str], int | None]:
    """Class names and ``nc``, which must agree; either one alone is enough."""
    raw_names, raw_nc = data.get("names"), data.get("nc")
    names = _names(raw_names, report)
    nc = _nc(raw_nc, report)
    if len(names) > MAX_CLASSES:
        report(
            "names",
            f"names lists {len(names)} classes; at most {MAX_CLASSES} are accepted (LVIS has 1203, "
            "V3Det 13204): is this the right list?",
        )
        return [], None
    long = next((i for i, name in enumerate(names) if len(name) > MAX_CLASS_NAME_CHARS), None)
    if long is not None:
        report(
            "names",
            f"class {long}'s name is {len(names[long])} characters ({shown(names[long][:30])}...); "
            f"at most {MAX_CLASS_NAME_CHARS}: shorten it",
        )
        return [], None
    if raw_names is None and raw_nc is None:
        report(None, "data.yaml has neither names nor nc: add names: [class0, class1, ...]")
    if raw_names is not None and nc is not None and names and len(names) != nc:
        report("nc", f"nc is {nc} but names lists {len(names)} classes: make them agree (or drop nc)")
    if not names and nc:
        names = [f"class_{i}" for i in range(nc)]
    if raw_names is not None and not names and not report.problems:
        report("names", "names is empty: list the class names")
    if names and nc is None:
        nc = len(names)
    return names, nc


def _names(raw: Any, report: _Report) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list):
        return [str(n) for n in raw]
    if isinstance(raw, dict):
        return _names_by_id(raw, report)
    report("names", "names must be a list (['cat', 'dog']) or a mapping (0: cat)")
    return []


def _names_by_id(raw: Mapping[Any, Any], report: _Report) -> list[str]:
    """``names: {0: cat, 1: dog}``: the ids must be 0..n-1."""
    try:
        by_id = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        report("names", "names as a mapping needs integer class ids as keys (0: cat, 1: dog)")
        return []
    if sorted(by_id) != list(range(len(by_id))):
        report("names", f"class ids in names must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}")
    return [by_id[k] for k in sorted(by_id)]


def _nc(raw: Any, report: _Report) -> int | None:
    """``nc`` as a positive integer; ``2.0`` and ``"2"`` are accepted, as Ultralytics does."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        report("nc", f"nc must be an integer, got {shown(raw)}")
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or value < 1:
        report("nc", f"nc must be a positive integer (the number of classes), got {shown(raw)}")
        return None
    if value > MAX_CLASSES:
        report(
            "nc",
            f"nc: {shown(raw)} is more classes than a detection dataset has: at most {MAX_CLASSES} "
            "are accepted (LVIS has 1203, V3Det 13204); set nc to the number of names",
        )
        return None
    return int(value)


def _channels(value: Any, report: _Report) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 3):
        return value
    report("channels", f"channels must be 1 or 3, got {shown(value)}")
    return 3


# ---- where the splits are


def _root(raw: Any, report: _Report) -> str:
    """The dataset root, ``path``, relative to data.yaml's folder (``""``: that folder)."""
    if raw in (None, "", "."):
        return ""
    if not isinstance(raw, str):
        report("path", f"path must be a string, got {shown(raw)}")
        return ""
    if is_absolute(raw):
        report(
            "path",
            f"path {shown(raw)} is absolute: in a job the dataset root is the folder holding "
            "data.yaml; remove 'path:' (or set 'path: .')",
        )
        return ""
    root = norm(raw.replace("\\", "/"))
    if inside(root):
        return root
    report(
        "path",
        f"path {shown(raw)} leads outside the job's dataset folder; remove 'path:' "
        "(the dataset root is the folder holding data.yaml)",
    )
    return ""


def _with_val_alias(data: Mapping[str, Any], report: _Report) -> dict[str, Any]:
    """``validation:`` (some exports write it) stands for ``val:`` when there is no ``val:``."""
    values = dict(data)
    if "val" not in values and "validation" in values:
        values["val"] = values["validation"]
        if "validation" in report.marks:
            report.marks["val"] = report.marks["validation"]
    return values


def _splits(values: Mapping[str, Any], root: str, exists: Exists, report: _Report) -> dict[str, list[str]]:
    """Each split's folders or lists that exist; train and val are required, test is optional."""
    splits: dict[str, list[str]] = {}
    for split in SPLITS:
        raw = values.get(split)
        if raw in (None, "", []):
            if split != "test":
                report(
                    None if split not in values else split,
                    f"data.yaml has no {shown(split)} split: add '{split}: {split}/images' "
                    f"(a folder of images, relative to data.yaml)",
                )
            continue
        items = raw if isinstance(raw, list) else [raw]
        resolved = [
            path for item in items if (path := _split_item(split, item, root, exists, report)) is not None
        ]
        if resolved:
            splits[split] = resolved
    return splits


def _split_item(split: str, item: Any, root: str, exists: Exists, report: _Report) -> str | None:
    """One folder or ``.txt`` list of a split, relative to data.yaml's folder; None if unusable."""
    if not isinstance(item, str):
        report(split, f"{split} must be a folder or a list of folders, got {shown(item)}")
        return None
    text = item.replace("\\", "/")
    if is_absolute(text):
        report(
            split,
            f"{split} {shown(item)} is an absolute path: use a path relative to data.yaml's "
            f"folder, e.g. '{split}: {split}/images'",
        )
        return None
    chosen = _choose(root, text, exists)
    if chosen is None:
        report(split, f"{split} {shown(item)} leads outside the job's dataset folder")
        return None
    if exists(chosen):
        return chosen
    rel = chosen or "."
    if split == "test":
        report.skipped[split] = (
            f"test {shown(item)} does not exist (dataset/{rel}); the test split is skipped"
        )
    else:
        report(split, f"{split} {shown(item)} not found: there is no dataset/{rel} (folder or .txt list)")
    return None


def _choose(root: str, text: str, exists: Exists) -> str | None:
    """The path ``text`` means under ``root``; None if it leads outside.

    Roboflow writes '../train/images' next to data.yaml: like Ultralytics, a ``../x`` that is
    missing (or outside) is retried as ``x``.
    """
    first = norm(posixpath.join(root, text))
    chosen: str | None = first if inside(first) else None
    if text.startswith("../") and (chosen is None or not exists(chosen)):
        second = norm(posixpath.join(root, text[3:]))
        if inside(second) and (chosen is None or exists(second)):
            chosen = second
    return chosen


# ---- data.yaml files


def resolve_data_yaml(
    data: Mapping[str, Any], location: str | Path, *, s3: S3Client | None = None, bucket: str | None = None
) -> DataSpec:
    """Resolve a parsed data.yaml; raise ``JobInvalid`` if it cannot be used.

    ``location`` is the folder holding data.yaml: a local folder, or (with ``s3`` and
    ``bucket``) an S3 prefix such as ``jobs/<job>/dataset/``. Split paths in the result are
    relative to that folder, posix style, and never lead outside it.
    """
    if s3 is not None:
        if not bucket:
            raise ValueError("resolve_data_yaml on S3 needs bucket=")
        prefix = str(location)
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        exists, where = s3_exists(s3, bucket, prefix), prefix + DATA_YAML
    else:
        exists, where = local_exists(Path(location)), str(Path(location) / DATA_YAML)
    spec, problems = resolve_spec(data, exists, where=where)
    if problems:
        raise problems_error(problems, where)
    return spec


def read_data_yaml(
    data: bytes | str, where: str = DATA_YAML
) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Parse data.yaml text safely (same rules as config.yaml, 1 MiB cap); ``JobInvalid`` if unreadable."""
    try:
        parsed = load_mapping(data, where, max_bytes=MAX_DATA_YAML_BYTES)
    except YamlRefused as err:
        raise problems_error([err.problem], where) from None
    if parsed.problems:
        raise problems_error(parsed.problems, where)
    return parsed.values, parsed.marks


def write_local_data_yaml(dataset_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a data.yaml with absolute local paths for a dataset downloaded to ``dataset_dir``.

    Reads ``dataset_dir/data.yaml`` (the user's, Ultralytics or Roboflow style), resolves it
    as validation did and writes ``out`` (default ``dataset_dir/data.local.yaml``) with an
    absolute ``path``, absolute ``train``/``val``/``test`` and ``names`` as a list; nothing
    else (no ``download:`` script, no ``roboflow:`` block). Returns the written path.
    """
    folder = Path(dataset_dir).resolve()
    data, _ = read_data_yaml((folder / DATA_YAML).read_bytes(), str(folder / DATA_YAML))
    spec = resolve_data_yaml(data, folder)
    doc: dict[str, Any] = {"path": str(folder)}
    for split, paths in spec.splits.items():
        absolute = [str(folder / p) if p else str(folder) for p in paths]
        doc[split] = absolute[0] if len(absolute) == 1 else absolute
    doc["nc"] = spec.nc
    doc["names"] = list(spec.names)
    if spec.channels != 3:
        doc["channels"] = spec.channels
    target = Path(out) if out else folder / "data.local.yaml"
    target.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return target
