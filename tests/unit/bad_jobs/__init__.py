"""A corpus of bad jobs: each is a small valid job folder with one mistake users make.

``CASES`` lists (id, mutate, file, line, needle): after ``mutate(job_dir)`` the job must be
refused with a message naming ``file`` (relative to the job folder), ``line`` where there is
one, and containing ``needle`` (the problem). Used by the local check tests and, uploaded to
the emulated S3, by the Lambda tests (which also assert that nothing was locked or written).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

CONFIG = """\
model: yolo11n.yaml
epochs: 3
imgsz: 64
batch: 8
instance_type: g5.xlarge
capacity: spot-then-on-demand
max_interruptions: 2
stall_hours: 0.5
max_hours: 2
target: {metric: recall, min: 0.5}
"""

DATA_YAML = """\
path: .
train: images/train
val: images/val
names: [cat, dog, bird]
"""


def make_job(job: Path) -> Path:
    """A small valid job: 3 train + 2 val images, one background, Ultralytics layout."""
    (job / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (job / "config.yaml").write_text(CONFIG)
    ds = job / "dataset"
    (ds / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (ds / "data.yaml").write_text(DATA_YAML)
    labels = {
        "train/a": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        "train/b": "2 0.1 0.1 0.2 0.2 0.3 0.1\n",  # polygon: class + 3 points
        "val/c": "1 0.5 0.5 0.4 0.4\n",
    }
    for name in ("train/a", "train/b", "train/z", "val/c", "val/d"):
        image = ds / "images" / f"{name}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"\xff\xd8 not really a jpeg")
    for name, text in labels.items():
        label = ds / "labels" / f"{name}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(text)
    (ds / "labels" / "val" / "d.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    return job


class Case(NamedTuple):
    id: str
    mutate: Callable[[Path], object]
    file: str
    line: int | None
    needle: str


def _config(text: str) -> Callable[[Path], object]:
    return lambda job: (job / "config.yaml").write_text(text)


def _config_bytes(data: bytes) -> Callable[[Path], object]:
    return lambda job: (job / "config.yaml").write_bytes(data)


def _add(line: str) -> Callable[[Path], object]:
    return lambda job: (job / "config.yaml").write_text(CONFIG + line)


def _data(text: str) -> Callable[[Path], object]:
    return lambda job: (job / "dataset" / "data.yaml").write_text(text)


def _label(name: str, text: str | bytes) -> Callable[[Path], None]:
    def mutate(job: Path) -> None:
        path = job / "dataset" / "labels" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    return mutate


def _touch(rel: str) -> Callable[[Path], None]:
    return lambda job: (job / rel).write_bytes(b"x")


def _remove(rel: str) -> Callable[[Path], None]:
    def mutate(job: Path) -> None:
        path = job / rel
        if path.is_dir():
            for child in sorted(path.rglob("*"), reverse=True):
                child.unlink() if child.is_file() else child.rmdir()
            path.rmdir()
        else:
            path.unlink()

    return mutate


def _many_bad_lines(job: Path) -> None:
    (job / "dataset" / "labels" / "train" / "a.txt").write_text(
        "".join("9 0.5 0.5 0.1 0.1\n" for _ in range(25))
    )


N = CONFIG.count("\n")  # the line an appended key lands on is N + 1
CFG, DY = "config.yaml", "dataset/data.yaml"
TA = "dataset/labels/train/a.txt"

CASES: list[Case] = [
    # ---- config.yaml: keys and values
    Case("unknown-key", _add("epoch: 3\n"), CFG, N + 1, "did you mean 'epochs'"),
    Case("typo-imgsz", _add("imgz: 640\n"), CFG, N + 1, "did you mean 'imgsz'"),
    Case("lr0-range", _add("lr0: 5\n"), CFG, N + 1, "lr0: 5 is out of range: allowed 0.0 to 1.0"),
    Case("epochs-zero", _config(CONFIG.replace("epochs: 3", "epochs: 0")), CFG, 2, "must be >= 1"),
    Case("epochs-text", _config(CONFIG.replace("epochs: 3", "epochs: ten")), CFG, 2, "must be an integer"),
    Case("bool-as-text", _add("cos_lr: maybe\n"), CFG, N + 1, "must be true or false"),
    Case("mode-predict", _add("mode: predict\n"), CFG, N + 1, "only 'mode: train'"),
    Case("task-segment", _add("task: segment\n"), CFG, N + 1, "detection models"),
    Case("data-key", _add("data: coco8.yaml\n"), CFG, N + 1, "the dataset is the job's dataset/ folder"),
    Case("resume-key", _add("resume: true\n"), CFG, N + 1, "resumes interrupted runs"),
    Case("project-key", _add("project: runs\n"), CFG, N + 1, "decides where a run's outputs go"),
    Case("device-key", _add("device: 0\n"), CFG, N + 1, "instance's GPU"),
    Case("predict-only", _add("show: true\n"), CFG, N + 1, "predict/export setting"),
    Case("save-false", _add("save: false\n"), CFG, N + 1, "checkpoints"),
    Case("batch-zero", _config(CONFIG.replace("batch: 8", "batch: 0")), CFG, 4, "not a batch size"),
    Case(
        "model-unknown", _config(CONFIG.replace("yolo11n.yaml", "yolo11q.pt")), CFG, 1, "neither a detection"
    ),
    Case("model-missing-file", _config(CONFIG.replace("yolo11n.yaml", "mine/best.pt")), CFG, 1, "nor a file"),
    Case("model-onnx", _config(CONFIG.replace("yolo11n.yaml", "yolo11n.onnx")), CFG, 1, "use a .pt"),
    Case("model-absent", _config(CONFIG.replace("model: yolo11n.yaml\n", "")), CFG, None, "model: missing"),
    Case(
        "capacity", _config(CONFIG.replace("spot-then-on-demand", "cheap")), CFG, 6, "allowed spot, on-demand"
    ),
    Case("both-types", _add("instance_types: [g5.xlarge]\n"), CFG, N + 1, "not both"),
    Case("bad-type", _config(CONFIG.replace("g5.xlarge", "g5 xlarge")), CFG, 5, "not an EC2 instance type"),
    Case("target-metric", _config(CONFIG.replace("metric: recall", "metric: acc")), CFG, 10, "target.metric"),
    Case("target-min", _config(CONFIG.replace("min: 0.5", "min: 80")), CFG, 10, "target.min: 80"),
    Case("target-typo", _config(CONFIG.replace("min: 0.5", "minimum: 0.5")), CFG, 10, "did you mean 'min'"),
    Case("stall-zero", _config(CONFIG.replace("stall_hours: 0.5", "stall_hours: 0")), CFG, 8, "more than 0"),
    Case(
        "stall-over-max", _config(CONFIG.replace("stall_hours: 0.5", "stall_hours: 5")), CFG, 8, "longer than"
    ),
    Case(
        "interruptions",
        _config(CONFIG.replace("max_interruptions: 2", "max_interruptions: -1")),
        CFG,
        7,
        "0 or more",
    ),
    # ---- config.yaml: hostile or broken YAML
    Case("duplicate", _add("epochs: 5\n"), CFG, N + 1, "duplicate key 'epochs' (first on line 2)"),
    Case(
        "alias-bomb",
        _config("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nmodel: yolo11n.yaml\n"),
        CFG,
        2,
        "aliases",
    ),
    Case("not-mapping", _config("- model: yolo11n.yaml\n- epochs: 3\n"), CFG, 1, "must be a mapping"),
    Case("binary", _config_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00"), CFG, None, "binary"),
    Case("latin-1", _config_bytes(b"model: yolo11n.yaml\n# caf\xe9\n"), CFG, 2, "not UTF-8"),
    Case("huge", _config("model: yolo11n.yaml\n" + "# padding\n" * 8000), CFG, None, "the limit is 65536"),
    Case("two-documents", _config(CONFIG + "---\nepochs: 4\n"), CFG, N + 1, "more than one YAML document"),
    Case("syntax", _config("model: yolo11n.yaml\nepochs: [3\nimgsz: 64\n"), CFG, None, "not valid YAML"),
    Case("empty", _config(""), CFG, None, "file is empty"),
    # ---- dataset/data.yaml
    Case("no-data-yaml", _remove("dataset/data.yaml"), DY, None, "missing"),
    Case("no-val", _data("train: images/train\nnames: [cat, dog, bird]\n"), DY, None, "no 'val' split"),
    Case("train-missing", _data(DATA_YAML.replace("images/train", "imgs/train")), DY, 2, "not found"),
    Case("abs-path", _data(DATA_YAML.replace("path: .", "path: /home/me/data")), DY, 1, "is absolute"),
    Case("outside", _data(DATA_YAML.replace("images/train", "../../../etc")), DY, 2, "outside"),
    Case("nc-mismatch", _data(DATA_YAML + "nc: 2\n"), DY, 5, "nc is 2 but names lists 3"),
    Case(
        "names-gap", _data(DATA_YAML.replace("[cat, dog, bird]", "{0: cat, 2: dog}")), DY, 4, "without gaps"
    ),
    Case("no-classes", _data("train: images/train\nval: images/val\n"), DY, None, "neither names nor nc"),
    Case(
        "data-alias",
        _data("x: &x images/val\ntrain: images/train\nval: *x\nnames: [a, b, c]\n"),
        DY,
        3,
        "aliases",
    ),
    # ---- labels
    Case(
        "class-range",
        _label("train/a.txt", "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n"),
        TA,
        2,
        "class id 3 is out of range: data.yaml has 3 class(es), ids 0-2",
    ),
    Case("class-float", _label("train/a.txt", "1.5 0.5 0.5 0.2 0.2\n"), TA, 1, "not an integer"),
    Case("coord-range", _label("train/a.txt", "\n0 0.5 0.5 1.2 0.2\n"), TA, 2, "outside [0, 1]"),
    Case("coord-pixels", _label("train/a.txt", "0 320 240 50 60\n"), TA, 1, "normalised"),
    Case("coord-nan", _label("train/a.txt", "0 nan 0.5 0.2 0.2\n"), TA, 1, "not finite"),
    Case("coord-text", _label("train/a.txt", "0 0.5 abc 0.2 0.2\n"), TA, 1, "'abc' is not a number"),
    Case("six-values", _label("train/a.txt", "0 0.5 0.5 0.2 0.2 0.9\n"), TA, 1, "6 values"),
    Case("odd-polygon", _label("train/a.txt", "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n"), TA, 1, "8 values"),
    Case("label-latin1", _label("train/a.txt", b"0 0.5 0.5 0.2 0.2\n# \xe9\n"), TA, 2, "not UTF-8"),
    Case(
        "orphan-label",
        _label("train/ghost.txt", "0 0.5 0.5 0.2 0.2\n"),
        "dataset/labels/train/ghost.txt",
        None,
        "label file without an image",
    ),
    Case("no-images", _remove("dataset/images/val"), DY, 3, "not found"),
    Case(
        "wrong-suffix",
        lambda job: [p.rename(p.with_suffix(".gif")) for p in (job / "dataset/images/val").iterdir()],
        "dataset/images/val/",
        None,
        "val split has no images (found only: .gif)",
    ),
    # ---- hostile or careless at scale (issue 10): refused in bounded time, memory and words
    Case(
        "nc-ten-million",
        _data(DATA_YAML.replace("names: [cat, dog, bird]", "nc: 10000000")),
        DY,
        4,
        "at most 20000",
    ),
    Case("class-name-long", _data(DATA_YAML.replace("bird", "b" * 3000)), DY, 4, "name is 3000 characters"),
    Case(
        "label-token-300kb",
        _label("train/a.txt", "0 " + "9" * 300_000 + " 0.5 0.2 0.2\n"),
        TA,
        1,
        "(300000 chars)",
    ),
    Case(
        "label-too-large",
        _label("train/a.txt", "0 0.5 0.5 0.2 0.2\n" * 120_000),
        TA,
        None,
        "too large for a label",
    ),
    Case(
        "key-backslash", _touch("dataset/images\\val\\e.jpg"), "dataset/images\\val\\e.jpg", None, "backslash"
    ),
    Case("imgsz-huge", _config(CONFIG.replace("imgsz: 64", "imgsz: 20000")), CFG, 3, "larger than 4096"),
    Case(
        "batch-million",
        _config(CONFIG.replace("batch: 8", "batch: 1000000")),
        CFG,
        4,
        "no GPU on offer holds",
    ),
    Case(
        "epochs-billion",
        _config(CONFIG.replace("epochs: 3", "epochs: 1000000000")),
        CFG,
        2,
        "more than 10000",
    ),
    Case("many-problems", _many_bad_lines, TA, 1, "and 20 more in 1 file (25 in total"),
]
