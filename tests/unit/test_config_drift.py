"""The copied Ultralytics rules (default.yaml and the argument checks) must match the installed
Ultralytics: the Lambda cannot import Ultralytics, so it reads copies, and this test keeps them
honest. Regenerate after an upgrade with ``python tests/unit/test_config_drift.py``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "spotyolo" / "core" / "data"

#: pretrained names that are not plain YOLO detectors a detection job can fine-tune
_NOT_DETECT = (
    "-cls",
    "-seg",
    "-pose",
    "-obb",
    "-sem",
    "-depth",
    "-reid",
    "world",
    "yoloe",
    "sam",
    "SAM",
    "grayscale",
    "yolo_nas",
    "rtdetr",
)


def current_rules() -> dict[str, Any]:
    """The rule data derived from the installed Ultralytics (imports it: tests/tools only)."""
    import ultralytics
    from ultralytics import cfg
    from ultralytics.data.utils import IMG_FORMATS
    from ultralytics.nn.tasks import guess_model_task
    from ultralytics.utils import YAML
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    pretrained = sorted(
        n for n in GITHUB_ASSETS_NAMES if n.endswith(".pt") and not any(s in n for s in _NOT_DETECT)
    )
    scratch: set[str] = set()
    models_dir = Path(cfg.__file__).parent / "models"
    for path in sorted(models_dir.rglob("*.yaml")):
        model = YAML.load(path)
        if (
            guess_model_task(model) != "detect"
            or "rtdetr" in path.stem
            or "world" in path.stem
            or "yoloe" in path.stem
        ):
            continue
        scratch.add(path.name)
        # yolo11.yaml with scales n/s/m/l/x -> yolo11n.yaml ... (Ultralytics' yaml_model_load)
        match = re.match(r"^(\D*\d+)(.*)$", path.stem)
        if match and not match.group(2)[:1].isalnum():
            for scale in model.get("scales") or {}:
                candidate = f"{match.group(1)}{scale}{match.group(2)}.yaml"
                if re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", candidate) == path.name:
                    scratch.add(candidate)
    return {
        "ultralytics_version": ultralytics.__version__,
        "float_keys": sorted(cfg.CFG_FLOAT_KEYS),
        "fraction_keys": sorted(cfg.CFG_FRACTION_KEYS),
        "int_keys": sorted(cfg.CFG_INT_KEYS),
        "int_min": dict(sorted(cfg.CFG_INT_MIN.items())),
        "bool_keys": sorted(cfg.CFG_BOOL_KEYS),
        "str_keys": sorted(cfg.CFG_STR_KEYS),
        "modes": list(cfg.MODES),
        "tasks": list(cfg.TASKS),
        "quantize_values": sorted(str(k) for k in cfg.QUANTIZE_ALIASES),
        "img_formats": sorted(IMG_FORMATS),
        "pretrained_models": pretrained,
        "scratch_models": sorted(scratch),
    }


def _default_yaml() -> Path:
    from ultralytics import cfg

    return Path(cfg.__file__).parent / "default.yaml"


def test_default_yaml_copy_matches_installed_ultralytics() -> None:
    ours = (DATA / "ultralytics_default.yaml").read_text()
    assert ours == _default_yaml().read_text(), (
        "spotyolo/core/data/ultralytics_default.yaml differs from the installed Ultralytics: "
        "run python tests/unit/test_config_drift.py"
    )


def test_rules_copy_matches_installed_ultralytics() -> None:
    ours = json.loads((DATA / "ultralytics_rules.json").read_text())
    assert ours == current_rules(), "run python tests/unit/test_config_drift.py to refresh the copy"


@pytest.mark.parametrize("name", ["yolo11n.pt", "yolo11m.pt", "yolov8s.pt", "yolo26n.pt"])
def test_common_pretrained_names_are_allowed(name: str) -> None:
    assert name in json.loads((DATA / "ultralytics_rules.json").read_text())["pretrained_models"]


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo11.yaml", "yolov8s.yaml", "yolov8n-p2.yaml"])
def test_common_scratch_names_are_allowed(name: str) -> None:
    assert name in json.loads((DATA / "ultralytics_rules.json").read_text())["scratch_models"]


if __name__ == "__main__":  # regenerate the copies
    (DATA / "ultralytics_default.yaml").write_text(_default_yaml().read_text())
    (DATA / "ultralytics_rules.json").write_text(json.dumps(current_rules(), indent=1) + "\n")
    print("wrote", DATA, file=sys.stderr)
