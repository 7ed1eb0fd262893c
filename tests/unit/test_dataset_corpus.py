"""The bad-job corpus, checked on a local folder (what `spotyolo validate` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_jobs import CASES, Case, make_job

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.config import check_job, inspect_job
from spotyolo.core.dataset import LocalSource


def test_the_base_job_is_valid(tmp_path: Path) -> None:
    config, summary = check_job(LocalSource(make_job(tmp_path / "job")))
    assert config.model == "yolo11n.yaml"
    assert summary.splits["train"].images == 3
    assert summary.splits["train"].backgrounds == 1
    assert summary.splits["train"].instances == 3
    assert summary.per_class["train"] == {"cat": 1, "dog": 1, "bird": 1}


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_job_is_refused_naming_file_line_and_problem(tmp_path: Path, case: Case) -> None:
    job = make_job(tmp_path / "job")
    case.mutate(job)
    config, _, _ = inspect_job(LocalSource(job))
    assert config is None
    with pytest.raises(JobInvalid) as caught:
        check_job(LocalSource(job))
    message = str(caught.value)
    location = f"{case.file}:{case.line}" if case.line else case.file
    matching = [line for line in message.splitlines() if location in line and case.needle in line]
    if case.id == "many-problems":
        assert case.needle in message and f"{location}:" in message
        # a file's first 5 bad lines are listed, the rest of it counted
        assert len(message.splitlines()) == 1 + 5 + 1
    else:
        assert matching, f"no line names {location!r} with {case.needle!r} in:\n{message}"
