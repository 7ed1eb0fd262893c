"""What a user reads when the dataset is refused, word for word, for the cases the corpus only
matches by a needle: image lists, class names given as a mapping, a data.yaml under another
name, a label too large to be one; the trainer's data.yaml; the S3 listing."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from bad_jobs import make_job
from moto import mock_aws

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.dataset import (
    LocalSource,
    S3Source,
    inspect_dataset,
    read_data_yaml,
    write_local_data_yaml,
)
from spotyolo.core.dataset.inspection import MAX_LIST_BYTES
from spotyolo.core.dataset.labels import MAX_LABEL_BYTES
from spotyolo.core.dataset.sources import Entry
from spotyolo.core.dataset.spec import resolve_spec
from spotyolo.core.yamlsafe import shown


def dataset(tmp_path: Path, data_yaml: str | None = None) -> Path:
    job = make_job(tmp_path / "job")
    if data_yaml is not None:
        (job / "dataset" / "data.yaml").write_text(data_yaml)
    return job


def refusals(job: Path, entries: list[Entry] | None = None) -> list[str]:
    _, problems = inspect_dataset(LocalSource(job), entries=entries)
    return [str(p) for p in problems]


LISTED = "path: .\ntrain: lists/train.txt\nval: images/val\nnames: [cat, dog, bird]\n"


def with_list(tmp_path: Path, text: bytes) -> Path:
    job = dataset(tmp_path, LISTED)
    (job / "dataset" / "lists").mkdir()
    (job / "dataset" / "lists" / "train.txt").write_bytes(text)
    return job


def test_an_image_list_names_each_bad_line_by_number(tmp_path: Path) -> None:
    lines = [
        "\ufeff../images/train/a.jpg",  # a BOM, as Windows editors write
        "./../images/train/b.jpg",
        "",
        "..\\images\\train\\z.jpg",  # Windows separators
        "/abs/x.jpg",
        "../../outside.jpg",
        "../images/train/missing.jpg",
        "../labels/train/a.txt",
    ]
    job = with_list(tmp_path, "\n".join(lines).encode())
    summary, _ = inspect_dataset(LocalSource(job))
    assert summary.splits["train"].images == 3
    assert refusals(job) == [
        "dataset/lists/train.txt:5: '/abs/x.jpg' is absolute: list images relative to this file "
        "('./images/a.jpg')",
        "dataset/lists/train.txt:6: '../../outside.jpg' leads outside the job's dataset folder",
        "dataset/lists/train.txt:7: image '../images/train/missing.jpg' does not exist "
        "(dataset/images/train/missing.jpg)",
        "dataset/lists/train.txt:8: '../labels/train/a.txt' is not an image Ultralytics reads",
    ]


def test_a_list_of_many_bad_lines_shows_five_and_counts_the_rest(tmp_path: Path) -> None:
    job = with_list(tmp_path, "".join(f"../images/train/n{i}.jpg\n" for i in range(8)).encode())
    _, problems = inspect_dataset(LocalSource(job))
    assert [p.line for p in problems] == [1, 2, 3, 4, 5]
    assert problems.total == 8  # type: ignore[attr-defined]


def test_an_image_list_that_is_not_text_is_refused(tmp_path: Path) -> None:
    job = with_list(tmp_path, b"\xff\xfe not utf-8")
    assert refusals(job) == [
        "dataset/lists/train.txt: image list could not be read as UTF-8 text: 'utf-8' codec can't "
        "decode byte 0xff in position 0: invalid start byte"
    ]


@pytest.mark.parametrize(("size", "refused"), [(MAX_LIST_BYTES, False), (MAX_LIST_BYTES + 1, True)])
def test_an_image_list_over_the_limit_is_refused_unread(tmp_path: Path, size: int, refused: bool) -> None:
    """As the S3 listing says the list's size: a 33 MiB list is refused before it is read."""
    job = with_list(tmp_path, b"../images/train/a.jpg\n")
    listed = [
        dataclasses.replace(e, size=size) if e.path.endswith("train.txt") else e
        for e in LocalSource(job).list()
    ]
    expected = [
        f"dataset/lists/train.txt: image list is {size} bytes; the limit is {MAX_LIST_BYTES}: "
        "list fewer images"
    ]
    assert refusals(job, listed) == (expected if refused else [])


def test_a_label_file_too_large_to_be_one_is_refused(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    size = MAX_LABEL_BYTES + 1
    listed = [
        dataclasses.replace(e, size=size) if e.path.endswith("train/a.txt") else e
        for e in LocalSource(job).list()
    ]
    assert (
        f"dataset/labels/train/a.txt: {size} bytes is too large for a label file (the limit is "
        f"{MAX_LABEL_BYTES}): is it a label? Remove it, or split its objects"
    ) in refusals(job, listed)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ("{0: cat, 2: dog}", "class ids in names must be 0..1 without gaps, got [0, 2]"),
        ("{a: cat, 1: dog}", "names as a mapping needs integer class ids as keys (0: cat, 1: dog)"),
    ],
)
def test_class_names_as_a_mapping_need_ids_zero_to_n(tmp_path: Path, names: str, problem: str) -> None:
    job = dataset(tmp_path, f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    assert f"dataset/data.yaml:4:1: {problem}" in refusals(job)


def test_class_names_as_a_mapping_are_read_in_id_order(tmp_path: Path) -> None:
    job = dataset(
        tmp_path, "path: .\ntrain: images/train\nval: images/val\nnames: {2: bird, 0: cat, 1: dog}\n"
    )
    summary, problems = inspect_dataset(LocalSource(job))
    assert problems == [] and summary.names == ["cat", "dog", "bird"]


@pytest.mark.parametrize("other", ["dataset.yml", "coco8.yaml"])
def test_a_data_yaml_under_another_name_is_named_in_the_refusal(tmp_path: Path, other: str) -> None:
    job = dataset(tmp_path)
    data = job / "dataset" / "data.yaml"
    data.rename(job / "dataset" / other)
    assert refusals(job) == [
        "dataset/data.yaml: missing: the dataset needs dataset/data.yaml naming its splits and classes "
        f"(found {other}: rename it to data.yaml at the top of the dataset folder)"
    ]


def test_an_unreadable_data_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(JobInvalid) as refused:
        read_data_yaml(b"names: [cat\n", "jobs/shapes/dataset/data.yaml")
    assert "jobs/shapes/dataset/data.yaml:" in str(refused.value)
    with pytest.raises(JobInvalid) as refused:
        read_data_yaml(b"- a list\n- not a mapping\n", "jobs/shapes/dataset/data.yaml")
    assert "jobs/shapes/dataset/data.yaml" in str(refused.value)


# ------------------------------------------------------------------ the trainer's data.yaml


def test_the_trainers_data_yaml_keeps_every_folder_the_classes_and_the_channels(tmp_path: Path) -> None:
    """What Ultralytics trains on: every folder of a split given as a list, the class names in
    order (the model's names), the channels of a grayscale dataset; written where asked."""
    job = dataset(tmp_path)
    ds = job / "dataset"
    (ds / "images" / "extra").mkdir()
    (ds / "images" / "extra" / "e.jpg").write_bytes(b"img")
    (ds / "data.yaml").write_text(
        "path: .\ntrain: [images/train, images/extra]\nval: images/val\nnames: [cat, dog, 'oiseau é']\n"
        "channels: 1\nroboflow: {workspace: acme}\n"
    )
    written = write_local_data_yaml(ds)
    assert written == ds.resolve() / "data.local.yaml"
    root = ds.resolve()
    assert yaml.safe_load(written.read_text()) == {
        "path": str(root),
        "train": [str(root / "images" / "train"), str(root / "images" / "extra")],
        "val": str(root / "images" / "val"),
        "nc": 3,
        "names": ["cat", "dog", "oiseau é"],
        "channels": 1,
    }
    elsewhere = write_local_data_yaml(ds, tmp_path / "for-ultralytics.yaml")
    assert elsewhere == tmp_path / "for-ultralytics.yaml" and elsewhere.read_text() == written.read_text()
    (ds / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [cat, dog, bird]\n")
    assert "channels" not in yaml.safe_load(
        write_local_data_yaml(ds).read_text()
    )  # RGB: Ultralytics' default


# ------------------------------------------------------------------ the S3 listing


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        yield client


def test_the_s3_listing_is_relative_to_the_jobs_folder_with_each_objects_time(s3: Any) -> None:
    for key in ("jobs/shapes/config.yaml", "jobs/shapes/dataset/data.yaml", "jobs/shapes-2/config.yaml"):
        s3.put_object(Bucket="bkt", Key=key, Body=b"x: 1\n")
    source = S3Source(s3, "bkt", "jobs/shapes")  # no trailing slash: shapes-2 is another job
    entries = sorted(source.list(), key=lambda e: e.path)
    assert [(e.path, e.size) for e in entries] == [("config.yaml", 5), ("dataset/data.yaml", 5)]
    head = s3.head_object(Bucket="bkt", Key="jobs/shapes/config.yaml")
    assert entries[0].mtime == head["LastModified"].timestamp()  # which upload is newest
    assert [e.path for e in source.list("dataset/")] == ["dataset/data.yaml"]
    assert (
        source.read("config.yaml") == b"x: 1\n" and source.where("config.yaml") == "jobs/shapes/config.yaml"
    )
    assert list(S3Source(s3, "bkt", "jobs/nobody/").list()) == []


def test_a_missing_data_yaml_with_no_other_yaml_is_refused_plainly(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    (job / "dataset" / "data.yaml").unlink()
    assert refusals(job) == [
        "dataset/data.yaml: missing: the dataset needs dataset/data.yaml naming its splits and classes"
    ]


def test_the_refusal_counts_the_image_list_lines_it_does_not_show(tmp_path: Path) -> None:
    from spotyolo.core.config import check_job

    job = with_list(tmp_path, "".join(f"../images/train/n{i}.jpg\n" for i in range(8)).encode())
    with pytest.raises(JobInvalid) as refused:
        check_job(LocalSource(job))
    last = str(refused.value).splitlines()[-1]
    assert last == "  ... and 3 more in 1 file (8 in total; the first 5 are shown)"


def test_a_data_yaml_with_a_duplicate_key_is_refused_naming_file_and_line() -> None:
    with pytest.raises(JobInvalid) as refused:
        read_data_yaml(b"names: [a]\nnames: [b]\n", "jobs/shapes/dataset/data.yaml")
    assert str(refused.value) == (
        "jobs/shapes/dataset/data.yaml is invalid (1 problem):\n"
        "  - jobs/shapes/dataset/data.yaml:2:1: duplicate key 'names' (first on line 1): keep one"
    )


def test_a_data_yaml_up_to_a_mebibyte_is_read() -> None:
    """Many classes make a long data.yaml: 150 KB is more than a config.yaml may be, not too much."""
    big = "names: [" + ", ".join(f"c{i}" for i in range(20000)) + "]\n"
    assert len(big) > 64 * 1024
    data, _ = read_data_yaml(big, "jobs/shapes/dataset/data.yaml")
    assert len(data["names"]) == 20000


def test_the_trainer_names_its_data_yaml_when_it_cannot_read_it(tmp_path: Path) -> None:
    ds = dataset(tmp_path, "names: [cat\n") / "dataset"
    with pytest.raises(JobInvalid) as refused:
        write_local_data_yaml(ds)
    assert str(refused.value).startswith(f"{ds.resolve() / 'data.yaml'} is invalid (1 problem):\n")


def test_a_split_that_is_the_dataset_folder_itself_is_written_as_that_folder(tmp_path: Path) -> None:
    ds = dataset(tmp_path) / "dataset"
    for name in ("a", "b"):
        (ds / f"{name}.jpg").write_bytes(b"img")
    (ds / "data.yaml").write_text("path: .\ntrain: .\nval: images/val\nnames: [cat, dog, bird]\n")
    written = yaml.safe_load(write_local_data_yaml(ds).read_text())
    assert written["train"] == str(ds.resolve())


def test_a_split_folder_written_with_a_trailing_slash_is_found_in_s3(s3: Any) -> None:
    from spotyolo.core.dataset import resolve_data_yaml

    for key in ("jobs/slash/dataset/images/train/a.jpg", "jobs/slash/dataset/images/val/b.jpg"):
        s3.put_object(Bucket="bkt", Key=key, Body=b"img")
    data = {"train": "images/train/", "val": "images/val", "names": ["cat"]}
    spec = resolve_data_yaml(data, "jobs/slash/dataset/", s3=s3, bucket="bkt")
    assert spec.splits == {"train": ["images/train"], "val": ["images/val"]}


def test_a_split_without_images_says_what_it_found_and_what_ultralytics_reads(tmp_path: Path) -> None:
    job = dataset(tmp_path, "path: .\ntrain: notes\nval: images/val\nnames: [cat, dog, bird]\n")
    for ext in ("txt", "md", "csv", "json", "xml", "zip"):
        (job / "dataset" / "notes").mkdir(exist_ok=True)
        (job / "dataset" / "notes" / f"a.{ext}").write_text("x")
    assert refusals(job) == [
        "dataset/notes/: train split has no images (found only: .csv, .json, .md, .txt, .xml); "
        "Ultralytics reads avif, bmp, dng, heic, heif, jp2, jpeg, jpg, mpo, png, tif, tiff, webp (any case)"
    ]


def test_a_label_without_its_image_is_refused_and_classes_txt_is_not_a_label(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    labels = job / "dataset" / "labels" / "train"
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (labels / "classes.txt").write_text("cat\ndog\nbird\n")  # LabelImg writes it next to the labels
    assert refusals(job) == [
        "dataset/labels/train/ghost.txt: label file without an image: no "
        "dataset/images/train/ghost.<jpg|png|...> exists; upload its image or delete the label"
    ]


def test_check_dataset_refuses_the_dataset_as_a_whole(tmp_path: Path) -> None:
    """`spotyolo validate DIR` and the trainer: one refusal for the dataset folder they name,
    read from the listing they already have."""
    from spotyolo.core.dataset import check_dataset

    job = dataset(tmp_path)
    (job / "dataset").rename(job / "data")
    assert check_dataset(LocalSource(job), dataset_dir="data").splits["train"].images == 3
    (job / "data").rename(job / "dataset")
    size = MAX_LABEL_BYTES + 1
    listed = [
        dataclasses.replace(e, size=size) if e.path.endswith("train/a.txt") else e
        for e in LocalSource(job).list()
    ]
    with pytest.raises(JobInvalid) as refused:
        check_dataset(LocalSource(job), entries=listed)
    assert str(refused.value).startswith(
        f"the dataset is invalid (1 problem):\n  - dataset/labels/train/a.txt: {size} bytes is too large"
    )


def test_a_local_listing_is_relative_skips_what_it_cannot_stat_and_keeps_times(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    images = job / "dataset" / "images" / "train"
    os.symlink(images / "nowhere.jpg", images / "0-broken.jpg")  # sorted first; stat fails
    source = LocalSource(job)
    below = list(source.list("dataset/images/train"))
    assert [e.path for e in below] == [f"dataset/images/train/{n}.jpg" for n in ("a", "b", "z")]
    assert below[0].mtime == os.stat(images / "a.jpg").st_mtime  # which upload is newest


def test_resolving_names_the_data_yaml_it_refuses(tmp_path: Path) -> None:
    from spotyolo.core.dataset import resolve_data_yaml

    ds = dataset(tmp_path) / "dataset"
    with pytest.raises(JobInvalid) as refused:
        resolve_data_yaml({"train": "../../x", "val": "images/val", "names": ["cat"]}, ds)
    assert str(refused.value).startswith(f"{ds / 'data.yaml'} is invalid (1 problem):\n")
    with pytest.raises(ValueError) as misused:
        resolve_data_yaml({}, "jobs/j/dataset/", s3=object())  # type: ignore[arg-type]
    assert str(misused.value) == "resolve_data_yaml on S3 needs bucket="


def test_an_image_list_named_as_a_split_is_found_in_s3(s3: Any) -> None:
    from spotyolo.core.dataset import resolve_data_yaml

    for key in ("jobs/listed/dataset/lists/train.txt", "jobs/listed/dataset/lists/train.txt.bak"):
        s3.put_object(Bucket="bkt", Key=key, Body=b"../images/a.jpg\n")
    s3.put_object(Bucket="bkt", Key="jobs/listed/dataset/images/val/b.jpg", Body=b"img")
    data = {"train": "lists/train.txt", "val": "images/val", "names": ["cat"]}
    spec = resolve_data_yaml(data, "jobs/listed/dataset/", s3=s3, bucket="bkt")
    assert spec.splits == {"train": ["lists/train.txt"], "val": ["images/val"]}


def test_the_summary_counts_backgrounds_labels_and_instances_per_class(tmp_path: Path) -> None:
    """What `spotyolo validate` shows per split: images without a label and with an empty one
    are backgrounds; a class seen in several images adds up."""
    job = dataset(tmp_path)
    ds = job / "dataset"
    for name in ("w", "y"):  # w: no label at all; y: labelled below
        (ds / "images" / "train" / f"{name}.jpg").write_bytes(b"img")
    (ds / "labels" / "train" / "z.txt").write_text("")  # an empty label: a background too
    (ds / "labels" / "train" / "y.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n")
    summary, problems = inspect_dataset(LocalSource(job))
    train = summary.splits["train"]
    assert problems == []
    assert (train.images, train.labels, train.backgrounds, train.instances) == (5, 4, 2, 5)
    assert summary.per_class["train"] == {"cat": 3, "dog": 1, "bird": 1}


def test_a_label_that_vanished_after_the_listing_is_a_problem_of_that_file(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    listed = [
        *LocalSource(job).list(),
        Entry("dataset/images/train/q.jpg", 3, 0.0),
        Entry("dataset/labels/train/q.txt", 20, 0.0),  # deleted while the check ran
    ]
    (problem,) = refusals(job, listed)
    assert problem.startswith("dataset/labels/train/q.txt: could not be read: [Errno 2] No such file")


def test_a_label_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    job = dataset(tmp_path)
    listed = [
        dataclasses.replace(e, size=MAX_LABEL_BYTES) if e.path.endswith("train/a.txt") else e
        for e in LocalSource(job).list()
    ]
    assert refusals(job, listed) == []


class InMemory:
    """A dataset source held in memory (what a listing and GETs would give)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def list(self, prefix: str = "") -> Iterator[Entry]:
        for path, body in sorted(self.files.items()):
            if path.startswith(prefix):
                yield Entry(path, len(body), 0.0)

    def read(self, path: str) -> bytes:
        return self.files[path]

    def where(self, path: str) -> str:
        return path


def test_every_label_of_a_large_dataset_is_checked(tmp_path: Path) -> None:
    """Labels are checked in chunks of CHECK_CHUNK: the last label of a dataset of more than two
    chunks is checked too."""
    from spotyolo.core.dataset.inspection import CHECK_CHUNK

    n = 2 * CHECK_CHUNK + 5
    files = {
        "dataset/data.yaml": b"path: .\ntrain: images/train\nval: images/train\nnames: [cat]\n",
        **{f"dataset/images/train/{i:05d}.jpg": b"img" for i in range(n)},
        **{f"dataset/labels/train/{i:05d}.txt": b"0 0.5 0.5 0.1 0.1\n" for i in range(n)},
    }
    files[f"dataset/labels/train/{n - 1:05d}.txt"] = b"7 0.5 0.5 0.1 0.1\n"
    summary, problems = inspect_dataset(InMemory(files))
    assert summary.splits["train"].instances == n - 1
    assert [(p.where, p.line) for p in problems] == [(f"dataset/labels/train/{n - 1:05d}.txt", 1)]


def test_an_images_label_is_found_by_ultralytics_rule_the_last_images_folder(tmp_path: Path) -> None:
    """Ultralytics swaps only the last /images/ for /labels/: a dataset kept in a folder that is
    itself called images still finds its labels."""
    from spotyolo.core.dataset import label_path

    assert label_path("images/shapes/images/train/a.jpg") == "images/shapes/labels/train/a.txt"
    assert label_path("images/train/images/a.b.png") == "images/train/labels/a.b.txt"


SHAPE = (
    "a label line is 'class x y w h' (5 values) or a polygon 'class x1 y1 x2 y2 x3 y3 ...' "
    "(a class and at least 3 x,y points)"
)


@pytest.mark.parametrize(
    ("raw", "nc", "problems"),
    [
        (b"0 0.5 0.5 0.1\n", 3, [(1, f"4 values; {SHAPE}")]),
        (b"0 0.1 0.1 0.2 0.2 0.3\n", 3, [(1, f"6 values; {SHAPE}")]),
        (b"x 0.5 0.5 0.1 0.1\n", 3, [(1, "class id 'x' is not an integer")]),
        (b"1.5 0.5 0.5 0.1 0.1\n", 3, [(1, "class id '1.5' is not an integer")]),
        (b"3 0.5 0.5 0.1 0.1\n", 3, [(1, "class id 3 is out of range: data.yaml has 3 class(es), ids 0-2")]),
        (b"1 0.5 0.5 0.1 0.1\n", 1, [(1, "class id 1 is out of range: data.yaml has 1 class(es), ids 0")]),
        (b"2 0.5 0.5 0.1 0.1\n", 2, [(1, "class id 2 is out of range: data.yaml has 2 class(es), ids 0-1")]),
        (
            b"0 1.5 0.5 0.1 0.1\n",
            3,
            [
                (
                    1,
                    "coordinate '1.5' is outside [0, 1]: YOLO coordinates are normalised "
                    "(pixels divided by the image width/height)",
                )
            ],
        ),
        (b"0 nan 0.5 0.1 0.1\n", 3, [(1, "coordinate 'nan' is not finite")]),
        (b"\x00\x01", 3, [(None, "binary file, not a YOLO label text file")]),
        (b"0 0.5 0.5 0.1 0.1\n\xff\xfe\n", 3, [(2, "not UTF-8 text: save label files as plain text")]),
        (b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\n0 1 1 1 1\n", 3, []),  # a BOM, and the edges of [0, 1]
    ],
)
def test_each_label_problem_word_for_word(
    raw: bytes, nc: int, problems: list[tuple[int | None, str]]
) -> None:
    from spotyolo.core.dataset import check_label_text

    assert check_label_text(raw, nc).problems == problems


def test_a_label_too_large_to_be_one_is_not_parsed() -> None:
    from spotyolo.core.dataset import check_label_text

    raw = b"0" * (MAX_LABEL_BYTES + 1)
    assert check_label_text(raw, 3).problems == [
        (
            None,
            f"{MAX_LABEL_BYTES + 1} bytes is too large for a label file (the limit is {MAX_LABEL_BYTES}): "
            "is it a label? Remove it, or split its objects",
        )
    ]
    assert check_label_text(b"0 0.5 0.5 0.1 0.1\n".ljust(MAX_LABEL_BYTES, b"\n"), 3).problems == []


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("/etc/x", "key has an empty segment ('dataset//...'), which leads to / on the instance: rename it"),
        ("a\\b.jpg", "key has a backslash: S3 keys use '/' between folders; upload it again with '/'"),
        (
            "a/../b",
            "key has a '..' segment, which leads outside dataset/: rename it to a path inside dataset/",
        ),
        (
            "a//b",
            "key has an empty segment ('//') or a '.' segment: rename it to a plain path inside dataset/",
        ),
        (
            "a/b//c",
            "key has an empty segment ('//') or a '.' segment: rename it to a plain path inside dataset/",
        ),
        (
            "./a",
            "key has an empty segment ('//') or a '.' segment: rename it to a plain path inside dataset/",
        ),
        (
            "a/./b",
            "key has an empty segment ('//') or a '.' segment: rename it to a plain path inside dataset/",
        ),
        ("a/b/", None),  # the S3 console's folder marker
        ("images/a.jpg", None),
    ],
)
def test_each_dataset_key_that_cannot_be_downloaded_where_it_belongs_is_named(
    key: str, why: str | None
) -> None:
    from spotyolo.core.dataset.paths import escaping_key

    assert escaping_key(key) == why


class Numbered:
    """A source of ``n`` tiny files, listed lazily (a bucket of a few hundred thousand objects)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def list(self, prefix: str = "") -> Iterator[Entry]:
        return (Entry(f"{prefix}f{i}", 1, 0.0) for i in range(self.n))

    def read(self, path: str) -> bytes:
        raise AssertionError("a listing that is too long is not read")

    def where(self, path: str) -> str:
        return f"s3://bkt/{path}"


def test_a_dataset_of_more_files_than_validate_can_read_is_refused_before_reading() -> None:
    from spotyolo.core.dataset import bounded_listing
    from spotyolo.core.dataset.inspection import MAX_JOB_FILES

    listing, problem = bounded_listing(Numbered(MAX_JOB_FILES), "jobs/big/")
    assert len(listing) == MAX_JOB_FILES and problem is None
    listing, problem = bounded_listing(Numbered(MAX_JOB_FILES + 1), "jobs/big/")
    assert len(listing) == MAX_JOB_FILES and problem is not None
    assert str(problem) == (
        f"s3://bkt/jobs/big/: more than {MAX_JOB_FILES} files: Validate reads every label file before "
        "any spend and cannot read more within its time; split the dataset or remove files training "
        "does not use"
    )
    _, problems = inspect_dataset(Numbered(MAX_JOB_FILES + 1))
    assert [str(p) for p in problems] == [str(problem).replace("jobs/big/", "dataset/")]


def test_validate_lists_one_file_past_the_limit_and_no_further() -> None:
    """A prefix of millions of objects is not listed to the end before it is refused."""
    from spotyolo.core.dataset import bounded_listing
    from spotyolo.core.dataset.inspection import MAX_JOB_FILES

    listed = 0

    class Counted(Numbered):
        def list(self, prefix: str = "") -> Iterator[Entry]:
            nonlocal listed
            for entry in super().list(prefix):
                listed += 1
                yield entry

    _, problem = bounded_listing(Counted(2 * MAX_JOB_FILES), "jobs/big/")
    assert problem is not None and listed == MAX_JOB_FILES + 1


@pytest.mark.parametrize("too_large", [False, True])
def test_a_data_yaml_over_a_mebibyte_is_refused_unread(tmp_path: Path, too_large: bool) -> None:
    from spotyolo.core.dataset.spec import MAX_DATA_YAML_BYTES

    job = dataset(tmp_path)
    size = MAX_DATA_YAML_BYTES + too_large
    listed = [
        dataclasses.replace(e, size=size) if e.path == "dataset/data.yaml" else e
        for e in LocalSource(job).list()
    ]
    expected = (
        f"dataset/data.yaml: file is {size} bytes; the limit is {MAX_DATA_YAML_BYTES} bytes: "
        "is this the right file?"
    )
    assert refusals(job, listed) == ([expected] if too_large else [])


def test_a_long_data_yaml_of_a_dataset_is_read(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(9000)]
    job = dataset(tmp_path, f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    assert (job / "dataset" / "data.yaml").stat().st_size > 64 * 1024
    summary, problems = inspect_dataset(LocalSource(job))
    assert problems == [] and len(summary.names) == 9000


def test_every_problem_is_reported_at_once_and_no_flood_without_names(tmp_path: Path) -> None:
    """A split problem does not hide the labels' problems (one upload fixes all); but without
    class names no label is judged (each would be 'out of range')."""
    job = dataset(tmp_path, "path: .\ntrain: images/train\nval: images/nowhere\nnames: [cat, dog, bird]\n")
    (job / "dataset" / "labels" / "train" / "a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    found = refusals(job)
    assert len(found) == 2 and "val 'images/nowhere' not found" in found[0]
    assert (
        found[1]
        == "dataset/labels/train/a.txt:1: class id 7 is out of range: data.yaml has 3 class(es), ids 0-2"
    )
    nameless = dataset(tmp_path / "nameless", "path: .\ntrain: images/train\nval: images/val\n")
    assert [p for p in refusals(nameless) if "labels/" in p] == []


def test_splits_may_name_any_folder_and_folder_markers_are_not_files(tmp_path: Path) -> None:
    """`train: images` (a grandparent of the files), `train: .`, a leading or trailing slash in
    the dataset folder's name, and the S3 console's folder markers."""
    job = dataset(tmp_path, "path: .\ntrain: images\nval: images/val\nnames: [cat, dog, bird]\n")
    assert refusals(job) == []
    job = dataset(tmp_path / "dot", "path: .\ntrain: .\nval: images/val\nnames: [cat, dog, bird]\n")
    (job / "dataset" / "top.jpg").write_bytes(b"img")
    assert refusals(job) == []
    files = {e.path: (job / e.path).read_bytes() for e in LocalSource(job).list()}
    files.update({"dataset/": b"", "dataset/images/train/": b""})
    summary, problems = inspect_dataset(InMemory(files), dataset_dir="/dataset/")
    assert problems == [] and summary.splits["val"].images == 2
    # the two markers are not files of the dataset (nor is config.yaml)
    assert summary.files == len(files) - 3 == len(list(LocalSource(job).list("dataset/")))


RANGE = "nc must be a positive integer (the number of classes), got"
PATH_ABSOLUTE = (
    "is absolute: in a job the dataset root is the folder holding data.yaml; remove 'path:' (or set "
    "'path: .')"
)
#: a Windows share, as data.yaml holds it ('\\server\share')
SHARE = "\\\\server\\share"
NO_TRAIN = (
    "data.yaml has no 'train' split: add 'train: train/images' (a folder of images, relative to data.yaml)"
)
ABSOLUTE = "is an absolute path: use a path relative to data.yaml's folder, e.g. 'train: train/images'"


@pytest.mark.parametrize(
    ("extra", "problems", "names"),
    [
        ("names: cat\n", ["4:1: names must be a list (['cat', 'dog']) or a mapping (0: cat)"], []),
        ("names: []\n", ["4:1: names is empty: list the class names"], []),
        ("nc: x\n", [f"4:1: {RANGE} 'x'"], []),
        ("nc: true\n", ["4:1: nc must be an integer, got True"], []),
        ("nc: 0\n", [f"4:1: {RANGE} 0"], []),
        ("nc: 2.5\n", [f"4:1: {RANGE} 2.5"], []),
        ("nc: 3.0\nnames: [cat, dog, bird]\n", [], ["cat", "dog", "bird"]),
        ("nc: '3'\nnames: [cat, dog, bird]\n", [], ["cat", "dog", "bird"]),
        ("nc: 3\n", [], ["class_0", "class_1", "class_2"]),
        ("", [": data.yaml has neither names nor nc: add names: [class0, class1, ...]"], []),
        (
            "names: [cat, dog, bird]\nchannels: 2\n",
            ["5:1: channels must be 1 or 3, got 2"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\nchannels: true\n",
            ["5:1: channels must be 1 or 3, got True"],
            ["cat", "dog", "bird"],
        ),
        (
            "nc: 20001\n",
            [
                "4:1: nc: 20001 is more classes than a detection dataset has: at most 20000 are accepted "
                "(LVIS has 1203, V3Det 13204); set nc to the number of names"
            ],
            [],
        ),
        (
            "names: [cat, dog, bird]\ntrain: s3://bkt/x\n",
            [f"4:1: train 's3://bkt/x' {ABSOLUTE}"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\ntrain: /data/x\n",
            [f"4:1: train '/data/x' {ABSOLUTE}"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\ntrain: ..\n",
            ["4:1: train '..' leads outside the job's dataset folder"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\ntrain: 5\n",
            ["4:1: train must be a folder or a list of folders, got 5"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\ntrain: images/nope\n",
            ["4:1: train 'images/nope' not found: there is no dataset/images/nope (folder or .txt list)"],
            ["cat", "dog", "bird"],
        ),
        (
            "names: [cat, dog, bird]\ntrain: ''\n",
            [f"4:1: {NO_TRAIN}"],
            ["cat", "dog", "bird"],
        ),
        ("names: [cat, dog, bird]\ntrain: ['images\\train']\n", [], ["cat", "dog", "bird"]),
    ],
)
def test_each_data_yaml_problem_word_for_word(
    tmp_path: Path, extra: str, problems: list[str], names: list[str]
) -> None:
    base = "path: .\nval: images/val\n" + ("" if "train:" in extra else "train: images/train\n")
    job = dataset(tmp_path, base + extra)
    summary, found = inspect_dataset(LocalSource(job))
    assert [str(p) for p in found] == [
        f"dataset/data.yaml{'' if p.startswith(':') else ':'}{p}" for p in problems
    ]
    assert summary.names == names


@pytest.mark.parametrize("path", ["C:\\data", "\\\\server\\share", "c:/data"])
def test_a_windows_path_in_data_yaml_is_absolute(tmp_path: Path, path: str) -> None:
    from spotyolo.core.yamlsafe import shown

    job = dataset(tmp_path, f"path: .\nval: images/val\nnames: [cat]\ntrain: '{path}'\n")
    assert refusals(job)[0] == f"dataset/data.yaml:4:1: train {shown(path)} {ABSOLUTE}"


def test_too_many_or_too_long_class_names_are_refused(tmp_path: Path) -> None:
    from spotyolo.core.dataset.spec import MAX_CLASS_NAME_CHARS, MAX_CLASSES

    many = "[" + ", ".join(f"c{i}" for i in range(MAX_CLASSES + 1)) + "]"
    job = dataset(tmp_path, f"path: .\ntrain: images/train\nval: images/val\nnames: {many}\n")
    assert refusals(job)[0] == (
        f"dataset/data.yaml:4:1: names lists {MAX_CLASSES + 1} classes; at most {MAX_CLASSES} are accepted "
        "(LVIS has 1203, V3Det 13204): is this the right list?"
    )
    long = "b" * (MAX_CLASS_NAME_CHARS + 1)
    job = dataset(tmp_path / "long", f"path: .\ntrain: images/train\nval: images/val\nnames: [cat, {long}]\n")
    assert refusals(job)[0] == (
        f"dataset/data.yaml:4:1: class 1's name is {MAX_CLASS_NAME_CHARS + 1} characters ('{long[:30]}'...); "
        f"at most {MAX_CLASS_NAME_CHARS}: shorten it"
    )


@pytest.mark.parametrize(
    ("path", "problems"),
    [
        ("5", ["dataset/data.yaml:1:1: path must be a string, got 5"]),
        (
            "/data/x",
            [
                "dataset/data.yaml:1:1: path '/data/x' is absolute: in a job the dataset root is the folder "
                "holding data.yaml; remove 'path:' (or set 'path: .')"
            ],
        ),
        ("''", []),
        ("sub/..", []),
        (
            "../other",
            [
                "dataset/data.yaml:1:1: path '../other' leads outside the job's dataset folder; remove "
                "'path:' (the dataset root is the folder holding data.yaml)"
            ],
        ),
        (f"'{SHARE}'", [f"dataset/data.yaml:1:1: path {shown(SHARE)} {PATH_ABSOLUTE}"]),
        ("'C:'", [f"dataset/data.yaml:1:1: path 'C:' {PATH_ABSOLUTE}"]),
    ],
)
def test_the_path_key_of_data_yaml(tmp_path: Path, path: str, problems: list[str]) -> None:
    job = dataset(tmp_path, f"path: {path}\ntrain: images/train\nval: images/val\nnames: [cat, dog, bird]\n")
    assert refusals(job) == problems


def test_the_largest_accepted_class_counts_and_names(tmp_path: Path) -> None:
    """The limits are inclusive: nc 1 and nc at the limit, names at the limit, a name of the
    longest accepted length."""
    from spotyolo.core.dataset import resolve_data_yaml
    from spotyolo.core.dataset.spec import MAX_CLASS_NAME_CHARS, MAX_CLASSES

    ds = dataset(tmp_path) / "dataset"
    splits = {"train": "images/train", "val": "images/val"}
    assert resolve_data_yaml({**splits, "nc": 1}, ds).nc == 1
    assert resolve_data_yaml({**splits, "nc": MAX_CLASSES}, ds).nc == MAX_CLASSES
    names = [f"c{i}" for i in range(MAX_CLASSES)]
    assert resolve_data_yaml({**splits, "names": names}, ds).nc == MAX_CLASSES
    longest = "n" * MAX_CLASS_NAME_CHARS
    assert resolve_data_yaml({**splits, "names": [longest]}, ds).names == [longest]


# ---- what mutation testing of the dataset check found (issue 14)


def test_validation_stands_for_val_when_there_is_no_val(tmp_path: Path) -> None:
    """Some exports write ``validation:``; its problems are placed at its line; ``val:`` wins."""
    rest = "path: .\ntrain: images/train\n"
    job = dataset(tmp_path, rest + "validation: images/val\nnames: [cat, dog, bird]\n")
    summary, problems = inspect_dataset(LocalSource(job))
    assert problems == [] and summary.splits["val"].images == 2
    job = dataset(tmp_path / "missing", rest + "validation: images/nope\nnames: [cat, dog, bird]\n")
    assert refusals(job) == [
        "dataset/data.yaml:3:1: val 'images/nope' not found: there is no dataset/images/nope "
        "(folder or .txt list)"
    ]
    job = dataset(
        tmp_path / "both", rest + "val: images/val\nvalidation: images/nope\nnames: [cat, dog, bird]\n"
    )
    assert refusals(job) == []


def _folders(*paths: str) -> Any:
    """``exists`` of a dataset folder holding these folders (and the folder itself)."""
    return lambda path: path in {"", *paths}


def test_a_dataset_root_below_data_yaml_and_roboflows_parent_paths_under_it() -> None:
    """``path: sub`` puts every split under sub/ (written with a Windows separator too); a
    Roboflow ``../x`` is taken as written when that exists, else retried under the root."""
    exists = _folders(
        "sub/images/train", "sub/images/val", "sub/train/images", "valid/images", "sub/valid/images"
    )
    for root in ("sub", "sub\\"):
        spec, problems = resolve_spec(
            {"path": root, "train": "images/train", "val": "images/val", "nc": 1}, exists
        )
        assert problems == [] and spec.splits == {"train": ["sub/images/train"], "val": ["sub/images/val"]}
    roboflow = {"path": "sub", "train": "../train/images", "val": "../valid/images", "names": ["crack"]}
    spec, problems = resolve_spec(roboflow, exists)
    assert problems == [] and spec.splits == {"train": ["sub/train/images"], "val": ["valid/images"]}


def test_every_split_problem_is_reported_at_once_and_a_missing_test_split_is_skipped(tmp_path: Path) -> None:
    job = dataset(tmp_path, "path: .\nval: images/nope\nnames: [cat, dog, bird]\ntest: images/gone\n")
    summary, problems = inspect_dataset(LocalSource(job))
    assert [str(p) for p in problems] == [
        f"dataset/data.yaml: {NO_TRAIN}",
        "dataset/data.yaml:2:1: val 'images/nope' not found: there is no dataset/images/nope "
        "(folder or .txt list)",
    ]
    assert summary.warnings == [
        "test 'images/gone' does not exist (dataset/images/gone); the test split is skipped"
    ]


def test_an_empty_entry_of_a_splits_list_is_the_dataset_folder(tmp_path: Path) -> None:
    job = dataset(tmp_path, "path: .\ntrain: ['']\nval: images/val\nnames: [cat, dog, bird]\n")
    summary, problems = inspect_dataset(LocalSource(job))
    assert problems == [] and summary.splits["train"].images == 5


def test_a_stray_text_file_beside_images_at_the_top_is_a_label_without_its_image(tmp_path: Path) -> None:
    """With ``train: .`` a label sits beside its image: a .txt with no image is named."""
    job = dataset(tmp_path, "path: .\ntrain: .\nval: images/val\nnames: [cat, dog, bird]\n")
    (job / "dataset" / "notes.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert refusals(job) == [
        "dataset/notes.txt: label file without an image: no dataset/notes.<jpg|png|...> exists; "
        "upload its image or delete the label"
    ]


def test_a_label_without_its_image_names_the_image_by_the_last_labels_folder(tmp_path: Path) -> None:
    """A dataset kept in a folder that is itself called labels: the image a label stands for is
    found by swapping only its last labels/ folder, as Ultralytics does the other way."""
    job = dataset(tmp_path, "path: .\ntrain: labels/x/images\nval: labels/x/images\nnames: [cat]\n")
    ds = job / "dataset" / "labels" / "x"
    (ds / "images").mkdir(parents=True)
    (ds / "labels").mkdir()
    (ds / "images" / "a.jpg").write_bytes(b"img")
    (ds / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (ds / "labels" / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert refusals(job) == [
        "dataset/labels/x/labels/b.txt: label file without an image: no "
        "dataset/labels/x/images/b.<jpg|png|...> exists; upload its image or delete the label"
    ]


def test_the_refusal_counts_the_files_whose_lines_it_does_not_show(tmp_path: Path) -> None:
    from spotyolo.core.config import check_job

    job = dataset(tmp_path, "path: .\ntrain: lists/train.txt\nval: lists/val.txt\nnames: [cat, dog, bird]\n")
    (job / "dataset" / "lists").mkdir()
    for split in ("train", "val"):
        bad = "".join(f"../images/{split}/n{i}.jpg\n" for i in range(8))
        (job / "dataset" / "lists" / f"{split}.txt").write_text(bad)
    with pytest.raises(JobInvalid) as refused:
        check_job(LocalSource(job))
    assert (
        str(refused.value).splitlines()[-1]
        == "  ... and 6 more in 2 files (16 in total; the first 10 are shown)"
    )
