"""The trainer end to end, in-process, with real Ultralytics (CPU) against moto and real task tokens.

One module-wide AWS world; the runs that leave a checkpoint behind (divergence, interruption)
are module fixtures, so the resume tests reuse them instead of training again.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from moto import mock_aws
from trainer_world import BUCKET, World

from spotyolo.contract import layout
from spotyolo.core.models import TrainResult
from spotyolo.local.imds import FakeMetadataService
from spotyolo.trainer.main import Clients, TrainerEnv, TrainerRun
from spotyolo.trainer.outcome import ExitCode

pytestmark = pytest.mark.timeout(300)

HEARTBEAT = 0.3


class RecordingSfn:
    """The Step Functions client, recording what the trainer sent (the token left out)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not name.startswith("send_task_"):
            return method

        def call(**kwargs: Any) -> Any:
            self.calls.append((time.monotonic(), name, {k: v for k, v in kwargs.items() if k != "taskToken"}))
            return method(**kwargs)

        return call

    def named(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, kw) for t, n, kw in self.calls if n == name]


@dataclass
class Run:
    code: int
    execution: str
    outcome: dict[str, Any]
    sfn: RecordingSfn
    attempt: TrainerRun
    workdir: Path
    epochs_started: list[int] = field(default_factory=list)
    #: the epoch of each batch started (on_train_batch_start: the monitor may stop at its end)
    batches: list[int] = field(default_factory=list)
    #: fp32 weights at the end of training: the model's and the EMA's
    final: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def failure(self) -> dict[str, Any]:
        failures = self.sfn.named("send_task_failure")
        assert len(failures) == 1, self.sfn.calls
        return failures[0][1]

    def log(self) -> str:
        return self.attempt.log_file.read_text()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield World.create(
            boto3.client("s3"),
            boto3.client("dynamodb"),
            boto3.client("stepfunctions"),
            boto3.client("sqs"),
            boto3.client("iam"),
        )


@pytest.fixture(scope="module")
def imds() -> Iterator[FakeMetadataService]:
    with FakeMetadataService(instance_id="i-0trainer") as service:
        yield service


@pytest.fixture(scope="module")
def train(
    world: World,
    imds: FakeMetadataService,
    ultralytics_offline: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Run]:
    def run(
        spec: Any,
        number: int,
        callbacks: dict[str, list[Callable[..., None]]] | None = None,
        setup: Callable[[TrainerRun], None] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Run:
        execution = world.start_attempt(spec, number)
        workdir = tmp_path_factory.mktemp(f"{spec.name}-{number}")
        env = TrainerEnv.from_env(
            world.env(
                spec,
                number,
                workdir,
                SPOTYOLO_HEARTBEAT_SECONDS=str(HEARTBEAT),
                SPOTYOLO_IMDS_POLL_SECONDS="0.05",
                AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
                **(environ or {}),
            )
        )
        sfn = RecordingSfn(world.sfn)
        started: list[int] = []
        batches: list[int] = []
        final: dict[str, dict[str, torch.Tensor]] = {}

        def keep_weights(trainer: Any) -> None:
            for name, module in (("model", trainer.model), ("ema", trainer.ema.ema)):
                final[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}

        extra = {k: list(v) for k, v in (callbacks or {}).items()}
        extra.setdefault("on_train_epoch_start", []).append(lambda trainer: started.append(trainer.epoch))
        extra.setdefault("on_train_batch_start", []).insert(0, lambda trainer: batches.append(trainer.epoch))
        extra.setdefault("on_train_end", []).append(keep_weights)

        def no_hard_exit(code: int) -> None:
            raise AssertionError(f"the watcher tried to end the process with {code}")

        attempt = TrainerRun(
            env, Clients(world.s3, world.ddb, sfn), extra_callbacks=extra, hard_exit=no_hard_exit
        )
        if setup:
            setup(attempt)
        code = attempt.run()
        return Run(code, execution, world.outcome(execution), sfn, attempt, workdir, started, batches, final)

    return run


def _s3_json(world: World, key: str) -> Any:
    return json.loads(world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _checkpoint(world: World, spec: Any, tmp: Path) -> dict[str, Any]:
    path = tmp / "ckpt.pt"
    world.s3.download_file(BUCKET, layout.checkpoint_key(spec.name, spec.run_id), str(path))
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt


def _results_epochs(world: World, spec: Any) -> list[int]:
    body = world.s3.get_object(Bucket=BUCKET, Key=layout.artifact_key(spec.name, spec.run_id, "results.csv"))
    rows = list(csv.DictReader(io.StringIO(body["Body"].read().decode())))
    return [int(float(row["epoch"])) for row in rows]


# ---------------------------------------------------------------- success


@pytest.fixture(scope="module")
def uninterrupted(world: World, train: Callable[..., Run], shapes_job: Path) -> tuple[Any, Run]:
    """The shapes job trained once without a notice: what an interrupted run must end like."""
    spec = world.upload_job("ok", shapes_job, "r1")
    return spec, train(spec, 1)


def test_two_epochs_succeed_with_metrics_and_artifacts(world: World, uninterrupted: tuple[Any, Run]):
    spec, run = uninterrupted

    assert run.code == ExitCode.SUCCESS, run.log()
    assert run.outcome["status"] == "SUCCEEDED"
    result = TrainResult.model_validate_json(run.outcome["output"])
    assert set(result.metrics) == {"precision", "recall", "mAP50", "mAP50-95", "fitness"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.epochs == 2 and result.attempt == 1 and 1 <= result.best_epoch <= 2 and result.seconds > 0
    for name in ("best.pt", "last.pt", "results.csv", "metrics.json", "trainer.log"):
        key = result.artifacts[name]
        assert key == layout.artifact_key("ok", "r1", name)
        world.s3.head_object(Bucket=BUCKET, Key=key)
    metrics_json = _s3_json(world, result.artifacts["metrics.json"])
    assert metrics_json["metrics"] == result.metrics
    assert "metrics/mAP50(B)" in metrics_json["ultralytics"]
    assert _results_epochs(world, spec) == [1, 2]
    progress = world.table.get("ok").progress
    assert progress and (progress.epoch, progress.epochs, progress.attempt) == (2, 2, 1)
    assert {"box_loss", "cls_loss", "dfl_loss"} <= set(progress.losses)
    assert run.sfn.named("send_task_heartbeat"), "no heartbeat at all"
    log_text = run.log()
    assert "epoch 1/2" in log_text and "epoch 2/2" in log_text and "box_loss=" in log_text
    token = world.table.token_for("ok", "r1", 1)
    assert token and token not in log_text


def test_a_run_with_plots_on_uploads_ultralytics_plots_among_its_artifacts(
    world: World, train: Callable[..., Run], shapes_job: Path
):
    """Plots are on by default, as in Ultralytics (the test jobs turn them off for speed): the
    run's results.png, PR curve, confusion matrix and val predictions go up with its weights."""
    spec = world.upload_job("plotted", shapes_job, "r1", epochs=1, plots=True)
    run = train(spec, 1)
    assert run.code == ExitCode.SUCCESS, run.log()
    result = TrainResult.model_validate_json(run.outcome["output"])
    plots = {name for name in result.artifacts if layout.is_plot(name)}
    assert {"results.png", "confusion_matrix.png", "val_batch0_pred.jpg"} <= plots, sorted(result.artifacts)
    assert any(name.endswith("PR_curve.png") for name in plots), sorted(plots)
    for name in plots:
        assert result.artifacts[name] == layout.artifact_key("plotted", "r1", name)
    body = world.s3.get_object(Bucket=BUCKET, Key=result.artifacts["results.png"])["Body"].read()
    assert body.startswith(b"\x89PNG") and len(body) > 10_000  # a drawn chart, not an empty file


def test_a_run_that_finished_before_its_instance_was_lost_is_not_trained_again(
    world: World, train: Callable[..., Run], shapes_job: Path
):
    """TrainerRun 1 uploaded its artifacts, then its instance died before SendTaskSuccess: attempt 2
    re-sends that result instead of paying for the whole run again (its last.pt is final)."""
    spec = world.upload_job("done", shapes_job, "r1")
    first = train(spec, 1)
    assert first.code == ExitCode.SUCCESS, first.log()
    log_key = layout.artifact_key("done", "r1", "trainer.log")
    first_log = world.s3.get_object(Bucket=BUCKET, Key=log_key)["Body"].read()

    second = train(spec, 2)
    assert second.code == ExitCode.SUCCESS, second.log()
    assert second.epochs_started == [], "no epoch may be trained again"
    result = TrainResult.model_validate_json(second.outcome["output"])
    earlier = TrainResult.model_validate_json(first.outcome["output"])
    assert result.attempt == 2 and result.epochs == 2 and result.metrics == earlier.metrics
    assert result.artifacts["best.pt"] == layout.artifact_key("done", "r1", "best.pt")
    assert world.s3.get_object(Bucket=BUCKET, Key=log_key)["Body"].read() == first_log


# ---------------------------------------------------------------- checkpoint uploads by time (issue 11)


def test_a_long_checkpoint_period_uploads_no_epoch_but_the_last(
    world: World, train: Callable[..., Run], shapes_job: Path, tmp_path: Path
):
    """checkpoint_minutes (10) is longer than the run: no epoch's checkpoint goes up, only the
    final one, once, copied before Ultralytics strips last.pt (so it can still be resumed)."""
    spec = world.upload_job("period-long", shapes_job, "r1", epochs=3)
    assert spec.config.checkpoint_minutes == 10
    queued: list[int] = []
    holder: dict[str, TrainerRun] = {}

    def count(trainer: Any) -> None:  # after the monitor's own on_fit_epoch_end
        monitor = holder["attempt"].monitor
        assert monitor is not None
        assert monitor.uploader.settle(60)
        queued.append(monitor.uploader.uploads)

    run = train(spec, 1, {"on_fit_epoch_end": [count]}, setup=lambda a: holder.update(attempt=a))
    assert run.code == ExitCode.SUCCESS, run.log()
    assert queued[:3] == [0, 0, 1], "an epoch's checkpoint went up before its period"
    assert run.attempt.monitor is not None and run.attempt.monitor.uploader.uploads == 1
    ckpt = _checkpoint(world, spec, tmp_path)
    assert ckpt["epoch"] == 2 and ckpt["optimizer"] is not None  # the last epoch, not the stripped file


def test_a_checkpoint_goes_up_once_its_period_has_passed_and_bounds_a_loss_without_notice(
    world: World, train: Callable[..., Run], shapes_job: Path, tmp_path: Path
):
    """A clock that moves 400 s per epoch, checkpoint_minutes 10: epoch 2's checkpoint goes up
    (800 s), epoch 3's does not (400 s after it), epoch 4's does (the end). An instance lost
    without a notice after epoch 3 would find epoch 2 in S3: it loses less than the period."""
    spec = world.upload_job("period-short", shapes_job, "r1", epochs=4, checkpoint_minutes=10)
    holder: dict[str, TrainerRun] = {}
    now = [0.0]
    in_s3: list[int] = []
    queued: list[int] = []

    def fake_clock(trainer: Any) -> None:
        monitor = holder["attempt"].monitor
        assert monitor is not None
        monitor.clock = lambda: now[0]
        monitor.uploaded_at = 0.0

    def advance(trainer: Any) -> None:
        now[0] += 400.0

    def seen(trainer: Any) -> None:
        monitor = holder["attempt"].monitor
        assert monitor is not None and monitor.uploader.settle(60)
        queued.append(monitor.uploader.uploads)
        if trainer.epoch == 2:  # the instance vanishes here: what would the next attempt find?
            in_s3.append(int(_checkpoint(world, spec, tmp_path)["epoch"]))

    run = train(
        spec,
        1,
        {
            "on_pretrain_routine_end": [fake_clock],
            "on_train_epoch_start": [advance],
            "on_fit_epoch_end": [seen],
        },
        setup=lambda a: holder.update(attempt=a),
    )
    assert run.code == ExitCode.SUCCESS, run.log()
    assert queued[:4] == [0, 1, 1, 2]
    assert in_s3 == [1], "after epoch 3 the checkpoint of epoch 2 is in S3"


# ---------------------------------------------------------------- divergence, then resume elsewhere


def _poison_at_epoch_2(trainer: Any) -> None:
    if trainer.epoch == 1:
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))


@pytest.fixture(scope="module")
def diverged(world: World, train: Callable[..., Run], shapes_job: Path) -> tuple[Any, Run]:
    spec = world.upload_job("nan", shapes_job, "r1")
    return spec, train(spec, 1, {"on_train_epoch_start": [_poison_at_epoch_2]})


def test_nan_weights_stop_training_during_epoch_two(world: World, diverged: tuple[Any, Run], tmp_path: Path):
    spec, run = diverged
    assert run.code == ExitCode.TRAINING_DIVERGED, run.log()
    assert run.outcome["status"] == "FAILED" and run.outcome["error"] == "TrainingDiverged"
    assert run.failure["error"] == "TrainingDiverged"
    assert "epoch 2/2, batch 1/" in run.failure["cause"]
    assert run.epochs_started == [0, 1]  # no NaN recovery epochs were burnt
    ckpt = _checkpoint(world, spec, tmp_path)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None  # last.pt of epoch 1, resumable
    assert all(
        torch.isfinite(v).all() for v in ckpt["ema"].float().state_dict().values() if v.is_floating_point()
    )


def test_checkpoint_moved_to_another_machine_resumes_at_epoch_two(
    world: World, diverged: tuple[Any, Run], train: Callable[..., Run]
):
    spec, first = diverged
    shutil.rmtree(first.workdir)  # the first instance is gone with its disk
    run = train(spec, 2)
    assert run.code == ExitCode.SUCCESS, run.log()
    assert run.epochs_started == [1]
    assert "resuming at epoch 2/2" in run.log()
    assert _results_epochs(world, spec) == [1, 2]
    assert TrainResult.model_validate_json(run.outcome["output"]).attempt == 2


# ---------------------------------------------------------------- spot interruption, then resume


@pytest.fixture(scope="module")
def interrupted(
    world: World, train: Callable[..., Run], imds: FakeMetadataService, shapes_job: Path
) -> Iterator[tuple[Any, Run, dict[str, Any]]]:
    spec = world.upload_job("spot", shapes_job, "r1")
    seen: dict[str, Any] = {}
    holder: dict[str, TrainerRun] = {}

    def announce_mid_epoch_two(trainer: Any) -> None:
        if trainer.epoch == 1 and "at" not in seen:
            seen["best"] = hashlib.sha256(Path(trainer.best).read_bytes()).hexdigest()
            seen["best_path"] = Path(trainer.best)
            imds.announce_interruption()
            seen["at"] = time.monotonic()
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5), "the watcher did not see the notice"

    run = train(
        spec, 1, {"on_train_batch_end": [announce_mid_epoch_two]}, setup=lambda a: holder.update(attempt=a)
    )
    imds.clear()
    yield spec, run, seen


def test_interruption_notice_mid_epoch_checkpoints_and_reports(
    world: World, interrupted: tuple[Any, Run, dict[str, Any]], tmp_path: Path
):
    spec, run, seen = interrupted
    assert run.code == ExitCode.SPOT_INTERRUPTED, run.log()
    assert run.outcome["status"] == "FAILED" and run.outcome["error"] == "SpotInterrupted"
    sent_at, failure = run.sfn.named("send_task_failure")[0]
    assert failure["error"] == "SpotInterrupted" and sent_at - seen["at"] < 60
    assert "epoch 2/2, batch 2/3" in failure["cause"], failure["cause"]
    assert "continues at batch 3/3" in failure["cause"], failure["cause"]
    ckpt = _checkpoint(world, spec, tmp_path)
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None  # Ultralytics' resume: epoch 2 ...
    position = ckpt["spotyolo_midepoch"]
    assert (position["epoch"], position["batches_done"], position["batches"]) == (1, 2, 3)  # ... at batch 3
    assert len(position["remaining"]) == 8 and sorted(position["order"]) == list(range(24))
    assert hashlib.sha256(seen["best_path"].read_bytes()).hexdigest() == seen["best"], (
        "best.pt was overwritten"
    )
    assert run.epochs_started == [0, 1] and run.batches == [0, 0, 0, 1, 1]
    assert run.attempt.monitor is not None
    assert run.attempt.monitor.uploader.uploads == 1, "only the notice's checkpoint (the period is 10 min)"


@pytest.fixture(scope="module")
def resumed(
    world: World, interrupted: tuple[Any, Run, dict[str, Any]], train: Callable[..., Run]
) -> tuple[Any, Run, Run]:
    spec, first, _ = interrupted
    shutil.rmtree(first.workdir)  # the instance is gone with its disk
    return spec, first, train(spec, 2)


def test_interrupted_run_resumed_continues_at_the_next_batch(world: World, resumed: tuple[Any, Run, Run]):
    """Issue 11: the notice came in batch 2 of epoch 2; attempt 2 trains batch 3 only, not the epoch."""
    spec, first, run = resumed
    assert run.code == ExitCode.SUCCESS, run.log()
    assert run.epochs_started == [1]
    assert run.batches == [1], "attempt 2 trained batches of epoch 2 that attempt 1 had done"
    assert len(first.batches) + len(run.batches) == 6  # 2 epochs of 3 batches: none twice, none lost
    assert "continuing epoch 2/2 at batch 3/3 (batches 1-2 are in the checkpoint)" in run.log()
    assert _results_epochs(world, spec) == [1, 2]


def test_a_run_resumed_mid_epoch_ends_with_the_uninterrupted_runs_weights(
    resumed: tuple[Any, Run, Run], uninterrupted: tuple[Any, Run]
):
    """Same job (CPU, workers 0, seed 0, deterministic by default): the run interrupted in the
    middle of epoch 2 and resumed on another machine ends bit for bit where the uninterrupted
    run ends, metrics included (bench/README.md: what this holds for and what it does not)."""
    _, _, run = resumed
    _, reference = uninterrupted
    assert run.code == ExitCode.SUCCESS and reference.code == ExitCode.SUCCESS
    for name in ("model", "ema"):
        ours, theirs = run.final[name], reference.final[name]
        assert ours.keys() == theirs.keys()
        different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
    metrics = TrainResult.model_validate_json(run.outcome["output"]).metrics
    assert metrics == TrainResult.model_validate_json(reference.outcome["output"]).metrics


def test_a_notice_in_the_first_epoch_keeps_its_batches(
    world: World, train: Callable[..., Run], imds: FakeMetadataService, shapes_job: Path
):
    """Before issue 11 a notice before the first epoch's end lost everything; on a COCO-sized
    job that is the most expensive epoch to lose. A one-epoch job: attempt 2 trains batch 3 only."""
    spec = world.upload_job("spotfirst", shapes_job, "r1", epochs=1)
    holder: dict[str, Any] = {}

    def announce_after_first_batch(trainer: Any) -> None:
        if not holder.get("announced"):
            holder["announced"] = holder["attempt"]
            imds.announce_interruption()
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5), "the watcher did not see the notice"

    try:
        first = train(
            spec,
            1,
            {"on_train_batch_end": [announce_after_first_batch]},
            setup=lambda a: holder.update(attempt=a),
        )
    finally:
        imds.clear()
    assert first.code == ExitCode.SPOT_INTERRUPTED, first.log()
    cause = first.failure["cause"]
    assert "epoch 1/1, batch 2/3" in cause and "continues at batch 3/3" in cause, cause
    shutil.rmtree(first.workdir)

    second = train(spec, 2)
    assert second.code == ExitCode.SUCCESS, second.log()
    assert (first.batches, second.batches) == ([0, 0], [0])
    result = TrainResult.model_validate_json(second.outcome["output"])
    assert result.epochs == 1 and result.attempt == 2 and "best.pt" in result.artifacts


def test_a_notice_at_an_epochs_last_batch_resumes_to_the_same_weights(
    world: World,
    train: Callable[..., Run],
    imds: FakeMetadataService,
    shapes_job: Path,
    uninterrupted: tuple[Any, Run],
):
    """The checkpoint is taken after epoch 1's last batch, before its validation: attempt 2 runs
    no batch of epoch 1 (the loop is empty: the loss, the loader's RNG and the mosaic state come
    from the checkpoint), validates it, trains epoch 2, and ends where the uninterrupted run ends."""
    spec = world.upload_job("spotlast", shapes_job, "r1")
    holder: dict[str, Any] = {}

    def announce_in_batch_two(trainer: Any) -> None:  # the monitor sees it at batch 3's end
        holder["batch"] = holder.get("batch", 0) + 1
        if holder["batch"] == 2:
            imds.announce_interruption()
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5), "the watcher did not see the notice"

    try:
        first = train(
            spec, 1, {"on_train_batch_end": [announce_in_batch_two]}, setup=lambda a: holder.update(attempt=a)
        )
    finally:
        imds.clear()
    assert first.code == ExitCode.SPOT_INTERRUPTED, first.log()
    assert "after the epoch's last batch" in first.failure["cause"], first.failure["cause"]
    shutil.rmtree(first.workdir)

    second = train(spec, 2)
    assert second.code == ExitCode.SUCCESS, second.log()
    assert (first.batches, second.batches) == ([0, 0, 0], [1, 1, 1])
    assert _results_epochs(world, spec) == [1, 2]
    _, reference = uninterrupted
    for name in ("model", "ema"):
        different = [k for k, v in second.final[name].items() if not torch.equal(v, reference.final[name][k])]
        assert not different, f"{name}: {len(different)} tensors differ from the uninterrupted run's"


# ---------------------------------------------------------------- heartbeats starve on a hang


def test_blocked_batch_sends_no_heartbeat(world: World, train: Callable[..., Run], shapes_job: Path):
    spec = world.upload_job("hang", shapes_job, "r1", epochs=1)
    block = 6 * HEARTBEAT
    marks: dict[str, float] = {}

    def hang_on_second_batch(trainer: Any) -> None:
        marks["batches"] = marks.get("batches", 0) + 1
        if marks["batches"] == 2:
            marks["start"] = time.monotonic()
            time.sleep(block)  # a stuck data loader / CUDA call
            marks["end"] = time.monotonic()
            raise RuntimeError("injected hang ended")

    run = train(spec, 1, {"on_train_batch_start": [hang_on_second_batch]})
    beats = [t for t, _ in run.sfn.named("send_task_heartbeat")]
    assert len([t for t in beats if t < marks["start"]]) >= 2  # the heartbeat did run before
    assert not [t for t in beats if marks["start"] <= t <= marks["end"]], "heartbeat sent while a batch hung"
    assert run.code == ExitCode.TRAINER_ERROR
    assert run.failure["error"] == "TrainerError"
    assert "RuntimeError: injected hang ended" in run.failure["cause"]


# ---------------------------------------------------------------- failures before training


def test_gpu_asked_for_but_missing_is_preflight_failed(
    world: World, train: Callable[..., Run], shapes_job: Path
):
    spec = world.upload_job("gpu", shapes_job, "r1")
    run = train(spec, 1, environ={"SPOTYOLO_EXPECT_GPU": "1"})  # what a GPU instance's user data sets
    assert run.code == ExitCode.PREFLIGHT_FAILED
    assert run.outcome["error"] == "PreflightFailed"
    cause = run.failure["cause"]
    assert (
        "no usable GPU" in cause
        and "found torch.cuda.is_available() is False" in cause
        and "needed 1" in cause
    )


def test_broken_data_yaml_is_dataset_error(
    world: World, train: Callable[..., Run], shapes_job: Path, tmp_path: Path
):
    job_dir = tmp_path / "job"
    shutil.copytree(shapes_job, job_dir)
    (job_dir / "dataset" / "data.yaml").write_text(
        "train: nowhere/images\nval: val/images\nnames: [a, b, c]\n"
    )
    spec = world.upload_job("badds", job_dir, "r1")
    run = train(spec, 1)
    assert run.code == ExitCode.DATASET_ERROR, run.log()
    assert run.outcome["error"] == "DatasetError"
    assert "nowhere/images" in run.failure["cause"]


def test_attempt_without_token_does_nothing(world: World, shapes_job: Path, tmp_path: Path):
    spec = world.upload_job("idle", shapes_job, "r1")
    env = TrainerEnv.from_env(world.env(spec, 7, tmp_path))
    sfn = RecordingSfn(world.sfn)
    code = TrainerRun(env, Clients(world.s3, world.ddb, sfn)).run()
    assert code == ExitCode.NO_TOKEN and sfn.calls == []


# ---------------------------------------------------------------- best.pt across a resume (issue 9, hole 1)


def _epoch_one_scores(fitness: float) -> Callable[[Any], None]:
    """on_pretrain_routine_end: epoch 1 validates at ``fitness`` (a tiny run scores 0; a long
    run's early peak does not), so later epochs of the run cannot beat it."""

    def patch(trainer: Any) -> None:
        validate = trainer.validate

        def scored() -> tuple[Any, Any]:
            metrics, value = validate()
            if trainer.epoch == 0:
                value = trainer.best_fitness = fitness
            return metrics, value

        trainer.validate = scored

    return patch


def _notice_at_end_of_epoch(imds: FakeMetadataService, holder: dict[str, TrainerRun], epoch: int) -> Any:
    """on_train_epoch_end: a spot notice, seen by the watcher before the epoch's checkpoint."""

    def announce(trainer: Any) -> None:
        if trainer.epoch == epoch:
            imds.announce_interruption()
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5), "the watcher did not see the notice"

    return announce


def test_a_resumed_run_that_never_beats_its_best_still_publishes_best_pt(
    world: World, train: Callable[..., Run], imds: FakeMetadataService, shapes_job: Path, tmp_path: Path
):
    spec = world.upload_job("keepbest", shapes_job, "r1")
    holder: dict[str, TrainerRun] = {}
    first = train(
        spec,
        1,
        {
            "on_pretrain_routine_end": [_epoch_one_scores(0.9)],
            "on_train_epoch_end": [_notice_at_end_of_epoch(imds, holder, 0)],
        },
        setup=lambda a: holder.update(attempt=a),
    )
    imds.clear()
    assert first.code == ExitCode.SPOT_INTERRUPTED, first.log()
    assert _checkpoint(world, spec, tmp_path)["best_fitness"] == pytest.approx(0.9)
    shutil.rmtree(first.workdir)  # the instance is gone with its disk, best.pt included

    second = train(spec, 2)
    assert second.code == ExitCode.SUCCESS, second.log()
    assert second.epochs_started == [1]
    result = TrainResult.model_validate_json(second.outcome["output"])
    assert "best.pt" in result.artifacts, "the resumed run published no best.pt: Check result would fail"
    best = tmp_path / "best.pt"
    world.s3.download_file(BUCKET, result.artifacts["best.pt"], str(best))
    kept = torch.load(best, map_location="cpu", weights_only=False)
    assert kept["train_metrics"]["fitness"] == pytest.approx(0.9), "best.pt is not the run's best epoch"
    assert result.best_epoch == 1


# ---------------------------------------------------------------- finishing (issue 9, hole 2)


def _final_validation(validator: Any) -> bool:
    """True in the validation of best.pt after the last epoch (not an epoch's own validation)."""
    return not validator.training


@pytest.fixture(scope="module")
def lost_in_final_validation(
    world: World, train: Callable[..., Run], imds: FakeMetadataService, shapes_job: Path
) -> Iterator[tuple[Any, Run, dict[str, Any]]]:
    """A notice with a few seconds left comes during the final validation, which is slow: the
    trainer answers SpotInterrupted before the instance goes, and the instance goes."""
    spec = world.upload_job("lastval", shapes_job, "r1")
    seen: dict[str, Any] = {}
    holder: dict[str, TrainerRun] = {}
    gone = threading.Event()

    class InstanceGone(BaseException):
        """The process is gone: nothing after the hard exit may run."""

    def lose_instance(code: int) -> None:
        seen["exit"], seen["exit_at"] = code, time.time()
        gone.set()

    def notice(validator: Any) -> None:
        if _final_validation(validator) and "notice" not in seen:
            imds.announce_interruption(in_seconds=4)
            seen["notice"] = time.time()
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5)
            seen["action"] = watcher.notice.time if watcher.notice else ""

    def slow(validator: Any) -> None:
        if _final_validation(validator):
            gone.wait(15)  # a long validation: the instance is lost before it ends
            raise InstanceGone

    def setup(attempt: TrainerRun) -> None:
        holder["attempt"] = attempt
        attempt.hard_exit = lose_instance

    try:
        run = train(spec, 1, {"on_val_start": [notice], "on_val_batch_end": [slow]}, setup=setup)
    finally:
        imds.clear()
    yield spec, run, seen


def test_a_notice_during_final_validation_is_answered_before_the_instance_goes(
    world: World, lost_in_final_validation: tuple[Any, Run, dict[str, Any]], tmp_path: Path
):
    spec, run, seen = lost_in_final_validation
    assert seen.get("exit") == ExitCode.SPOT_INTERRUPTED, run.log()
    action = dt.datetime.strptime(seen["action"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    sent_at = [t for t, _ in run.sfn.named("send_task_failure")]
    assert len(sent_at) == 1 and run.failure["error"] == "SpotInterrupted"
    assert seen["exit_at"] < action, "the answer came after the instance was gone"
    assert "validates" in run.failure["cause"]
    ckpt = _checkpoint(world, spec, tmp_path)
    assert ckpt["epoch"] == 1 and ckpt["train_args"]["epochs"] == 2  # the final epoch's checkpoint
    assert run.epochs_started == [0, 1]


def test_a_checkpoint_of_the_final_epoch_is_validated_and_reported_without_training(
    world: World, lost_in_final_validation: tuple[Any, Run, dict[str, Any]], train: Callable[..., Run]
):
    spec, first, _ = lost_in_final_validation
    shutil.rmtree(first.workdir)
    run = train(spec, 2)
    assert run.code == ExitCode.SUCCESS, run.log()
    assert run.epochs_started == [], "a finished run was trained again"
    result = TrainResult.model_validate_json(run.outcome["output"])
    assert result.epochs == 2 and result.attempt == 2 and 1 <= result.best_epoch <= 2
    assert set(result.metrics) == {"precision", "recall", "mAP50", "mAP50-95", "fitness"}
    for name in layout.WEIGHT_FILES:
        assert result.artifacts[name] == layout.artifact_key(spec.name, spec.run_id, name)
        world.s3.head_object(Bucket=BUCKET, Key=result.artifacts[name])
    assert _results_epochs(world, spec) == [1, 2]
    metrics_json = _s3_json(world, result.artifacts["metrics.json"])
    assert metrics_json["run_id"] == spec.run_id and metrics_json["metrics"] == result.metrics


def test_a_notice_during_a_slow_final_validation_uses_the_time_left_to_finish(
    world: World, train: Callable[..., Run], imds: FakeMetadataService, shapes_job: Path
):
    """The watcher's grace period (30 s on AWS, 1 s here) is for a stuck epoch; a run that is
    finishing has until the notice's action time (2 minutes) less a margin for the upload."""
    spec = world.upload_job("slowval", shapes_job, "r1")
    holder: dict[str, TrainerRun] = {}
    noticed: list[float] = []
    grace = 1.0

    def notice_then_slow(validator: Any) -> None:
        if _final_validation(validator) and not noticed:
            imds.announce_interruption(in_seconds=120)
            watcher = holder["attempt"].watcher
            assert watcher is not None and watcher.noticed.wait(5)
            noticed.append(time.monotonic())
            time.sleep(grace * 3)  # a final validation longer than the grace period

    try:
        run = train(
            spec,
            1,
            {"on_val_batch_end": [notice_then_slow]},
            setup=lambda a: holder.update(attempt=a),
            environ={"SPOTYOLO_INTERRUPT_GRACE_SECONDS": str(grace)},
        )
    finally:
        imds.clear()
    assert noticed, "the final validation never ran"
    assert run.code == ExitCode.SUCCESS, run.log()
    assert run.outcome["status"] == "SUCCEEDED", run.sfn.calls
    assert not run.sfn.named("send_task_failure")
    result = TrainResult.model_validate_json(run.outcome["output"])
    assert result.epochs == 2 and "best.pt" in result.artifacts


def test_a_trainer_whose_run_was_taken_over_finds_no_token(world: World, shapes_job: Path, tmp_path: Path):
    """Issue 9, hole 3: run r2 took the job over from r1 and its attempt 1 waits on its token;
    r1's trainer (attempt 1 as well) must not answer r2's task."""
    replaced = world.upload_job("taken", shapes_job, "r1")
    world.start_attempt(replaced, 1)
    spec = replaced.model_copy(update={"run_id": "r2", "execution": "exec-taken-r2"})
    world.table.acquire_lock("taken", spec.execution, "r2", lambda _arn: False)  # r1's execution ended
    world.start_attempt(spec, 1)
    env = TrainerEnv.from_env(world.env(replaced, 1, tmp_path))
    sfn = RecordingSfn(world.sfn)
    code = TrainerRun(env, Clients(world.s3, world.ddb, sfn)).run()
    assert code == ExitCode.NO_TOKEN and sfn.calls == []
