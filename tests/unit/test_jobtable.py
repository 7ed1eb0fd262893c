"""The job table's lock and conditional writes, against moto's DynamoDB."""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from moto import mock_aws

from spotyolo.contract.errors import JobAlreadyRunning
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import AttemptRecord, Progress


@pytest.fixture(scope="module")
def dynamodb():
    """One emulator for the module (starting one is most of a test's time); a table per test."""
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def table(dynamodb, request):
    name = f"jobs-{request.node.name}"[:255].replace("[", "-").replace("]", "")
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield JobTable(dynamodb, name)
    dynamodb.delete_table(TableName=name)


def test_lock_is_reentrant_and_refuses_a_second_running_execution(table):
    assert table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True) == "run-a"
    # the settle loop / a Lambda retry comes back: same run id
    assert table.acquire_lock("shapes", "exec-1", "run-b", lambda e: True) == "run-a"
    table.start_attempt("shapes", "exec-1", AttemptRecord(number=1, capacity="spot"), "tok-1")
    with pytest.raises(JobAlreadyRunning, match="exec-1"):
        table.acquire_lock("shapes", "exec-2", "run-c", lambda e: True)
    item = table.get("shapes")
    assert item and item.execution == "exec-1" and item.current and item.current.token == "tok-1"


def test_lock_of_a_finished_execution_is_taken_over(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    assert table.acquire_lock("shapes", "exec-2", "run-b", lambda e: e != "exec-1") == "run-b"
    item = table.get("shapes")
    assert item and item.execution == "exec-2" and item.run_id == "run-b" and item.attempts == []


def test_a_lock_released_while_the_start_checks_its_holder_is_taken(table):
    """Found by the fault campaign (seed 30: a takeover): execution 1 is stopped, the user uploads
    config.yaml again, and execution 1's clean up releases the lock just while execution 2 asks
    whether execution 1 still runs. The lock is free: execution 2 must get it, not be refused
    as JobAlreadyRunning naming an execution that has ended."""
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)

    def cleanup_races(holder: str) -> bool:
        assert table.release_lock("shapes", holder, "cancelled")  # the status rule's clean up
        return False  # exec-1 is ABORTED

    assert table.acquire_lock("shapes", "exec-2", "run-b", cleanup_races) == "run-b"
    item = table.get("shapes")
    assert item and item.execution == "exec-2" and item.run_id == "run-b"


def test_writes_of_other_executions_and_attempts_are_ignored(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", AttemptRecord(number=1, capacity="spot"), "tok-1")
    assert table.set_instance("shapes", "exec-1", 1, "i-1", "g5.xlarge", "us-east-1a")
    assert not table.release_lock("shapes", "exec-2", "failed")
    assert not table.update_progress("shapes", "run-a", 2, Progress(epoch=1, epochs=2))
    assert table.update_progress("shapes", "run-a", 1, Progress(epoch=1, epochs=2, losses={"box": 1.5}))
    assert table.token_for("shapes", "run-a", 1) == "tok-1" and table.token_for("shapes", "run-a", 2) is None
    assert table.end_attempt("shapes", "exec-1", 1, "SpotInterrupted")
    assert table.release_lock("shapes", "exec-1", "failed")
    item = table.get("shapes")
    assert item and item.execution is None and item.current is None
    assert item.attempts[0].instance == "i-1" and item.attempts[0].outcome == "SpotInterrupted"
    assert item.progress and item.progress.losses == {"box": 1.5}


def test_a_taken_over_runs_trainer_never_finds_the_new_runs_token(table):
    """Issue 9, hole 3: both runs have an attempt 1; a token is matched by run and attempt."""
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", AttemptRecord(number=1, capacity="spot"), "tok-a")
    retired = []
    assert table.acquire_lock("shapes", "exec-2", "run-b", lambda e: False, retire=retired.append) == "run-b"
    table.start_attempt("shapes", "exec-2", AttemptRecord(number=1, capacity="spot"), "tok-b")
    assert retired == ["run-a"]
    assert table.token_for("shapes", "run-a", 1) is None
    assert table.token_for("shapes", "run-b", 1) == "tok-b"


def test_a_takeover_whose_retire_fails_leaves_the_lock_where_it_was(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)

    def cannot_terminate(run_id: str) -> None:
        raise RuntimeError(f"TerminateInstances of {run_id} was throttled")

    with pytest.raises(RuntimeError, match="run-a"):
        table.acquire_lock("shapes", "exec-2", "run-b", lambda e: False, retire=cannot_terminate)
    item = table.get("shapes")
    assert item and item.execution == "exec-1" and item.run_id == "run-a"


def _record(number: int = 1, capacity: str = "spot") -> AttemptRecord:
    return AttemptRecord(number=number, capacity=capacity)  # type: ignore[arg-type]


def test_the_job_status_follows_the_run_starting_launching_training(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    item = table.get("shapes")
    assert (
        item and item.status == "starting" and item.message == "run run-a started" and item.run_id == "run-a"
    )
    assert table.start_attempt("shapes", "exec-1", _record(1, "on-demand"), "tok-1")
    item = table.get("shapes")
    assert item and item.status == "launching" and item.current
    assert (item.current.number, item.current.instance, item.current.token) == (1, None, "tok-1")
    assert [(a.number, a.capacity, a.outcome, a.instance, a.start) for a in item.attempts] == [
        (1, "on-demand", "launching", None, None)
    ]
    assert table.set_instance("shapes", "exec-1", 1, "i-1", "g5.xlarge", "us-east-1b")
    item = table.get("shapes")
    assert item and item.status == "training" and item.current and item.current.instance == "i-1"
    (rec,) = item.attempts
    assert (rec.instance, rec.instance_type, rec.az, rec.outcome) == (
        "i-1",
        "g5.xlarge",
        "us-east-1b",
        "running",
    )
    assert table.release_lock("shapes", "exec-1", "complete")
    item = table.get("shapes")
    assert item and item.status == "complete" and item.execution is None


def test_an_attempt_records_when_its_instance_started_so_it_is_paid_for(table):
    from spotyolo.core.cost import run_cost

    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1, "on-demand"), "tok-1")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    table.set_instance("shapes", "exec-1", 1, "i-1", "g5.xlarge", None)
    item = table.get("shapes")
    assert item and item.attempts[0].start
    started = dt.datetime.fromisoformat(item.attempts[0].start.replace("Z", "+00:00"))
    assert before <= started <= dt.datetime.now(dt.UTC)
    an_hour_later = started + dt.timedelta(hours=1)
    assert run_cost(item.attempts, lambda t, c, az: 2.0, now=an_hour_later) == pytest.approx(2.0)


def test_a_later_launch_round_leaves_the_earlier_rounds_record_alone(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1, "spot"), "tok-1")
    assert table.end_attempt("shapes", "exec-1", 1, "NoCapacity")  # round 1: no spot capacity
    table.start_attempt("shapes", "exec-1", _record(1, "on-demand"), "tok-2")  # round 2
    assert table.set_instance("shapes", "exec-1", 1, "i-2", "g6.xlarge", None)
    item = table.get("shapes")
    assert item
    assert [(a.capacity, a.outcome, a.instance) for a in item.attempts] == [
        ("spot", "NoCapacity", None),
        ("on-demand", "running", "i-2"),
    ]
    assert item.attempts[0].end and not item.attempts[1].end
    assert table.end_attempt("shapes", "exec-1", 1, "succeeded")
    item = table.get("shapes")
    assert item and [a.outcome for a in item.attempts] == ["NoCapacity", "succeeded"]
    assert table.end_attempt("shapes", "exec-1", 1, "InstanceLost")  # nothing open: nothing changes
    again = table.get("shapes")
    assert again and again.attempts == item.attempts


def test_a_takeover_starts_the_new_run_from_a_clean_item(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
    table.set_instance("shapes", "exec-1", 1, "i-1", "g5.xlarge", None)
    table.update_progress("shapes", "run-a", 1, Progress(epoch=3, epochs=10))
    assert table.finish("shapes", "exec-1", status="complete", result={"recall": 0.9}, cost_usd=0.42)
    item = table.get("shapes")
    assert item and item.cost_usd == 0.42 and item.result == {"recall": 0.9} and item.progress
    # exec-1 died without releasing the lock; a new upload takes the job over
    assert table.acquire_lock("shapes", "exec-2", "run-b", lambda e: False) == "run-b"
    item = table.get("shapes")
    assert item and (item.execution, item.run_id, item.status) == ("exec-2", "run-b", "starting")
    assert (item.attempts, item.current, item.progress, item.result, item.cost_usd) == (
        [],
        None,
        None,
        None,
        None,
    )


def test_a_released_job_is_started_again_from_a_clean_item(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
    table.update_progress("shapes", "run-a", 1, Progress(epoch=3, epochs=10))
    table.finish("shapes", "exec-1", status="complete", cost_usd=1.5, result={"recall": 0.9})
    table.release_lock("shapes", "exec-1", "complete")
    assert table.acquire_lock("shapes", "exec-2", "run-b", lambda e: True) == "run-b"
    item = table.get("shapes")
    assert item and (item.attempts, item.current, item.progress, item.result, item.cost_usd) == (
        [],
        None,
        None,
        None,
        None,
    )


def test_a_holder_that_cannot_be_checked_keeps_its_lock(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)

    def unknown(execution: str) -> bool:
        raise RuntimeError("DescribeExecution throttled")

    with pytest.raises(RuntimeError, match="throttled"):
        table.acquire_lock("shapes", "exec-2", "run-b", unknown)
    item = table.get("shapes")
    assert item and item.execution == "exec-1" and item.run_id == "run-a"


def test_writes_for_another_attempt_or_execution_change_nothing(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    assert not table.start_attempt("shapes", "exec-2", _record(1), "tok-x")
    assert table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
    before = table.get("shapes")
    assert not table.set_instance("shapes", "exec-1", 2, "i-9", "g5.xlarge", None)
    assert not table.set_instance("shapes", "exec-2", 1, "i-9", "g5.xlarge", None)
    assert not table.set_instance("other", "exec-1", 1, "i-9", "g5.xlarge", None)
    assert not table.end_attempt("shapes", "exec-2", 1, "SpotInterrupted")
    assert not table.replace_token("shapes", "exec-1", 2, "tok-9")
    assert not table.replace_token("shapes", "exec-2", 1, "tok-9")
    assert not table.update_progress("shapes", "run-b", 1, Progress(epoch=1, epochs=2))
    assert not table.clear_token("shapes", "exec-2")
    assert not table.finish("shapes", "exec-2", status="failed")
    after = table.get("shapes")
    assert (
        before and after and after.model_dump(exclude={"updated"}) == before.model_dump(exclude={"updated"})
    )
    assert (
        table.replace_token("shapes", "exec-1", 1, "tok-2")
        and table.token_for("shapes", "run-a", 1) == "tok-2"
    )
    assert table.token_for("other", "run-a", 1) is None
    assert not table.replace_token("other", "exec-1", 1, "tok-9")  # a job nobody started
    assert table.clear_token("shapes", "exec-1") and table.token_for("shapes", "run-a", 1) is None
    assert not table.replace_token("shapes", "exec-1", 1, "tok-3")  # no current attempt


def test_numbers_come_back_as_written(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
    progress = Progress(epoch=3, epochs=10, losses={"box": 1.25, "cls": 2.0}, seconds_per_epoch=0.5)
    table.update_progress("shapes", "run-a", 1, progress)
    table.finish("shapes", "exec-1", cost_usd=0.42, result={"epochs": 10, "metrics": {"recall": 0.875}})
    item = table.get("shapes")
    assert item and item.progress and item.progress.losses == {"box": 1.25, "cls": 2.0}
    assert item.progress.epoch == 3 and item.progress.seconds_per_epoch == 0.5
    assert item.cost_usd == 0.42 and item.result == {"epochs": 10, "metrics": {"recall": 0.875}}
    assert type(item.result["epochs"]) is int and item.updated.endswith("Z")


def test_a_refused_start_tells_the_user_how_to_cancel_the_running_job(table):
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    with pytest.raises(JobAlreadyRunning) as refused:
        table.acquire_lock("shapes", "exec-2", "run-b", lambda e: True)
    assert str(refused.value) == (
        "job 'shapes' is already being trained by execution exec-1; this start was refused and the "
        "running job is untouched. Wait for it to finish, or cancel it by deleting "
        "jobs/shapes/config.yaml (or stop that execution), then upload again."
    )


class _Racing:
    """The DynamoDB client, with something else writing the job's item just before (or just
    after) our first update reaches the table: what a concurrent start or clean up does."""

    def __init__(self, table: JobTable, *, before=None, after=None):
        self._client, self._before, self._after = table.client, before, after
        self.table = JobTable(self, table.table_name)  # type: ignore[arg-type]

    def __getattr__(self, name):
        return getattr(self._client, name)

    def update_item(self, **kwargs):
        before, after, self._before, self._after = self._before, self._after, None, None
        if before:
            before()
        try:
            return self._client.update_item(**kwargs)
        finally:
            if after:
                after()


def test_a_duplicate_delivery_of_the_same_start_gets_the_run_id_of_the_first(table):
    """Two deliveries of one execution's start race: both must name the same run (its instances
    and weights are found by it), whichever wrote first."""
    racing = _Racing(table, before=lambda: table.acquire_lock("shapes", "exec-1", "run-a", bool))
    assert racing.table.acquire_lock("shapes", "exec-1", "run-b", lambda e: True) == "run-a"
    item = table.get("shapes")
    assert item and (item.execution, item.run_id) == ("exec-1", "run-a")


@pytest.mark.parametrize("gone", ["lock released", "item deleted"])
def test_a_lock_freed_just_after_the_start_found_it_held_is_taken(table, gone):
    """The holder's clean up releases the lock (or the item is deleted) between this start's
    refused write and its look at the holder: the job is free, so this start gets it."""
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)

    def free_it():
        if gone == "lock released":
            table.release_lock("shapes", "exec-1", "cancelled")
        else:
            table.client.delete_item(TableName=table.table_name, Key={"job": {"S": "shapes"}})

    asked = []
    racing = _Racing(table, after=free_it)
    assert racing.table.acquire_lock("shapes", "exec-2", "run-b", asked.append) == "run-b"
    assert asked == []  # nobody held it any more: nothing to ask about
    item = table.get("shapes")
    assert item and (item.execution, item.run_id, item.status) == ("exec-2", "run-b", "starting")


def test_publishing_and_cancelling_a_run_exclude_each_other(table):
    """Check result's publication and a cancel race for the run: whichever claims it first wins,
    the other is refused and changes nothing; another execution can claim neither."""
    for job in ("published", "cancelled"):
        table.acquire_lock(job, "exec-1", "run-a", lambda e: True)
        table.start_attempt(job, "exec-1", _record(1), "tok-1")
        assert not table.claim_publication(job, "exec-2") and not table.claim_cancel(job, "exec-2")
    assert table.claim_publication("published", "exec-1")
    assert not table.claim_cancel("published", "exec-1")  # too late: the weights are being published
    assert table.claim_cancel("cancelled", "exec-1")
    assert not table.claim_publication("cancelled", "exec-1")  # nothing of a cancelled run is published
    assert table.claim_publication("published", "exec-1")  # Check result retried: still its to publish
    assert table.claim_cancel("cancelled", "exec-1")  # a retried cancel
    statuses = {i.job: (i.status, i.execution) for i in table.scan()}
    assert statuses == {"published": ("publishing", "exec-1"), "cancelled": ("cancelling", "exec-1")}


def test_the_status_table_lists_every_job_by_name_with_its_values(table):
    for job in ("zebra", "apple", "mango"):
        table.acquire_lock(job, f"exec-{job}", f"run-{job}", lambda e: True)
    table.finish("apple", "exec-apple", status="complete", cost_usd=0.5, result={"epochs": 3})
    table.release_lock("apple", "exec-apple", "complete")
    items = table.scan()
    assert [(i.job, i.status, i.execution) for i in items] == [
        ("apple", "complete", None),
        ("mango", "starting", "exec-mango"),
        ("zebra", "starting", "exec-zebra"),
    ]
    assert (
        items[0].cost_usd == 0.5
        and items[0].result == {"epochs": 3}
        and type(items[0].result["epochs"]) is int
    )
    assert table.scan() == items


def test_late_reports_for_a_job_or_attempt_that_is_gone_change_nothing(table):
    """A trainer's report that arrives after its attempt was cleared, or for a job whose item is
    gone, is refused (False), never an error that fails the step."""
    assert not table.end_attempt("nobody", "exec-1", 1, "SpotInterrupted")
    table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
    table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
    assert table.clear_token("shapes", "exec-1")
    assert not table.set_instance("shapes", "exec-1", 1, "i-late", "g5.xlarge", None)
    item = table.get("shapes")
    assert item and item.current is None and item.attempts[0].instance is None


def test_times_are_recorded_in_utc_whatever_the_machines_zone(table, monkeypatch):
    """The local engine runs on the user's machine: an attempt's start in local time would be
    hours off the UTC clock its cost is computed against."""
    import time

    monkeypatch.setenv("TZ", "PST+08")  # POSIX form: needs no zoneinfo files
    time.tzset()
    try:
        table.acquire_lock("shapes", "exec-1", "run-a", lambda e: True)
        table.start_attempt("shapes", "exec-1", _record(1), "tok-1")
        table.set_instance("shapes", "exec-1", 1, "i-1", "g5.xlarge", None)
        item = table.get("shapes")
        assert item and item.attempts[0].start
        started = dt.datetime.fromisoformat(item.attempts[0].start.replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 120
    finally:
        monkeypatch.undo()
        time.tzset()
