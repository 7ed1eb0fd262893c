"""Every config.yaml rule from both sides: the values a user may write are accepted (and reach
the trainer as written), the ones Ultralytics or the pipeline would fail on are refused before
any spend, with the line and a message that says what to write instead."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from bad_jobs import make_job

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.config import (
    MAX_CONFIG_BYTES,
    OPTIMIZERS,
    check_job,
    check_values,
    inspect_config,
    inspect_job,
    parse_config,
)
from spotyolo.core.dataset import LocalSource

BASE = "model: yolo11n.pt\n"

# (config.yaml line, what the trainer gets for the key: a value, or None for "not passed")
ACCEPTED: list[tuple[str, dict[str, Any]]] = (
    [
        # batch: a size, AutoBatch (-1) or a fraction of GPU memory
        ("batch: 16", {"batch": 16}),
        ("batch: 1", {"batch": 1}),
        ("batch: 1.0", {"batch": 1}),
        ("batch: 32.0", {"batch": 32}),
        ("batch: -1", {"batch": -1}),
        ("batch: 0.7", {"batch": 0.7}),
        # imgsz
        ("imgsz: 32", {"imgsz": 32}),
        ("imgsz: 640", {"imgsz": 640}),
        ("imgsz: [640, 480]", {"imgsz": [640, 480]}),
        # time (hours)
        ("time: 0.5", {"time": 0.5}),
        ("time: 2", {"time": 2}),
        # floats and fractions
        ("cls: 3.0", {"cls": 3.0}),
        ("cls: 0", {"cls": 0}),
        ("lr0: 0.0", {"lr0": 0.0}),
        ("lr0: 1", {"lr0": 1}),
        ("lr0: 1e-3", {"lr0": 0.001}),
        ("mosaic: 0.5", {"mosaic": 0.5}),
        ("scale: 0.0", {"scale": 0.0}),
        ("scale: 1.0", {"scale": 1.0}),
        ("scale: [0.2, 0.9]", {"scale": [0.2, 0.9]}),
        ("fraction: 0.25", {"fraction": 0.25}),
        ("fraction: 1.0", {"fraction": 1.0}),
        ("fraction: 500", {"fraction": 500}),
        ("fraction: [100, 20]", {"fraction": [100, 20]}),
        ("fraction: [0.8, 0.1, 0.1]", {"fraction": [0.8, 0.1, 0.1]}),
        ("fraction: [100, 20, 0]", {"fraction": [100, 20, 0]}),
        ("fraction: [0.8, 0.2, 0.0]", {"fraction": [0.8, 0.2, 0.0]}),
        ("fraction: [1.0, 0.5]", {"fraction": [1.0, 0.5]}),
        ("fraction: 2", {"fraction": 2}),
        # integers
        ("epochs: 1", {"epochs": 1}),
        ("epochs: 300", {"epochs": 300}),
        ("patience: 0", {"patience": 0}),
        ("seed: 0", {"seed": 0}),
        ("workers: 0", {"workers": 0}),
        ("close_mosaic: 10.0", {"close_mosaic": 10}),
        # booleans
        ("cos_lr: true", {"cos_lr": True}),
        ("plots: false", {"plots": False}),
        ("save: true", {"save": True}),
        # text
        ("auto_augment: augmix", {"auto_augment": "augmix"}),
        # amp
        ("amp: true", {"amp": True}),
        ("amp: false", {"amp": False}),
        ("amp: bf16", {"amp": "bf16"}),
        ("amp: FP16", {"amp": "FP16"}),
        ("amp: fp32", {"amp": "fp32"}),
        # cache
        ("cache: true", {"cache": True}),
        ("cache: false", {"cache": False}),
        ("cache: ram", {"cache": "ram"}),
        ("cache: disk", {"cache": "disk"}),
        # compile
        ("compile: true", {"compile": True}),
        ("compile: max-autotune", {"compile": "max-autotune"}),
        # quantize
        ("quantize: int8", {"quantize": "int8"}),
        ("quantize: FP16", {"quantize": "FP16"}),
        # pretrained: a toggle or weights
        ("pretrained: false", {"pretrained": False}),
        ("pretrained: yolo11s.pt", {"pretrained": "yolo11s.pt"}),
        ("distill_model: yolo11m.pt", {"distill_model": "yolo11m.pt"}),
        # checked and dropped: the trainer always trains detection
        ("mode: train", {"mode": None}),
        ("task: detect", {"task": None}),
        # classes and freeze
        ("classes: 0", {"classes": 0}),
        ("classes: [0, 2]", {"classes": [0, 2]}),
        ("freeze: 10", {"freeze": 10}),
        ("freeze: [0, model.22]", {"freeze": [0, "model.22"]}),
        # a null where the default is null: the default
        ("time:", {"time": None}),
        ("quantize:", {"quantize": None}),
    ]
    + [(f"optimizer: {name}", {"optimizer": name}) for name in OPTIMIZERS]
    + [("optimizer: adamw", {})]
)

# pipeline keys: (line, attribute of the config, value)
ACCEPTED_PIPELINE: list[tuple[str, str, Any]] = [
    ("instance_type: g5.xlarge", "instance_types", ["g5.xlarge"]),
    ("instance_type: p4d.24xlarge", "instance_types", ["p4d.24xlarge"]),
    ("instance_types: [g5.xlarge, g6e-x.2xlarge]", "instance_types", ["g5.xlarge", "g6e-x.2xlarge"]),
    ("capacity: spot", "capacity", "spot"),
    ("capacity: on-demand", "capacity", "on-demand"),
    ("capacity: spot-then-on-demand", "capacity", "spot-then-on-demand"),
    ("max_interruptions: 0", "max_interruptions", 0),
    ("max_interruptions: 7", "max_interruptions", 7),
    ("max_interruptions: 2.0", "max_interruptions", 2),
    ("max_hours: 0.5", "max_hours", 0.5),
    ("max_hours: 8760", "max_hours", 8760),
    ("max_hours: 3\nstall_hours: 3", "stall_hours", 3),
    ("stall_hours: 0.0003", "stall_hours", 0.0003),
    ("max_cost_usd: 0.01", "max_cost_usd", 0.01),
    ("max_cost_usd: 25", "max_cost_usd", 25),
    ("max_cost_usd:", "max_cost_usd", None),
    ("target: {metric: recall, min: 0.8}", "target", {"metric": "recall", "min": 0.8}),
    ("target: {metric: mAP50-95, min: 0}", "target", {"metric": "mAP50-95", "min": 0}),
    ("target: {metric: precision, min: 1}", "target", {"metric": "precision", "min": 1}),
    ("target:", "target", None),
]

# (line, the message a user reads, at line 2 of config.yaml)
REFUSED: list[tuple[str, str]] = [
    ("batch: 0", "batch: 0 is not a batch size: use a whole number >= 1 (e.g. 16), -1 for AutoBatch"),
    ("batch: -2", "batch: -2 is not a batch size"),
    ("batch: 1.5", "batch: 1.5 is not a batch size"),
    ("batch: 1.0e0", ""),  # 1.0 is batch 1: accepted (marker, see below)
    ("batch: big", "batch: 'big' must be a number (e.g. batch: 16)"),
    ("batch: true", "batch: True must be a number (e.g. batch: 16)"),
    ("batch: .nan", "batch: nan must be a finite number"),
    ("batch: .inf", "batch: inf must be a finite number"),
    ("imgsz: 31", "imgsz: 31 must be a whole number of pixels >= 32 (e.g. imgsz: 640)"),
    ("imgsz: 64.5", "imgsz: 64.5 must be a whole number of pixels >= 32"),
    ("imgsz: true", "imgsz: True must be a whole number of pixels"),
    ("imgsz: [640, 480, 320]", "imgsz: [640, 480, 320] must be a whole number of pixels"),
    ("imgsz: []", "imgsz: [] must be a whole number of pixels"),
    ("imgsz: big", "imgsz: 'big' must be a whole number of pixels"),
    ("time: 0", "time: the training time limit in hours must be > 0 (or remove it)"),
    ("time: -1", "time: the training time limit in hours must be > 0"),
    ("cls: high", "cls: 'high' must be a number (e.g. cls: 0.5)"),
    ("lr0: 1.5", "lr0: 1.5 is out of range: allowed 0.0 to 1.0 (default 0.01)"),
    ("lr0: fast", "lr0: 'fast' must be a number (e.g. lr0: 0.01)"),
    ("lr0: -0.1", "lr0: -0.1 is out of range: allowed 0.0 to 1.0"),
    ("scale: 1.5", "scale: 1.5 is out of range: allowed 0.0 to 1.0"),
    ("scale: -0.5", "scale: -0.5 is out of range"),
    ("scale: [0.2]", "scale: [0.2] must be a number in [0, 1] or a pair [min, max]"),
    ("scale: [0.2, true]", "scale: [0.2, True] must be a number in [0, 1] or a pair"),
    ("scale: [0.2, x]", "scale: [0.2, 'x'] must be a number in [0, 1] or a pair"),
    ("fraction: lots", "fraction: 'lots' must be a number (e.g. fraction: 1.0)"),
    ("scale: big", "scale: 'big' must be a number (e.g. scale: 0.5)"),
    ("time: soon", "time: 'soon' must be a number (e.g. time: 1)"),
    ("fraction: 0", "fraction: 0: use a ratio in (0, 1] or a whole count > 1 of images"),
    ("fraction: 1.5", "fraction: 1.5: use a ratio in (0, 1]"),
    ("fraction: -3", "fraction: -3: use a ratio in (0, 1]"),
    ("fraction: [100]", "fraction: [100]: use [train, val] or [train, val, test] counts or ratios"),
    ("fraction: [0, 0.5]", "fraction: [0, 0.5]: use [train, val]"),
    ("fraction: [0.5, 0]", "fraction: [0.5, 0]: use [train, val]"),
    ("fraction: [1, 2, 3, 4]", "fraction: [1, 2, 3, 4]: use [train, val]"),
    ("fraction: [100, -1]", "fraction: [100, -1]: use [train, val]"),
    ("fraction: [0.8, 1.5]", "fraction: [0.8, 1.5]: use [train, val]"),
    ("fraction: [0.8, true]", "fraction: [0.8, True]: use [train, val]"),
    ("epochs: 0", "epochs: 0 is too small: it must be >= 1"),
    ("epochs: 2.5", "epochs: 2.5 must be a whole number"),
    ("epochs: ten", "epochs: 'ten' must be an integer (e.g. epochs: 100)"),
    ("patience: -1", "patience: -1 is too small: it must be >= 0"),
    ("plots: yes please", "plots: 'yes please' must be true or false"),
    ("cos_lr: 1", "cos_lr: 1 must be true or false"),
    ("save: false", "save: false would keep no checkpoints, which the pipeline needs: remove it"),
    ("optimizer: Adagrad", "optimizer: 'Adagrad' is not one of SGD, MuSGD, Adam, Adamax, AdamW"),
    ("optimizer: 3", "optimizer: 3 is not one of SGD"),
    ("auto_augment: 3", "auto_augment: 3 must be text (default 'randaugment')"),
    ("compile: 3", "compile: 3 must be true, false or a torch.compile mode name"),
    ("amp: fp8", "amp: 'fp8': allowed true, false, 'fp16', 'bf16' or 'fp32'"),
    ("amp: 1", "amp: 1: allowed true, false"),
    ("quantize: int4", "quantize: 'int4': allowed 16, 32, 8, fp16"),
    ("cache: gpu", "cache: 'gpu': allowed true, false, 'ram' or 'disk'"),
    ("cache: 1", "cache: 1: allowed true, false, 'ram' or 'disk'"),
    ("pretrained: best.onnx", "pretrained: 'best.onnx' is not a model training can start from"),
    (
        "pretrained: yolo11nn.pt",
        "pretrained: 'yolo11nn.pt' is neither a detection model Ultralytics can download",
    ),
    ("distill_model: 3", "distill_model: must name a model"),
    ("mode: predict", "mode: 'predict': a job trains; only 'mode: train' is accepted (or remove it)"),
    ("task: segment", "task: 'segment': this pipeline trains detection models; use 'task: detect'"),
    ("classes: -1", "classes: -1 must be a class id or a list of class ids (e.g. [0, 2])"),
    ("classes: [0, true]", "classes: [0, True] must be a class id"),
    ("classes: [0, x]", "classes: [0, 'x'] must be a class id"),
    ("freeze: true", "freeze: True must be a number of layers or a list of layer indices/names"),
    ("freeze: [1, 0.5]", "freeze: [1, 0.5] must be a number of layers"),
    ("epochs:", "epochs: must have a value (default 100); remove the line to use the default"),
    ("amp:", "amp: must have a value (default True)"),
    ("scale:", "scale: must have a value (default 0.5)"),
    ("compile:", "compile: must have a value (default False)"),
    ("optimizer:", "optimizer: must have a value (default 'auto')"),
    ("data: coco.yaml", "data: the dataset is the job's dataset/ folder (dataset/data.yaml): remove it"),
    ("resume: true", "resume: the pipeline resumes interrupted runs from their checkpoint itself"),
    ("project: out", "project: the pipeline decides where a run's outputs go"),
    ("device: 0", "device: the trainer uses the instance's GPU"),
    ("show: true", "show: is a predict/export setting and has no effect on training: remove it"),
    ("epoch: 10", "unknown key 'epoch'; did you mean 'epochs'?"),
    ("zzzz: 10", "unknown key 'zzzz' (valid keys: Ultralytics train arguments and instance_type"),
    # pipeline keys
    ("instance_type: G5.xlarge", "instance_type: 'G5.xlarge' is not an EC2 instance type (e.g. g5.xlarge)"),
    ("instance_type: g5", "instance_type: 'g5' is not an EC2 instance type"),
    ("instance_type: 5", "instance_type: 5 is not an EC2 instance type"),
    (
        "instance_types: []",
        "instance_types: must be a list of EC2 instance types, e.g. [g5.xlarge, g6.xlarge]",
    ),
    ("instance_types: g5.xlarge", "instance_types: must be a list of EC2 instance types"),
    (
        "instance_types: [g5.xlarge, big]",
        "instance_types: 'big' is not an EC2 instance type (e.g. g5.xlarge)",
    ),
    ("instance_types: [g5.xlarge, 3]", "instance_types: 3 is not an EC2 instance type"),
    ("instance_types: [g5.xlarge, g5.xlarge]", "instance_types: lists a type twice: keep each once"),
    ("capacity: spotty", "capacity: 'spotty': allowed spot, on-demand, spot-then-on-demand"),
    ("max_interruptions: -1", "max_interruptions: must be 0 or more"),
    ("max_interruptions: 1.5", "max_interruptions: 1.5 must be a whole number"),
    ("max_hours: 0", "max_hours: must be more than 0 hours"),
    ("max_hours: -2", "max_hours: must be more than 0 hours"),
    ("max_hours: 8761", "max_hours: 8761 is over 8760 hours (a Step Functions execution's limit)"),
    ("max_hours: lots", "max_hours: 'lots' must be a number"),
    ("stall_hours: 0.0002", "stall_hours: must be at least one second (0.0003 hours)"),
    ("stall_hours: 0", "stall_hours: must be more than 0 hours"),
    ("max_hours: 2\nstall_hours: 3", "stall_hours: 3 is longer than max_hours (2)"),
    ("max_cost_usd: 0", "max_cost_usd: must be more than 0 (or remove it for no budget)"),
    ("max_cost_usd: -5", "max_cost_usd: must be more than 0"),
    ("max_cost_usd: free", "max_cost_usd: 'free' must be a number"),
    ("target: recall", "target: must be a mapping, e.g. target: {metric: recall, min: 0.8}; allowed metrics"),
    ("target: {metric: accuracy, min: 0.5}", "target.metric: 'accuracy': allowed precision, recall, mAP50"),
    ("target: {metric: recall}", "target.min: None must be a number from 0 to 1 (e.g. 0.8)"),
    ("target: {metric: recall, min: 1.5}", "target.min: 1.5 must be a number from 0 to 1"),
    ("target: {metric: recall, min: -0.1}", "target.min: -0.1 must be a number from 0 to 1"),
    ("target: {metric: recall, min: true}", "target.min: True must be a number from 0 to 1"),
    ("target: {metric: recall, min: 0.8, mni: 1}", "target: unknown key 'mni' (did you mean 'min'?)"),
    ("target: {metric: recall, min: 0.8, zzz: 1}", "target: unknown key 'zzz'; target has metric and min"),
]


def _problems(line: str) -> tuple[Any, list[str]]:
    config, problems = inspect_config(BASE + line + "\n")
    return config, [str(p) for p in problems]


# the upper limits, at the limit (issue 14): a batch the largest GPU holds at the job's imgsz
# (512 at 640 px, four times as many at half the side, never more than 4096), the largest imgsz,
# time and whole numbers
ACCEPTED += [
    ("batch: 512", {"batch": 512}),
    ("imgsz: 320\nbatch: 2048", {"batch": 2048}),
    ("imgsz: 160\nbatch: 4096", {"batch": 4096}),
    ("imgsz: [1280, 640]\nbatch: 128", {"batch": 128}),
    ("imgsz: 4096\nbatch: 12", {"imgsz": 4096, "batch": 12}),
    ("time: 8760", {"time": 8760}),
    ("epochs: 10000", {"epochs": 10000}),
    ("seed: 2147483647", {"seed": 2147483647}),
]


@pytest.mark.parametrize(("line", "passed"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_a_valid_training_value_is_accepted_and_reaches_the_trainer(
    line: str, passed: dict[str, Any]
) -> None:
    config, problems = _problems(line)
    assert problems == [] and config is not None
    args = config.train_args()
    for key, value in passed.items():
        if value is None:
            assert key not in args
        else:
            assert args[key] == value and type(args[key]) is type(value)


@pytest.mark.parametrize(("line", "attr", "value"), ACCEPTED_PIPELINE, ids=[a[0] for a in ACCEPTED_PIPELINE])
def test_a_valid_pipeline_value_is_accepted(line: str, attr: str, value: Any) -> None:
    config, problems = _problems(line)
    assert problems == [] and config is not None
    got = config.resolved_instance_types() if attr == "instance_types" else getattr(config, attr)
    got = got.model_dump() if hasattr(got, "model_dump") else got
    assert got == value
    assert attr not in config.train_args()  # pipeline keys never reach Ultralytics


@pytest.mark.parametrize(("line", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_an_invalid_value_is_refused_where_it_was_written(line: str, message: str) -> None:
    config, problems = _problems(line)
    if not message:  # the accepted twin of a refused row
        assert problems == [] and config is not None
        return
    assert config is None
    last_line = 1 + len(line.splitlines())
    # the message comes right after where it was written: config.yaml:<line>:<column>: <message>
    assert any(re.match(rf"config\.yaml:{last_line}:\d+: {re.escape(message)}", p) for p in problems), (
        problems
    )


def test_a_missing_model_and_both_instance_keys_are_named() -> None:
    config, problems = inspect_config("epochs: 3\ninstance_type: g5.xlarge\ninstance_types: [g6.xlarge]\n")
    text = "\n".join(str(p) for p in problems)
    assert config is None
    assert "model: missing: add e.g. 'model: yolo11n.pt' (pretrained) or 'model: yolo11n.yaml'" in text
    assert "config.yaml:3:1: set instance_type or instance_types, not both" in text


def test_the_model_must_name_something_training_can_start_from() -> None:
    for model in ("yolo11n.pt", "yolo11n.yaml", "yolov8s.yaml"):
        config, problems = inspect_config(f"model: {model}\n")
        assert problems == [] and config is not None and config.model == model
    refused = {
        "model: ''": "model: must name a model, e.g. 'model: yolo11n.pt' (pretrained) or yolo11n.yaml",
        "model: 3": "model: must name a model",
        "model: best.onnx": "model: 'best.onnx' is not a model training can start from: use a .pt",
        "model: yolo11n.yml": "model: 'yolo11n.yml' is neither a detection model Ultralytics can download "
        "(yolo11n.yaml, yolov8s.yaml, ...) (did you mean yolo11n.yaml",
        "model: mine.pt": "model: 'mine.pt' is neither a detection model Ultralytics can download "
        "(yolo11n.pt, yolo11s.pt, yolo11m.pt, yolo26n.pt, ...) nor a file in the job folder",
        "model: /abs/mine.pt": "nor a path inside the job folder",
    }
    for line, message in refused.items():
        config, problems = inspect_config(line + "\n", file_exists=lambda p: False)
        assert config is None and any(message in str(p) for p in problems), (line, problems)


def test_a_model_file_next_to_the_config_is_trained_from() -> None:
    seen: list[str] = []

    def exists(path: str) -> bool:
        seen.append(path)
        return path == "weights/mine.pt"

    config, problems = inspect_config("model: weights\\mine.pt\n", file_exists=exists)
    assert problems == [] and config is not None and config.model == "weights\\mine.pt"
    assert seen == ["weights/mine.pt"]
    config, problems = inspect_config("model: weights/other.pt\n", file_exists=exists)
    assert config is None and "'weights/other.pt' is neither" in str(problems[0])
    # without a way to look, a file name is not trusted
    config, problems = inspect_config("model: weights/mine.pt\n")
    assert config is None


def test_an_override_is_checked_like_the_file_and_named_as_an_override() -> None:
    config, problems = inspect_config(BASE + "instance_type: g5.xlarge\n", overrides={"instance_types": []})
    assert config is None and [str(p) for p in problems] == [
        "overrides: instance_types: must be a list of EC2 instance types, e.g. [g5.xlarge, g6.xlarge]"
    ]
    config, problems = inspect_config(
        BASE + "instance_types: [g5.xlarge]\n", overrides={"instance_type": "g6.xlarge"}
    )
    assert problems == [] and config is not None and config.resolved_instance_types() == ["g6.xlarge"]
    config, problems = inspect_config(
        BASE, overrides={"instance_type": "g6.xlarge", "instance_types": ["g5.xlarge"]}
    )
    assert config is None and "set instance_type or instance_types, not both" in str(problems)


def test_problems_are_sorted_by_line_with_overrides_last() -> None:
    _, problems = inspect_config(BASE + "epochs: 0\nlr0: 5\nbatch: 0\n", overrides={"imgsz": 3})
    assert [(p.where, p.line) for p in problems] == [
        ("config.yaml", 2),
        ("config.yaml", 3),
        ("config.yaml", 4),
        ("overrides", None),
    ]


def test_check_values_reports_a_rule_it_missed_cleanly() -> None:
    config, problems = check_values(
        {"model": "yolo11n.pt", "epochs": 1, "capacity": "spot"}, lambda k: ("x", 1, 1)
    )
    assert problems == [] and config is not None


# the whole message, for the rules whose message is the whole advice
EXACT: list[tuple[str, str]] = [
    ("time: 0", "time: the training time limit in hours must be > 0 (or remove it)"),
    ("max_cost_usd: 0", "max_cost_usd: must be more than 0 (or remove it for no budget)"),
    ("max_interruptions: -1", "max_interruptions: must be 0 or more"),
    ("max_hours: 0", "max_hours: must be more than 0 hours"),
    ("max_hours: 8761", "max_hours: 8761 is over 8760 hours (a Step Functions execution's limit)"),
    ("stall_hours: 0.0002", "stall_hours: must be at least one second (0.0003 hours)"),
    ("max_hours: 2\nstall_hours: 3", "stall_hours: 3 is longer than max_hours (2)"),
    (
        "instance_types: []",
        "instance_types: must be a list of EC2 instance types, e.g. [g5.xlarge, g6.xlarge]",
    ),
    ("instance_types: [g5.xlarge, g5.xlarge]", "instance_types: lists a type twice: keep each once"),
    ("instance_types: [big]", "instance_types: 'big' is not an EC2 instance type (e.g. g5.xlarge)"),
    ("instance_type: G5.xlarge", "instance_type: 'G5.xlarge' is not an EC2 instance type (e.g. g5.xlarge)"),
    ("capacity: spotty", "capacity: 'spotty': allowed spot, on-demand, spot-then-on-demand"),
    (
        "target: recall",
        "target: must be a mapping, e.g. target: {metric: recall, min: 0.8}; "
        "allowed metrics precision, recall, mAP50, mAP50-95, fitness",
    ),
    (
        "target: {metric: accuracy, min: 0.5}",
        "target.metric: 'accuracy': allowed precision, recall, mAP50, mAP50-95, fitness",
    ),
    ("target: {metric: recall, min: 1.5}", "target.min: 1.5 must be a number from 0 to 1 (e.g. 0.8)"),
    (
        "target: {metrc: recall, min: 0.5}",
        "target: unknown key 'metrc' (did you mean 'metric'?); target has metric and min",
    ),
    (
        "target: {metric: recall, min: 0.8, mni: 1}",
        "target: unknown key 'mni' (did you mean 'min'?); target has metric and min",
    ),
    (
        "batch: 0",
        "batch: 0 is not a batch size: use a whole number >= 1 (e.g. 16), -1 for AutoBatch, "
        "or a fraction in (0, 1) of GPU memory",
    ),
    ("imgsz: 31", "imgsz: 31 must be a whole number of pixels >= 32 (e.g. imgsz: 640)"),
    ("scale: 1.5", "scale: 1.5 is out of range: allowed 0.0 to 1.0"),
    ("scale: [0.2]", "scale: [0.2] must be a number in [0, 1] or a pair [min, max]"),
    ("fraction: [100]", "fraction: [100]: use [train, val] or [train, val, test] counts or ratios"),
    ("fraction: 0", "fraction: 0: use a ratio in (0, 1] or a whole count > 1 of images"),
    ("lr0: 1.5", "lr0: 1.5 is out of range: allowed 0.0 to 1.0 (default 0.01)"),
    ("epochs: 0", "epochs: 0 is too small: it must be >= 1"),
    ("epochs: 2.5", "epochs: 2.5 must be a whole number"),
    ("epochs: ten", "epochs: 'ten' must be an integer (e.g. epochs: 100)"),
    ("batch: .nan", "batch: nan must be a finite number"),
    ("plots: maybe", "plots: 'maybe' must be true or false"),
    ("save: false", "save: false would keep no checkpoints, which the pipeline needs: remove it"),
    (
        "optimizer: Adagrad",
        "optimizer: 'Adagrad' is not one of SGD, MuSGD, Adam, Adamax, AdamW, NAdam, RAdam, RMSProp, auto",
    ),
    ("auto_augment: 3", "auto_augment: 3 must be text (default 'randaugment')"),
    ("compile: 3", "compile: 3 must be true, false or a torch.compile mode name"),
    ("amp: fp8", "amp: 'fp8': allowed true, false, 'fp16', 'bf16' or 'fp32'"),
    (
        "quantize: int4",
        "quantize: 'int4': allowed 16, 32, 8, fp16, fp32, int8, w16a16, w32a32, w8a16, w8a32, w8a8 "
        "(or remove it)",
    ),
    ("cache: gpu", "cache: 'gpu': allowed true, false, 'ram' or 'disk'"),
    ("mode: predict", "mode: 'predict': a job trains; only 'mode: train' is accepted (or remove it)"),
    (
        "task: segment",
        "task: 'segment': this pipeline trains detection models; use 'task: detect' or remove it",
    ),
    ("classes: -1", "classes: -1 must be a class id or a list of class ids (e.g. [0, 2])"),
    ("freeze: true", "freeze: True must be a number of layers or a list of layer indices/names"),
    ("epochs:", "epochs: must have a value (default 100); remove the line to use the default"),
    ("data: coco.yaml", "data: the dataset is the job's dataset/ folder (dataset/data.yaml): remove it"),
    (
        "epoch: 3",
        "unknown key 'epoch'; did you mean 'epochs'? (valid keys: Ultralytics train arguments and "
        "instance_type, instance_types, capacity, max_interruptions, stall_hours, max_hours, "
        "max_cost_usd, target, checkpoint_minutes)",
    ),
]


_TOO_BIG = (
    "which no GPU on offer holds (about 512 of 640 px fit in 80 GB, fewer as imgsz grows): lower batch, "
    "or use batch: -1 (AutoBatch picks what the GPU holds)"
)
EXACT += [
    ("batch: 513", f"batch: 513 is more than 512 images of 640 px, {_TOO_BIG}"),
    ("imgsz: 1280\nbatch: 256", f"batch: 256 is more than 128 images of 1280 px, {_TOO_BIG}"),
    ("imgsz: [1280, 640]\nbatch: 256", f"batch: 256 is more than 128 images of 1280 px, {_TOO_BIG}"),
    ("imgsz: 4096\nbatch: 13", f"batch: 13 is more than 12 images of 4096 px, {_TOO_BIG}"),
    # an imgsz that is not a size (refused by its own rule): the batch is held to 4096
    ("imgsz: big\nbatch: 5000", f"batch: 5000 is more than 4096 images of 640 px, {_TOO_BIG}"),
    (
        "imgsz: 4097",
        "imgsz: 4097 is larger than 4096: Ultralytics trains square images of imgsz pixels; at 4096 one "
        "image already takes 41 times the memory of one at 640, which a batch of 1 of the larger models "
        "fills on an 80 GB GPU",
    ),
    ("time: 8761", "time: 8761 is more than 8760 hours (a Step Functions execution's limit)"),
    ("seed: 2147483648", "seed: 2147483648 is more than 2147483647: no setting needs a larger number"),
    (
        "epochs: 10001",
        "epochs: 10001 is more than 10000: COCO from scratch is 600 epochs; max_hours ends a run anyway: "
        "train longer with a new job",
    ),
    (
        "checkpoint_minutes: 0",
        "checkpoint_minutes: 0 must be from 1 to 1440 minutes (default 10): the period of the insurance "
        "upload of the checkpoint, what an instance lost without a notice can cost at most",
    ),
]


@pytest.mark.parametrize(("line", "message"), EXACT, ids=[e[0] for e in EXACT])
def test_the_refusal_says_exactly_what_to_write_instead(line: str, message: str) -> None:
    _, problems = _problems(line)
    messages = [
        str(p).split(": ", 1)[1] if re.match(r"config\.yaml:\d+:\d+: ", str(p)) else str(p) for p in problems
    ]
    assert message in messages, problems


def test_a_key_a_newer_ultralytics_adds_is_checked_by_its_defaults_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spotyolo.core import config as config_module

    defaults = {**config_module.default_cfg(), "new_flag": False, "new_mode": "fast", "new_number": 3}
    monkeypatch.setattr(config_module, "default_cfg", lambda: defaults)
    accepted, problems = inspect_config(BASE + "new_flag: true\nnew_mode: slow\nnew_number: 4.5\n")
    assert problems == [] and accepted is not None
    args = accepted.train_args()
    assert (args["new_flag"], args["new_mode"], args["new_number"]) == (True, "slow", 4.5)
    _, problems = inspect_config(BASE + "new_flag: 3\nnew_mode: 3\n")
    assert [str(p) for p in problems] == [
        "config.yaml:2:1: new_flag: 3 must be true or false",
        "config.yaml:3:1: new_mode: 3 must be text (default 'fast')",
    ]


def test_a_config_with_any_problem_is_refused_even_when_the_values_are_fine() -> None:
    with pytest.raises(
        JobInvalid, match=r"config.yaml:3:1: duplicate key 'epochs' \(first on line 2\): keep one"
    ):
        parse_config(BASE + "epochs: 3\nepochs: 4\n")
    assert parse_config(BASE + "epochs: 3\n").epochs == 3


# ------------------------------------------------------------------ a whole job folder


class Uploaded(LocalSource):
    """A job folder as Validate job sees it on S3: messages name the object's key."""

    def where(self, path: str) -> str:
        return f"s3://bkt/jobs/shapes/{path}"


class Listed(Uploaded):
    """A source whose listing the caller already has (listing again would cost S3 calls)."""

    def list(self, prefix: str = "") -> Any:
        raise AssertionError("listed twice")


def test_a_job_without_config_yaml_is_told_to_add_one(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "config.yaml").unlink()
    config, _, problems = inspect_job(Uploaded(job))
    assert config is None
    assert str(problems[0]) == (
        "s3://bkt/jobs/shapes/config.yaml: missing: a job needs config.yaml next to dataset/ "
        "(e.g. 'model: yolo11n.pt')"
    )


def test_a_job_folder_is_checked_with_its_overrides_its_files_and_its_classes(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "weights").mkdir()
    (job / "weights" / "mine.pt").write_bytes(b"w")
    (job / "config.yaml").write_text("model: weights/mine.pt\nclasses: [0, 2]\n")
    entries = list(LocalSource(job).list())
    config, summary, problems = inspect_job(Listed(job), entries=entries, overrides={"epochs": 7})
    assert problems == [] and config is not None and summary.names
    assert (config.model, config.epochs, config.classes) == ("weights/mine.pt", 7, [0, 2])
    _, _, problems = inspect_job(Uploaded(job), overrides={"epochs": 0})
    assert [str(p) for p in problems] == ["overrides: epochs: 0 is too small: it must be >= 1"]
    (job / "config.yaml").write_text("model: yolo11n.yaml\nepochs: 0\n")
    _, _, problems = inspect_job(Uploaded(job))
    assert [str(p) for p in problems] == [
        "s3://bkt/jobs/shapes/config.yaml:2:1: epochs: 0 is too small: it must be >= 1"
    ]


@pytest.mark.parametrize("classes", ["3", "[0, 3]"])
def test_classes_must_be_classes_of_the_dataset(tmp_path: Path, classes: str) -> None:
    job = make_job(tmp_path / "job")
    (job / "config.yaml").write_text(f"model: yolo11n.yaml\nclasses: {classes}\n")
    config, _, problems = inspect_job(Uploaded(job))
    assert config is None
    assert [str(p) for p in problems] == [
        "s3://bkt/jobs/shapes/config.yaml: classes: 3 is not a class of this dataset (ids 0-2)"
    ]
    with pytest.raises(JobInvalid, match=r"^the job is invalid \(1 problem\)"):
        check_job(Uploaded(job))


def test_classes_are_not_checked_against_a_dataset_without_names(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "dataset" / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n")
    (job / "config.yaml").write_text("model: yolo11n.yaml\nclasses: 0\n")
    config, _, problems = inspect_job(LocalSource(job))
    assert config is None  # the dataset's own problem is the one to fix
    assert [str(p) for p in problems] == [
        "dataset/data.yaml: data.yaml has neither names nor nc: add names: [class0, class1, ...]"
    ]


def test_check_job_uses_the_listing_and_overrides_it_is_given(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    entries = list(LocalSource(job).list())
    config, summary = check_job(Listed(job), entries=entries, overrides={"epochs": 7})
    assert config.epochs == 7 and summary.splits["train"].images == 3
    with pytest.raises(JobInvalid, match=r"overrides: epochs: 0 is too small"):
        check_job(Listed(job), entries=entries, overrides={"epochs": 0})


@pytest.mark.parametrize("imgsz", ["big", "[big]", "16", "true"])
def test_an_imgsz_that_is_not_a_size_is_refused_once_and_the_batch_is_judged_without_it(imgsz: str) -> None:
    _, problems = _problems(f"imgsz: {imgsz}\nbatch: 16")
    assert len(problems) == 1 and problems[0].startswith("config.yaml:2:1: imgsz: ")


@pytest.mark.parametrize(("size", "refused"), [(MAX_CONFIG_BYTES, False), (MAX_CONFIG_BYTES + 1, True)])
def test_a_config_yaml_over_the_limit_is_refused_from_the_listing_unread(
    tmp_path: Path, size: int, refused: bool
) -> None:
    job = make_job(tmp_path / "job")
    listed = [
        dataclasses.replace(e, size=size) if e.path == "config.yaml" else e for e in LocalSource(job).list()
    ]
    config, _, problems = inspect_job(Uploaded(job), entries=listed)
    expected = (
        f"s3://bkt/jobs/shapes/config.yaml: file is {size} bytes; the limit is {MAX_CONFIG_BYTES} bytes: "
        "is this the right file?"
    )
    assert [str(p) for p in problems] == ([expected] if refused else [])
    assert (config is None) == refused


def test_a_job_of_more_files_than_validate_can_read_is_refused_before_reading() -> None:
    from spotyolo.core.dataset.inspection import MAX_JOB_FILES
    from spotyolo.core.dataset.sources import Entry

    class Huge(Uploaded):
        def list(self, prefix: str = "") -> Any:
            return (Entry(f"{prefix}dataset/f{i}", 1, 0.0) for i in range(MAX_JOB_FILES + 1))

        def read(self, path: str) -> bytes:
            raise AssertionError("a listing that is too long is not read")

    config, _, problems = inspect_job(Huge(Path("/nonexistent")))
    assert config is None and [str(p) for p in problems] == [
        f"s3://bkt/jobs/shapes/: more than {MAX_JOB_FILES} files: Validate reads every label file before "
        "any spend and cannot read more within its time; split the dataset or remove files training does "
        "not use"
    ]
