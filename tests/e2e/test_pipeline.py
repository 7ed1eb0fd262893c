"""The whole pipeline, locally: the ASL file executed by the emulator, the real Lambdas, the real
trainer as "instances". Each test is one user-visible scenario of docs/ARCHITECTURE.md
("The workflow", "The local engine")."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Run, wait_for

from spotyolo.local.engine import LocalEngine

pytestmark = pytest.mark.e2e


def attempt_of(instance: dict) -> int:
    return int({t["Key"]: t["Value"] for t in instance["Tags"]}["attempt"])


def assert_no_task_token_logged(engine: LocalEngine, job: Run, caplog: pytest.LogCaptureFixture) -> None:
    """Whoever reads a task token can answer the task: it is in no log the run wrote (the state
    machine's log group at its configured level, the Lambdas' log, the trainers' logs and every
    other file of the engine's, the run's artifacts, this process's log records)."""
    tokens = []
    for event in job.history:
        details = event.get("taskScheduledEventDetails")
        payload = json.loads(details["parameters"]).get("Payload") if details else None
        if isinstance(payload, dict) and payload.get("token"):
            tokens.append(payload["token"])
    assert tokens, "the Launch trainer task got no token?"
    machine_logs = "\n".join(engine.state_machine_logs())
    places: dict[str, bytes] = {
        "state machine log group": machine_logs.encode(),
        "log records": caplog.text.encode(),
    }
    for path in engine.workdir.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    s3 = engine.client("s3")
    listed = s3.list_objects_v2(Bucket=engine.resources.bucket, Prefix=f"runs/{job.job}/")
    for obj in listed.get("Contents", []):
        places[obj["Key"]] = s3.get_object(Bucket=engine.resources.bucket, Key=obj["Key"])["Body"].read()
    assert (engine.workdir / "lambdas.log").stat().st_size > 0
    for token in tokens:
        leaked = [where for where, text in places.items() if token.encode() in text]
        assert not leaked, f"task token in {leaked}"


# ---------------------------------------------------------------------- success paths


def test_happy_path_trains_promotes_weights_and_notifies_once(
    engine: LocalEngine,
    make_job: Callable[..., Path],
    run: Callable[[Path], Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = run(make_job("e2e-happy"))
    assert job.wait()["status"] == "SUCCEEDED"

    listed = engine.client("s3").list_objects_v2(Bucket=engine.resources.bucket, Prefix="weights/e2e-happy/")
    names = {o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]}
    assert {"best.pt", "last.pt", "results.csv", "metrics.json"} <= names
    assert job.results_epochs() == [1, 2]
    metrics = json.loads(
        engine.client("s3")
        .get_object(Bucket=engine.resources.bucket, Key="weights/e2e-happy/metrics.json")["Body"]
        .read()
    )
    notes = job.notifications(1)
    assert len(notes) == 1, notes
    recall = metrics.get("recall", metrics.get("metrics", {}).get("recall"))
    assert recall is not None, metrics
    assert f"{recall * 100:.1f}% recall" in notes[0]["message"]
    assert "2 epochs" in notes[0]["message"]
    assert [attempt_of(i) for i in job.instances()] == [1]
    item = job.item()
    assert item.status in ("complete", "below target", "succeeded") and item.execution is None
    assert_no_task_token_logged(engine, job, caplog)


def test_one_interruption_resumes_on_a_new_instance_with_every_epoch_once(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    engine.instances.schedule_interrupts([2])
    engine.inject_fault("prepare_retry", "TooManyRequestsException")  # transient: retried
    job = run(make_job("e2e-spot1", epochs=4))

    # while attempt 2 is pending, attempt 1's instance is reported gone (again): not its instance
    item = wait_for(
        lambda: (i := job.item()) and i.current and i.current.number == 2 and i.current.instance and i,
        timeout=180,
        what="attempt 2's instance",
    )
    first = job.instances()[0]
    assert attempt_of(first) == 1 and item.current.instance != first["InstanceId"]
    engine.put_event(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        {"instance-id": first["InstanceId"], "state": "terminated"},
        [],
    )
    assert job.wait()["status"] == "SUCCEEDED"

    errors = job.task_errors()
    assert errors.count("SpotInterrupted") == 1, errors
    assert "Lambda.TooManyRequestsException" in errors and "InstanceLost" not in errors
    # the throttled call never reached the function; the state's Retry called it again
    prepared = [
        e for name, e in engine.invocations if name == "prepare_retry" and "e2e-spot1" in json.dumps(e)
    ]
    assert len(prepared) == 1 and job.states().count("Prepare retry") == 1
    assert [attempt_of(i) for i in job.instances()] == [1, 2]
    assert job.results_epochs() == [1, 2, 3, 4]
    (note,) = job.notifications(1)
    assert "1 interruption" in note["message"]
    assert len(engine.instances.interruptions) >= 1


def test_two_interruptions_resume_twice(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    engine.instances.schedule_interrupts([1, 2])
    job = run(make_job("e2e-spot2", epochs=4, max_interruptions=2))
    assert job.wait(timeout=300)["status"] == "SUCCEEDED"
    assert job.task_errors().count("SpotInterrupted") == 2
    assert [attempt_of(i) for i in job.instances()] == [1, 2, 3]
    assert job.results_epochs() == [1, 2, 3, 4]
    (note,) = job.notifications(1)
    assert "2 interruptions" in note["message"]


def test_a_crashed_trainer_is_instance_lost_and_the_run_resumes(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    job = run(make_job("e2e-crash", epochs=3))
    item = job.wait_training(attempt=1, epochs_done=1)
    engine.instances.kill_trainer(item.current.instance, signal.SIGKILL)
    assert job.wait(timeout=240)["status"] == "SUCCEEDED"
    assert "InstanceLost" in job.task_errors()
    assert [attempt_of(i) for i in job.instances()] == [1, 2]
    epochs = job.results_epochs()
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3 and len(epochs) == 3


def test_a_launch_whose_answer_is_lost_starts_one_instance(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    # launch runs, then the Lambda service fails the call: the state machine invokes it again
    engine.inject_fault("launch", "ServiceException", after=True)
    job = run(make_job("e2e-launch-twice", epochs=1))
    assert job.wait()["status"] == "SUCCEEDED"
    assert job.task_errors().count("Lambda.ServiceException") == 1
    assert [name for name, _ in engine.invocations if name == "launch"].count("launch") >= 2
    assert [attempt_of(i) for i in job.instances()] == [1]


# ---------------------------------------------------------------------- refusals and failures


def test_an_invalid_job_is_refused_before_any_instance(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    folder = make_job("e2e-invalid")
    (folder / "config.yaml").write_text("model: yolo11n.yaml\nepochz: 3\nimgsz: 64\n")
    job = run(folder)
    assert job.wait(timeout=60)["status"] == "FAILED"
    assert "Launch trainer" not in job.states()
    assert job.instances() == []
    notes = job.notifications(1)
    assert len(notes) == 1, engine.notifications()
    note = notes[0]
    assert "epochz" in note["message"] and "epochs" in note["message"]  # the key and the fix
    assert note["subject"] == "spotyolo: e2e-invalid not started (JobInvalid)"


def test_a_config_yaml_inside_the_dataset_starts_nothing_visible(
    engine: LocalEngine, make_job: Callable[..., Path]
) -> None:
    """EventBridge's '*' matches '/': the rule starts an execution for jobs/x/dataset/config.yaml,
    which ends at once without a lock, a job.json or a notification."""
    folder = make_job("e2e-nested")
    engine.upload_job(folder, trigger=False)
    before = {e["executionArn"] for e in engine.executions("e2e-nested")}
    s3 = engine.client("s3")
    key = "jobs/e2e-nested/dataset/config.yaml"
    s3.put_object(Bucket=engine.resources.bucket, Key=key, Body=b"model: yolo11n.yaml\n")
    arn = engine.wait_for_execution("e2e-nested", timeout=30, exclude=before)
    assert engine.wait_done(arn, timeout=60)["status"] == "SUCCEEDED"
    assert [
        e["stateEnteredEventDetails"]["name"] for e in engine.history(arn) if "stateEnteredEventDetails" in e
    ] == [
        "Validate job",
        "Not a job trigger",
    ]
    time.sleep(2)  # a notification would have been published by now
    assert [n for n in engine.notifications() if "e2e-nested" in f"{n.get('subject')}{n['message']}"] == []
    assert engine.job_item("e2e-nested") is None
    runs = s3.list_objects_v2(Bucket=engine.resources.bucket, Prefix="runs/e2e-nested/")
    assert runs.get("KeyCount", 0) == 0


def test_more_interruptions_than_allowed_fail_with_a_message(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    engine.instances.schedule_interrupts([1])
    job = run(make_job("e2e-too-many", epochs=3, max_interruptions=0))
    assert job.wait()["status"] == "FAILED"
    assert "TooManyInterruptions" in job.task_errors()
    assert [attempt_of(i) for i in job.instances()] == [1]
    (note,) = job.notifications(1)
    assert "interruption" in note["message"].lower()


def test_non_finite_loss_fails_as_training_diverged_without_a_retry(
    engine: LocalEngine,
    make_job: Callable[..., Path],
    run: Callable[[Path], Run],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a box-loss gain beyond float32 makes the very first loss infinite
    job = run(make_job("e2e-nan", epochs=3, box=1e39))
    assert job.wait()["status"] == "FAILED"
    assert "TrainingDiverged" in job.task_errors()
    assert [attempt_of(i) for i in job.instances()] == [1]
    (note,) = job.notifications(1)
    assert "non-finite" in note["message"] or "TrainingDiverged" in note["message"]
    # a failure is what the state machine logs (level ERROR): with its cause, without the token
    assert any("TrainingDiverged" in line for line in engine.state_machine_logs())
    assert_no_task_token_logged(engine, job, caplog)


def test_a_stalled_trainer_hits_the_heartbeat_timeout_and_is_cleaned_up(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    job = run(make_job("e2e-stall", epochs=50, stall_hours=0.006))  # 21 s without a heartbeat
    item = job.wait_training(attempt=1, epochs_done=1)
    process = engine.instances.instances[item.current.instance].process
    os.killpg(process.pid, signal.SIGSTOP)  # hung: alive, silent
    started = time.monotonic()
    assert job.wait(timeout=120)["status"] == "FAILED"
    assert time.monotonic() - started >= 10
    assert set(job.task_errors()) & {"States.Timeout", "States.HeartbeatTimeout"}
    assert "Clean up after failure" in job.states()
    assert [attempt_of(i) for i in job.instances()] == [1]
    wait_for(lambda: process.poll() is not None, timeout=20, what="the hung trainer to be killed")
    (note,) = job.notifications(1)
    assert "stall" in note["message"].lower() or "heartbeat" in note["message"].lower()


# ---------------------------------------------------------------------- concurrency


def test_a_duplicate_trigger_is_refused_and_leaves_the_running_job_alone(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    folder = make_job("e2e-dup", epochs=30)
    job = run(folder)
    item = job.wait_training(attempt=1, epochs_done=1)
    instance = item.current.instance

    engine.client("s3").upload_file(
        str(folder / "config.yaml"), engine.resources.bucket, "jobs/e2e-dup/config.yaml"
    )
    second = engine.wait_for_execution("e2e-dup", timeout=30, exclude={job.arn})
    refused = engine.wait_done(second, timeout=60)
    assert refused["status"] == "FAILED"
    # the status rule's cleanup of the refused execution ran ...
    wait_for(
        lambda: any(
            name == "cleanup" and event.get("detail", {}).get("executionArn") == second
            for name, event in engine.invocations
        ),
        timeout=30,
        what="cleanup of the refused execution",
    )
    time.sleep(1.0)
    # ... and did not touch the running job
    now = job.item()
    assert now.execution == job.arn and now.current is not None and now.current.token
    assert [i["InstanceId"] for i in engine.running_instances()] == [instance]
    assert job.wait()["status"] == "SUCCEEDED"
    assert [attempt_of(i) for i in job.instances()] == [1]
    notes = job.notifications(2)
    assert any("already" in n["message"].lower() for n in notes), notes


def test_deleting_the_config_cancels_the_run_and_cleans_up(
    engine: LocalEngine, make_job: Callable[..., Path], run: Callable[[Path], Run]
) -> None:
    job = run(make_job("e2e-cancel", epochs=50))
    item = job.wait_training(attempt=1, epochs_done=1)
    process = engine.instances.instances[item.current.instance].process
    engine.client("s3").delete_object(Bucket=engine.resources.bucket, Key="jobs/e2e-cancel/config.yaml")
    status = job.wait(timeout=60)["status"]
    assert status == "ABORTED", (
        [rule for rule, event in engine.bridged if "e2e-cancel" in json.dumps(event)],
        [(name, e) for name, e in engine.invocations if name == "cancel"],
    )
    wait_for(lambda: process.poll() is not None, timeout=30, what="the trainer to be killed")
    wait_for(lambda: not engine.running_instances(), timeout=30, what="the instance to go")
    wait_for(lambda: job.item().execution is None, timeout=30, what="the lock to be released")
