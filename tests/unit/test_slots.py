"""The instance-slot semaphore and its FIFO queue (spotyolo/core/slots.py) against moto's
DynamoDB: grants in ticket order, never more holders than slots, leaked slots reclaimed only
when their holder has really ended, conditional writes that keep racing pumps and a cancel apart.

Step Functions is a stand-in here (the tokens it was answered with, the statuses it reports);
tests/stepfunctions/test_slot_queue.py runs the same code under the real state machine."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from spotyolo.contract.status import JobStatus
from spotyolo.core import planning
from spotyolo.core import slots as slots_module
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import Attempt, Capacity, JobConfig, JobSpec, QueueInfo
from spotyolo.core.slots import (
    QUEUE,
    RECLAIM_GRACE_SECONDS,
    RELOAD_SECONDS,
    REWAKE_SECONDS,
    SEMAPHORE,
    UNLIMITED,
    PumpReport,
    SlotQueue,
    Waiter,
    configured_slots,
    create_table,
    queue_words,
)
from spotyolo.local import moto_patches

_TABLES = itertools.count()
ARN = "arn:aws:states:us-east-1:123456789012:execution:pipeline:"


@dataclass
class FakeStates:
    """Step Functions as the queue sees it: who was answered, and each execution's status."""

    status: dict[str, str] = field(default_factory=dict)
    answered: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tokens whose task is over (SendTaskSuccess answers TaskTimedOut)
    dead_tokens: set[str] = field(default_factory=set)
    describe_error: str | None = None
    #: when an ended execution stopped (epoch seconds); unknown: long ago
    stopped: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: every SendTaskSuccess asked (answered or not), and every DescribeExecution
    sent: list[str] = field(default_factory=list)
    described: list[str] = field(default_factory=list)
    #: tokens Step Functions cannot be reached for (ServiceUnavailable)
    unreachable: set[str] = field(default_factory=set)
    #: how many SendTaskSuccess calls are throttled before one gets through
    throttles: int = 0
    #: run after a token is answered (what the woken execution does at once)
    on_answer: Any = None

    def send_task_success(self, taskToken: str, output: str) -> dict[str, Any]:
        self.sent.append(taskToken)
        if taskToken in self.unreachable:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendTaskSuccess")
        if self.throttles:
            self.throttles -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "SendTaskSuccess"
            )
        if taskToken in self.dead_tokens or taskToken in self.answered:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "over"}}, "SendTaskSuccess")
        with self.lock:
            self.answered.append(taskToken)
            self.outputs[taskToken] = json.loads(output)
        if self.on_answer:
            self.on_answer(taskToken)
        return {}

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.described.append(executionArn)
        if self.describe_error:
            raise ClientError({"Error": {"Code": self.describe_error, "Message": "no"}}, "DescribeExecution")
        if executionArn not in self.status:
            raise ClientError(
                {"Error": {"Code": "ExecutionDoesNotExist", "Message": "gone"}}, "DescribeExecution"
            )
        described: dict[str, Any] = {"status": self.status[executionArn]}
        if executionArn in self.stopped:
            described["stopDate"] = dt.datetime.fromtimestamp(self.stopped[executionArn], dt.UTC)
        return described


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    queue: SlotQueue
    jobs: JobTable
    states: FakeStates
    clock: Clock
    counted: list[tuple[list[str], str]]

    def join(
        self, name: str, slots: SlotQueue | None = None, *, capacity: Capacity = "spot", pump: bool = True
    ) -> str:
        """An execution of job ``name`` takes its lock and asks for a slot (what enqueue does)."""
        execution = ARN + name
        self.states.status[execution] = "RUNNING"
        self.jobs.acquire_lock(name, execution, f"run-{name}", lambda _: True)
        q = slots or self.queue
        ticket = q.new_ticket()
        self.jobs.join_queue(name, execution, QueueInfo(ticket=ticket))
        document = _document(name, capacity)
        q.register(Waiter(ticket, execution, name, f"token-{name}", self.clock(), document))
        if pump:
            q.pump()
        return execution

    def retry_wait(self, name: str, token: str) -> None:
        """The "Wait for an instance slot" task of ``name`` is retried: a new token, its ticket."""
        item = self.jobs.get(name)
        assert item and item.queue
        self.queue.register(Waiter(item.queue.ticket, ARN + name, name, token, self.clock()))

    def holders(self) -> list[str]:
        return sorted(h.rsplit(":", 1)[1] for h in self.queue.semaphore().holders)

    def waiting(self) -> list[str]:
        return [w.job for w in self.queue.waiters()]

    def woken(self) -> list[str]:
        return [t.removeprefix("token-") for t in self.states.answered]


def _document(name: str, capacity: Capacity = "spot") -> dict[str, Any]:
    job = JobSpec(
        name=name,
        bucket="b",
        run_id=f"run-{name}",
        execution=ARN + name,
        config=JobConfig(model="yolo11n.yaml", max_hours=1),
        dataset={},
        instance_types=["g5.xlarge"],
        deadline=int(Clock().now) + 3600,
        stall_seconds=600,
    )
    attempt = Attempt(
        number=1,
        capacity=capacity,
        instance_types=["g5.xlarge"],
        seconds_left=3600,
        heartbeat_seconds=600,
    )
    return {"job": job.model_dump(mode="json"), "attempt": attempt.model_dump(mode="json")}


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        yield ddb


@pytest.fixture
def world(aws: Any, request: pytest.FixtureRequest) -> World:
    """Fresh tables per test (in the module's one moto world), a count of 2 by default."""
    name = f"t{next(_TABLES)}"
    create_table(aws, f"slots-{name}")
    aws.create_table(
        TableName=f"jobs-{name}",
        KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    jobs = JobTable(aws, f"jobs-{name}")
    states, clock, counted = FakeStates(), Clock(), []
    count_value = getattr(request, "param", 2)

    def count(types: list[str], capacity: str) -> int | None:
        counted.append((types, capacity))
        return count_value

    queue = SlotQueue(aws, f"slots-{name}", sfn=states, count=count, jobs=jobs, clock=clock)  # type: ignore[arg-type]
    return World(queue, jobs, states, clock, counted)


def test_free_slots_are_granted_at_once_and_the_rest_wait_in_arrival_order(world: World) -> None:
    for name in ("a", "b", "c", "d"):
        world.join(name)
    assert world.woken() == ["a", "b"] and world.holders() == ["a", "b"]
    assert world.waiting() == ["c", "d"]
    # each queued job sees its place; the granted ones hold their ticket
    c, d, a = (world.jobs.get(n) for n in ("c", "d", "a"))
    assert c and c.status == JobStatus.QUEUED and c.queue and (c.queue.position, c.queue.ahead) == (1, 0)
    assert d and d.queue and (d.queue.position, d.queue.ahead, d.queue.running, d.queue.slots) == (2, 1, 2, 2)
    assert queue_words(d.queue) == "queued for an instance: 2nd in line (1 job ahead) · 2/2 instances running"
    assert a and a.status == JobStatus.STARTING and a.queue and a.queue.position is None and a.queue.granted
    # a run ends: the oldest waiter gets its slot, and only that one
    world.queue.finish(ARN + "b")
    assert world.woken() == ["a", "b", "c"] and world.holders() == ["a", "c"] and world.waiting() == ["d"]
    d = world.jobs.get("d")
    assert d and d.queue and d.queue.position == 1
    world.queue.finish(ARN + "a")
    world.queue.finish(ARN + "c")
    world.queue.finish(ARN + "d")
    assert world.woken() == ["a", "b", "c", "d"]
    assert world.holders() == [] and world.waiting() == []


def test_the_grant_moves_max_hours_to_start_at_the_grant(world: World) -> None:
    world.join("a")
    world.join("b")
    world.join("c")
    world.clock.now += 1800  # c waits half an hour
    world.queue.finish(ARN + "a")
    out = world.states.outputs["token-c"]
    assert out["queued_seconds"] == 1800 and out["ticket"] == 3
    assert out["job"]["deadline"] == int(Clock().now) + 3600 + 1800
    assert out["attempt"]["seconds_left"] == 3600  # the whole max_hours, from now
    assert world.states.outputs["token-a"]["job"]["deadline"] == int(Clock().now) + 3600


def test_a_cancelled_waiter_leaves_the_queue_and_wakes_no_one(world: World) -> None:
    for name in ("a", "b", "c", "d"):
        world.join(name)
    world.states.status[ARN + "c"] = "ABORTED"
    report = world.queue.finish(ARN + "c")  # what Cancel's (or the status rule's) clean up does
    assert report.granted == [] and world.woken() == ["a", "b"]
    assert world.waiting() == ["d"] and world.holders() == ["a", "b"]
    d = world.jobs.get("d")
    assert d and d.queue and d.queue.position == 1


def test_a_slot_leaked_by_an_ended_execution_is_reclaimed(world: World) -> None:
    world.join("a")
    world.join("b")
    world.join("c")
    # a died without its clean up (FAILED), b's execution is not even known any more
    world.states.status[ARN + "a"] = "FAILED"
    del world.states.status[ARN + "b"]
    report = world.queue.pump()
    assert sorted(report.reclaimed) == [ARN + "a", ARN + "b"]
    assert world.holders() == ["c"] and world.woken() == ["a", "b", "c"]


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException"])
def test_a_holder_whose_status_cannot_be_read_keeps_its_slot(world: World, code: str) -> None:
    """Fail closed, as the job lock does: only ExecutionDoesNotExist or an ended status frees."""
    world.join("a")
    world.join("b")
    world.join("c")
    world.states.status[ARN + "a"] = "FAILED"
    world.states.describe_error = code
    report = world.queue.pump()
    assert report.reclaimed == [] and world.holders() == ["a", "b"] and world.waiting() == ["c"]


def test_racing_pumps_never_grant_more_slots_than_there_are(world: World) -> None:
    """Eight pumps at once over two free slots. DynamoDB applies each conditional write
    atomically; moto does not (two threads both passed the condition and took the last slot,
    until spotyolo.local.moto_patches made its writes atomic, as the local engine runs it)."""
    moto_patches.install_atomic_dynamodb()
    try:
        _race(world)
    finally:
        moto_patches.uninstall_atomic_dynamodb()


def _race(world: World) -> None:
    for name in ("a", "b"):
        world.join(name)
    world.queue.finish(ARN + "a")
    world.queue.finish(ARN + "b")
    world.states.answered.clear()
    # eight waiters registered without pumping, then eight pumps at once
    for i in range(8):
        name = f"w{i}"
        world.states.status[ARN + name] = "RUNNING"
        world.jobs.acquire_lock(name, ARN + name, "r", lambda _: True)
        world.queue.register(Waiter(world.queue.new_ticket(), ARN + name, name, f"token-{name}", 0.0))
    threads = [threading.Thread(target=world.queue.pump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(world.woken()) == ["w0", "w1"]
    assert world.holders() == ["w0", "w1"] and len(world.waiting()) == 6


def test_a_grant_from_a_stale_read_fails_its_conditional_write(world: World) -> None:
    """The transaction itself refuses: a pump working from an old read of the semaphore (the
    slot just went to someone else) or of the queue (the waiter just left) takes nothing."""
    world.join("a")
    world.join("b")
    stale = world.queue.semaphore()
    world.join("c")  # waits: both slots are held
    world.queue.finish(ARN + "a")  # c gets a's slot
    world.join("d")
    (d,) = world.queue.waiters()
    world.states.status[ARN + "b"] = "RUNNING"
    assert not world.queue._take(d, stale)  # "one slot free" is stale
    fresh = world.queue.semaphore()
    world.queue.leave(ARN + "d")  # d is cancelled
    world.queue.release(ARN + "b")  # a slot frees, but d left
    assert not world.queue._take(d, world.queue.semaphore())
    assert fresh.free == 0 and world.holders() == ["c"]


def test_a_waiter_whose_task_is_over_gives_its_grant_back(world: World) -> None:
    """Granted, but its execution stopped waiting (stopped before its clean up ran): the slot
    goes to the next waiter in the same pump."""
    world.join("a")
    world.join("b")
    world.join("c")
    world.join("d")
    world.states.dead_tokens.add("token-c")
    report = world.queue.finish(ARN + "a")
    assert report.gone == [ARN + "c"] and report.granted == [ARN + "d"]
    assert world.holders() == ["b", "d"] and world.waiting() == []


def test_a_retried_wait_of_a_holder_answers_its_new_token(world: World) -> None:
    execution = world.join("a")
    item = world.jobs.get("a")
    assert item and item.queue
    world.queue.register(Waiter(item.queue.ticket, execution, "a", "token-a-retried", world.clock()))
    world.queue.pump()
    assert world.woken() == ["a", "a-retried"] and world.holders() == ["a"] and world.waiting() == []


def test_quota_exceeded_lowers_the_count_and_keeps_the_job_first_in_line(world: World) -> None:
    world.queue.set_slots(3, "test")
    for name in ("a", "b", "c"):
        world.join(name)
    world.join("d")
    assert world.holders() == ["a", "b", "c"] and world.waiting() == ["d"]
    assert world.queue.lower(ARN + "c") == 2  # c's launch was refused: only 2 fit
    assert world.queue.semaphore().slots == 2 and world.holders() == ["a", "b"]
    # c comes back with its own ticket: ahead of d
    world.queue.register(Waiter(3, ARN + "c", "c", "token-c-again", world.clock()))
    world.queue.pump()
    assert world.waiting() == ["c", "d"] and world.holders() == ["a", "b"]
    world.queue.finish(ARN + "a")
    assert world.woken()[-1] == "c-again" and world.waiting() == ["d"]


def test_quota_exceeded_with_no_other_job_running_keeps_the_slot(world: World) -> None:
    world.join("a")
    world.join("b")
    world.states.status[ARN + "b"] = "FAILED"  # the only other holder has ended
    assert world.queue.lower(ARN + "a") is None
    assert world.holders() == ["a"]


def test_the_count_is_read_again_after_a_while(world: World) -> None:
    world.join("a")
    assert world.counted == [(["g5.xlarge"], "spot")]
    world.join("b")
    world.join("c")
    assert len(world.counted) == 1  # trusted for RELOAD_SECONDS
    world.clock.now += RELOAD_SECONDS + 1
    world.queue.pump()
    assert len(world.counted) == 2


@pytest.mark.parametrize("world", [None], indirect=True)
def test_an_unknown_count_is_no_limit(world: World) -> None:
    for i in range(5):
        world.join(f"j{i}")
    assert len(world.holders()) == 5 and world.queue.semaphore().slots == UNLIMITED
    item = world.jobs.get("j4")
    assert item and item.status == JobStatus.STARTING


def test_nothing_is_left_once_every_run_ended(world: World, aws: Any) -> None:
    for name in ("a", "b", "c"):
        world.join(name)
    for name in ("c", "a", "b"):
        world.queue.finish(ARN + name)
    items = aws.query(
        TableName=world.queue.table_name,
        KeyConditionExpression="pk = :q",
        ExpressionAttributeValues={":q": {"S": QUEUE}},
    )["Items"]
    assert items == [] and world.holders() == []
    assert aws.get_item(TableName=world.queue.table_name, Key=SEMAPHORE)["Item"]["holders"] == {"M": {}}


def test_after_queue_keeps_a_money_bound_attempt_and_its_budget_end() -> None:
    doc = _document("a")
    job = JobSpec.model_validate(doc["job"])
    attempt = Attempt.model_validate(
        {**doc["attempt"], "seconds_left": 900, "budget_end": int(Clock().now) + 900}
    )
    now = Clock().now + 600
    moved_job, moved = planning.after_queue(job, attempt, 600, now=now)
    assert moved_job.deadline == job.deadline + 600
    assert (moved.seconds_left, moved.budget_end) == (900, attempt.budget_end + 600)
    assert moved.heartbeat_seconds < moved.seconds_left


def test_a_grant_whose_answer_was_lost_is_answered_by_a_later_pump(world: World) -> None:
    """The pump that granted died before SendTaskSuccess (a Lambda timeout): the holder keeps
    its token and its answer, and a pump a minute later sends that answer (the whole document:
    the state's ResultSelector reads job and attempt)."""
    world.join("a")
    world.join("b")
    world.join("c")
    world.states.dead_tokens.add("token-c")  # stand-in for "the answer never got out"

    def unreachable(token: str, output: str) -> None:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "SendTaskSuccess")

    world.queue._answer = unreachable  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        world.queue.finish(ARN + "a")
    assert world.holders() == ["b", "c"] and "token-c" not in world.states.answered
    del world.queue._answer
    world.states.dead_tokens.discard("token-c")
    world.clock.now += 30
    world.queue.pump()
    assert "token-c" not in world.states.answered  # not yet: the first pump may still answer
    world.clock.now += 60
    world.queue.pump()
    assert world.woken()[-1] == "c" and set(world.states.outputs["token-c"]) >= {"job", "attempt"}
    world.clock.now += 120
    world.queue.pump()
    assert world.woken().count("c") == 1  # answered once


def test_lowering_the_count_never_shows_more_holders_than_slots(world: World) -> None:
    """QuotaExceeded while holding a slot lowers the count and gives the slot back. Done as two
    writes, a reader between them saw 2 holders of 1 slot (the queue fault campaign's sampler,
    seed 2: a count of 2 above a quota of 1); one write keeps the semaphore whole."""
    world.queue.set_slots(2, "test")
    world.join("a")
    world.join("b")
    seen: list[tuple[int, int]] = []
    client = world.queue.client

    class Watching:
        """The DynamoDB client, reading the semaphore after every write to it."""

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def update_item(self, **kw: Any) -> Any:
            out = client.update_item(**kw)
            if kw.get("Key") == SEMAPHORE:
                item = client.get_item(TableName=kw["TableName"], Key=SEMAPHORE, ConsistentRead=True)["Item"]
                seen.append((len(item["holders"]["M"]), int(item["slots"]["N"])))
            return out

    world.queue.client = Watching()  # type: ignore[assignment]
    try:
        assert world.queue.lower(ARN + "b") == 1
    finally:
        world.queue.client = client
    assert seen and all(holders <= slots for holders, slots in seen), seen
    assert world.holders() == ["a"] and world.queue.semaphore().slots == 1
    # "Back to the queue" retried after its answer was lost: the same, and no error
    assert world.queue.lower(ARN + "b") == 1 and world.holders() == ["a"]


def test_an_ended_holder_keeps_its_slot_until_its_clean_up_has_ended_its_instances(world: World) -> None:
    """The user stops a's execution from the console; its clean up (the execution-status rule),
    which terminates a's instance and then gives the slot back, comes a few seconds later. A
    pump in between (another job asking) must not reclaim a's slot: b would launch while a's
    instance still runs, over the count (with the count at the quota, EC2 refuses b and it backs
    off). While the job table still names a as the lock holder, its clean up has not run."""
    world.queue.set_slots(1, "test")
    world.join("a")
    world.join("b")
    world.states.status[ARN + "a"] = "ABORTED"  # stopped; its instance runs until its clean up
    world.states.stopped[ARN + "a"] = world.clock()
    world.join("c")  # a pump before a's clean up
    assert world.holders() == ["a"] and world.waiting() == ["b", "c"] and world.woken() == ["a"]
    # a's clean up: terminates, releases the job's lock, gives the slot back, wakes b
    assert world.jobs.release_lock("a", ARN + "a", JobStatus.CANCELLED.value)
    world.queue.finish(ARN + "a")
    assert world.holders() == ["b"] and world.woken() == ["a", "b"]


def test_an_ended_holder_whose_clean_up_never_came_is_reclaimed_after_a_while(world: World) -> None:
    world.queue.set_slots(1, "test")
    world.join("a")
    world.join("b")
    world.states.status[ARN + "a"] = "FAILED"
    world.states.stopped[ARN + "a"] = world.clock()
    world.queue.pump()
    assert world.holders() == ["a"]
    world.clock.now += RECLAIM_GRACE_SECONDS
    world.queue.set_slots(1, "test")  # (the count read again: not what this is about)
    report = world.queue.pump()
    assert report.reclaimed == [ARN + "a"] and world.holders() == ["b"]


# ---------------------------------------------------------------- what mutation testing found (issue 14)


ORDINALS = [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th")]
ORDINALS += [(21, "21st"), (22, "22nd"), (23, "23rd"), (101, "101st"), (111, "111th"), (112, "112th")]
ORDINALS += [(121, "121st")]


@pytest.mark.parametrize(("place", "words"), ORDINALS)
def test_a_place_in_line_reads_as_an_english_ordinal(place: int, words: str) -> None:
    info = QueueInfo(ticket=place, position=place, ahead=place - 1, running=2, slots=2)
    assert queue_words(info).startswith(f"queued for an instance: {words} in line (")


def test_the_queue_line_of_a_job_without_a_place_or_a_limit() -> None:
    """Granted (or not placed yet): nothing to say; with no limit, no 'n/m running'."""
    assert queue_words(None) == "" and queue_words(QueueInfo(ticket=4)) == ""
    info = QueueInfo(ticket=4, position=1, ahead=0, running=3, slots=None)
    assert queue_words(info) == "queued for an instance: 1st in line (0 jobs ahead) · no limit"


def test_the_slot_count_is_max_instances_else_the_accounts_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_instances: 1`` is one instance whatever the quota; 0 (unset) asks the account's
    quota for the job's types and capacity (spotyolo.core.quotas, tests/functions/test_quotas.py)."""
    asked: list[tuple[Any, ...]] = []

    def quota(sq: Any, ec2: Any, types: list[str], capacity: str) -> int:
        asked.append((sq, ec2, types, capacity))
        return 5

    monkeypatch.setattr(slots_module, "instance_slots", quota)
    assert configured_slots(1, "quotas", "ec2")(["g5.xlarge"], "on-demand") == 1 and asked == []
    assert configured_slots(0, "quotas", "ec2")(["g5.xlarge", "g6.xlarge"], "on-demand") == 5
    assert asked == [("quotas", "ec2", ["g5.xlarge", "g6.xlarge"], "on-demand")]


def test_a_job_cancelled_from_anywhere_in_line_leaves_it(world: World) -> None:
    for name in ("a", "b", "c", "d", "e"):
        world.join(name)
    assert world.waiting() == ["c", "d", "e"]
    assert world.queue.leave(ARN + "e") == 1 and world.queue.leave(ARN + "e") == 0
    assert world.queue.leave(ARN + "a") == 0  # a holds its slot: it is not in line
    world.queue.finish(ARN + "d")
    assert world.waiting() == ["c"]
    world.queue.finish(ARN + "a")
    assert world.woken() == ["a", "b", "c"] and world.waiting() == [] and world.holders() == ["b", "c"]


def test_a_cancel_that_races_the_grant_of_its_waiter_still_gives_the_slot_back(world: World) -> None:
    """The cancel read the queue while c waited; c got its slot before the cancel deleted the
    waiter: taking it out of the queue finds nothing (and does not fail), giving the slot back works."""
    world.join("a")
    world.join("b")
    world.join("c")
    stale = world.queue.waiters()
    world.queue.finish(ARN + "a")  # c is granted meanwhile
    world.queue.waiters = lambda: stale  # type: ignore[method-assign]
    try:
        assert world.queue.leave(ARN + "c") == 0
    finally:
        del world.queue.waiters
    assert world.queue.release(ARN + "c") and world.holders() == ["b"]
    assert world.queue.release(ARN + "c") is False  # given back once


def test_the_clean_up_of_a_run_that_never_queued_changes_nothing(world: World) -> None:
    """Every run's clean up gives its slot back, also in a deployment whose queue was never used."""
    report = world.queue.finish(ARN + "never")
    assert (report.granted, report.reclaimed, report.waiting, report.running) == ([], [], 0, 0)
    assert world.queue.release(ARN + "never") is False and world.holders() == []


def test_a_retried_wait_at_the_head_does_not_hold_up_the_jobs_behind_it(world: World) -> None:
    world.join("a")
    world.join("b", pump=False)
    world.retry_wait("a", "token-a-retried")  # ticket 1: ahead of b
    world.queue.pump()
    assert world.woken() == ["a", "a-retried", "b"] and world.holders() == ["a", "b"]


def test_a_retried_wait_that_is_already_over_keeps_the_slot_its_job_holds(world: World) -> None:
    """Its job still runs on the slot of its first grant: that slot is not given to the next job."""
    world.join("a")
    world.join("b")
    world.join("c")
    world.states.dead_tokens.add("token-a-retried")
    world.retry_wait("a", "token-a-retried")
    report = world.queue.pump()
    assert report.gone == [] and world.holders() == ["a", "b"] and world.waiting() == ["c"]


def test_two_pumps_answering_one_retried_wait_answer_it_once(world: World) -> None:
    execution = world.join("a")
    world.retry_wait("a", "token-a-retried")
    (head,) = world.queue.waiters()
    sem, report = world.queue.semaphore(), PumpReport()
    world.queue._take_again(head, sem, report)
    world.queue._take_again(head, sem, report)  # a second pump that read the same queue
    assert world.woken() == ["a", "a-retried"] and report.granted == [execution]


def test_a_run_that_ends_as_soon_as_it_is_granted_leaves_nothing_behind(world: World) -> None:
    """c's execution fails right after its grant (its launch is refused) and its clean up gives
    the slot back before the pump that woke it is done: that pump does not fail."""
    world.join("a")
    world.join("b")
    world.join("c")

    def ends_at_once(token: str) -> None:
        if token == "token-c":
            world.queue.finish(ARN + "c")

    world.states.on_answer = ends_at_once
    world.queue.finish(ARN + "a")
    assert world.holders() == ["b"] and world.waiting() == [] and world.woken() == ["a", "b", "c"]


def test_a_grant_is_answered_once_and_its_token_is_not_kept(world: World) -> None:
    """The task token (a secret) leaves the semaphore once answered; no later pump sends again.
    The semaphore names the job that holds each slot."""
    world.join("a")
    holder = world.queue.semaphore().holders[ARN + "a"]
    assert "token" not in holder and "output" not in holder and holder["job"] == "a"
    world.clock.now += 3600
    world.queue.pump()
    assert world.states.sent == ["token-a"]


def test_answers_lost_while_step_functions_is_down_are_sent_once_it_is_back(world: World) -> None:
    """A minute after the grant a pump sends the lost answers again; one still unreachable stays
    for the next pump and does not hold up the others."""
    for name in ("a", "b", "c", "d"):
        world.join(name)
    world.states.unreachable |= {"token-c", "token-d"}
    for name in ("a", "b"):
        with pytest.raises(ClientError):
            world.queue.finish(ARN + name)  # c, then d, granted; their answers do not get out
    assert world.holders() == ["c", "d"] and world.woken() == ["a", "b"]
    world.clock.now += REWAKE_SECONDS
    world.queue.pump()  # still down: kept for the next pump
    world.states.unreachable.discard("token-d")
    world.queue.pump()
    assert world.woken() == ["a", "b", "d"]
    world.states.unreachable.clear()
    world.queue.pump()
    world.queue.pump()
    assert world.woken() == ["a", "b", "d", "c"]


def test_a_throttled_grant_is_asked_again_after_short_waits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(slots_module.time, "sleep", waits.append)
    world.states.throttles = 2
    world.join("a")
    assert world.woken() == ["a"] and waits == [0.2, 0.5]
    # a token whose task is over is not asked again: the slot goes back at once
    world.join("b")
    world.join("c")
    world.states.dead_tokens.add("token-c")
    waits.clear()
    sent = len(world.states.sent)
    world.queue.finish(ARN + "b")
    assert waits == [] and world.states.sent[sent:] == ["token-c"] and world.holders() == ["a"]


def test_a_failed_read_of_the_count_keeps_the_count_it_had(world: World) -> None:
    """A throttled quota read never lifts the limit: the count read before stays."""
    world.join("a")
    assert world.queue.semaphore().source == "deployment"

    def throttled(types: list[str], capacity: str) -> int | None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "GetServiceQuota")

    world.queue.count = throttled
    world.clock.now += RELOAD_SECONDS
    for name in ("b", "c"):
        world.join(name)
    assert world.holders() == ["a", "b"] and world.waiting() == ["c"] and world.queue.semaphore().slots == 2


def test_a_count_that_cannot_be_read_the_first_time_is_no_limit(world: World) -> None:
    def throttled(types: list[str], capacity: str) -> int | None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "GetServiceQuota")

    world.queue.count = throttled
    for name in ("a", "b", "c"):
        world.join(name)
    sem = world.queue.semaphore()
    assert (sem.slots, sem.source) == (UNLIMITED, "no limit") and world.holders() == ["a", "b", "c"]


def test_the_count_is_read_for_the_first_waiters_types_and_capacity_every_reload_seconds(
    world: World,
) -> None:
    world.join("a", capacity="on-demand")
    world.join("b")
    world.join("c")  # waits
    assert world.counted == [(["g5.xlarge"], "on-demand")]
    world.clock.now += RELOAD_SECONDS - 1
    world.queue.pump()
    assert len(world.counted) == 1
    world.clock.now += 1  # RELOAD_SECONDS after the read: read again, for c
    world.queue.pump()
    assert world.counted[1:] == [(["g5.xlarge"], "spot")]


@pytest.mark.parametrize("world", [0], indirect=True)
def test_a_count_of_zero_grants_no_slot(world: World) -> None:
    """The account allows no instance of the job's types: none is launched into a refusal."""
    world.join("a")
    assert world.holders() == [] and world.waiting() == ["a"] and world.woken() == []


def test_a_queued_job_shows_since_when_it_waits(world: World) -> None:
    world.join("a")
    world.join("b")
    world.join("c")
    world.clock.now += 61
    world.join("d")
    c, d = world.jobs.get("c"), world.jobs.get("d")
    assert c and c.queue and c.queue.since == "2027-01-15T08:00:00Z"
    assert d and d.queue and d.queue.since == "2027-01-15T08:01:01Z"


def test_the_grant_says_how_long_the_job_waited(world: World) -> None:
    world.join("a")
    world.join("b")
    world.join("c")
    world.clock.now += 90.34
    world.queue.finish(ARN + "a")
    assert world.states.outputs["token-c"]["queued_seconds"] == 90.3


def test_a_pump_asks_step_functions_about_each_holder_once(world: World) -> None:
    """DescribeExecution is rate limited: a pump that reclaims and grants asks about no holder twice."""
    for name in ("a", "b", "c", "d"):
        world.join(name)
    world.states.status[ARN + "a"] = "FAILED"
    world.states.described.clear()
    report = world.queue.pump()
    assert report.reclaimed == [ARN + "a"] and report.granted == [ARN + "c"]
    assert ARN + "a" in world.states.described
    assert len(world.states.described) == len(set(world.states.described))
