"""The instance-slot queue: at most N instances at once for all jobs together, granted in the
order the jobs asked (docs/ARCHITECTURE.md, "Capacity queue").

The pattern of AWS's sample "controlling concurrency in distributed systems using AWS Step
Functions": a DynamoDB semaphore taken and given back with conditional writes, plus what the
sample does with a polling loop done with task tokens instead. One table (``SLOT_TABLE``, key
``pk`` string + ``sk`` number) holds:

* the semaphore (``pk = "semaphore"``, ``sk = 0``): ``holders``, a map from execution ARN to
  ``{job, ticket, granted}``, and ``slots``, the count (``UNLIMITED`` when there is none),
  with when and where it was read (``slots_read``, ``slots_source``) and ``next_ticket``;
* one waiter per queued execution (``pk = "queue"``, ``sk`` = its ticket): the execution, its
  job, the task token of its "Wait for an instance slot" state and the state document
  (``{job, attempt}``) its grant answers with.

A slot is taken by one transaction: the semaphore's conditional write (``size(holders)`` below
``slots`` and no slot held by that execution yet) together with the conditional delete of the
waiter; so two pumps never grant one slot twice, and a waiter that left (cancelled) is never
granted. Whoever changes the queue (a waiter registering, a run ending) runs :meth:`SlotQueue.pump`
right after, which grants free slots to the oldest waiters and answers their tokens
(SendTaskSuccess): no poll, and no gap between "is a slot free?" and "wait for one".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from spotyolo.core.awserrors import error_code
from spotyolo.core.jobtable import _from_dynamo, _to_dynamo
from spotyolo.core.models import Attempt, JobSpec, QueueInfo
from spotyolo.core.planning import after_queue
from spotyolo.core.quotas import instance_slots

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset or the image
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

    from spotyolo.core.jobtable import JobTable

SEMAPHORE = {"pk": {"S": "semaphore"}, "sk": {"N": "0"}}
QUEUE = "queue"
#: the count stored when nothing limits it (no max_instances and no readable quota)
UNLIMITED = 1_000_000
#: how long a count read from the deployment (max_instances or the quota) is trusted
RELOAD_SECONDS = 300
#: a holder whose execution ended keeps its slot while the job table still names it as the lock
#: holder (its clean up, which terminates its instances and then gives the slot back, has not
#: run yet: the status rule is late or retried), for at most this long after it ended
RECLAIM_GRACE_SECONDS = 900
#: how long a job may wait for a slot ("Wait for an instance slot"'s TimeoutSeconds)
QUEUE_TIMEOUT_SECONDS = 7 * 24 * 3600
#: a grant whose SendTaskSuccess did not get through (its Lambda died) is answered again after this
REWAKE_SECONDS = 60
#: the errors SendTaskSuccess answers for a token whose execution no longer waits
GONE_TOKEN = frozenset({"TaskDoesNotExist", "InvalidToken", "TaskTimedOut"})
#: Step Functions asking to be asked later, and how long to wait each time
THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException"})
THROTTLE_DELAYS = (0.2, 0.5, 1.0)
#: the slot table's keys: ``pk`` (the semaphore's, or the queue's) and ``sk`` (a waiter's ticket);
#: cdk/storage_construct.py declares the same (a test compares them)
TABLE_KEYS: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ],
}


def create_table(dynamodb: Any, name: str) -> None:
    """The slot table, on demand (the local engine's deploy, and tests)."""
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLE_KEYS)


#: statuses of an execution that will never give its slot back by itself
ENDED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})

#: (instance types, capacity) -> the slot count, None when unknown (no limit)
SlotCount = Callable[[list[str], str], "int | None"]


def configured_slots(max_instances: int, quotas_client: Any, ec2: Any) -> SlotCount:
    """The count of this deployment: ``max_instances`` when set, else the account's quota."""

    def count(instance_types: list[str], capacity: str) -> int | None:
        if max_instances > 0:
            return max_instances
        return instance_slots(quotas_client, ec2, instance_types, capacity)

    return count


@dataclass
class Waiter:
    ticket: int
    execution: str
    job: str
    token: str
    since: float
    document: dict[str, Any] = field(default_factory=dict)


@dataclass
class Semaphore:
    holders: dict[str, dict[str, Any]]
    slots: int
    slots_read: float
    next_ticket: int
    source: str = ""

    @property
    def free(self) -> int:
        return self.slots - len(self.holders)


@dataclass
class PumpReport:
    granted: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    #: granted, but the execution no longer waited: the slot was given back
    gone: list[str] = field(default_factory=list)
    waiting: int = 0
    slots: int = 0
    running: int = 0


def _is_gone(sfn: SFNClient) -> Callable[[str], bool]:
    """Whether an execution has ended (or does not exist); fails closed: any other error
    (throttled, denied) keeps its slot held, as the job lock does (validate._is_running)."""

    def gone(execution: str) -> bool:
        try:
            return sfn.describe_execution(executionArn=execution)["status"] in ENDED
        except ClientError as err:
            return error_code(err) == "ExecutionDoesNotExist"

    return gone


def _ended_at(sfn: SFNClient) -> Callable[[str], float | None]:
    """When an execution ended (0.0: unknown, or it no longer exists); None while it runs or
    when that cannot be told (fail closed, as ``_is_gone``)."""

    def ended(execution: str) -> float | None:
        try:
            described = sfn.describe_execution(executionArn=execution)
        except ClientError as err:
            return 0.0 if error_code(err) == "ExecutionDoesNotExist" else None
        if described["status"] not in ENDED:
            return None
        stop = described.get("stopDate")
        return stop.timestamp() if stop else 0.0

    return ended


class SlotQueue:
    """The semaphore and its queue over a low-level DynamoDB client; ``sfn`` answers the
    waiters' tokens and tells whether a holder still runs; ``count`` gives the slot count;
    ``jobs`` (the job table) shows each queued job its place."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        sfn: SFNClient,
        count: SlotCount,
        jobs: JobTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.sfn = sfn
        self.count = count
        self.jobs = jobs
        self.clock = clock
        self.gone = _is_gone(sfn)
        self.ended_at = _ended_at(sfn)

    # ------------------------------------------------------------ reading

    def semaphore(self) -> Semaphore:
        raw = self.client.get_item(TableName=self.table_name, Key=SEMAPHORE, ConsistentRead=True).get("Item")
        item = _from_dynamo(raw) if raw else {}
        return Semaphore(
            holders=dict(item.get("holders") or {}),
            slots=int(item.get("slots", UNLIMITED)),
            slots_read=float(item.get("slots_read", 0)),
            next_ticket=int(item.get("next_ticket", 0)),
            source=str(item.get("slots_source", "")),
        )

    def waiters(self) -> list[Waiter]:
        """Every queued execution, oldest ticket first."""
        out: list[Waiter] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :q",
            ExpressionAttributeValues={":q": {"S": QUEUE}},
            ConsistentRead=True,
        ):
            for raw in page.get("Items", []):
                item = _from_dynamo(raw)
                out.append(
                    Waiter(
                        ticket=int(item["sk"]),
                        execution=item["execution"],
                        job=item["job"],
                        token=item["token"],
                        since=float(item["since"]),
                        document=json.loads(item.get("document") or "{}"),
                    )
                )
        return sorted(out, key=lambda w: w.ticket)

    # ------------------------------------------------------------ joining and leaving

    def new_ticket(self) -> int:
        """The next ticket (an atomic counter on the semaphore, which this creates if needed)."""
        response = self.client.update_item(
            TableName=self.table_name,
            Key=SEMAPHORE,
            UpdateExpression="SET holders = if_not_exists(holders, :none) ADD next_ticket :one",
            ExpressionAttributeValues={":none": {"M": {}}, ":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["next_ticket"]["N"])

    def register(self, waiter: Waiter) -> None:
        """Queue ``waiter`` (again, with a new token, when its task was retried)."""
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "pk": {"S": QUEUE},
                "sk": {"N": str(waiter.ticket)},
                "execution": {"S": waiter.execution},
                "job": {"S": waiter.job},
                "token": {"S": waiter.token},
                "since": {"N": str(waiter.since)},
                "document": {"S": json.dumps(waiter.document)},
            },
        )

    def leave(self, execution: str) -> int:
        """Take ``execution`` out of the queue (it was cancelled, stopped or timed out)."""
        left = 0
        for waiter in self.waiters():
            if waiter.execution != execution:
                continue
            try:
                self.client.delete_item(
                    TableName=self.table_name,
                    Key={"pk": {"S": QUEUE}, "sk": {"N": str(waiter.ticket)}},
                    ConditionExpression="execution = :e",
                    ExpressionAttributeValues={":e": {"S": execution}},
                )
                left += 1
            except ClientError as err:
                if error_code(err) != "ConditionalCheckFailedException":
                    raise
        return left

    def release(self, execution: str, ticket: int | None = None) -> bool:
        """Give back ``execution``'s slot (only that ticket's, when given); False if it held none."""
        condition = "attribute_exists(holders.#e)"
        values: dict[str, Any] = {}
        if ticket is not None:
            condition += " AND holders.#e.ticket = :t"
            values[":t"] = {"N": str(ticket)}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=SEMAPHORE,
                UpdateExpression="REMOVE holders.#e",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#e": execution},
                **({"ExpressionAttributeValues": values} if values else {}),  # type: ignore[arg-type]
            )
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def finish(self, execution: str) -> PumpReport:
        """A run ended (however): out of the queue, its slot back, the next waiter woken.
        Harmless to run twice, or for an execution that never queued."""
        self.leave(execution)
        self.release(execution)
        return self.pump()

    # ------------------------------------------------------------ the count

    def set_slots(self, slots: int, source: str, read: float | None = None) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key=SEMAPHORE,
            UpdateExpression="SET slots = :n, slots_read = :r, slots_source = :s, "
            "holders = if_not_exists(holders, :none)",
            ExpressionAttributeValues={
                ":n": {"N": str(slots)},
                ":r": {"N": str(self.clock() if read is None else read)},
                ":s": {"S": source},
                ":none": {"M": {}},
            },
        )

    def _refresh(self, sem: Semaphore, head: Waiter) -> Semaphore:
        """Read the count again when it is older than ``RELOAD_SECONDS`` (the quota may have
        been raised, a lowered count may be right again); a failed read keeps the old one."""
        if self.clock() - sem.slots_read < RELOAD_SECONDS:
            return sem
        attempt = head.document.get("attempt") or {}
        types = list(attempt.get("instance_types") or [])
        try:
            found = self.count(types, str(attempt.get("capacity") or "spot"))
        except ClientError:
            found = sem.slots if sem.slots_read else None
        slots = UNLIMITED if found is None else max(0, int(found))
        self.set_slots(slots, "deployment" if found is not None else "no limit")
        return self.semaphore()

    def lower(self, execution: str) -> int | None:
        """After a ``QuotaExceeded`` launch by ``execution``, which holds a slot: the account
        allows fewer instances than the count says. Lower the count to the other live holders
        and give this slot back; None (nothing changed) when no other holder runs, since then
        the count is not what stopped the launch (another workload uses the quota)."""
        sem = self.semaphore()
        others = [e for e in sem.holders if e != execution]
        for other in others:
            if self._reclaimable(other, sem.holders[other]):
                self.release(other, sem.holders[other].get("ticket"))
        live = [e for e in self.semaphore().holders if e != execution]
        if not live:
            return None
        # one write: the count lowered and this slot given back together, so no reader (a pump,
        # the status) ever sees more holders than slots
        self.client.update_item(
            TableName=self.table_name,
            Key=SEMAPHORE,
            UpdateExpression="SET slots = :n, slots_read = :r, slots_source = :s REMOVE holders.#e",
            ExpressionAttributeNames={"#e": execution},
            ExpressionAttributeValues={
                ":n": {"N": str(len(live))},
                ":r": {"N": str(self.clock())},
                ":s": {"S": f"lowered after QuotaExceeded ({len(live)} running)"},
            },
        )
        return len(live)

    # ------------------------------------------------------------ the pump

    def pump(self) -> PumpReport:
        """Grant free slots to the oldest waiters and wake them; reclaim the slots of holders
        whose execution ended without giving them back; show each waiter its place."""
        report = PumpReport()
        checked: set[str] = set()
        for _ in range(64):  # each round grants, reclaims or stops; a busy queue loops a few times
            # the semaphore first: a grant between the two reads then shows as a waiter gone,
            # never as a waiter that already holds a slot (which is a retried wait)
            sem = self.semaphore()
            waiters = self.waiters()
            if not waiters:
                break
            head = waiters[0]
            sem = self._refresh(sem, head)
            if head.execution in sem.holders:  # its task was retried after its grant
                self._take_again(head, sem, report)
                continue
            if sem.free <= 0:
                if not self._reclaim(sem, checked, report):
                    break
                continue
            if self._take(head, sem):
                self._wake(head, report)
        self._rewake_stale()
        self._show_places(report)
        return report

    def _take(self, head: Waiter, sem: Semaphore) -> bool:
        holder = {
            "job": head.job,
            "ticket": head.ticket,
            "granted": self.clock(),
            # until the waiter is answered: what a later pump sends if this one dies first
            "token": head.token,
            "output": self._output(head),
        }
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": SEMAPHORE,
                            "UpdateExpression": "SET holders.#e = :h",
                            "ConditionExpression": "slots = :n AND size(holders) < :n "
                            "AND attribute_not_exists(holders.#e)",
                            "ExpressionAttributeNames": {"#e": head.execution},
                            "ExpressionAttributeValues": {
                                ":h": _to_dynamo(holder),
                                ":n": {"N": str(sem.slots)},
                            },
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self.table_name,
                            "Key": {"pk": {"S": QUEUE}, "sk": {"N": str(head.ticket)}},
                            "ConditionExpression": "execution = :e AND #tok = :tok",
                            "ExpressionAttributeNames": {"#tok": "token"},
                            "ExpressionAttributeValues": {
                                ":e": {"S": head.execution},
                                ":tok": {"S": head.token},
                            },
                        }
                    },
                ]
            )
        except ClientError as err:
            if error_code(err) == "TransactionCanceledException":
                return False  # another pump granted it, it left, or the count changed: look again
            raise
        return True

    def _take_again(self, head: Waiter, sem: Semaphore, report: PumpReport) -> None:
        """The holder registered again (its task was retried): answer the new token (once: the
        pump that deletes the waiter answers it)."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": QUEUE}, "sk": {"N": str(head.ticket)}},
                ConditionExpression="#tok = :tok",
                ExpressionAttributeNames={"#tok": "token"},
                ExpressionAttributeValues={":tok": {"S": head.token}},
            )
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                return
            raise
        ticket = int(sem.holders[head.execution].get("ticket", head.ticket))
        self._wake(head, report, ticket=ticket, give_back=False)

    def _output(self, head: Waiter, ticket: int | None = None) -> str:
        """What the grant answers: the waiter's document, replanned from now (max_hours counts
        from the grant), as the state's ResultSelector reads it."""
        queued = max(0.0, self.clock() - head.since)
        output: dict[str, Any] = {"queued_seconds": round(queued, 1), "ticket": ticket or head.ticket}
        if "job" in head.document and "attempt" in head.document:
            job, attempt = after_queue(
                JobSpec.model_validate(head.document["job"]),
                Attempt.model_validate(head.document["attempt"]),
                queued,
                now=self.clock(),
            )
            output.update(job=job.model_dump(mode="json"), attempt=attempt.model_dump(mode="json"))
        return json.dumps(output)

    def _wake(
        self, head: Waiter, report: PumpReport, ticket: int | None = None, give_back: bool = True
    ) -> None:
        """Answer the granted waiter's token; a token that is gone gives the slot back
        (``give_back``: the grant was this pump's own)."""
        if self.jobs is not None:
            self.jobs.slot_granted(head.job, head.execution, ticket or head.ticket)
        try:
            self._answer(head.token, self._output(head, ticket))
        except ClientError as err:
            if error_code(err) not in GONE_TOKEN:
                raise  # the holder keeps its token and answer: the next pump sends it (_rewake_stale)
            if give_back:  # it stopped waiting (stopped, timed out): the slot is not its own
                self.release(head.execution, ticket or head.ticket)
                report.gone.append(head.execution)
            return
        self._woken(head.execution)
        report.granted.append(head.execution)

    def _answer(self, token: str, output: str) -> None:
        """SendTaskSuccess, asked again a few times while Step Functions throttles."""
        sfn = self.sfn
        for delay in (*THROTTLE_DELAYS, None):
            try:
                sfn.send_task_success(taskToken=token, output=output)
                return
            except ClientError as err:
                if delay is None or error_code(err) not in THROTTLED:
                    raise
                time.sleep(delay)

    def _woken(self, execution: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=SEMAPHORE,
                UpdateExpression="REMOVE holders.#e.#tok, holders.#e.#out",
                ConditionExpression="attribute_exists(holders.#e)",
                ExpressionAttributeNames={"#e": execution, "#tok": "token", "#out": "output"},
            )
        except ClientError as err:
            if error_code(err) != "ConditionalCheckFailedException":
                raise

    def _rewake_stale(self) -> None:
        """A grant whose answer never got through (its Lambda died between the two): answer it
        now. A token that is gone just means the answer did get through, or the run ended."""
        for execution, holder in self.semaphore().holders.items():
            token = holder.get("token")
            if not token or self.clock() - float(holder.get("granted", 0)) < REWAKE_SECONDS:
                continue
            try:
                self._answer(token, str(holder.get("output") or "{}"))
            except ClientError as err:
                if error_code(err) not in GONE_TOKEN:
                    continue
            self._woken(execution)

    def _reclaim(self, sem: Semaphore, checked: set[str], report: PumpReport) -> bool:
        """Free the slots of holders whose execution ended without giving them back."""
        freed = False
        for execution, holder in sem.holders.items():
            if execution in checked:
                continue
            checked.add(execution)
            if self._reclaimable(execution, holder) and self.release(execution, holder.get("ticket")):
                report.reclaimed.append(execution)
                freed = True
        return freed

    def _reclaimable(self, execution: str, holder: dict[str, Any]) -> bool:
        """The holder's execution ended and its clean up has ended its instances (the job's lock
        no longer names it: the clean up releases the lock after terminating), or it ended
        ``RECLAIM_GRACE_SECONDS`` ago and its clean up never came. Freeing the slot of a run
        whose instance still runs would start the next job beside it, over the count."""
        ended = self.ended_at(execution)
        if ended is None:
            return False
        if self.jobs is None or self.clock() - ended >= RECLAIM_GRACE_SECONDS:
            return True
        try:
            item = self.jobs.get(str(holder.get("job", "")))
        except ClientError:  # cannot tell: keep it (fail closed)
            return False
        return item is None or item.execution != execution

    def _show_places(self, report: PumpReport) -> None:
        """Each queued job's place, in its job table item (what ``spotyolo status`` shows)."""
        sem = self.semaphore()
        waiters = self.waiters()
        report.waiting, report.slots, report.running = len(waiters), sem.slots, len(sem.holders)
        if self.jobs is None:
            return
        for place, waiter in enumerate(waiters, start=1):
            info = QueueInfo(
                ticket=waiter.ticket,
                position=place,
                ahead=place - 1,
                running=len(sem.holders),
                slots=None if sem.slots >= UNLIMITED else sem.slots,
                since=_iso(waiter.since),
            )
            self.jobs.show_queue(waiter.job, waiter.execution, info)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def queue_words(info: QueueInfo | None) -> str:
    """``queued: 3rd in line (2 jobs ahead) · 2/2 instances running``: what a user reads."""
    if info is None or info.position is None:
        return ""
    slots = "no limit" if info.slots is None else f"{info.running}/{info.slots} instances running"
    ahead = f"{info.ahead} job{'s' if info.ahead != 1 else ''} ahead"
    return f"queued for an instance: {_ordinal(info.position)} in line ({ahead}) · {slots}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
