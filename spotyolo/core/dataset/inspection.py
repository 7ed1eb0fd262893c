"""The dataset check: everything Ultralytics would trip on, found before an instance is paid for.

Works over a :class:`Source` (an S3 prefix or a local folder: same code, same messages) and
returns a ``DatasetSummary`` plus the problems found (label lines named by file and line).
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

from spotyolo.core.dataset.formats import img_formats, is_image, label_path
from spotyolo.core.dataset.labels import (
    MAX_FILE_PROBLEMS,
    MAX_LABEL_BYTES,
    LabelCheck,
    check_label_text,
    lines,
    too_large,
)
from spotyolo.core.dataset.paths import escaping_key, inside, is_absolute, norm, parents
from spotyolo.core.dataset.sources import Entry, Source
from spotyolo.core.dataset.spec import DATA_YAML, MAX_DATA_YAML_BYTES, DataSpec, resolve_spec
from spotyolo.core.models import DatasetSummary, SplitSummary
from spotyolo.core.yamlsafe import Problem, ProblemList, YamlRefused, load_mapping, problems_error, shown

#: parallel label reads (S3 GETs) at most
MAX_WORKERS = 32
#: label files handed to the thread pool at a time
CHECK_CHUNK = 1024
#: files in a job at most: Validate reads every label file within its Lambda's 5 minutes
#: (32 GETs at a time: ~1 000 a second at S3's usual 10-30 ms, an estimate), and the check must
#: fit its 512 MB (bench/validate_memory.py: 159 MiB traced at this limit, every label bad)
MAX_JOB_FILES = 300_000
#: a .txt image list: 32 MiB is about 500 000 image paths
MAX_LIST_BYTES = 32 * 1024 * 1024
#: files some annotation tools leave in a labels folder; not labels of an image
IGNORED_LABEL_FILES = frozenset({"classes.txt"})


@dataclass
class _Dataset:
    """The files under the dataset folder of a source, by path relative to that folder."""

    source: Source
    base: str
    files: dict[str, Entry]

    def where(self, path: str) -> str:
        return self.source.where(self.base + path)

    def read(self, path: str) -> bytes:
        return self.source.read(self.base + path)

    @cached_property
    def folders(self) -> set[str]:
        return {parent for path in self.files for parent in parents(path)}

    def exists(self, path: str) -> bool:
        return path == "" or path in self.files or path in self.folders

    def under(self, prefix: str) -> list[str]:
        return [p for p in self.files if p.startswith(prefix)]


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
    problems = ProblemList()
    if entries is None:
        entries, too_many = bounded_listing(source, base)
        if too_many:
            return DatasetSummary(), ProblemList([too_many])
    listing = entries
    ds = _Dataset(source, base, {})
    for entry in listing:
        if not entry.path.startswith(base) or entry.path.endswith("/"):  # S3 console folder markers
            continue
        rel = entry.path[len(base) :]
        escape = escaping_key(rel)
        if escape:
            problems.append(Problem(source.where(entry.path), escape))
        else:
            ds.files[rel] = entry
    summary = DatasetSummary(files=len(ds.files), bytes=sum(e.size for e in ds.files.values()))
    spec = _load_spec(ds, summary, problems)
    if spec is None:
        return summary, problems
    split_images, label_dirs = _split_images(ds, spec, problems)
    expected = {label_path(img) for imgs in split_images.values() for img in imgs}
    problems.extend(_orphan_labels(ds, spec, label_dirs, expected))
    checks = _check_labels(ds, sorted(p for p in expected if p in ds.files), spec, max_workers)
    for path, check in checks.items():
        problems.extend(Problem(ds.where(path), message, line) for line, message in check.problems)
        problems.tally(check.more, ds.where(path))
    for split, images in split_images.items():
        summary.splits[split], summary.per_class[split] = _split_summary(images, checks, spec.names)
    return summary, problems


def bounded_listing(source: Source, prefix: str = "") -> tuple[list[Entry], Problem | None]:
    """The source's files under ``prefix``, or the first :data:`MAX_JOB_FILES` and why not all."""
    listing = list(itertools.islice(source.list(prefix), MAX_JOB_FILES + 1))
    if len(listing) <= MAX_JOB_FILES:
        return listing, None
    return listing[:MAX_JOB_FILES], Problem(
        source.where(prefix),
        f"more than {MAX_JOB_FILES} files: Validate reads every label file before any spend and "
        "cannot read more within its time; split the dataset or remove files training does not use",
    )


def check_dataset(
    source: Source, *, dataset_dir: str = "dataset", entries: Iterable[Entry] | None = None
) -> DatasetSummary:
    """:func:`inspect_dataset`, raising one ``JobInvalid`` with the first 20 problems and the total."""
    summary, problems = inspect_dataset(source, dataset_dir=dataset_dir, entries=entries)
    if problems:
        raise problems_error(problems, "the dataset")
    return summary


def _load_spec(ds: _Dataset, summary: DatasetSummary, problems: list[Problem]) -> DataSpec | None:
    """Read and resolve data.yaml; None when the rest cannot be checked without it."""
    yaml_where = ds.where(DATA_YAML)
    if DATA_YAML not in ds.files:
        problems.append(_missing_data_yaml(ds, yaml_where))
        return None
    size = ds.files[DATA_YAML].size
    if size > MAX_DATA_YAML_BYTES:  # refused from the listing: never read
        problems.append(
            Problem(
                yaml_where,
                f"file is {size} bytes; the limit is {MAX_DATA_YAML_BYTES} bytes: is this the right file?",
            )
        )
        return None
    try:
        parsed = load_mapping(ds.read(DATA_YAML), yaml_where, max_bytes=MAX_DATA_YAML_BYTES)
    except YamlRefused as err:
        problems.append(err.problem)
        return None
    problems.extend(parsed.problems)
    spec, spec_problems = resolve_spec(parsed.values, ds.exists, where=yaml_where, marks=parsed.marks)
    problems.extend(spec_problems)
    summary.names = list(spec.names)
    summary.classes = spec.nc
    summary.warnings.extend(spec.skipped.values())
    return None if spec_problems and not spec.names else spec


def _missing_data_yaml(ds: _Dataset, yaml_where: str) -> Problem:
    hint = ""
    others = sorted(p for p in ds.files if p.endswith((".yaml", ".yml")))
    if others:
        hint = f" (found {others[0]}: rename it to {DATA_YAML} at the top of the dataset folder)"
    return Problem(
        yaml_where, f"missing: the dataset needs {ds.base}{DATA_YAML} naming its splits and classes{hint}"
    )


# ---- images of each split, and the label each one would have


def _split_images(
    ds: _Dataset, spec: DataSpec, problems: ProblemList
) -> tuple[dict[str, list[str]], set[str]]:
    """Each split's images (sorted, once each), and the folders their labels are in."""
    split_images: dict[str, list[str]] = {}
    label_dirs: set[str] = set()
    for split, items in spec.splits.items():
        images: list[str] = []
        for item in items:
            images.extend(_item_images(ds, split, item, label_dirs, problems))
        split_images[split] = sorted(set(images))
    return split_images, label_dirs


def _item_images(
    ds: _Dataset, split: str, item: str, label_dirs: set[str], problems: ProblemList
) -> list[str]:
    """The images of one entry of a split: a ``.txt`` list, or a folder (recursively)."""
    if item in ds.files:
        return _images_from_list(ds, item, problems)
    prefix = f"{item}/" if item else ""
    found = [p for p in ds.under(prefix) if is_image(p)]
    if not found:
        other = sorted({posixpath.splitext(p)[1] or p for p in ds.under(prefix)})[:5]
        seen = f" (found only: {', '.join(other)})" if other else " (the folder is empty)"
        problems.append(
            Problem(
                ds.where(prefix or DATA_YAML),
                f"{split} split has no images{seen}; Ultralytics reads "
                f"{', '.join(sorted(img_formats()))} (any case)",
            )
        )
        return []
    label_dirs.add(posixpath.dirname(label_path(f"{prefix}x.jpg")))
    return found


def _images_from_list(ds: _Dataset, path: str, problems: ProblemList) -> list[str]:
    """Images named by a ``.txt`` list (``./x`` and plain relative paths: relative to the list's folder)."""
    where = ds.where(path)
    if ds.files[path].size > MAX_LIST_BYTES:
        size = ds.files[path].size
        problems.append(
            Problem(where, f"image list is {size} bytes; the limit is {MAX_LIST_BYTES}: list fewer images")
        )
        return []
    try:
        text = ds.read(path).decode("utf-8-sig")
    except (UnicodeDecodeError, OSError) as err:
        problems.append(Problem(where, f"image list could not be read as UTF-8 text: {err}"))
        return []
    folder = posixpath.dirname(path)
    images: list[str] = []
    bad = 0
    for number, line in enumerate(lines(text), start=1):
        item = line.strip().replace("\\", "/")
        if not item:
            continue
        image = norm(posixpath.join(folder, item[2:] if item.startswith("./") else item))
        problem = _listed_image_problem(ds, item, image)
        if not problem:
            images.append(image)
        elif (bad := bad + 1) <= MAX_FILE_PROBLEMS:
            problems.append(Problem(where, problem, number))
        else:
            problems.tally(1, where)  # counted, not kept: a bad list of a million lines
    return images


def _listed_image_problem(ds: _Dataset, item: str, image: str) -> str | None:
    """What is wrong with one line of an image list (``image``: where it leads), if anything."""
    if is_absolute(item):
        return f"{shown(item)} is absolute: list images relative to this file ('./images/a.jpg')"
    if not inside(image):
        return f"{shown(item)} leads outside the job's dataset folder"
    if image not in ds.files:
        return f"image {shown(item)} does not exist ({ds.base}{image})"
    if not is_image(image):
        return f"{shown(item)} is not an image Ultralytics reads"
    return None


# ---- label files


def _orphan_labels(
    ds: _Dataset, spec: DataSpec, label_dirs: set[str], expected: set[str]
) -> Iterable[Problem]:
    """A ``.txt`` in a labels folder that no image of a split needs: its image is missing."""
    for label_dir in sorted(label_dirs):
        prefix = f"{label_dir}/" if label_dir else ""
        for path in sorted(p for p in ds.under(prefix) if p.endswith(".txt")):
            if (
                path in expected
                or posixpath.basename(path) in IGNORED_LABEL_FILES
                or any(path in items for items in spec.splits.values())
            ):
                continue
            stem = posixpath.splitext("/" + path)[0]
            stem = "/images/".join(stem.rsplit("/labels/", 1))[1:]
            yield Problem(
                ds.where(path),
                f"label file without an image: no {ds.base}{stem}.<jpg|png|...> exists; "
                "upload its image or delete the label",
            )


def _check_labels(ds: _Dataset, paths: list[str], spec: DataSpec, max_workers: int) -> dict[str, LabelCheck]:
    """Read and check every label file once, in parallel (S3 GETs are slow one by one)."""
    nc = spec.nc or len(spec.names)

    def check(path: str) -> LabelCheck:
        if ds.files[path].size > MAX_LABEL_BYTES:  # refused from the listing: never read
            return LabelCheck(problems=[(None, too_large(ds.files[path].size))])
        try:
            return check_label_text(ds.read(path), nc)
        except Exception as err:  # a vanished or unreadable object is a problem of that file
            return LabelCheck(problems=[(None, f"could not be read: {err}")])

    checks: dict[str, LabelCheck] = {}
    if not paths:
        return checks
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(paths)))) as pool:
        for start in range(0, len(paths), CHECK_CHUNK):  # not 100 000 futures at once
            chunk = paths[start : start + CHECK_CHUNK]
            checks.update(zip(chunk, pool.map(check, chunk), strict=True))
    return checks


def _split_summary(
    images: list[str], checks: Mapping[str, LabelCheck], names: list[str]
) -> tuple[SplitSummary, dict[str, int]]:
    """Images, labels, backgrounds (no or empty label) and instances of a split; and per class name."""
    counts = SplitSummary(images=len(images))
    per_class = {name: 0 for name in names}
    for image in images:
        label = checks.get(label_path(image))
        if label is None:
            counts.backgrounds += 1
            continue
        counts.labels += 1
        if label.empty:
            counts.backgrounds += 1
        for cls, n in label.instances.items():
            name = names[cls] if cls < len(names) else str(cls)
            per_class[name] = per_class.get(name, 0) + n
            counts.instances += n
    return counts, per_class
