"""The job table's lock and conditional writes, against moto's DynamoDB."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from spotyolo.contract.errors import JobAlreadyRunning
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import AttemptRecord, Progress


@pytest.fixture
def table():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="jobs",
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield JobTable(client, "jobs")


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
    assert table.token_for("shapes", 1) == "tok-1" and table.token_for("shapes", 2) is None
    assert table.end_attempt("shapes", "exec-1", 1, "SpotInterrupted")
    assert table.release_lock("shapes", "exec-1", "failed")
    item = table.get("shapes")
    assert item and item.execution is None and item.current is None
    assert item.attempts[0].instance == "i-1" and item.attempts[0].outcome == "SpotInterrupted"
    assert item.progress and item.progress.losses == {"box": 1.5}
