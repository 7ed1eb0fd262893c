"""What `pip install .` puts on the import path: the package `spotyolo`, nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_only_the_spotyolo_import_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = tmp_path.glob("spotyolo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"spotyolo"}, (
        f"the wheel adds import packages beside spotyolo: {sorted(top - {'spotyolo'})}"
    )
    # everything the core reads at run time travels with it
    assert "spotyolo/core/data/ultralytics_rules.json" in names
    assert "spotyolo/trainer/__main__.py" in names and "spotyolo/cli/__main__.py" in names
