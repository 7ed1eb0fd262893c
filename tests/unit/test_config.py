"""config.yaml parsing: what users write is accepted, mistakes are named with line and column."""

from __future__ import annotations

import pytest

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.config import inspect_config, parse_config

BASE = "model: yolo11n.pt\n"


def test_demo_config_and_training_args() -> None:
    config = parse_config(BASE + "epochs: 120\nimgsz: 640\ncls: 3.0\nlr0: 1e-3\ncapacity: on-demand\n")
    assert config.epochs == 120 and config.capacity == "on-demand"
    assert config.train_args() == {"epochs": 120, "imgsz": 640, "cls": 3.0, "lr0": 0.001}


def test_yaml_12_floats_are_numbers() -> None:
    assert parse_config(BASE + "lr0: 1e-3\nweight_decay: 5e-4\n").train_args()["weight_decay"] == 0.0005


def test_mode_train_and_task_detect_are_accepted_and_dropped() -> None:
    assert "mode" not in parse_config(BASE + "mode: train\ntask: detect\n").train_args()


def test_integral_float_epochs_become_int() -> None:
    assert parse_config(BASE + "epochs: 1.0e2\n").epochs == 100


def test_model_file_in_the_job_folder_is_accepted() -> None:
    config = parse_config("model: weights/mine.pt\n", file_exists={"weights/mine.pt"}.__contains__)
    assert config.model == "weights/mine.pt" and "model" not in config.train_args()


def test_model_path_may_not_escape_the_job() -> None:
    _, problems = inspect_config("model: ../other/best.pt\n", file_exists=lambda p: True)
    assert "a path inside the job folder" in str(problems[0])


def test_override_replaces_the_other_instance_key() -> None:
    config = parse_config(BASE + "instance_type: g5.xlarge\n", overrides={"instance_types": ["g6.xlarge"]})
    assert config.resolved_instance_types() == ["g6.xlarge"]


def test_problems_are_reported_together_sorted_and_capped() -> None:
    text = BASE + "".join(f"bogus_{i}: 1\n" for i in range(30))
    with pytest.raises(JobInvalid) as caught:
        parse_config(text, "jobs/x/config.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "jobs/x/config.yaml is invalid (30 problems):"
    assert lines[1].startswith("  - jobs/x/config.yaml:2:1: unknown key 'bogus_0'")
    assert (
        lines[-1] == "  ... and 10 more in 1 file (30 in total; the first 20 are shown)" and len(lines) == 22
    )


def test_alias_expansion_bomb_is_refused_quickly() -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    _, problems = inspect_config(bomb)
    assert "aliases" in str(problems[0])


def test_python_tags_are_refused() -> None:
    _, problems = inspect_config("model: !!python/object/apply:os.system ['echo hi']\n")
    assert "not valid YAML" in str(problems[0]) and ":1:" in str(problems[0])


def test_non_string_keys_are_refused() -> None:
    _, problems = inspect_config(BASE + "1: x\n")
    assert "config.yaml:2:1: key '1' is not a name" in str(problems[0])


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("amp: fp8", "amp: 'fp8'"),
        ("optimizer: adagrad", "optimizer: 'adagrad' is not one of"),
        ("fraction: 0", "fraction: 0"),
        ("scale: 2", "scale: 2 is out of range"),
        ("imgsz: 10", "imgsz: 10 must be a whole number of pixels >= 32"),
        ("cache: yes please", "cache: 'yes please'"),
        ("max_hours: 100000", "over 8760 hours"),
        ("max_cost_usd: -1", "max_cost_usd: must be more than 0"),
        ("patience: -1", "patience: -1 is too small"),
        ("warmup_epochs: []", "warmup_epochs: [] must be a number"),
        ("conf:", None),
        ("epochs:", "epochs: must have a value"),
        ("pretrained: yolo11q.pt", "pretrained: 'yolo11q.pt'"),
    ],
)
def test_ultralytics_rules(line: str, needle: str | None) -> None:
    _, problems = inspect_config(BASE + line + "\n")
    if needle is None:
        assert problems == []
    else:
        assert problems and needle in str(problems[0]) and "config.yaml:2:1" in str(problems[0])


@pytest.mark.parametrize(
    ("line", "accepted"),
    [
        ("optimizer: AdamW", True),
        ("optimizer: adamw", True),
        ("optimizer: auto", True),
        ("optimizer: 3", False),
        ("amp: true", True),
        ("amp: bf16", True),
        ("cache: ram", True),
        ("cache: disk", True),
        ("cache: false", True),
        ("cache: ssd", False),
        ("batch: -1", True),
        ("batch: 0.7", True),
        ("batch: 16", True),
        ("batch: 0", False),
        ("batch: 2.5", False),
        ("imgsz: [640, 480]", True),
        ("imgsz: [640, 480, 320]", False),
        ("fraction: [0.8, 0.2]", True),
        ("fraction: 200", True),
        ("fraction: 1.5", False),
        ("save: true", True),
        ("save: false", False),
        ("max_interruptions: 0", True),
        ("max_interruptions: -1", False),
        ("max_interruptions: 1.5", False),
        ("instance_types: [g5.xlarge, g6.xlarge]", True),
        ("instance_types: []", False),
        ("instance_types: [g5.xlarge, G6]", False),
        ("instance_types: [g5.xlarge, g5.xlarge]", False),
        ("instance_type: g5", False),
        ("stall_hours: 0.0001", False),
        ("max_hours: 8760", True),
        ("checkpoint_minutes: 10", True),
        ("checkpoint_minutes: 1", True),
        ("checkpoint_minutes: 2.5", True),
        ("checkpoint_minutes: 1440", True),
        ("checkpoint_minutes: 0", False),
        ("checkpoint_minutes: 0.5", False),
        ("checkpoint_minutes: -5", False),
        ("checkpoint_minutes: 1441", False),
        ("checkpoint_minutes: ten", False),
        ("checkpoint_minutes: true", False),
        ("target: {metric: recall, min: 0.8}", True),
        ("target: {metric: recall, min: 1.5}", False),
        ("mode: val", False),
        ("task: segment", False),
        ("classes: [0, 2]", True),
        ("classes: [-1]", False),
        ("pretrained: false", True),
    ],
)
def test_rule_accepts_or_refuses(line: str, accepted: bool) -> None:
    config, problems = inspect_config(BASE + line + "\n")
    assert (config is not None, problems == []) == (accepted, accepted), problems
    if not accepted:  # named where it was written (a target part at its own column)
        assert problems[0].line == 2 and problems[0].message.startswith(line.partition(":")[0])


def test_stall_hours_longer_than_max_hours_is_refused() -> None:
    _, problems = inspect_config(BASE + "max_hours: 2\nstall_hours: 3\n")
    assert [str(p) for p in problems] == ["config.yaml:3:1: stall_hours: 3 is longer than max_hours (2)"]


def test_batch_and_int_keys_reach_the_trainer_as_ints() -> None:
    args = parse_config(BASE + "batch: 16.0\nepochs: 3.0\n").train_args()
    assert args["batch"] == 16 and isinstance(args["batch"], int)
    assert args["epochs"] == 3 and isinstance(args["epochs"], int)
