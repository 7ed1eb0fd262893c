"""Publishing a run's weights when what weights/<job>/ holds is not what a clean run left there:
an unreadable or older metrics.json, a trainer that wrote no metrics.json or no results.csv, a
reported key that climbs out of the run. One S3 emulator for the module; a job name per test."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spotyolo.contract.errors import TrainerError
from spotyolo.core.models import JobConfig, JobSpec, TrainResult
from spotyolo.steps import check_result

_names = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        yield client


def job() -> JobSpec:
    return JobSpec(
        name=f"promo-{next(_names)}",
        bucket="bkt",
        run_id="run-new",
        execution="exec",
        config=JobConfig(model="yolo11n.yaml"),
        dataset={"bytes": 1, "files": 1},
        instance_types=["g5.xlarge"],
        deadline=int(time.time()) + 3600,
        stall_seconds=600,
    )


def result(**artifacts: str) -> TrainResult:
    return TrainResult(
        metrics={"recall": 0.9}, best_epoch=4, epochs=5, seconds=12.5, attempt=2, artifacts=artifacts
    )


def put(s3: Any, key: str, body: bytes | str) -> None:
    s3.put_object(Bucket="bkt", Key=key, Body=body.encode() if isinstance(body, str) else body)


def read(s3: Any, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket="bkt", Key=key)["Body"].read()  # type: ignore[no-any-return]
    except s3.exceptions.NoSuchKey:
        return None


def run_files(s3: Any, j: JobSpec, *, metrics: bool = True, results: bool = True) -> None:
    base = f"runs/{j.name}/run-new/artifacts/"
    put(s3, base + "best.pt", "new best")
    put(s3, base + "last.pt", "new last")
    if results:
        put(s3, base + "results.csv", "new csv")
    if metrics:
        put(s3, base + "metrics.json", json.dumps({"job": j.name, "metrics": {"recall": 0.9}}))


@pytest.mark.parametrize("old_metrics", ["not json {", "[1, 2]"], ids=["garbage", "a-list"])
def test_weights_without_a_readable_record_are_kept_as_unrecorded(s3: Any, old_metrics: str) -> None:
    j = job()
    run_files(s3, j)
    put(s3, f"weights/{j.name}/best.pt", "old best")
    put(s3, f"weights/{j.name}/metrics.json", old_metrics)
    published = check_result.promote(s3, j, result())
    assert read(s3, f"weights/{j.name}/previous/best.pt") == b"old best"
    assert json.loads(read(s3, f"weights/{j.name}/previous/metrics.json") or b"") == {
        "note": "weights/ held no recorded run before",
        "run_id": None,
    }
    assert read(s3, f"weights/{j.name}/best.pt") == b"new best"
    assert json.loads(read(s3, f"weights/{j.name}/metrics.json") or b"") == {
        "job": j.name,
        "metrics": {"recall": 0.9},
        "run_id": "run-new",
    }
    assert published == [
        f"weights/{j.name}/{n}" for n in ("best.pt", "last.pt", "results.csv", "metrics.json")
    ]


def test_an_older_record_without_a_run_id_is_kept_with_its_numbers(s3: Any) -> None:
    j = job()
    run_files(s3, j)
    put(s3, f"weights/{j.name}/best.pt", "old best")
    put(s3, f"weights/{j.name}/metrics.json", json.dumps({"metrics": {"recall": 0.7}}))
    check_result.promote(s3, j, result())
    assert json.loads(read(s3, f"weights/{j.name}/previous/metrics.json") or b"") == {
        "metrics": {"recall": 0.7},
        "run_id": None,
    }


def test_a_run_without_metrics_json_or_results_csv_publishes_what_it_has(s3: Any) -> None:
    j = job()
    run_files(s3, j, metrics=False, results=False)
    put(s3, f"weights/{j.name}/results.csv", "stale csv of another run")
    published = check_result.promote(s3, j, result())
    assert read(s3, f"weights/{j.name}/results.csv") is None  # never mix two runs' files
    assert json.loads(read(s3, f"weights/{j.name}/metrics.json") or b"") == {
        "job": j.name,
        "attempt": 2,
        "metrics": {"recall": 0.9},
        "best_epoch": 4,
        "epochs": 5,
        "seconds": 12.5,
        "run_id": "run-new",
    }
    assert published == [f"weights/{j.name}/{n}" for n in ("best.pt", "last.pt", "metrics.json")]
    assert json.loads(read(s3, f"weights/{j.name}/previous/metrics.json") or b"") == {
        "note": "weights/ held no recorded run before",
        "run_id": None,
    }


def test_reported_artifacts_inside_the_run_are_published(s3: Any) -> None:
    j = job()
    base = f"runs/{j.name}/run-new/artifacts/"
    put(s3, base + "sub/best-renamed.pt", "renamed best")
    run_files(s3, j)
    check_result.promote(s3, j, result(**{"best.pt": base + "sub/best-renamed.pt"}))
    assert read(s3, f"weights/{j.name}/best.pt") == b"renamed best"


@pytest.mark.parametrize(
    "key", ["runs/{job}/run-new/artifacts/../../run-old/artifacts/best.pt", "weights/x/best.pt"]
)
def test_a_reported_key_outside_the_run_publishes_nothing(s3: Any, key: str) -> None:
    j = job()
    run_files(s3, j)
    with pytest.raises(TrainerError, match="outside this run's"):
        check_result.promote(s3, j, result(**{"best.pt": key.format(job=j.name)}))
    assert read(s3, f"weights/{j.name}/best.pt") is None


class Forbidden:
    """S3 that refuses to read weights/ (a bucket policy, a KMS key): not the same as missing."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kw: Any) -> Any:
        if kw["Key"].startswith("weights/"):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")
        return self._s3.get_object(**kw)


def test_weights_that_cannot_be_read_are_never_overwritten(s3: Any) -> None:
    j = job()
    run_files(s3, j)
    put(s3, f"weights/{j.name}/best.pt", "old best")
    put(s3, f"weights/{j.name}/metrics.json", json.dumps({"run_id": "run-old"}))
    with pytest.raises(ClientError, match="AccessDenied"):
        check_result.promote(Forbidden(s3), j, result())
    assert read(s3, f"weights/{j.name}/best.pt") == b"old best"
