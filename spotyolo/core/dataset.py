"""The job's dataset: resolving its data.yaml and checking it before any spend.

Two public entry points for other parts:

* :func:`resolve_data_yaml` — what a data.yaml means, on S3 or in a local folder: the split
  paths (relative to the folder holding data.yaml, posix), the class names and ``nc``. It
  accepts Ultralytics-style yamls (``path``, ``train``, ``val``, optional ``test``, ``names``
  as a list or a dict, ``nc``) and Roboflow exports (``train: ../train/images`` where the
  folder really is ``dataset/train/images``: like Ultralytics, a missing ``../x`` is retried as
  ``x``; the ``roboflow:`` block is ignored). Paths never resolve outside that folder.
* :func:`write_local_data_yaml` — for the trainer: after downloading ``jobs/<job>/dataset/`` to
  a local folder, write a data.yaml with absolute paths that Ultralytics reads as is.

And the check itself, :func:`inspect_dataset`, which works over a :class:`Source` (an S3
prefix or a local folder: same code, same messages) and returns a ``DatasetSummary`` plus the
problems found (label lines named by file and line).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.models import DatasetSummary, SplitSummary
from spotyolo.core.yamlsafe import Problem, YamlRefused, load_mapping, problems_error

DATA_YAML = "data.yaml"
SPLITS = ("train", "val", "test")
#: label files are small; anything bigger than this is not a YOLO label file
MAX_LABEL_BYTES = 8 * 1024 * 1024
#: parallel label reads (S3 GETs) at most
MAX_WORKERS = 32
#: files some annotation tools leave in a labels folder; not labels of an image
IGNORED_LABEL_FILES = frozenset({"classes.txt"})


@cache
def rules() -> dict[str, Any]:
    """Ultralytics' rule data copied into spotyolo/core/data (the Lambda has no Ultralytics)."""
    data: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "ultralytics_rules.json").read_text())
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


# ---------------------------------------------------------------- where files come from


@dataclass(frozen=True)
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

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
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


# ---------------------------------------------------------------- data.yaml


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


def _is_absolute(value: str) -> bool:
    return value.startswith(("/", "\\")) or "://" in value or (len(value) > 1 and value[1] == ":")


def _inside(path: str) -> bool:
    return path != ".." and not path.startswith("../")


def _norm(path: str) -> str:
    out = posixpath.normpath(path) if path else "."
    return "" if out == "." else out


def resolve_spec(
    data: Mapping[str, Any],
    exists: Callable[[str], bool],
    *,
    where: str = DATA_YAML,
    marks: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[DataSpec, list[Problem]]:
    """Resolve a parsed data.yaml against ``exists(path)`` (file or folder, relative to its folder).

    Returns the spec and the problems found (empty when it is usable).
    """
    key_marks: dict[str, tuple[int, int]] = dict(marks or {})
    problems: list[Problem] = []

    def problem(key: str | None, message: str) -> None:
        mark = key_marks.get(key) if key else None
        line, column = mark if mark else (None, None)
        problems.append(Problem(where, message, line, column))

    # classes
    names: list[str] = []
    raw_names = data.get("names")
    if isinstance(raw_names, list):
        names = [str(n) for n in raw_names]
    elif isinstance(raw_names, dict):
        try:
            by_id = {int(k): str(v) for k, v in raw_names.items()}
        except (TypeError, ValueError):
            by_id = {}
            problem("names", "names as a mapping needs integer class ids as keys (0: cat, 1: dog)")
        if by_id and sorted(by_id) != list(range(len(by_id))):
            problem(
                "names",
                f"class ids in names must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}",
            )
        names = [by_id[k] for k in sorted(by_id)]
    elif raw_names is not None:
        problem("names", "names must be a list (['cat', 'dog']) or a mapping (0: cat)")

    nc: int | None = None
    raw_nc = data.get("nc")
    if raw_nc is not None:
        if isinstance(raw_nc, bool) or not isinstance(raw_nc, int | float | str):
            problem("nc", f"nc must be an integer, got {raw_nc!r}")
        else:
            try:
                value = float(raw_nc)
                if not value.is_integer() or value < 1:
                    raise ValueError
                nc = int(value)
            except ValueError:
                problem("nc", f"nc must be a positive integer (the number of classes), got {raw_nc!r}")
    if raw_names is None and nc is None and raw_nc is None:
        problem(None, "data.yaml has neither names nor nc: add names: [class0, class1, ...]")
    if raw_names is not None and nc is not None and names and len(names) != nc:
        problem("nc", f"nc is {nc} but names lists {len(names)} classes: make them agree (or drop nc)")
    if not names and nc:
        names = [f"class_{i}" for i in range(nc)]
    if raw_names is not None and not names and not problems:
        problem("names", "names is empty: list the class names")
    if names and nc is None:
        nc = len(names)

    channels = data.get("channels", 3)
    if not isinstance(channels, int) or isinstance(channels, bool) or channels not in (1, 3):
        problem("channels", f"channels must be 1 or 3, got {channels!r}")
        channels = 3

    # the dataset root: `path`, relative to data.yaml's folder
    root = ""
    raw_path = data.get("path")
    if raw_path not in (None, "", "."):
        if not isinstance(raw_path, str):
            problem("path", f"path must be a string, got {raw_path!r}")
        elif _is_absolute(raw_path):
            problem(
                "path",
                f"path {raw_path!r} is absolute: in a job the dataset root is the folder holding "
                "data.yaml; remove 'path:' (or set 'path: .')",
            )
        else:
            root = _norm(raw_path.replace("\\", "/"))
            if not _inside(root):
                problem(
                    "path",
                    f"path {raw_path!r} leads outside the job's dataset folder; remove 'path:' "
                    "(the dataset root is the folder holding data.yaml)",
                )
                root = ""

    values = dict(data)
    if "val" not in values and "validation" in values:
        values["val"] = values["validation"]
        if "validation" in key_marks:
            key_marks["val"] = key_marks["validation"]
    splits: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for split in SPLITS:
        raw = values.get(split)
        if raw in (None, "", []):
            if split != "test":
                problem(
                    None if split not in values else split,
                    f"data.yaml has no {split!r} split: add '{split}: {split}/images' "
                    f"(a folder of images, relative to data.yaml)",
                )
            continue
        items = raw if isinstance(raw, list) else [raw]
        resolved: list[str] = []
        for item in items:
            if not isinstance(item, str):
                problem(split, f"{split} must be a folder or a list of folders, got {item!r}")
                continue
            text = item.replace("\\", "/")
            if _is_absolute(text):
                problem(
                    split,
                    f"{split} {item!r} is an absolute path: use a path relative to data.yaml's "
                    f"folder, e.g. '{split}: {split}/images'",
                )
                continue
            first = _norm(posixpath.join(root, text))
            chosen: str | None = first if _inside(first) else None
            if text.startswith("../") and (chosen is None or not exists(chosen)):
                # Roboflow: '../train/images' next to data.yaml (Ultralytics retries without '../')
                second = _norm(posixpath.join(root, text[3:]))
                if _inside(second) and (chosen is None or exists(second)):
                    chosen = second
            if chosen is None:
                problem(split, f"{split} {item!r} leads outside the job's dataset folder")
                continue
            if not exists(chosen):
                shown = chosen or "."
                if split == "test":
                    skipped[split] = (
                        f"test {item!r} does not exist (dataset/{shown}); the test split is skipped"
                    )
                    continue
                problem(
                    split, f"{split} {item!r} not found: there is no dataset/{shown} (folder or .txt list)"
                )
                continue
            resolved.append(chosen)
        if resolved:
            splits[split] = resolved
    return DataSpec(
        splits=splits, names=names, nc=nc or len(names), channels=channels, skipped=skipped
    ), problems


def _local_exists(folder: Path) -> Callable[[str], bool]:
    def exists(path: str) -> bool:
        return (folder / path).exists() if path else folder.is_dir()

    return exists


def _s3_exists(s3: Any, bucket: str, prefix: str) -> Callable[[str], bool]:
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


def resolve_data_yaml(
    data: Mapping[str, Any], location: str | Path, *, s3: Any = None, bucket: str | None = None
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
        exists, where = _s3_exists(s3, bucket, prefix), prefix + DATA_YAML
    else:
        exists, where = _local_exists(Path(location)), str(Path(location) / DATA_YAML)
    spec, problems = resolve_spec(data, exists, where=where)
    if problems:
        raise problems_error(problems, where)
    return spec


def read_data_yaml(
    data: bytes | str, where: str = DATA_YAML
) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Parse data.yaml text safely (same rules as config.yaml, 1 MiB cap); ``JobInvalid`` if unreadable."""
    try:
        parsed = load_mapping(data, where, max_bytes=1024 * 1024)
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


# ---------------------------------------------------------------- label files


@dataclass
class LabelCheck:
    """What one label file holds: instances per class id, and the problems by line."""

    instances: dict[int, int] = field(default_factory=dict)
    problems: list[tuple[int | None, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.instances


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def check_label_text(raw: bytes, nc: int) -> LabelCheck:
    """Check one YOLO label file: ``class x y w h`` or ``class x1 y1 x2 y2 x3 y3 ...`` per line.

    Follows Ultralytics' rules: class ids are integers in [0, nc); a box has 4 coordinates, a
    polygon at least 3 points (an even count of coordinates); every coordinate is finite and in
    [0, 1] (normalised to the image size); blank lines are fine.
    """
    result = LabelCheck()
    if len(raw) > MAX_LABEL_BYTES:
        result.problems.append((None, f"{len(raw)} bytes is too large for a label file"))
        return result
    if b"\x00" in raw:
        result.problems.append((None, "binary file, not a YOLO label text file"))
        return result
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad_line = raw[: err.start].count(b"\n") + 1
        result.problems.append((bad_line, "not UTF-8 text: save label files as plain text"))
        return result
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        count = len(fields)
        if count != 5 and (count < 7 or count % 2 == 0):
            result.problems.append(
                (
                    number,
                    f"{count} values; a label line is 'class x y w h' (5 values) or a polygon "
                    "'class x1 y1 x2 y2 x3 y3 ...' (a class and at least 3 x,y points)",
                )
            )
            continue
        cls = _number(fields[0])
        if cls is None or not math.isfinite(cls) or not cls.is_integer():
            result.problems.append((number, f"class id {fields[0]!r} is not an integer"))
            continue
        if not 0 <= cls < nc:
            ids = f"0-{nc - 1}" if nc > 1 else "0"
            result.problems.append(
                (number, f"class id {int(cls)} is out of range: data.yaml has {nc} class(es), ids {ids}")
            )
            continue
        bad = None
        for value in fields[1:]:
            coord = _number(value)
            if coord is None:
                bad = f"{value!r} is not a number"
            elif not math.isfinite(coord):
                bad = f"coordinate {value} is not finite"
            elif not 0.0 <= coord <= 1.0:
                bad = (
                    f"coordinate {value} is outside [0, 1]: YOLO coordinates are normalised "
                    "(pixels divided by the image width/height)"
                )
            if bad:
                break
        if bad:
            result.problems.append((number, bad))
            continue
        result.instances[int(cls)] = result.instances.get(int(cls), 0) + 1
    return result


# ---------------------------------------------------------------- the dataset check


def _parents(path: str) -> Iterable[str]:
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)


def inspect_dataset(
    source: Source,
    *,
    dataset_dir: str = "dataset",
    entries: Iterable[Entry] | None = None,
    max_workers: int = MAX_WORKERS,
) -> tuple[DatasetSummary, list[Problem]]:
    """Check the dataset under ``dataset_dir`` of ``source``; return its summary and the problems.

    ``entries`` (the listing of the source, relative to its root) saves listing again when the
    caller already has it. Label files are read in parallel, at most ``max_workers`` at a time.
    """
    base = dataset_dir.strip("/") + "/"
    listing = list(entries) if entries is not None else list(source.list(base))
    files: dict[str, Entry] = {e.path[len(base) :]: e for e in listing if e.path.startswith(base)}
    summary = DatasetSummary(files=len(files), bytes=sum(e.size for e in files.values()))
    problems: list[Problem] = []

    def where(path: str) -> str:
        return source.where(base + path)

    yaml_where = where(DATA_YAML)
    if DATA_YAML not in files:
        hint = ""
        others = sorted(p for p in files if p.endswith((".yaml", ".yml")))
        if others:
            hint = f" (found {others[0]}: rename it to {DATA_YAML} at the top of the dataset folder)"
        problems.append(
            Problem(
                yaml_where,
                f"missing: the dataset needs {base}{DATA_YAML} naming its splits and classes{hint}",
            )
        )
        return summary, problems
    try:
        parsed = load_mapping(source.read(base + DATA_YAML), yaml_where, max_bytes=1024 * 1024)
    except YamlRefused as err:
        return summary, [err.problem]
    problems.extend(parsed.problems)

    folders = {parent for path in files for parent in _parents(path)}

    def exists(path: str) -> bool:
        return path == "" or path in files or path in folders

    spec, spec_problems = resolve_spec(parsed.values, exists, where=yaml_where, marks=parsed.marks)
    problems.extend(spec_problems)
    summary.names = list(spec.names)
    summary.warnings.extend(spec.skipped.values())
    if spec_problems and not spec.names:
        return summary, problems

    # images of each split, and the label each one would have
    split_images: dict[str, list[str]] = {}
    label_dirs: set[str] = set()
    for split, items in spec.splits.items():
        images: list[str] = []
        for item in items:
            if item in files:  # a .txt list of images
                images.extend(_images_from_list(source, base, item, files, problems))
                continue
            prefix = f"{item}/" if item else ""
            found = [p for p in files if p.startswith(prefix) and is_image(p)]
            if not found:
                other = sorted({posixpath.splitext(p)[1] or p for p in files if p.startswith(prefix)})[:5]
                seen = f" (found only: {', '.join(other)})" if other else " (the folder is empty)"
                problems.append(
                    Problem(
                        where(prefix or DATA_YAML),
                        f"{split} split has no images{seen}; Ultralytics reads "
                        f"{', '.join(sorted(img_formats()))} (any case)",
                    )
                )
                continue
            images.extend(found)
            label_dirs.add(posixpath.dirname(label_path(f"{prefix}x.jpg")))
        split_images[split] = sorted(set(images))

    expected = {label_path(img) for imgs in split_images.values() for img in imgs}
    for label_dir in sorted(label_dirs):
        prefix = f"{label_dir}/" if label_dir else ""
        for path in sorted(p for p in files if p.startswith(prefix) and p.endswith(".txt")):
            if (
                path in expected
                or posixpath.basename(path) in IGNORED_LABEL_FILES
                or any(path in items for items in spec.splits.values())
            ):
                continue
            stem = posixpath.splitext("/" + path)[0]
            stem = "/images/".join(stem.rsplit("/labels/", 1))[1:]
            problems.append(
                Problem(
                    where(path),
                    f"label file without an image: no {base}{stem}.<jpg|png|...> exists; "
                    "upload its image or delete the label",
                )
            )

    # read every label file once, in parallel
    to_read = sorted(p for p in expected if p in files)
    checks: dict[str, LabelCheck] = {}
    nc = spec.nc or len(spec.names)

    def check(path: str) -> LabelCheck:
        try:
            return check_label_text(source.read(base + path), nc)
        except Exception as err:  # a vanished or unreadable object is a problem of that file
            return LabelCheck(problems=[(None, f"could not be read: {err}")])

    if to_read:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(to_read)))) as pool:
            checks = dict(zip(to_read, pool.map(check, to_read), strict=True))
    for path in to_read:
        for line, message in checks[path].problems:
            problems.append(Problem(where(path), message, line))

    for split, images in split_images.items():
        counts = SplitSummary(images=len(images), instances={name: 0 for name in spec.names})
        for image in images:
            label = checks.get(label_path(image))
            if label is None:
                counts.backgrounds += 1
                continue
            counts.labels += 1
            if label.empty:
                counts.backgrounds += 1
            for cls, n in label.instances.items():
                name = spec.names[cls] if cls < len(spec.names) else str(cls)
                counts.instances[name] = counts.instances.get(name, 0) + n
        summary.splits[split] = counts
    return summary, problems


def _images_from_list(
    source: Source, base: str, path: str, files: Mapping[str, Entry], problems: list[Problem]
) -> list[str]:
    """Images named by a ``.txt`` list (``./x`` and plain relative paths: relative to the list's folder)."""
    where = source.where(base + path)
    try:
        text = source.read(base + path).decode("utf-8-sig")
    except (UnicodeDecodeError, OSError) as err:
        problems.append(Problem(where, f"image list could not be read as UTF-8 text: {err}"))
        return []
    folder = posixpath.dirname(path)
    images: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.strip().replace("\\", "/")
        if not item:
            continue
        if _is_absolute(item):
            problems.append(
                Problem(
                    where,
                    f"{item!r} is absolute: list images relative to this file ('./images/a.jpg')",
                    number,
                )
            )
            continue
        image = _norm(posixpath.join(folder, item[2:] if item.startswith("./") else item))
        if not _inside(image):
            problems.append(Problem(where, f"{item!r} leads outside the job's dataset folder", number))
        elif image not in files:
            problems.append(Problem(where, f"image {item!r} does not exist ({base}{image})", number))
        elif not is_image(image):
            problems.append(Problem(where, f"{item!r} is not an image Ultralytics reads", number))
        else:
            images.append(image)
    return images


def check_dataset(
    source: Source, *, dataset_dir: str = "dataset", entries: Iterable[Entry] | None = None
) -> DatasetSummary:
    """:func:`inspect_dataset`, raising one ``JobInvalid`` with the first 20 problems and the total."""
    summary, problems = inspect_dataset(source, dataset_dir=dataset_dir, entries=entries)
    if problems:
        raise problems_error(problems, "the dataset")
    return summary


__all__ = [
    "DataSpec",
    "DatasetSummary",
    "Entry",
    "JobInvalid",
    "LocalSource",
    "S3Source",
    "Source",
    "check_dataset",
    "check_label_text",
    "inspect_dataset",
    "label_path",
    "read_data_yaml",
    "resolve_data_yaml",
    "write_local_data_yaml",
]
