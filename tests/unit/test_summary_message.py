"""The notification a user reads when training ends: the verdict against the target, the numbers,
the cost. Pure (``check_result.summarize``); Check result's S3 side is in tests/functions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from spotyolo.core.cost import CostReport
from spotyolo.core.models import Attempt, ErrorInfo, JobConfig, JobSpec, TrainResult
from spotyolo.steps.check_result import job_seconds, summarize
from spotyolo.steps.ending import failure_summary


def job(name: str = "shapes", **config: Any) -> JobSpec:
    return JobSpec(
        name=name,
        bucket="bkt",
        run_id="run-a",
        execution="exec",
        config=JobConfig.model_validate({"model": "yolo11n.yaml", **config}),
        dataset={"bytes": 1, "files": 1},
        instance_types=["g5.xlarge"],
        deadline=int(time.time()) + 3600,
        stall_seconds=600,
    )


def attempt(number: int = 1, interruptions: int = 0) -> Attempt:
    return Attempt(
        number=number,
        capacity="spot",
        instance_types=["g5.xlarge"],
        seconds_left=3000,
        heartbeat_seconds=600,
        interruptions=interruptions,
    )


def result(**metrics: float) -> TrainResult:
    return TrainResult(metrics=metrics, best_epoch=9, epochs=10, seconds=75, attempt=1)


@pytest.mark.parametrize(
    ("target", "metrics", "status", "met", "head"),
    [
        (
            {"metric": "recall", "min": 0.8},
            {"recall": 0.9, "mAP50": 0.5},
            "complete",
            True,
            "90.0% recall (mAP50",
        ),
        ({"metric": "recall", "min": 0.8}, {"recall": 0.8}, "complete", True, "80.0% recall"),
        ({"metric": "recall", "min": 0.8}, {"recall": 0.79}, "below target", False, "79.0% recall"),
        (
            {"metric": "mAP50", "min": 0.5},
            {"mAP50": 0.25, "mAP50-95": 0.1},
            "below target",
            False,
            "mAP50 0.250",
        ),
        (
            {"metric": "precision", "min": 0.5},
            {"metrics/precision(B)": 0.4},
            "below target",
            False,
            "40.0% precision",
        ),
        (
            {"metric": "recall", "min": 0.8},
            {"mAP50": 0.9},
            "complete",
            None,
            "recall not reported (mAP50 0.900)",
        ),
        (None, {"mAP50": 0.9, "mAP50-95": 0.6}, "complete", None, "mAP50 0.900 (mAP50-95 0.600)"),
        (None, {"metrics/mAP50(B)": 0.9}, "complete", None, "mAP50 0.900 ·"),
    ],
)
def test_the_verdict_against_the_target(
    target: dict[str, Any] | None, metrics: dict[str, float], status: str, met: bool | None, head: str
) -> None:
    s = summarize(job(target=target), attempt(), result(**metrics), 0.0)
    assert s.status == status and s.met_target is met
    # the execution's output names the target the model was judged against
    assert (s.target.model_dump() if s.target else None) == target
    assert s.subject == f"spotyolo: shapes {status}"
    assert s.message.startswith(f"shapes {status}: {head}")
    if target:
        value = (
            f"{target['min'] * 100:.1f}%"
            if target["metric"] in ("precision", "recall")
            else f"{target['min']:.3f}"
        )
        assert f" · target {target['metric']} ≥ {value} · " in s.message
    else:
        assert "target" not in s.message


def test_a_model_below_its_target_is_never_announced_as_complete() -> None:
    s = summarize(job(target={"metric": "recall", "min": 0.95}), attempt(), result(recall=0.9), 0.37)
    assert s.status == "below target" and s.met_target is False
    assert s.subject == "spotyolo: shapes below target"
    assert "complete" not in s.message and "complete" not in s.subject


def test_the_message_gives_epochs_time_interruptions_cost_and_where_the_weights_are() -> None:
    s = summarize(job(), attempt(3, interruptions=2), result(mAP50=0.9), 1.234)
    first, second = s.message.split("\n")
    assert first == "shapes complete: mAP50 0.900 · 10 epochs · 1m15s · 2 interruptions · ~$1.23"
    assert second == "weights: s3://bkt/weights/shapes/best.pt"
    assert (s.cost_usd, s.attempts, s.interruptions, s.weights) == (1.234, 3, 2, "s3://bkt/weights/shapes/")
    assert s.metrics == {"mAP50": 0.9}
    one = summarize(job(), attempt(2, interruptions=1), result(mAP50=0.9), 0.0, elapsed=3723)
    assert " · 10 epochs · 1h02m · 1 interruption · ~$0.00" in one.message
    assert "interruption" not in summarize(job(), attempt(), result(mAP50=0.9), 0.0).message


def test_a_long_job_name_keeps_the_subject_within_email_limits() -> None:
    name = "a" * 120
    s = summarize(job(name), attempt(), result(mAP50=0.9), 0.0)
    assert len(s.subject) < 100 and s.subject.startswith("spotyolo: aaa")  # SNS: under 100


def test_the_job_time_counts_from_when_the_run_was_accepted() -> None:
    j = job().model_copy(update={"created": "2026-11-25T10:00:00Z"})
    started = 1795600800.0  # 2026-11-25T10:00:00Z
    assert job_seconds(j, now=started + 90) == 90
    assert job_seconds(j, now=started - 5) == 0.0  # a skewed clock never gives a negative time
    assert job_seconds(job()) is None  # not recorded (an older execution)
    assert abs((job_seconds(j) or 0) - (time.time() - started)) < 5


def test_the_job_time_is_right_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accepted time is UTC: read as local time it would be hours off on a user's laptop
    (the local engine) or any host not set to UTC."""
    monkeypatch.setenv("TZ", "PST+08")  # POSIX form: needs no zoneinfo files
    time.tzset()
    try:
        j = job().model_copy(update={"created": "2026-11-25T10:00:00Z"})
        assert job_seconds(j, now=1795600800.0 + 90) == 90
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_message_says_the_cost_the_saving_and_where_the_plots_are() -> None:
    spot = CostReport(cost_usd=0.834, on_demand_usd=2.6, spot_attempts=2)
    plots = ["val_batch0_pred.jpg", "BoxPR_curve.png", "confusion_matrix.png", "results.png", "labels.jpg"]
    s = summarize(job(), attempt(2, interruptions=1), result(mAP50=0.9), spot, elapsed=92, plots=plots)
    first, weights, plot_line = s.message.split("\n")
    assert first.endswith(" · 1m32s · 1 interruption · $0.83 on spot, 68% less than on-demand")
    assert weights == "weights: s3://bkt/weights/shapes/best.pt"
    assert plot_line == (
        "plots: s3://bkt/weights/shapes/plots/ (results.png, confusion_matrix.png, BoxPR_curve.png, "
        "val_batch0_pred.jpg, ...)"
    )
    assert s.cost_usd == 0.834
    on_demand = CostReport(cost_usd=2.1, on_demand_usd=2.1, spot_attempts=0)
    plain = summarize(job(), attempt(), result(mAP50=0.9), on_demand, plots=["results.png"])
    assert plain.message.split("\n")[0].endswith(" · $2.10 on-demand")
    assert "less than" not in plain.message
    assert plain.message.endswith("plots: s3://bkt/weights/shapes/plots/ (results.png)")
    assert "plots" not in summarize(job(), attempt(), result(mAP50=0.9), on_demand).message


def test_a_failed_run_says_what_it_cost_and_what_spot_saved() -> None:
    error = ErrorInfo(Error="TrainingDiverged", Cause="loss is nan at epoch 3")
    spot = CostReport(cost_usd=0.41, on_demand_usd=1.0, spot_attempts=1)
    s = failure_summary("shapes", error, job(), cost_usd=0.41, attempts=2, interruptions=1, cost=spot)
    assert s.message.endswith(
        "\ncost so far $0.41 on spot, 59% less than on-demand · 2 attempts · 1 interruption"
    )
    on_demand = CostReport(cost_usd=1.0, on_demand_usd=1.0, spot_attempts=0)
    s = failure_summary("shapes", error, job(), cost_usd=1.0, attempts=1, interruptions=0, cost=on_demand)
    assert s.message.endswith("\ncost so far $1.00 on-demand · 1 attempt")


@pytest.mark.parametrize(
    ("error", "named"),
    [("States.Timeout", "TrainerStalled"), ("States.HeartbeatTimeout", "TrainerStalled"),
     ("States.Runtime", "PipelineError")],
)  # fmt: skip
def test_a_failure_notification_names_the_error_the_execution_fails_with(error: str, named: str) -> None:
    """A trainer that stops heartbeating fails the execution with TrainerStalled; the subject
    said "failed (States.Timeout)", a name the user sees nowhere else (the queue fault campaign,
    seed 19: a stalled trainer)."""
    s = failure_summary("shapes", ErrorInfo(Error=error, Cause=""), job(), cost_usd=0.1, attempts=1,
                        interruptions=0)  # fmt: skip
    assert s.error == named and s.subject == f"spotyolo: shapes failed ({named})"
