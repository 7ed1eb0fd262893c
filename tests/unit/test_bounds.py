"""Hostile and careless input is refused in bounded time, memory and words (issue 10).

A refusal must fit every place it travels to: a Step Functions error cause (32 768 characters,
after the Lambda runtime JSON-encodes it), an SNS message (256 KB) and a person's inbox. The
state document must stay small however many classes a dataset has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from bad_jobs import CONFIG, DATA_YAML, make_job

from spotyolo.contract.errors import JobInvalid
from spotyolo.core.config import check_job, inspect_job
from spotyolo.core.dataset import Entry, LocalSource
from spotyolo.core.models import JobSpec
from spotyolo.core.yamlsafe import MAX_REFUSAL_CHARS, Problem, problems_error, shown
from spotyolo.steps.validate import refusal as lambda_refusal

ROOT = Path(__file__).resolve().parents[2]
#: Step Functions' limit on an error's cause; SNS's on a message and a subject
CAUSE_LIMIT, SNS_MESSAGE_LIMIT, SUBJECT_LIMIT = 32_768, 256 * 1024, 100


def refusal(job: Path) -> str:
    with pytest.raises(JobInvalid) as caught:
        check_job(LocalSource(job))
    return str(caught.value)


def fits_everywhere(message: str) -> None:
    """The refusal, as the Lambda runtime sends it (JSON, ASCII-escaped), fits a task cause."""
    cause = json.dumps({"errorMessage": message, "errorType": "JobInvalid", "stackTrace": ["x" * 2000]})
    assert len(cause) <= CAUSE_LIMIT, len(cause)
    assert len(message.encode()) <= SNS_MESSAGE_LIMIT
    assert len(message) <= MAX_REFUSAL_CHARS


# ---------------------------------------------------------------- echoed values


def test_shown_values_are_bounded_with_their_length() -> None:
    assert shown("abc") == "'abc'"
    long = shown("x" * 300_000)
    assert len(long) < 100 and long.endswith("… (300000 chars)")
    assert len(shown(list(range(100_000)))) < 100
    assert len(shown({str(i): i for i in range(10_000)})) < 100


def test_a_300_kb_token_in_a_label_is_not_echoed_whole(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "dataset/labels/train/a.txt").write_text("0 " + "9" * 300_000 + " 0.5 0.2 0.2\n")
    message = refusal(job)
    assert "dataset/labels/train/a.txt:1" in message and "(300000 chars)" in message
    assert len(message) < 2000, len(message)
    fits_everywhere(message)


def test_a_300_kb_value_in_config_yaml_is_not_echoed_whole(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "config.yaml").write_text(CONFIG + "optimizer: " + "A" * 60_000 + "\n")
    message = refusal(job)
    assert "config.yaml:11" in message and "(60000 chars)" in message
    assert len(message) < 2000


def test_thousands_of_problems_make_a_short_refusal_that_counts_them(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    labels = job / "dataset/labels/train"
    for i in range(300):
        (job / f"dataset/images/train/bad{i}.jpg").write_bytes(b"img")
        (labels / f"bad{i}.txt").write_text("7 0.5 0.5 0.2 0.2\n" * 50)
    message = refusal(job)
    assert "15000" in message.splitlines()[0] or "15000 problems" in message
    assert "more in 300 files" in message or "more in 299 files" in message
    assert len(message) <= 8000, len(message)
    fits_everywhere(message)


@pytest.mark.parametrize("char", ["é", '"', "\\", "\n", "\U0001f600"])
def test_worst_case_refusal_fits_a_step_functions_cause(char: str) -> None:
    """Long paths and messages of the characters JSON escapes the most, encoded twice (Validate's
    {"subject", "message"}, then the Lambda runtime's error object) as the cause carries them."""
    problems = [
        Problem("jobs/" + char * 900 + f"/{i}.txt", char * 5000 + f" {i}", line=i, column=3)
        for i in range(500)
    ]
    err = problems_error(problems, "job " + char * 2000)
    message = str(err)
    assert "500 problems" in message and "more in" in message
    fits_everywhere(message)
    words = str(lambda_refusal({"key": "jobs/" + char * 2000 + "/config.yaml"}, err))
    assert len(json.loads(words)["subject"]) < SUBJECT_LIMIT
    cause = json.dumps({"errorMessage": words, "errorType": "JobInvalid", "stackTrace": ["x" * 2000]})
    assert len(cause) <= CAUSE_LIMIT, len(cause)


# ---------------------------------------------------------------- classes


def test_ten_million_classes_are_refused_without_building_them(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "dataset/data.yaml").write_text("train: images/train\nval: images/val\nnc: 10000000\n")
    started = time.monotonic()
    message = refusal(job)
    assert time.monotonic() - started < 2
    assert "dataset/data.yaml:3" in message and "nc: 10000000" in message and "at most" in message


def test_a_hundred_thousand_names_are_refused(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    names = "".join(f"  - c{i}\n" for i in range(60_000))
    (job / "dataset/data.yaml").write_text(f"train: images/train\nval: images/val\nnames:\n{names}")
    message = refusal(job)
    assert "dataset/data.yaml:3" in message and "60000 classes" in message and "at most" in message


def test_a_class_name_must_be_short(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "dataset/data.yaml").write_text(DATA_YAML.replace("bird", "b" * 5000))
    message = refusal(job)
    assert "dataset/data.yaml:4" in message and "class 2's name is 5000 characters" in message
    assert len(message) < 1500


def test_the_state_document_carries_no_per_class_data(tmp_path: Path) -> None:
    """1200 classes (LVIS-sized): the accepted job, as the state document holds it, stays small."""
    job = make_job(tmp_path / "job")
    names = [f"category_number_{i}" for i in range(1200)]
    (job / "dataset/data.yaml").write_text(
        "train: images/train\nval: images/val\nnames: [" + ", ".join(names) + "]\n"
    )
    config, summary = check_job(LocalSource(job))
    assert summary.classes == 1200
    state = json.dumps(summary.model_dump(mode="json"))
    assert "category_number" not in state and len(state) < 1000
    assert summary.splits["train"].instances == 3  # the boxes of the split, all classes together
    spec = JobSpec.model_validate(
        {
            "name": "pets",
            "bucket": "b",
            "run_id": "r",
            "execution": "e",
            "config": config.model_dump(),
            "dataset": json.loads(state),
            "instance_types": ["g5.xlarge"],
            "deadline": 1,
            "stall_seconds": 60,
            "image": "i",
        }
    )
    assert len(spec.model_dump_json()) < 4000
    # the per-class counts are still there for `spotyolo validate` to print (not serialised)
    assert summary.per_class["train"]["category_number_0"] == 1


# ---------------------------------------------------------------- keys that escape the dataset


class MemorySource:
    """A job held in memory, keyed as S3 allows (``..`` segments, leading ``/``, backslashes)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def list(self, prefix: str = "") -> Iterable[Entry]:
        return [Entry(k, len(v), 0.0) for k, v in sorted(self.files.items()) if k.startswith(prefix)]

    def read(self, path: str) -> bytes:
        return self.files[path]

    def where(self, path: str) -> str:
        return "jobs/pets/" + path


def memory_job(tmp_path: Path) -> dict[str, bytes]:
    job = make_job(tmp_path / "job")
    return {p.relative_to(job).as_posix(): p.read_bytes() for p in sorted(job.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("dataset/../../other/x.txt", "'..' segment"),
        ("dataset/images/../../../etc/passwd", "'..' segment"),
        ("dataset//etc/x.jpg", "empty segment"),
        ("dataset/images\\train\\e.jpg", "backslash"),
    ],
)
def test_keys_that_escape_the_dataset_are_refused_by_name(tmp_path: Path, key: str, needle: str) -> None:
    files = memory_job(tmp_path)
    files[key] = b"x"
    config, _, problems = inspect_job(MemorySource(files))
    assert config is None
    text = str(problems_error(problems, "job 'pets'"))
    assert f"jobs/pets/{key}" in text and needle in text, text


def test_folder_markers_are_not_escaping_keys(tmp_path: Path) -> None:
    files = memory_job(tmp_path)
    files["dataset/images/"] = b""
    config, _, problems = inspect_job(MemorySource(files))
    assert config is not None and problems == []


# ---------------------------------------------------------------- values only the instance would refuse


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("imgsz: 100000", "imgsz: 100000 is larger than 4096"),
        ("imgsz: [640, 50000]", "larger than 4096"),
        ("batch: 1000000", "batch: 1000000 is more than"),
        ("epochs: 1000000000", "epochs: 1000000000 is more than 10000"),
        ("workers: 100000", "workers: 100000 is more than 192"),
        ("time: 100000", "time: 100000 is more than"),
        ("patience: 1e12", "patience"),
    ],
)
def test_values_no_gpu_on_offer_can_run_are_refused_with_the_reason(
    tmp_path: Path, line: str, needle: str
) -> None:
    job = make_job(tmp_path / "job")
    base = CONFIG.replace("imgsz: 64\n", "").replace("batch: 8\n", "").replace("epochs: 3\n", "")
    (job / "config.yaml").write_text(base + line + "\n")
    message = refusal(job)
    assert needle in message, message


def test_batch_is_bounded_by_what_the_image_size_lets_a_gpu_hold(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job")
    (job / "config.yaml").write_text(
        CONFIG.replace("imgsz: 64", "imgsz: 1280").replace("batch: 8", "batch: 256")
    )
    assert "80 GB" in refusal(job)
    (job / "config.yaml").write_text(
        CONFIG.replace("imgsz: 64", "imgsz: 320").replace("batch: 8", "batch: 256")
    )
    check_job(LocalSource(job))  # a quarter of the pixels: four times the images


# ---------------------------------------------------------------- `spotyolo validate` memory


def _peak_rss_mb(job: Path) -> tuple[float, int, str]:
    """Peak RSS of `spotyolo validate JOB` in a fresh process (MB), its exit code and stderr."""
    code = (
        "import resource, sys\n"
        "from spotyolo.cli import main\n"
        "sys.argv = ['spotyolo', 'validate', sys.argv[1]]\n"
        "try:\n    rc = main()\nexcept SystemExit as e:\n    rc = e.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc, file=sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(job)], capture_output=True, text=True, env=env, timeout=300
    )
    rss_kb, rc = out.stdout.splitlines()[-1].split()
    return int(rss_kb) / 1024, int(rc), out.stderr


def test_spotyolo_validate_memory_is_bounded_on_a_hostile_dataset(tmp_path: Path) -> None:
    """Huge label files, a huge image list, many files; then a huge data.yaml: each run stays
    < 200 MB above a tiny job's, and says what is wrong in a few KB."""
    base_mb, rc, _ = _peak_rss_mb(make_job(tmp_path / "small"))
    assert rc == 0
    job = make_job(tmp_path / "hostile")
    ds = job / "dataset"
    (ds / "data.yaml").write_text(DATA_YAML.replace("val: images/val", "val: [images/val, list.txt]"))
    with open(ds / "labels/train/a.txt", "wb") as f:  # 400 MB of label, sparse: costs no disk
        f.truncate(400 * 1024 * 1024)
    (ds / "labels/train/b.txt").write_text("0 " + "7" * 5_000_000 + "\n" + "9 0.5 0.5 0.1 0.1\n" * 200_000)
    (ds / "list.txt").write_text("./images/missing.jpg\n" * 300_000)
    many = ds / "images/train/extra"
    many.mkdir()
    for i in range(20_000):
        (many / f"{i}.jpg").touch()
    rss_mb, rc, err = _peak_rss_mb(job)
    assert rc == 1 and len(err) < 10_000, err[-3000:]
    assert "dataset/labels/train/a.txt" in err and "dataset/list.txt:1" in err
    assert rss_mb - base_mb < 200, (rss_mb, base_mb)

    with open(ds / "data.yaml", "ab") as f:  # 300 MB data.yaml
        f.truncate(300 * 1024 * 1024)
    rss_mb, rc, err = _peak_rss_mb(job)
    assert rc == 1 and "dataset/data.yaml" in err and len(err) < 2000, err[-3000:]
    assert rss_mb - base_mb < 200, (rss_mb, base_mb)


def test_a_job_json_of_an_earlier_version_still_reads() -> None:
    """A run in flight across an upgrade: its job.json has class names and per-class counts."""
    from spotyolo.core.models import DatasetSummary

    old = {"splits": {"train": {"images": 2, "instances": {"cat": 1, "dog": 2}}}, "names": ["cat", "dog"]}
    summary = DatasetSummary.model_validate(old)
    assert summary.splits["train"].instances == 3 and "names" not in summary.model_dump()
