"""What `pip install .` puts on the import path: the package `spotyolo`, nothing else."""

from __future__ import annotations

from pathlib import Path

from wheels import wheel_names

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_only_the_spotyolo_import_package(tmp_path: Path) -> None:
    names = wheel_names(ROOT, tmp_path)
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"spotyolo"}, (
        f"the wheel adds import packages beside spotyolo: {sorted(top - {'spotyolo'})}"
    )
    # everything the core reads at run time travels with it
    assert "spotyolo/core/data/ultralytics_rules.json" in names
    assert "spotyolo/trainer/__main__.py" in names and "spotyolo/cli/__main__.py" in names
