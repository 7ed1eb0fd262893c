"""data.yaml resolution (local and S3) and the real-world layouts users upload."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.config import check_job
from spotyolo.core.dataset import (
    LocalSource,
    S3Source,
    check_dataset,
    check_label_text,
    label_path,
    resolve_data_yaml,
    write_local_data_yaml,
)

ROBOFLOW_YAML = """\
train: ../train/images
val: ../valid/images
test: ../test/images

nc: 2
names: ['crack', 'dent']

roboflow:
  workspace: acme
  project: defects
  version: 3
  license: CC BY 4.0
  url: https://universe.roboflow.com/acme/defects/dataset/3
"""


def _files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def roboflow_job(job: Path) -> Path:
    """A Roboflow export: ../ paths, roboflow block, upper-case suffixes, polygons, backgrounds."""
    return _files(
        job,
        {
            "config.yaml": "model: yolo11n.yaml\nepochs: 1\n",
            "dataset/data.yaml": ROBOFLOW_YAML,
            "dataset/README.roboflow.txt": "exported",
            "dataset/train/images/a_jpg.rf.1.JPG": b"img",
            "dataset/train/labels/a_jpg.rf.1.txt": "0 0.5 0.5 0.2 0.2\n\n1 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n",
            "dataset/train/images/b.PNG": b"img",
            "dataset/train/labels/b.txt": "",  # empty label file: a background
            "dataset/train/images/c.jpeg": b"img",  # no label file at all: a background
            "dataset/valid/images/d.jpg": b"img",
            "dataset/valid/labels/d.txt": "1 0.5 0.5 0.3 0.3\n",
        },
    )


def test_roboflow_export_is_accepted(tmp_path: Path) -> None:
    _, summary = check_job(LocalSource(roboflow_job(tmp_path / "job")))
    train = summary.splits["train"]
    assert (train.images, train.labels, train.backgrounds) == (3, 2, 2)
    assert train.instances == 2 and summary.per_class["train"] == {"crack": 1, "dent": 1}
    assert summary.per_class["val"] == {"crack": 0, "dent": 1}
    assert summary.warnings and "test split is skipped" in summary.warnings[0]
    assert summary.files == 9 and summary.bytes > 0


def test_resolver_roboflow_local_and_s3_agree(tmp_path: Path) -> None:
    job = roboflow_job(tmp_path / "job")
    data = yaml.safe_load(ROBOFLOW_YAML)
    local = resolve_data_yaml(data, job / "dataset")
    assert local.splits == {"train": ["train/images"], "val": ["valid/images"]}
    assert local.names == ["crack", "dent"] and local.nc == 2
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bkt")
        for path in job.rglob("*"):
            if path.is_file():
                s3.put_object(
                    Bucket="bkt", Key=f"jobs/j/{path.relative_to(job).as_posix()}", Body=path.read_bytes()
                )
        remote = resolve_data_yaml(data, "jobs/j/dataset/", s3=s3, bucket="bkt")
        assert remote.splits == local.splits and remote.names == local.names
        summary = check_dataset(S3Source(s3, "bkt", "jobs/j/"))
        assert summary.splits["train"].images == 3
        with pytest.raises(JobInvalid, match=r"jobs/j/dataset/data.yaml: train '../../x' leads outside"):
            resolve_data_yaml({**data, "train": "../../x"}, "jobs/j/dataset", s3=s3, bucket="bkt")


def test_ultralytics_style_with_dict_names_and_path(tmp_path: Path) -> None:
    ds = _files(
        tmp_path / "ds",
        {
            "data.yaml": "path: .\ntrain: images/train\nval: [images/val]\nnames:\n  0: person\n  1: car\n",
            "images/train/x.Png": b"i",
            "labels/train/x.txt": "1 0.5 0.5 1 1\n",
            "labels/train/classes.txt": "person\ncar\n",
            "images/val/y.tif": b"i",
        },
    )
    spec = resolve_data_yaml(yaml.safe_load((ds / "data.yaml").read_text()), ds)
    assert spec.splits == {"train": ["images/train"], "val": ["images/val"]} and spec.names == [
        "person",
        "car",
    ]


def test_txt_image_lists_are_read(tmp_path: Path) -> None:
    _files(
        tmp_path / "job",
        {
            "config.yaml": "model: yolo11n.yaml\n",
            "dataset/data.yaml": "train: train.txt\nval: train.txt\nnames: [a]\n",
            "dataset/train.txt": "./images/one.jpg\nimages/two.jpg\n",
            "dataset/images/one.jpg": b"i",
            "dataset/images/two.jpg": b"i",
            "dataset/labels/one.txt": "0 0.5 0.5 0.1 0.1\n",
        },
    )
    _, summary = check_job(LocalSource(tmp_path / "job"))
    assert summary.splits["train"].images == 2 and summary.splits["train"].backgrounds == 1


def test_label_paths_follow_ultralytics() -> None:
    assert label_path("train/images/a.b.JPG") == "train/labels/a.b.txt"
    assert label_path("images/train/sub/x.png") == "labels/train/sub/x.txt"
    assert label_path("flat/x.jpg") == "flat/x.txt"


def test_label_lines() -> None:
    check = check_label_text(b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\r\n\r\n  \n2.0 0 0 1 0 1 1\n", nc=3)
    assert check.problems == [] and check.instances == {0: 1, 2: 1}


def test_written_local_data_yaml_is_what_ultralytics_reads(tmp_path: Path, ultralytics_offline: Path) -> None:
    from ultralytics.data.utils import check_det_dataset

    ds = roboflow_job(tmp_path / "job") / "dataset"
    written = write_local_data_yaml(ds)
    doc = yaml.safe_load(written.read_text())
    assert doc["train"] == str(ds.resolve() / "train" / "images") and "roboflow" not in doc
    checked = check_det_dataset(str(written), autodownload=False)
    assert checked["nc"] == 2 and Path(checked["val"]) == ds.resolve() / "valid" / "images"
