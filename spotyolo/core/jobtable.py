"""Access to the job table (DynamoDB, one item per job, partition key ``job``).

The item's ``execution`` attribute is the job's lock. Every write that belongs to one execution
or one attempt is conditional on it, so a late writer (an old instance, a refused duplicate
execution, a cleanup of a finished run) can never disturb the run that holds the job now.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from spotyolo.contract.errors import ErrorName, JobAlreadyRunning
from spotyolo.contract.status import AttemptOutcome, JobStatus
from spotyolo.core.awserrors import error_code
from spotyolo.core.models import AttemptRecord, JobItem, Progress, QueueInfo, ReplacedRun

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset or the image
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import UpdateItemInputTypeDef

_SER = TypeSerializer()
_DES = TypeDeserializer()


#: placeholders a condition may use, without declaring them
_CONDITION_NAMES = {
    "#exec": "execution",
    "#cur": "current",
    "#num": "number",
    "#run": "run_id",
    "#st": "status",
    "#rep": "replaced",
}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_dynamo(value: Any) -> dict[str, Any]:
    # floats are not accepted by the serializer: go through JSON into Decimal
    serialized: Any = _SER.serialize(json.loads(json.dumps(value), parse_float=Decimal))
    return serialized


def _from_dynamo(item: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | set):
            return [plain(v) for v in value]
        return value

    return {k: plain(_DES.deserialize(v)) for k, v in item.items()}


def _conditional_failed(err: ClientError) -> bool:
    return error_code(err) == "ConditionalCheckFailedException"


#: how often a start looks again when the lock changed hands while it looked
LOCK_TRIES = 3


class JobTable:
    """The job table over a low-level DynamoDB client (moto's or real)."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    # ------------------------------------------------------------ reading

    def get(self, job: str) -> JobItem | None:
        response = self.client.get_item(
            TableName=self.table_name, Key={"job": {"S": job}}, ConsistentRead=True
        )
        item = response.get("Item")
        return JobItem.model_validate(_from_dynamo(item)) if item else None

    # ------------------------------------------------------------ generic conditional update

    def _update(
        self,
        job: str,
        sets: dict[str, Any],
        *,
        removes: tuple[str, ...] = (),
        condition: str | None = None,
        values: dict[str, Any] | None = None,
        append: dict[str, list[Any]] | None = None,
    ) -> bool:
        """SET/REMOVE attributes of the job's item; False when ``condition`` did not hold."""
        names: dict[str, str] = {}
        vals: dict[str, Any] = {}
        set_parts = []
        for i, (attr, value) in enumerate({**sets, "updated": now_iso()}.items()):
            names[f"#s{i}"] = attr
            vals[f":s{i}"] = _to_dynamo(value)
            set_parts.append(f"#s{i} = :s{i}")
        for i, (attr, items) in enumerate((append or {}).items()):
            names[f"#a{i}"] = attr
            vals[f":a{i}"] = _to_dynamo(items)
            vals[":empty"] = {"L": []}
            set_parts.append(f"#a{i} = list_append(if_not_exists(#a{i}, :empty), :a{i})")
        expression = "SET " + ", ".join(set_parts)
        if removes:
            for i, attr in enumerate(removes):
                names[f"#r{i}"] = attr
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        for key, value in (values or {}).items():
            vals[key] = _to_dynamo(value)
        kwargs: UpdateItemInputTypeDef = {
            "TableName": self.table_name,
            "Key": {"job": {"S": job}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": vals,
        }
        if condition:
            kwargs["ConditionExpression"] = condition
            for placeholder, attr in _CONDITION_NAMES.items():
                if placeholder in condition:
                    names[placeholder] = attr
        try:
            self.client.update_item(**kwargs)
        except ClientError as err:
            if _conditional_failed(err):
                return False
            raise
        return True

    # ------------------------------------------------------------ the lock

    def acquire_lock(
        self,
        job: str,
        execution: str,
        run_id: str,
        is_running: Callable[[str], bool],
        retire: Callable[[str], None] | None = None,
    ) -> str:
        """Take the job's lock for ``execution`` and return the run id it holds.

        Re-entrant: the same execution gets the run id it already has. A lock whose holder
        execution is no longer running is taken over; ``retire`` is first called with the run
        id it held (its instances may still run: its clean up is late or being retried), so
        a failure there leaves the lock where it was. Otherwise ``JobAlreadyRunning``, and
        the item is left exactly as it was; ``is_running`` raises when it cannot tell (fail
        closed: a live job's lock is never taken on a guess).
        """
        item = self.get(job)
        if item and item.execution == execution and item.run_id:
            return item.run_id
        fresh = {
            "execution": execution,
            "status": JobStatus.STARTING.value,
            "run_id": run_id,
            "attempts": [],
            "message": f"run {run_id} started",
        }
        removes = ("current", "progress", "result", "cost_usd", "queue")
        holder: str | None = None
        # the lock may change hands while we look (the holder's clean up releases it): look again
        for _ in range(LOCK_TRIES):
            if self._update(job, fresh, removes=removes, condition="attribute_not_exists(#exec)"):
                return run_id
            held = self.get(job) or JobItem(job=job)
            holder = held.execution
            if holder == execution:  # lost a race against our own retry
                return held.run_id or run_id
            if holder is None:  # released since the first write: take it
                continue
            if is_running(holder):
                break
            if retire is not None and held.run_id:
                retire(held.run_id)
            # the replaced run's clean up no longer owns the lock: it tells the user from this record
            replaced = ReplacedRun(execution=holder, run_id=held.run_id or "", attempts=held.attempts)
            taken = {**fresh, "replaced": replaced.model_dump(mode="json")}
            if self._update(
                job, taken, removes=removes, condition="#exec = :holder", values={":holder": holder}
            ):
                return run_id
        raise JobAlreadyRunning(
            f"job {job!r} is already being trained by execution {holder}; this start was "
            "refused and the running job is untouched. Wait for it to finish, or cancel it by "
            f"deleting jobs/{job}/config.yaml (or stop that execution), then upload again."
        )

    def claim_replaced(self, job: str, execution: str) -> ReplacedRun | None:
        """The run of ``execution`` if a takeover replaced it before its clean up told the user;
        the record is removed by a conditional write, so exactly one clean up gets it."""
        item = self.get(job)
        if item is None or item.replaced is None or item.replaced.execution != execution:
            return None
        claimed = self._update(
            job, {}, removes=("replaced",), condition="#rep.#exec = :me", values={":me": execution}
        )
        return item.replaced if claimed else None

    def release_lock(self, job: str, execution: str, status: str) -> bool:
        """Release the lock and drop the token, only if ``execution`` still holds it."""
        return self._update(
            job,
            {"status": status},
            removes=("execution", "current", "queue"),
            condition="#exec = :me",
            values={":me": execution},
        )

    # ------------------------------------------------------------ the instance-slot queue

    def join_queue(self, job: str, execution: str, info: QueueInfo) -> bool:
        """``execution`` waits for an instance slot (spotyolo/core/slots.py) with ``info.ticket``."""
        return self._update(
            job,
            {"queue": info.model_dump(), "status": JobStatus.QUEUED.value},
            condition="#exec = :me",
            values={":me": execution},
        )

    def show_queue(self, job: str, execution: str, info: QueueInfo) -> bool:
        """The job's place in the queue, only while it still waits there (a late pump never
        writes over a grant, a cancel or another run)."""
        return self._update(
            job,
            {"queue": info.model_dump()},
            condition="#exec = :me AND #st = :queued",
            values={":me": execution, ":queued": JobStatus.QUEUED.value},
        )

    def slot_granted(self, job: str, execution: str, ticket: int) -> bool:
        """``execution`` holds an instance slot now (the ticket stays: a requeue keeps its place)."""
        return self._update(
            job,
            {
                "queue": QueueInfo(ticket=ticket, granted=now_iso()).model_dump(),
                "status": JobStatus.STARTING.value,
            },
            condition="#exec = :me AND #st = :queued",
            values={":me": execution, ":queued": JobStatus.QUEUED.value},
        )

    # ------------------------------------------------------------ publish or cancel: one wins

    def claim_publication(self, job: str, execution: str) -> bool:
        """Check result may publish ``execution``'s weights: it still holds the lock and no cancel
        claimed the run first. From now on a cancel comes too late (``claim_cancel``)."""
        return self._update(
            job,
            {"status": JobStatus.PUBLISHING.value},
            condition="#exec = :me AND #st <> :cancelling",
            values={":me": execution, ":cancelling": JobStatus.CANCELLING.value},
        )

    def claim_cancel(self, job: str, execution: str) -> bool:
        """Cancel may stop ``execution``'s run: it still holds the lock and Check result has not
        begun to publish; from now on Check result publishes nothing (``claim_publication``)."""
        return self._update(
            job,
            {"status": JobStatus.CANCELLING.value},
            condition="#exec = :me AND #st <> :publishing",
            values={":me": execution, ":publishing": JobStatus.PUBLISHING.value},
        )

    # ------------------------------------------------------------ attempts

    def start_attempt(self, job: str, execution: str, record: AttemptRecord, token: str) -> bool:
        """Record a new attempt and its task token (where the trainer reads it)."""
        return self._update(
            job,
            {
                "status": JobStatus.LAUNCHING.value,
                "current": {"number": record.number, "instance": None, "token": token},
            },
            append={"attempts": [record.model_dump()]},
            condition="#exec = :me",
            values={":me": execution},
        )

    def set_instance(
        self, job: str, execution: str, number: int, instance: str, instance_type: str, az: str | None
    ) -> bool:
        """Name the instance of the current attempt, in ``current`` and in its attempts record."""
        item = self.get(job)
        if not item or item.execution != execution or not item.current:
            return False
        if item.current.number != number:
            return False
        attempts = [a.model_dump() for a in item.attempts]
        for rec in attempts:
            # an earlier launch round of the same number ended NoCapacity: leave its record alone
            if rec["number"] == number and not rec.get("end"):
                rec.update(instance=instance, instance_type=instance_type, az=az, start=now_iso())
                rec["outcome"] = AttemptOutcome.RUNNING.value
        current = {**item.current.model_dump(), "instance": instance}
        return self._update(
            job,
            {"attempts": attempts, "status": JobStatus.TRAINING.value, "current": current},
            condition="#exec = :me AND #cur.#num = :n",
            values={":me": execution, ":n": number},
        )

    def end_attempt(self, job: str, execution: str, number: int, outcome: AttemptOutcome | ErrorName) -> bool:
        """Close the attempts record ``number`` with its outcome (succeeded, or the error's name)."""
        item = self.get(job)
        if not item or item.execution != execution:
            return False
        attempts = [a.model_dump() for a in item.attempts]
        changed = False
        for rec in attempts:
            if rec["number"] == number and not rec.get("end"):
                rec.update(end=now_iso(), outcome=str(outcome))
                changed = True
        if not changed:
            return True
        return self._update(job, {"attempts": attempts}, condition="#exec = :me", values={":me": execution})

    def replace_token(self, job: str, execution: str, number: int, token: str) -> bool:
        """Point the current attempt at a new task token (a retried Launch trainer gets a new one)."""
        item = self.get(job)
        if not item or item.execution != execution or not item.current or item.current.number != number:
            return False
        current = {**item.current.model_dump(), "token": token}
        return self._update(
            job,
            {"current": current},
            condition="#exec = :me AND #cur.#num = :n",
            values={":me": execution, ":n": number},
        )

    def token_for(self, job: str, run_id: str, attempt: int) -> str | None:
        """The task token of ``attempt`` of ``run_id`` if it is still the job's current attempt.

        Matched by run *and* number: a run that took the job over starts again at attempt 1,
        and its token must never reach a trainer of the run it replaced.
        """
        item = self.get(job)
        if not item or item.run_id != run_id or not item.current or item.current.number != attempt:
            return None
        return item.current.token

    def update_progress(self, job: str, run_id: str, attempt: int, progress: Progress) -> bool:
        """Trainer's progress, only while its attempt is the current one of its run."""
        return self._update(
            job,
            {"progress": progress.model_dump()},
            condition="#cur.#num = :n AND #run = :run",
            values={":n": attempt, ":run": run_id},
        )

    def clear_token(self, job: str, execution: str) -> bool:
        return self._update(job, {}, removes=("current",), condition="#exec = :me", values={":me": execution})

    def finish(self, job: str, execution: str, **fields: Any) -> bool:
        """Write the outcome (status, message, result, cost_usd) of ``execution``'s run."""
        return self._update(job, fields, condition="#exec = :me", values={":me": execution})

    def scan(self) -> list[JobItem]:
        """Every job's item (the ``spotyolo status`` table; a table holds one item per job)."""
        items: list[JobItem] = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.table_name, ConsistentRead=True
        ):
            items.extend(JobItem.model_validate(_from_dynamo(raw)) for raw in page.get("Items", []))
        return sorted(items, key=lambda i: i.job)
