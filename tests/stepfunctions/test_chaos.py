"""The seeded fault campaign (issue 9; README, "Guarantees"): the schedule is the seed's alone,
each invariant catches the broken guarantee it names, and a fixed handful of seeds runs the
tiny job through the local engine under their faults with every guarantee holding.

``make chaos N=200`` runs many more seeds (bench/chaos.py); these run in ``make test``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.parsers
import botocore.session
import pytest

from spotyolo.local import campaign
from spotyolo.local.campaign import Observed
from spotyolo.local.chaos import (
    ENGINE_APP_ID,
    KINDS,
    SINGLE_JOB_KINDS,
    TRAINER_APP_ID,
    Chaos,
    Fault,
    Kind,
    Point,
    Schedule,
    draw_schedule,
    phase_names,
    trainer_phase,
)

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]

#: seeds whose schedules cover a spot notice at boot with a throttled Prepare retry and a model
#: published before (seed 3), and a Launch run twice, a Check result whose answer is lost and a
#: late instance-state event (seed 10). Seeds 2 and 48 found issue 9's hole 2 (bench/README.md):
#: add them here once its fix is merged.
CI_SEEDS = [3, 10]

CONFIG = (
    "model: yolo11n.yaml\nepochs: 2\nimgsz: 64\nbatch: 8\nworkers: 0\nplots: false\n"
    "instance_type: g5.xlarge\ncapacity: spot\nmax_interruptions: 3\nstall_hours: 0.05\n"
    "max_hours: 1\nmax_cost_usd: 5\ntarget: {metric: recall, min: 0.0}\n"
)


def _plans(seed: int) -> list[str]:
    return [f.describe() for f in draw_schedule(seed, 2).faults]


def test_the_same_seed_always_draws_the_same_schedule() -> None:
    assert all(_plans(seed) == _plans(seed) for seed in range(50))
    assert len({tuple(_plans(seed)) for seed in range(50)}) > 30  # and seeds differ
    kinds = {f.kind for seed in range(200) for f in draw_schedule(seed, 2).faults}
    assert kinds == set(SINGLE_JOB_KINDS)  # 200 seeds draw every kind of a single job's faults


def test_every_fault_kind_has_one_point_and_says_what_it_does() -> None:
    assert set(KINDS) == set(Kind)
    assert {spec.point for spec in KINDS.values()} == set(Point)
    assert all(spec.does for spec in KINDS.values())


def test_a_trainers_phase_is_read_from_its_log() -> None:
    epoch = "2026-11-29T22:57:29.772 INFO spotyolo.trainer.monitor: epoch {}/2  box_loss=2.554\n"
    saved = "2026-11-29T22:57:29.996 INFO spotyolo.trainer.monitor: checkpoint uploaded (25.1 MiB)\n"
    log = "2026-11-29T22:57:26.754 INFO spotyolo.trainer.data: dataset: 49 files\n"
    assert trainer_phase(None, 2) == "boot"
    assert trainer_phase(log, 2) == "download"
    log += "2026-11-29T22:57:28.843 INFO spotyolo.trainer.monitor: training epochs 1-2 on cpu\n"
    assert trainer_phase(log, 2) == "epoch 1"
    assert trainer_phase(log + epoch.format(1), 2) == "checkpoint 1"
    assert trainer_phase(log + epoch.format(1) + saved, 2) == "epoch 2"
    assert trainer_phase(log + epoch.format(1) + saved + epoch.format(2), 2) == "checkpoint 2"
    assert trainer_phase(log + epoch.format(1) + saved + epoch.format(2) + saved, 2) == "final"
    assert (
        trainer_phase(log + epoch.format(2) + saved + "INFO spotyolo.trainer: success sent: {}", 2)
        == "reported"
    )
    assert phase_names(2) == [
        "boot", "download", "epoch 1", "checkpoint 1", "epoch 2", "checkpoint 2", "final", "reported"
    ]  # fmt: skip


def test_an_instance_fault_fires_once_on_its_instance_at_its_phase(tmp_path: Path) -> None:
    schedule = Schedule(0, [Fault(Kind.SPOT_NOTICE, "epoch 1", nth=1)], prior_weights=False)
    chaos = Chaos(schedule, epochs=2)
    log = tmp_path / "trainer.log"
    log.write_text("2026-11-29T22:57:26.754 INFO spotyolo.trainer.data: dataset: 49 files\n")
    assert chaos.at(Point.INSTANCE, "i-1", log=log, booted=True) is None  # still downloading
    with log.open("a") as out:
        out.write("2026-11-29T22:57:28.843 INFO spotyolo.trainer.monitor: training epochs 1-2 on cpu\n")
    effect = chaos.at(Point.INSTANCE, "i-1", log=log, booted=True)
    assert effect is not None and effect.action == "notice"
    assert chaos.at(Point.INSTANCE, "i-1", log=log, booted=True) is None  # once
    assert schedule.faults[0].fired and "epoch 1" in schedule.faults[0].where


def _environ(
    service: str, body: bytes = b"", target: str = "", agent: str = "Boto3/1.0"
) -> dict[str, object]:
    environ: dict[str, object] = {
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=local/20261129/us-east-1/{service}/aws4_request",
        "HTTP_USER_AGENT": agent,
        "REQUEST_METHOD": "POST" if body or target else "GET",
        "PATH_INFO": "/spotyolo-local/jobs/j/dataset/a.jpg" if service == "s3" else "/",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    if target:
        environ["HTTP_X_AMZ_TARGET"] = target
    return environ


def _parse(service: str, operation: str, answer: tuple[str, list[tuple[str, str]], bytes]) -> dict:
    """The answer as botocore reads it: the error code a client raises, or the parsed result."""
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    status, headers, body = answer
    parser = botocore.parsers.create_parser(model.metadata["protocol"])
    return parser.parse(
        {"status_code": int(status.split()[0]), "headers": dict(headers), "body": body}, model.output_shape
    )


def test_the_injected_aws_answers_are_what_the_sdk_reads_from_aws() -> None:
    faults = [
        Fault(Kind.CAPACITY, "CreateFleet", param="InsufficientInstanceCapacity", caller="pipeline",
              service="ec2", status=200),
        Fault(Kind.NOT_FOUND, "DescribeInstances by id", param="InvalidInstanceID.NotFound",
              caller="pipeline", service="ec2"),
        Fault(Kind.SLOWDOWN, "any", nth=1, param="2", caller="trainer", service="s3", status=503),
        Fault(Kind.THROTTLE, "SendTaskHeartbeat", param="ThrottlingException", caller="trainer",
              service="states"),
    ]  # fmt: skip
    chaos = Chaos(Schedule(0, faults, prior_weights=False), epochs=2)
    trainer = f"Boto3/1.0 app/{TRAINER_APP_ID}"
    filtered = _environ("ec2", b"Action=DescribeInstances&Filter.1.Name=tag%3Aapp")
    assert chaos.answer(filtered) is None  # a query by filter is never NotFound
    assert filtered["wsgi.input"].read() == b"Action=DescribeInstances&Filter.1.Name=tag%3Aapp"  # put back
    fleet = _parse("ec2", "CreateFleet", chaos.answer(_environ("ec2", b"Action=CreateFleet&Type=instant")))
    assert fleet["Errors"][0]["ErrorCode"] == "InsufficientInstanceCapacity" and not fleet.get("Instances")
    by_id = chaos.answer(_environ("ec2", b"Action=DescribeInstances&InstanceId.1=i-1"))
    assert _parse("ec2", "DescribeInstances", by_id)["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert chaos.answer(_environ("s3", agent=f"Boto3/1.0 app/{ENGINE_APP_ID}")) is None  # the engine's own
    for _ in range(2):  # a burst of two
        slow = chaos.answer(_environ("s3", agent=trainer))
        assert slow is not None and _parse("s3", "GetObject", slow)["Error"]["Code"] == "SlowDown"
    assert chaos.answer(_environ("s3", agent=trainer)) is None
    throttled = chaos.answer(_environ("states", b"{}", "AWSStepFunctions.SendTaskHeartbeat", trainer))
    assert _parse("stepfunctions", "SendTaskHeartbeat", throttled)["Error"]["Code"] == "ThrottlingException"
    assert all(f.fired for f in faults)


# ---------------------------------------------------------------------- the invariants catch


def _log(*lines: str) -> str:
    return "".join(
        f"2026-11-29T23:00:{i:02d}.000 INFO spotyolo.trainer.monitor: {line}\n"
        for i, line in enumerate(lines)
    )


def _succeeded(**changes: object) -> Observed:
    """A run that kept every guarantee: one execution, its weights published, the prior kept."""
    seen = Observed(job="j", config={"max_cost_usd": 5})
    seen.executions = [
        {
            "name": "j-R1",
            "status": "SUCCEEDED",
            "error": None,
            "run_id": "r1",
            "refused": False,
            "skipped": False,
        }
    ]
    seen.notifications = [{"subject": "spotyolo: j complete", "message": "j complete"}]
    seen.prior = {"best.pt": "p-best", "metrics.json": "p-m"}
    seen.artifacts = {"r1": {"best.pt": "r1-best"}}
    seen.weights = {
        "best.pt": "r1-best", "last.pt": "x", "results.csv": "y", "metrics.json": "z",
        "previous/best.pt": "p-best", "previous/metrics.json": "p-m2",
    }  # fmt: skip
    seen.metrics_run = "r1"
    seen.item = {"status": "complete", "cost_usd": 0.01}
    seen.trainers = [
        {"instance": "i-1", "run": "r1", "attempt": 1,
         "log": _log("training epochs 1-2", "epoch 1/2 x", "checkpoint uploaded")},
        {"instance": "i-2", "run": "r1", "attempt": 2,
         "log": _log("x", "x", "x", "training epochs 2-2", "epoch 2/2 x")},
    ]  # fmt: skip
    for key, value in changes.items():
        setattr(seen, key, value)
    return seen


def _broken(seen: Observed) -> set[str]:
    return {sentence.split(":", 1)[0] for check in campaign.INVARIANTS for sentence in check(seen)}


def test_a_run_that_kept_every_guarantee_breaks_no_invariant() -> None:
    assert _broken(_succeeded()) == set()


@pytest.mark.parametrize(
    ("changes", "invariant"),
    [
        ({"hung": True}, "ends"),
        ({"leftovers": {"lock held": ["arn:x"]}}, "nothing_left"),
        ({"alive_after_stop": ["i-1"]}, "nothing_left"),
        ({"notifications": []}, "one_notification_per_execution"),
        ({"metrics_run": "r0"}, "published_weights_are_the_runs"),
        ({"artifacts": {"r1": {"best.pt": "another"}}}, "published_weights_are_the_runs"),
        ({"weights": {"best.pt": "r1-best", "metrics.json": "z", "previous/best.pt": "r1-best"}},
         "previous_keeps_the_last_good_model"),
        ({"item": {"status": "failed"}}, "status_matches_the_execution"),
        ({"item": {"status": "complete", "cost_usd": 7.5}}, "cost_within_budget"),
    ],
)  # fmt: skip
def test_each_invariant_catches_the_guarantee_it_names(changes: dict[str, object], invariant: str) -> None:
    assert invariant in _broken(_succeeded(**changes))


def test_a_failed_run_must_leave_the_weights_alone_and_name_its_cause() -> None:
    failed = [{"name": "j-R1", "status": "FAILED", "error": "TrainerError", "run_id": "r1", "refused": False,
               "skipped": False}]  # fmt: skip
    kept = _succeeded(executions=failed, weights={"best.pt": "p-best", "metrics.json": "p-m"},
                      notifications=[{"subject": "spotyolo: j failed (TrainerError)", "message": ""}],
                      item={"status": "failed"})  # fmt: skip
    assert _broken(kept) == set()
    changed = _succeeded(executions=failed, notifications=[{"subject": "spotyolo: j failed", "message": ""}],
                         item={"status": "failed"})  # fmt: skip
    assert _broken(changed) == {"weights_untouched_without_success", "failure_names_its_cause"}


def test_a_start_refused_when_nothing_ran_is_caught() -> None:
    stopped = {"name": "j-R1", "status": "ABORTED", "error": None, "run_id": "r1", "refused": False,
               "skipped": False, "start": 1.0, "stop": 5.0}  # fmt: skip
    refused = {"name": "j-R2", "status": "FAILED", "error": "JobAlreadyRunning", "run_id": None,
               "refused": True, "skipped": False, "start": 6.0, "stop": 7.0}  # fmt: skip
    assert "refused_only_while_another_runs" in _broken(_succeeded(executions=[stopped, refused]))
    running = {**stopped, "stop": 9.0}
    assert "refused_only_while_another_runs" not in _broken(_succeeded(executions=[running, refused]))


def test_a_start_refused_by_a_duplicate_that_started_just_after_it_is_not_a_dropped_upload() -> None:
    """Seed 29: one upload delivered twice; the first execution's Validate job failed after it ran
    (a Lambda service error) and, while it was retried, the duplicate started 0.4 s later took the
    lock. The first was then refused while the duplicate ran: the upload trained once, nothing was
    dropped. Only an execution that ran at no time alongside the refused one makes the refusal wrong."""
    first = {"name": "j-R1", "status": "FAILED", "error": "JobAlreadyRunning", "run_id": None,
             "refused": True, "skipped": False, "start": 1.0, "stop": 4.0}  # fmt: skip
    duplicate = {"name": "j-R2", "status": "SUCCEEDED", "error": None, "run_id": "r2", "refused": False,
                 "skipped": False, "start": 1.4, "stop": 20.0}  # fmt: skip
    assert "refused_only_while_another_runs" not in _broken(_succeeded(executions=[first, duplicate]))
    later = {**duplicate, "start": 4.5}  # started only after the refusal: the refusal met nobody
    assert "refused_only_while_another_runs" in _broken(_succeeded(executions=[first, later]))


def test_work_redone_after_a_checkpoint_and_two_trainers_at_once_are_caught() -> None:
    redone = _succeeded()
    redone.trainers[1]["log"] = _log(
        "x", "x", "x", "training from the start", "training epochs 1-2", "epoch 1/2 x"
    )
    assert "checkpointed_work_is_not_redone" in _broken(redone)
    overlapping = _succeeded()
    overlapping.trainers[1]["log"] = _log("training epochs 2-2", "x", "epoch 2/2 x", "success sent")
    overlapping.trainers[0]["log"] += "2026-11-29T23:00:01.500 INFO spotyolo.trainer: success sent\n"
    assert {"one_trainer_at_a_time", "one_success_per_run"} <= _broken(overlapping)


# ---------------------------------------------------------------------- fixed seeds, whole pipeline


@pytest.fixture(scope="module")
def chaos_job(tmp_path_factory: pytest.TempPathFactory, shapes_dataset: Path) -> Path:
    job = tmp_path_factory.mktemp("chaos") / "chaos-tiny"
    shutil.copytree(shapes_dataset, job / "dataset")
    (job / "config.yaml").write_text(CONFIG)
    return job


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_a_fixed_seed_keeps_every_guarantee(seed: int, chaos_job: Path, ultralytics_offline: Path) -> None:
    """``spotyolo local JOB --chaos SEED --json``, as a user runs it (its own process, its own
    emulator): exit 0, the seed's faults fired, no violation."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "spotyolo.cli", "local", str(chaos_job), "--chaos", str(seed), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=chaos_job.parent, timeout=600)
    result = json.loads(done.stdout)
    assert [f["plan"] for f in result["faults"]] == _plans(seed)  # the seed's schedule
    assert any(f["fired"] for f in result["faults"]), result  # its faults really happened
    assert result["violations"] == [], result
    assert done.returncode == 0 and result["outcome"] == "SUCCEEDED", done.stderr[-2000:]
