"""The fault points of the local engine and the seeded fault schedule (issue 9's campaign).

Every place where the engine can inject a fault is a :class:`Point`, and every fault is a
:class:`Kind` that belongs to exactly one point (:data:`KINDS` says what each does). The engine
and the instance runner call one hook at each point, ``faults.at(point, subject, **context)``,
and apply what it returns; the default hook (:data:`NO_FAULTS`) returns nothing, so there is no
"if chaos" in the product's paths. :class:`Chaos` is the hook of a fault campaign run: its
schedule is drawn from a seed alone (:func:`draw_schedule`), so the same seed always gives the
same faults at the same points. Each fault fires on an *occurrence* (the n-th invocation of a
Lambda, the n-th delivery of a rule, the n-th instance when its trainer reaches a phase, the
n-th matching AWS request), never at a wall-clock time; what a real multi-process run does
around it (how far a trainer got in 0.25 s, which of two racing threads wins) is not
deterministic, and the report says where each fault really fired.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

#: the User-Agent app ids (``AWS_SDK_UA_APP_ID``) that tell the emulator who is calling
TRAINER_APP_ID = "spotyolo-trainer"
ENGINE_APP_ID = "spotyolo-engine"


class Point(StrEnum):
    """Where the engine asks the hook for a fault (one call site each)."""

    #: ``LocalEngine.route``: a Lambda invocation, by function name
    LAMBDA = "lambda"
    #: ``LocalEngine._deliver``: an EventBridge rule delivering an event, by rule name
    EVENT = "event"
    #: the emulator's front door (``moto_patches.install_request_filter``): any AWS request
    AWS_REQUEST = "aws_request"
    #: ``InstanceRunner.poll_once``: a running instance, every tick, with its trainer's phase
    INSTANCE = "instance"
    #: the campaign's own user: what a person does to the job while it runs
    USER = "user"


class Kind(StrEnum):
    SPOT_NOTICE = "spot_notice"
    INSTANCE_LOST = "instance_lost"
    LAMBDA_ERROR_BEFORE = "lambda_error_before"
    LAMBDA_ERROR_AFTER = "lambda_error_after"
    LAMBDA_TWICE = "lambda_twice"
    EVENT_DUPLICATE = "event_duplicate"
    EVENT_DELAY = "event_delay"
    CAPACITY = "capacity"
    THROTTLE = "throttle"
    NOT_FOUND = "not_found"
    SLOWDOWN = "slowdown"
    CANCEL = "cancel"
    TAKEOVER = "takeover"
    # the queue campaign's own kinds (never drawn for a single job: its schedules stay as they were)
    QUOTA = "quota"
    QUEUED_CANCEL = "queued_cancel"
    QUEUED_STOP = "queued_stop"


@dataclass(frozen=True)
class KindSpec:
    point: Point
    does: str
    #: relative weight in a drawn schedule
    weight: int


#: every fault the campaign injects, at its one point
KINDS: dict[Kind, KindSpec] = {
    Kind.SPOT_NOTICE: KindSpec(
        Point.INSTANCE, "the metadata announces a spot interruption; terminated after the notice", 4
    ),
    Kind.INSTANCE_LOST: KindSpec(Point.INSTANCE, "the instance is terminated with no notice", 3),
    Kind.LAMBDA_ERROR_BEFORE: KindSpec(
        Point.LAMBDA, "the Lambda service fails the invocation before the handler runs (retried)", 3
    ),
    Kind.LAMBDA_ERROR_AFTER: KindSpec(
        Point.LAMBDA, "the handler runs, then its answer is lost as a Lambda service error (retried)", 3
    ),
    Kind.LAMBDA_TWICE: KindSpec(Point.LAMBDA, "the handler runs twice for one invocation (at least once)", 2),
    Kind.EVENT_DUPLICATE: KindSpec(Point.EVENT, "the rule delivers the event twice", 2),
    Kind.EVENT_DELAY: KindSpec(Point.EVENT, "the rule delivers the event late", 2),
    Kind.CAPACITY: KindSpec(Point.AWS_REQUEST, "CreateFleet launches nothing: no capacity", 2),
    Kind.THROTTLE: KindSpec(Point.AWS_REQUEST, "an AWS call of the pipeline is throttled", 2),
    Kind.NOT_FOUND: KindSpec(
        Point.AWS_REQUEST, "DescribeInstances by id: InvalidInstanceID.NotFound (eventual consistency)", 1
    ),
    Kind.SLOWDOWN: KindSpec(Point.AWS_REQUEST, "S3 answers the trainer 503 SlowDown, 1-5 times", 2),
    Kind.CANCEL: KindSpec(Point.USER, "the user deletes config.yaml while the run is at a phase", 1),
    Kind.TAKEOVER: KindSpec(
        Point.USER, "the user stops the execution and uploads config.yaml again (a new run takes over)", 1
    ),
    Kind.QUOTA: KindSpec(
        Point.AWS_REQUEST, "CreateFleet launches nothing: the account's EC2 quota refuses it", 2
    ),
    Kind.QUEUED_CANCEL: KindSpec(
        Point.USER, "the user deletes config.yaml of a job while it waits for an instance slot", 1
    ),
    Kind.QUEUED_STOP: KindSpec(
        Point.USER, "the user stops the execution of a job while it waits for an instance slot", 1
    ),
}

#: the kinds a single job's schedule draws from, in this order (``draw_schedule``: a kind added
#: here would move every seed's schedule; the queue campaign draws its own)
SINGLE_JOB_KINDS = (
    Kind.SPOT_NOTICE, Kind.INSTANCE_LOST, Kind.LAMBDA_ERROR_BEFORE, Kind.LAMBDA_ERROR_AFTER,
    Kind.LAMBDA_TWICE, Kind.EVENT_DUPLICATE, Kind.EVENT_DELAY, Kind.CAPACITY, Kind.THROTTLE,
    Kind.NOT_FOUND, Kind.SLOWDOWN, Kind.CANCEL, Kind.TAKEOVER,
)  # fmt: skip

#: the Lambdas the state machine invokes (their service errors are retried by the ASL)
WORKFLOW_LAMBDAS = ("validate", "launch", "check_result", "cleanup", "prepare_retry")
#: the rules whose deliveries may be duplicated or delayed
EVENT_RULES = ("config-created", "execution-ended", "instance-state")
#: (caller, service, action, error code, HTTP status) of the throttling faults
THROTTLES = (
    ("pipeline", "ec2", "CreateFleet", "RequestLimitExceeded", 503),
    ("pipeline", "states", "DescribeExecution", "ThrottlingException", 400),
    ("pipeline", "dynamodb", "UpdateItem", "ThrottlingException", 400),
    ("pipeline", "ec2", "TerminateInstances", "RequestLimitExceeded", 503),
    ("trainer", "dynamodb", "UpdateItem", "ProvisionedThroughputExceededException", 400),
    ("trainer", "states", "SendTaskHeartbeat", "ThrottlingException", 400),
)


#: the user's faults on a job that waits for an instance slot (the queue campaign's driver asks
#: ``at(Point.USER, job, ordinal=..., state="queued")`` while a job is queued)
QUEUED_KINDS = (Kind.QUEUED_CANCEL, Kind.QUEUED_STOP)
#: the Lambda of the instance-slot queue ("Wait for an instance slot", "Back to the queue")
SLOT_QUEUE_LAMBDA = "slot_queue"
#: the queue campaign's throttles: the calls of the queue's pump
QUEUE_THROTTLES = (
    ("pipeline", "dynamodb", "TransactWriteItems", "ThrottlingException", 400),
    ("pipeline", "states", "SendTaskSuccess", "ThrottlingException", 400),
    ("pipeline", "states", "DescribeExecution", "ThrottlingException", 400),
)
#: (the account's EC2 quota in instances, the deploy option max_instances) of a queue seed: the
#: count read from the quota (twice as likely); a count above the quota (EC2 refuses the second
#: launch and the job goes back to the queue); a count below it (only the semaphore keeps it)
DEPLOYMENTS = ((1, 0), (1, 0), (1, 2), (2, 1))


# ---------------------------------------------------------------------- trainer phases


def phase_names(epochs: int) -> list[str]:
    """The phases of one trainer, in order: boot, download (and resume), each epoch and the
    upload of its checkpoint, final validation and the artifact upload, reported (just after
    it sent its result)."""
    steps = [name for e in range(1, epochs + 1) for name in (f"epoch {e}", f"checkpoint {e}")]
    return ["boot", "download", *steps, "final", "reported"]


_EPOCH_LINE = re.compile(r"spotyolo\.trainer\.monitor: epoch (\d+)/(\d+)")


def trainer_phase(log_text: str | None, epochs: int) -> str:
    """The phase a trainer is in, read from its log (None: not started yet)."""
    if log_text is None:
        return "boot"
    if "success sent" in log_text:
        return "reported"
    done = list(_EPOCH_LINE.finditer(log_text))
    if not done:
        return "epoch 1" if "training epochs" in log_text else "download"
    last = int(done[-1].group(1))
    if "checkpoint uploaded" not in log_text[done[-1].end() :]:
        return f"checkpoint {last}"
    return "final" if last >= epochs else f"epoch {last + 1}"


# ---------------------------------------------------------------------- what a hook returns


@dataclass
class LambdaEffect:
    """An invocation's fault: ``error`` (``Lambda.<error>``; empty: none) before or ``after`` the handler,
    and how many times the handler ``runs``."""

    function: str
    error: str = "TooManyRequestsException"
    count: int = 1
    after: bool = False
    runs: int = 1


@dataclass(frozen=True)
class EventEffect:
    copies: int = 1
    delay: float = 0.0


@dataclass(frozen=True)
class InstanceEffect:
    #: "notice" (spot interruption) or "lose" (terminated with no notice)
    action: str


Answer = tuple[str, list[tuple[str, str]], bytes]


class FaultHook(Protocol):
    def at(self, point: Point, subject: str, **context: Any) -> Any: ...

    def answer(self, environ: dict[str, Any]) -> Answer | None: ...


class NoFaults:
    """The hook of a normal run: no fault anywhere."""

    def at(self, point: Point, subject: str, **context: Any) -> Any:
        return None

    def answer(self, environ: dict[str, Any]) -> Answer | None:
        return None


NO_FAULTS = NoFaults()


# ---------------------------------------------------------------------- the schedule


@dataclass
class Fault:
    """One planned fault: ``kind`` at ``target`` (function, rule, action or phase) on its
    ``nth`` occurrence; ``fired``/``where`` say what really happened."""

    kind: Kind
    target: str
    nth: int = 1
    #: the error code, the delay, the burst size: what the kind needs
    param: str = ""
    caller: str = ""
    service: str = ""
    status: int = 400
    fired: bool = False
    at_seconds: float | None = None
    where: str = ""
    #: what it fired on: the instance (a user's fault at an instance's phase) or the job
    subject: str = ""

    def describe(self) -> str:
        if self.kind in QUEUED_KINDS:
            return f"{self.kind} of job #{self.nth} while it is {self.target}"
        what = f"{self.kind} at {self.target}"
        if self.kind in (Kind.SPOT_NOTICE, Kind.INSTANCE_LOST, Kind.CANCEL, Kind.TAKEOVER):
            what += f" of instance #{self.nth}"
        else:
            what += f" (occurrence #{self.nth})"
        return what + (f" [{self.param}]" if self.param else "")

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = str(self.kind)
        out["point"] = str(KINDS[self.kind].point)
        out["plan"] = self.describe()
        return out


@dataclass
class Schedule:
    seed: int
    faults: list[Fault]
    #: a model is published before the run (so previous/ must keep it)
    prior_weights: bool


def draw_schedule(seed: int, epochs: int) -> Schedule:
    """The faults of ``seed``: from the seed alone (same seed, same schedule)."""
    rng = random.Random(seed)
    prior = rng.random() < 0.5
    kinds = [k for k in SINGLE_JOB_KINDS if not (prior and KINDS[k].point is Point.USER)]
    weights = [KINDS[k].weight for k in kinds]
    faults: list[Fault] = []
    instance_faults = 0
    users = 0
    for _ in range(rng.randint(1, 4)):
        kind = rng.choices(kinds, weights)[0]
        point = KINDS[kind].point
        if point is Point.USER:
            if users:
                continue
            users += 1
        if point in (Point.INSTANCE, Point.USER):
            instance_faults += point is Point.INSTANCE
            # the n-th instance of the job; an instance fault each at most (a user fault may share)
            nth = instance_faults if point is Point.INSTANCE else rng.randint(1, max(1, instance_faults + 1))
            phase = rng.choice(phase_names(epochs)[: -1 if point is Point.USER else None])
            faults.append(Fault(kind, phase, nth=nth))
        else:
            faults.append(_draw_other(rng, kind))
    return Schedule(seed, faults, prior)


@dataclass
class QueueSchedule(Schedule):
    """A queue seed's schedule: ``jobs`` jobs in an account whose EC2 quota allows ``quota``
    instances, deployed with ``max_instances`` (0: the count is the quota); ``together``: all
    uploaded at once (else each after the one before took its ticket)."""

    jobs: int = 3
    quota: int = 1
    max_instances: int = 0
    together: bool = True

    @property
    def limit(self) -> int:
        """The most instances that may run at once: the quota, or a lower count."""
        return min(self.quota, self.max_instances) if self.max_instances > 0 else self.quota


def draw_queue_schedule(seed: int, epochs: int, jobs: int = 3) -> QueueSchedule:
    """The queue campaign's faults of ``seed`` (its own random stream: ``draw_schedule`` of the
    same seed is unchanged): faults of the slot-queue Lambda, a queued job cancelled or stopped,
    a quota refusal, then 0-2 of the single job's kinds anywhere in the account (the n-th
    instance, invocation or delivery of any job)."""
    rng = random.Random(f"queue {seed}")
    quota, max_instances = rng.choice(DEPLOYMENTS)
    together = rng.random() < 0.5
    faults: list[Fault] = []
    lambda_kinds = (Kind.LAMBDA_ERROR_BEFORE, Kind.LAMBDA_ERROR_AFTER, Kind.LAMBDA_TWICE)
    for nth in sorted(rng.sample(range(1, jobs + 2), rng.randint(1, 2))):
        kind = rng.choice(lambda_kinds)
        error = rng.choice(("ServiceException", "TooManyRequestsException"))
        faults.append(
            Fault(kind, SLOT_QUEUE_LAMBDA, nth=nth, param="" if kind is Kind.LAMBDA_TWICE else error)
        )
    if rng.random() < 0.5:
        faults.append(Fault(rng.choice(QUEUED_KINDS), "queued", nth=rng.randint(2, jobs)))
    if rng.random() < 0.35:
        nth = rng.randint(1, jobs)
        code = "MaxSpotInstanceCountExceeded"
        faults.append(
            Fault(
                Kind.QUOTA, "CreateFleet", nth=nth, param=code, caller="pipeline", service="ec2", status=200
            )
        )
    kinds = list(SINGLE_JOB_KINDS)
    weights = [KINDS[k].weight for k in kinds]
    users = 0
    for _ in range(rng.randint(0, 2)):
        kind = rng.choices(kinds, weights)[0]
        point = KINDS[kind].point
        if point in (Point.INSTANCE, Point.USER):
            if point is Point.USER and users:
                continue
            users += point is Point.USER
            phase = rng.choice(phase_names(epochs)[: -1 if point is Point.USER else None])
            faults.append(Fault(kind, phase, nth=rng.randint(1, jobs)))
            continue
        if kind is Kind.THROTTLE and rng.random() < 0.5:
            caller, service, action, code, status = rng.choice(QUEUE_THROTTLES)
            faults.append(Fault(kind, action, nth=rng.randint(1, 3), param=code, caller=caller,
                                service=service, status=status))  # fmt: skip
            continue
        fault = _draw_other(rng, kind)
        if point in (Point.LAMBDA, Point.EVENT):
            fault.nth = rng.randint(1, jobs)  # whichever job's invocation or delivery that is
        faults.append(fault)
    return QueueSchedule(seed, faults, False, jobs=jobs, quota=quota, max_instances=max_instances,
                         together=together)  # fmt: skip


def _draw_other(rng: random.Random, kind: Kind) -> Fault:
    if kind in (Kind.LAMBDA_ERROR_BEFORE, Kind.LAMBDA_ERROR_AFTER, Kind.LAMBDA_TWICE):
        error = rng.choice(("ServiceException", "TooManyRequestsException"))
        param = "" if kind is Kind.LAMBDA_TWICE else error
        return Fault(kind, rng.choice(WORKFLOW_LAMBDAS), nth=1, param=param)
    if kind in (Kind.EVENT_DUPLICATE, Kind.EVENT_DELAY):
        delay = f"{rng.uniform(0.5, 4.0):.1f}"
        return Fault(kind, rng.choice(EVENT_RULES), nth=1, param=delay)
    if kind is Kind.CAPACITY:
        return Fault(kind, "CreateFleet", nth=rng.randint(1, 2), param="InsufficientInstanceCapacity",
                     caller="pipeline", service="ec2", status=200)  # fmt: skip
    if kind is Kind.NOT_FOUND:
        return Fault(kind, "DescribeInstances by id", nth=1, param="InvalidInstanceID.NotFound",
                     caller="pipeline", service="ec2")  # fmt: skip
    if kind is Kind.SLOWDOWN:
        return Fault(kind, "any", nth=rng.randint(1, 60), param=str(rng.randint(1, 5)),
                     caller="trainer", service="s3", status=503)  # fmt: skip
    caller, service, action, code, status = rng.choice(THROTTLES)
    nth = rng.randint(1, 3)
    return Fault(kind, action, nth=nth, param=code, caller=caller, service=service, status=status)


# ---------------------------------------------------------------------- the hook of a campaign run


@dataclass
class _Seen:
    ordinal: int
    log: Path
    offset: int = 0
    text: str = ""


@dataclass
class Chaos:
    """The fault hook of one campaign run: fires the schedule's faults as their occurrences come."""

    schedule: Schedule
    epochs: int
    started: float = field(default_factory=time.monotonic)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    #: the user's actions the campaign's driver is to carry out (cancel, takeover)
    user_actions: list[Fault] = field(default_factory=list)
    #: (instance id, phase) seen in each tick, for the report
    phases: dict[str, str] = field(default_factory=dict)
    _instances: dict[str, _Seen] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _burst: list[Any] = field(default_factory=list)

    @property
    def faults(self) -> list[Fault]:
        return self.schedule.faults

    def _fire(self, fault: Fault, where: str) -> None:
        fault.fired = True
        fault.at_seconds = round(time.monotonic() - self.started, 1)
        fault.where = where

    def _count(self, point: str, subject: str) -> int:
        key = (point, subject)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    # ------------------------------------------------------------------ the one hook

    def at(self, point: Point, subject: str, **context: Any) -> Any:
        with self._lock:
            if point is Point.LAMBDA:
                return self._lambda(subject)
            if point is Point.EVENT:
                return self._event(subject)
            if point is Point.INSTANCE:
                return self._instance(subject, **context)
            if point is Point.USER:
                return self._user(subject, **context)
        return None

    def _lambda(self, function: str) -> LambdaEffect | None:
        n = self._count("lambda", function)
        for fault in self.faults:
            lambda_fault = KINDS[fault.kind].point is Point.LAMBDA and fault.target == function
            if lambda_fault and not fault.fired and fault.nth == n:
                self._fire(fault, f"invocation #{n} of {function}")
                if fault.kind is Kind.LAMBDA_TWICE:
                    return LambdaEffect(function, error="", runs=2)
                return LambdaEffect(function, fault.param, after=fault.kind is Kind.LAMBDA_ERROR_AFTER)
        return None

    def _event(self, rule: str) -> EventEffect | None:
        n = self._count("event", rule)
        for fault in self.faults:
            event_fault = KINDS[fault.kind].point is Point.EVENT and fault.target == rule
            if event_fault and not fault.fired and fault.nth == n:
                self._fire(fault, f"delivery #{n} of rule {rule}")
                if fault.kind is Kind.EVENT_DUPLICATE:
                    return EventEffect(copies=2, delay=0.0)
                return EventEffect(copies=1, delay=float(fault.param or 0))
        return None

    def _instance(self, instance: str, *, log: Path, booted: bool, **_: Any) -> InstanceEffect | None:
        seen = self._instances.get(instance)
        if seen is None:
            seen = self._instances[instance] = _Seen(len(self._instances) + 1, log)
        armed = [
            f
            for f in self.faults
            if KINDS[f.kind].point in (Point.INSTANCE, Point.USER)
            and f.kind not in QUEUED_KINDS  # (a queued job's: the driver asks for those, by job)
            and not f.fired
            and f.nth == seen.ordinal
        ]
        if not armed:
            return None
        phase = trainer_phase(self._read(seen) if booted else None, self.epochs)
        self.phases[instance] = phase
        order = phase_names(self.epochs)
        for fault in armed:
            if order.index(phase) >= order.index(fault.target):
                self._fire(fault, f"{instance} (instance #{seen.ordinal}) in phase {phase!r}")
                if KINDS[fault.kind].point is Point.USER:
                    fault.subject = instance
                    self.user_actions.append(fault)
                    continue
                return InstanceEffect("notice" if fault.kind is Kind.SPOT_NOTICE else "lose")
        return None

    def _user(self, job: str, *, ordinal: int, state: str) -> Fault | None:
        """The campaign's driver sees job #``ordinal`` (upload order) in ``state``: the user's
        fault planned for it, now (queued for the driver to carry out)."""
        for fault in self.faults:
            if (
                fault.kind in QUEUED_KINDS
                and not fault.fired
                and fault.nth == ordinal
                and fault.target == state
            ):
                self._fire(fault, f"job #{ordinal} ({job}) while it is {state}")
                fault.subject = job
                self.user_actions.append(fault)
                return fault
        return None

    @staticmethod
    def _read(seen: _Seen) -> str:
        try:
            with open(seen.log, encoding="utf-8", errors="replace") as file:
                file.seek(seen.offset)
                seen.text += file.read()
                seen.offset = file.tell()
        except OSError:
            return ""
        return seen.text

    # ------------------------------------------------------------------ AWS requests

    def answer(self, environ: dict[str, Any]) -> Answer | None:
        """Answer an AWS request with an error instead of the emulator, when a fault says so."""
        caller = _caller(environ.get("HTTP_USER_AGENT", ""))
        if caller == "engine":
            return None
        service = _service(environ.get("HTTP_AUTHORIZATION", ""))
        if service not in ("ec2", "s3", "states", "dynamodb"):
            return None
        action = _action(environ, service)
        with self._lock:
            if self._burst and self._burst[0] == (caller, service):
                fault = self._burst[1]
                self._burst[2] -= 1
                if self._burst[2] <= 0:
                    self._burst.clear()
                return _error(service, action, fault)
            n = self._count(f"aws:{caller}:{service}", action)
            total = self._count(f"aws:{caller}:{service}", "any")
            for fault in self.faults:
                if KINDS[fault.kind].point is not Point.AWS_REQUEST or fault.fired:
                    continue
                if fault.caller != caller or fault.service != service:
                    continue
                if fault.kind is Kind.SLOWDOWN and fault.nth == total:
                    self._fire(fault, f"{caller}'s S3 request #{total} ({action})")
                    burst = int(fault.param or 1) - 1
                    if burst > 0:
                        self._burst[:] = [(caller, service), fault, burst]
                    return _error(service, action, fault)
                if fault.target == action and fault.nth == n:
                    self._fire(fault, f"{caller}'s {service}:{action} #{n}")
                    return _error(service, action, fault)
        return None


def _caller(user_agent: str) -> str:
    if f"app/{TRAINER_APP_ID}" in user_agent:
        return "trainer"
    if f"app/{ENGINE_APP_ID}" in user_agent:
        return "engine"
    return "pipeline"


def _service(authorization: str) -> str:
    match = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", authorization)
    return match.group(1) if match else ""


def _action(environ: dict[str, Any], service: str) -> str:
    """The API action of a request (the body of a query-protocol request is read and put back)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    if service == "s3":
        method = environ.get("REQUEST_METHOD", "GET")
        has_key = unquote(environ.get("PATH_INFO", "")).strip("/").count("/") >= 1
        return f"{method} {'object' if has_key else 'bucket'}"
    import io

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    fields = parse_qs(body.decode(errors="replace"))
    action = (fields.get("Action") or [""])[0]
    if action == "DescribeInstances" and "InstanceId.1" in fields:
        action += " by id"  # what eventual consistency answers NotFound (a filter finds nothing)
    return action


def _error(service: str, action: str, fault: Fault) -> Answer:
    """An AWS error answer in the service's own protocol."""
    request_id = str(uuid.uuid4())
    code, message = fault.param, f"injected by the fault campaign (seed fault: {fault.kind})"
    if fault.kind in (Kind.CAPACITY, Kind.QUOTA):  # an instant fleet reports these in a 200 answer
        said = (
            "Max spot instance count exceeded"
            if fault.kind is Kind.QUOTA
            else "There is no Spot capacity available that matches your request"
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{request_id}</requestId><fleetId>fleet-{request_id[:17]}</fleetId>"
            "<errorSet><item><lifecycle>spot</lifecycle>"
            f"<errorCode>{code}</errorCode><errorMessage>{said} ({message}).</errorMessage></item></errorSet>"
            "<fleetInstanceSet/></CreateFleetResponse>"
        ).encode()
        return "200 OK", [("Content-Type", "text/xml")], body
    status = f"{fault.status} {'Service Unavailable' if fault.status == 503 else 'Bad Request'}"
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        ).encode()
        return status, [("Content-Type", "text/xml")], body
    if service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            f"<Message>Please reduce your request rate. ({message})</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        return status, [("Content-Type", "application/xml")], body
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id)], body
