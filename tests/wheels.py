"""Build spotyolo's wheel from a source folder, as `pip install` would (no network, no deps)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def wheel_names(source: Path, out: Path) -> list[str]:
    """The file names inside the wheel built from ``source`` (into ``out``)."""
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
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = out.glob("spotyolo-*.whl")
    return zipfile.ZipFile(wheel).namelist()
