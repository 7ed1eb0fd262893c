"""`spotyolo validate JOB_DIR`: exit status, the summary table, the same messages as the Lambda."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bad_jobs import make_job

from spotyolo.cli import main


def test_valid_job_prints_the_split_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_job(tmp_path / "pets")
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    assert "train       3       2            1  cat 1, dog 1, bird 1" in out
    assert "aws s3 sync" in out and "jobs/pets/" in out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(make_job(tmp_path / "pets")), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["epochs"] == 3 and doc["dataset"]["splits"]["val"]["images"] == 2


def test_invalid_job_exits_1_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_job(tmp_path / "pets")
    (job / "config.yaml").write_text((job / "config.yaml").read_text() + "epoch: 5\n")
    (job / "dataset/labels/train/a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    assert main(["validate", str(job)]) == 1
    err = capsys.readouterr().err
    assert "(2 problems)" in err
    assert "config.yaml:11:1: unknown key 'epoch'; did you mean 'epochs'?" in err
    assert "dataset/labels/train/a.txt:1: class id 7 is out of range" in err


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_shapes_fixture_job_is_valid_through_the_installed_command(shapes_job: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spotyolo.cli", "validate", str(shapes_job)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "train      24" in done.stdout
