"""Every example state document in stepfunctions/examples/ is valid against its model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from spotyolo.core.config import parse_config
from spotyolo.core.models import (
    Attempt,
    ErrorInfo,
    EventInput,
    JobItem,
    JobSpec,
    ManualInput,
    Summary,
    TrainResult,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "stepfunctions" / "examples"
MODELS: dict[str, type[BaseModel]] = {
    "input_event.json": EventInput,
    "input_manual.json": ManualInput,
    "job.json": JobSpec,
    "attempt.json": Attempt,
    "result.json": TrainResult,
    "summary.json": Summary,
    "error.json": ErrorInfo,
    "job_item.json": JobItem,
}


def test_every_example_has_a_model() -> None:
    assert {p.name for p in EXAMPLES.glob("*.json")} == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_example_round_trips_through_its_model(name: str) -> None:
    raw = json.loads((EXAMPLES / name).read_text())
    model = MODELS[name].model_validate(raw)
    assert json.loads(model.model_dump_json(exclude_unset=True)) == raw


def test_example_job_config_passes_the_config_checks() -> None:
    spec = JobSpec.model_validate_json((EXAMPLES / "job.json").read_text())
    flat = {k: v for k, v in spec.config.model_dump(mode="json").items() if v is not None}
    text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in flat.items())
    assert parse_config(text) == spec.config
    assert spec.stall_seconds == int(spec.config.stall_hours * 3600)


def test_example_manual_overrides_are_valid() -> None:
    manual = ManualInput.model_validate_json((EXAMPLES / "input_manual.json").read_text())
    assert parse_config("model: yolo11n.pt\n", overrides=manual.overrides).epochs == 50
