"""Publishing a run's weights when what weights/<job>/ holds is not what a clean run left there:
an unreadable or older metrics.json, a trainer that wrote no metrics.json or no results.csv, a
reported key that climbs out of the run. One S3 emulator for the module; a job name per test."""

from __future__ import annotations

import contextlib
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
from spotyolo.core.cost import CostReport
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


# ------------------------------------------------------------------ plots and cost next to the weights


def plot_run(s3: Any, j: JobSpec) -> TrainResult:
    """A run that drew results.png and a confusion matrix, reported as its artifacts."""
    run_files(s3, j)
    base = f"runs/{j.name}/run-new/artifacts/"
    for name in ("results.png", "confusion_matrix.png", "trainer.log"):
        put(s3, base + name, f"new {name}")
    return result(**{n: base + n for n in ("results.png", "confusion_matrix.png", "trainer.log")})


def old_model_with_plots(s3: Any, j: JobSpec) -> None:
    put(s3, f"weights/{j.name}/best.pt", "old best")
    put(s3, f"weights/{j.name}/metrics.json", json.dumps({"run_id": "run-old"}))
    put(s3, f"weights/{j.name}/plots/results.png", "old results.png")
    put(s3, f"weights/{j.name}/plots/F1_curve.png", "old F1_curve.png")  # the new run drew none


def folder(s3: Any, prefix: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix) :]: (read(s3, o["Key"]) or b"").decode() for o in listed}


NEW_PLOTS = {"confusion_matrix.png": "new confusion_matrix.png", "results.png": "new results.png"}
OLD_PLOTS = {"F1_curve.png": "old F1_curve.png", "results.png": "old results.png"}


def test_the_runs_plots_replace_the_old_models_which_move_to_previous(s3: Any) -> None:
    j = job()
    run = plot_run(s3, j)
    old_model_with_plots(s3, j)
    for _ in range(2):  # a retried Check result publishes the same set
        published = check_result.promote(s3, j, run)
    assert folder(s3, f"weights/{j.name}/plots/") == NEW_PLOTS  # only this run's, no stale F1 curve
    assert folder(s3, f"weights/{j.name}/previous/plots/") == OLD_PLOTS  # kept with the old best.pt
    assert read(s3, f"weights/{j.name}/previous/best.pt") == b"old best"
    # previous/ says which run it holds: the old one, also after the retry
    assert json.loads(read(s3, f"weights/{j.name}/previous/metrics.json") or b"")["run_id"] == "run-old"
    assert [k for k in published if "/plots/" in k] == [
        f"weights/{j.name}/plots/{n}" for n in ("confusion_matrix.png", "results.png")
    ]
    assert read(s3, f"weights/{j.name}/trainer.log") is None  # plots and weights only


def test_a_plot_reported_outside_the_run_publishes_nothing(s3: Any) -> None:
    j = job()
    run_files(s3, j)
    put(s3, "runs/other/run-x/artifacts/results.png", "someone else's")
    with pytest.raises(TrainerError, match="outside this run's"):
        check_result.promote(s3, j, result(**{"results.png": "runs/other/run-x/artifacts/results.png"}))
    assert folder(s3, f"weights/{j.name}/") == {}


class FailingOnce:
    """S3 whose writes fail once, after ``allowed`` of them went through (a Lambda timeout)."""

    def __init__(self, s3: Any, allowed: int) -> None:
        self._s3, self.allowed = s3, allowed

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._s3, name)
        if name not in ("copy_object", "put_object", "delete_object"):
            return call

        def write(**kw: Any) -> Any:
            self.allowed -= 1
            if self.allowed == -1:
                raise ConnectionError("Lambda ran out of time")
            return call(**kw)

        return write


@pytest.mark.parametrize("allowed", range(13))  # each of its 13 writes, plots included
def test_a_promotion_with_plots_cut_short_is_completed_by_the_retry(s3: Any, allowed: int) -> None:
    j = job()
    run = plot_run(s3, j)
    old_model_with_plots(s3, j)
    try:
        check_result.promote(FailingOnce(s3, allowed), j, run)
    except ConnectionError:
        assert json.loads(read(s3, f"weights/{j.name}/metrics.json") or b"")["run_id"] == "run-old"
    check_result.promote(s3, j, run)
    assert folder(s3, f"weights/{j.name}/plots/") == NEW_PLOTS
    assert folder(s3, f"weights/{j.name}/previous/plots/") == OLD_PLOTS


def test_the_published_metrics_json_says_the_cost_and_the_saving(s3: Any) -> None:
    j = job()
    run_files(s3, j)
    report = CostReport(cost_usd=0.8312, on_demand_usd=2.6, spot_attempts=1)
    check_result.promote(s3, j, result(), report)
    doc = json.loads(read(s3, f"weights/{j.name}/metrics.json") or b"")
    assert (doc["cost_usd"], doc["on_demand_usd"], doc["saving_pct"]) == (0.8312, 2.6, 68)
    served = s3.head_object(Bucket="bkt", Key=f"weights/{j.name}/metrics.json")
    assert served["ContentType"] == "application/json"  # a browser shows it as JSON
    assert doc["run_id"] == "run-new" and doc["metrics"] == {"recall": 0.9}


@pytest.mark.parametrize("allowed", range(8))  # each of the 8 writes of a first promotion
def test_a_first_promotion_cut_short_keeps_the_unrecorded_model_in_previous(s3: Any, allowed: int) -> None:
    """weights/ held a model no run recorded (copied there by hand): a promotion cut short at
    any write, then retried, keeps that model in previous/ as "no recorded run", never the new one."""
    j = job()
    run_files(s3, j)
    put(s3, f"weights/{j.name}/best.pt", "hand-made best")
    with contextlib.suppress(ConnectionError):
        check_result.promote(FailingOnce(s3, allowed), j, result())
    check_result.promote(s3, j, result())
    assert read(s3, f"weights/{j.name}/previous/best.pt") == b"hand-made best"
    assert json.loads(read(s3, f"weights/{j.name}/previous/metrics.json") or b"")["run_id"] is None
    assert read(s3, f"weights/{j.name}/best.pt") == b"new best"


def test_a_run_without_best_pt_publishes_nothing_and_says_where_to_look(s3: Any) -> None:
    j = job()
    put(s3, f"runs/{j.name}/run-new/artifacts/last.pt", "new last")
    with pytest.raises(TrainerError) as refused:
        check_result.promote(s3, j, result())
    assert str(refused.value) == (
        f"the trainer reported success but s3://bkt/runs/{j.name}/run-new/artifacts/best.pt is missing, "
        "so there is nothing to publish; see the run's train.log under its artifacts/"
    )
    assert folder(s3, f"weights/{j.name}/") == {}


def test_a_folder_marker_and_a_users_subfolder_under_plots_are_left_alone(s3: Any) -> None:
    """The S3 console's "create folder" leaves a `plots/` marker; a user may keep files in a
    subfolder. Neither is a plot: the promotion neither lists, moves nor deletes them."""
    j = job()
    run = plot_run(s3, j)
    old_model_with_plots(s3, j)
    put(s3, f"weights/{j.name}/plots/", "")
    put(s3, f"weights/{j.name}/plots/notes/labels-review.txt", "mine")
    published = check_result.promote(s3, j, run)
    assert [k for k in published if "/plots/" in k] == [
        f"weights/{j.name}/plots/{n}" for n in ("confusion_matrix.png", "results.png")
    ]
    assert read(s3, f"weights/{j.name}/plots/notes/labels-review.txt") == b"mine"
    assert read(s3, f"weights/{j.name}/plots/") == b""
    assert folder(s3, f"weights/{j.name}/previous/plots/") == OLD_PLOTS
