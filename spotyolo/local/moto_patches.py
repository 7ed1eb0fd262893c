"""The few changes moto (5.2.5, pinned) needs to run the pipeline as AWS would.

One module, so an upgrade has one place to break; tests/stepfunctions/test_moto_patches.py
fails loudly when an upgrade changes what is patched here.

1. Lambda invocations run in-process: ``LambdaFunction._invoke_lambda`` calls
   ``router(function_name, event)`` instead of starting a Docker container. A raised exception
   becomes the errored payload Python Lambda returns, ``{"errorMessage", "errorType",
   "requestId", "stackTrace"}``, so the state machine sees error = the exception's class name
   and Cause = that JSON string, as on AWS. Raise :class:`LambdaServiceError` from the router
   to simulate the Lambda *service* failing (``Lambda.ServiceException`` and friends).
2. ``SendTaskFailure`` keeps its ``cause`` (moto drops it).
3. A SendTaskSuccess/Failure that arrives while the Launch trainer Lambda is still running
   (a fast trainer, or a crash right at boot) is not lost: moto creates the heartbeat timer
   after the invocation and would wait a whole heartbeat window, then time out, ignoring
   the outcome it already holds.
4. ``StopExecution`` ends a pending task-token wait (moto would keep the execution RUNNING
   until the heartbeat window passes) and records the given ``error``/``cause``.
5. ``install_request_filter(fn)``: every HTTP request to the emulator is first shown to
   ``fn(environ)``, which may answer it instead (the fault campaign's AWS errors:
   :mod:`spotyolo.local.chaos`); without a filter, requests go straight to moto.
6. ``install(router, port=...)`` sets ``MOTO_PORT``: in server mode moto's state machine
   calls its own services on ``localhost:$MOTO_PORT``.
7. AWS's limits that moto does not enforce (:data:`LIMITS`), each with AWS's error at the point
   AWS raises it: SNS Publish's subject and message (``InvalidParameter``), SendTaskFailure's
   ``error``/``cause`` and SendTaskSuccess's ``output`` (``ValidationException``), a Lambda
   invocation's request and response (6 MB), the 25 000 events of an execution's history
   (the execution fails). moto already raises ``States.DataLimitExceeded`` over the 256 KB state
   payload, but lets ``States.ALL`` catch it and ``States.Runtime``: on AWS neither is caught
   by ``States.ALL`` (only by a catcher that names it).
8. EC2 eventual consistency: for ``LIMITS.ec2_visible_after`` seconds after its launch, an
   instance named by id in DescribeInstances or CreateTags is ``InvalidInstanceID.NotFound``,
   and a filtered DescribeInstances does not list it (0 = off; the local engine sets it).
9. A state machine's ``loggingConfiguration`` is honoured: its executions write their history
   to the CloudWatch Logs group at its level, with or without execution data (moto never
   opens the logging session).
10. SNS throttling on demand (:func:`throttle_sns`): the next publishes fail with ``Throttled``,
   as SNS does over its rate (the ASL retries it).
11. DescribeSpotPriceHistory answers the dated table's spot estimate for each offered type and
   zone (moto answers $0.00001 an hour, which made every local cost $0.00).
12. The account's EC2 instance quotas (``LIMITS.ec2_quota_vcpus``, vCPUs; None = no limit, the
   default): an instant CreateFleet whose every type would take the vCPUs of its quota
   (:mod:`spotyolo.core.quotas`) past the limit, counting the live (pending, running) instances
   under the same quota, launches nothing and answers EC2's error in the response's ``Errors``
   (``MaxSpotInstanceCountExceeded`` for spot, ``VcpuLimitExceeded`` on demand); Service
   Quotas' GetServiceQuota and GetAWSDefaultServiceQuota (moto has no such action) answer the
   limit for the quotas spotyolo reads, and ``NoSuchResourceException`` without a limit. When
   only some of a request's types fit, moto launches as it would (it may pick one that does not
   fit: the default types share one quota, so this does not arise with them).
13. DynamoDB's conditional writes are atomic: moto checks a condition and then writes, with
   no lock, so two threads of the server could both pass ``size(holders) < :n`` and both
   take the last instance slot (spotyolo/core/slots.py; seen in tests/unit/test_slots.py). One
   lock around every write makes each PutItem/UpdateItem/DeleteItem/TransactWriteItems whole.
14. A heartbeat that comes while the task's Lambda is still being invoked is accepted, as AWS
   accepts any heartbeat of a task that waits for its token: moto creates the heartbeat timer
   after the invocation and answered such a heartbeat ``InvalidToken``, so a trainer that
   booted fast under load (the instance-slot queue's e2e test) took its own task for gone,
   stopped, and its instance became ``InstanceLost``.

Patches must live in the process that runs the emulator (the test process, or the local
engine's moto server thread). ``install`` is idempotent: a second call swaps the router.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaFunction
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.dynamodb.models import DynamoDBBackend
from moto.ec2.exceptions import InvalidInstanceIdError
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.responses.fleets import Fleets
from moto.ec2.responses.instances import InstanceResponse
from moto.ec2.responses.spot_instances import SpotInstances
from moto.ec2.responses.tags import TagResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.models import ServiceQuotasBackend
from moto.servicequotas.responses import ServiceQuotasResponse
from moto.sns.exceptions import InvalidParameterValue, SNSException
from moto.sns.models import SNSBackend
from moto.stepfunctions.exceptions import ValidationException
from moto.stepfunctions.parser import models as parser_models
from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, ExecutionStatus
from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import ErrorEqualsDecl
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackEndpoint, HeartbeatEndpoint
from moto.stepfunctions.parser.asl.eval.event.logging import (
    CloudWatchLoggingConfiguration,
    CloudWatchLoggingSession,
)
from moto.stepfunctions.responses import StepFunctionResponse

from spotyolo.core import quotas as ec2_quotas


@dataclass
class Limits:
    """AWS's quotas the emulator enforces (moto does not), from AWS's API references and quotas
    pages: SNS Publish, Step Functions SendTaskFailure/SendTaskSuccess and service quotas, Lambda
    quotas ("Invocation payload (request and response): 6 MB each for synchronous")."""

    #: SNS Publish: "Subjects must be ASCII text that begins with a letter, number, or
    #: punctuation mark; must not include line breaks or control characters; and must be less
    #: than 100 characters long" (AWS was seen to take exactly 100: the documented rule is kept)
    sns_subject_chars: int = 100
    #: SNS Publish: "at most 256 KB in size (262,144 bytes, not 262,144 characters)"
    sns_message_bytes: int = 262_144
    #: SendTaskFailure: error 0-256, cause 0-32768 characters; SendTaskSuccess: output 262 144
    task_error_chars: int = 256
    task_cause_chars: int = 32_768
    task_output_chars: int = 262_144
    #: "Maximum execution history size: 25,000 events ... the execution will fail"
    history_events: int = 25_000
    #: Lambda: a synchronous request is refused over this; a bigger response is an error
    lambda_request_bytes: int = 6_291_456
    lambda_response_bytes: int = 6_291_556
    #: seconds a new instance is not yet found by id (EC2 eventual consistency; 0 = off)
    ec2_visible_after: float = 0.0
    #: the vCPUs of each EC2 instance quota spotyolo reads (``spotyolo local --max-instances``);
    #: None: no limit, and Service Quotas knows no value
    ec2_quota_vcpus: float | None = None
    #: False: the quotas have only AWS's default value (an account that never asked for an
    #: increase may have no applied value): GetServiceQuota answers NoSuchResource, and
    #: GetAWSDefaultServiceQuota ``ec2_quota_vcpus``
    ec2_quota_applied: bool = True


#: the limits in force (tests may lower ``history_events``; the engine sets ``ec2_visible_after``)
LIMITS = Limits()
_SNS_THROTTLES: list[int] = [0]

#: router(function_name, event) -> the function's result (JSON-serialisable)
Router = Callable[[str, Any], Any]
#: a Lambda handler: handler(event, context)
Handler = Callable[[Any, Any], Any]


class LambdaServiceError(Exception):
    """Raise from a router to make the Lambda *service* fail (not the function).

    The state machine sees ``Lambda.<code>`` (default ``Lambda.ServiceException``): the
    transient errors the workflow retries.
    """

    def __init__(
        self,
        message: str = "simulated Lambda service failure",
        code: str = "ServiceException",
        status: int = 500,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class _ServiceFailure(JsonRESTError):
    def __init__(self, err: LambdaServiceError) -> None:
        super().__init__(err.code, str(err))
        self.code = err.status


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def make_router(handlers: Mapping[str, Handler], *, name_of: Callable[[str], str] | None = None) -> Router:
    """A router calling ``handlers[name](event, LambdaContext)``.

    ``name_of`` maps moto's function name to a key of ``handlers`` (default: the name itself).
    """

    def route(function_name: str, event: Any) -> Any:
        key = name_of(function_name) if name_of else function_name
        if key not in handlers:
            raise LookupError(f"no handler routed for Lambda function {function_name!r}")
        return handlers[key](event, LambdaContext(function_name=function_name))

    return route


_ORIGINALS: dict[str, Any] = {}
_ROUTER: list[Router] = []
#: filter(environ) -> (status line, headers, body) to answer instead of moto, or None
RequestFilter = Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]], bytes] | None]
_FILTER: list[RequestFilter] = []


def error_payload(exc: BaseException) -> dict[str, Any]:
    """What Python Lambda returns for an unhandled exception (the order AWS uses)."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _invoke_lambda(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
    if isinstance(event, bytes | bytearray):
        event = event.decode("utf-8")
    raw = event if isinstance(event, str) else json.dumps(event)  # moto parsed the body already
    if len(raw.encode("utf-8")) > LIMITS.lambda_request_bytes:  # refused before the function runs
        raise _ServiceFailure(
            LambdaServiceError(
                f"Request must be smaller than {LIMITS.lambda_request_bytes} bytes for the "
                "InvokeFunction operation",
                code="RequestEntityTooLargeException",
                status=413,
            )
        )
    if isinstance(event, str):
        event = json.loads(event) if event.strip() else {}
    if event is None:
        event = {}
    router = _ROUTER[-1]
    try:
        result = router(self.function_name, event)
    except LambdaServiceError as err:
        raise _ServiceFailure(err) from err
    except Exception as exc:  # the function failed: an errored payload, as Lambda returns it
        return json.dumps(error_payload(exc)), True, ""
    payload = json.dumps(result)
    if len(payload.encode("utf-8")) > LIMITS.lambda_response_bytes:  # the function ran; its answer is lost
        return (
            json.dumps(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload size "
                    f"({LIMITS.lambda_response_bytes} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge",
                }
            ),
            True,
            "",
        )
    return payload, False, ""


def _too_long(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise ValidationException(
            f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {limit}"
        )


def _send_task_failure(self: StepFunctionResponse) -> Any:
    task_token = self._get_param("taskToken")
    error = self._get_param("error")
    cause = self._get_param("cause")
    _too_long("error", error, LIMITS.task_error_chars)
    _too_long("cause", cause, LIMITS.task_cause_chars)
    backend: Any = self.stepfunction_backend  # the ASL-executing backend takes a cause
    backend.send_task_failure(task_token, error=error, cause=cause)
    return EmptyResult()


def _send_task_success(self: StepFunctionResponse) -> Any:
    _too_long("output", self._get_param("output"), LIMITS.task_output_chars)
    return _ORIGINALS["send_task_success"](self)


def valid_sns_subject(subject: str) -> bool:
    """SNS Publish's rule for ``Subject`` (see :class:`Limits`)."""
    return (
        0 < len(subject) < LIMITS.sns_subject_chars
        and all(32 <= ord(c) < 127 for c in subject)
        and not subject[0].isspace()
    )


class _Throttled(SNSException):
    code = "Throttled"
    message = "Rate exceeded"


def throttle_sns(count: int = 1) -> None:
    """Make the next ``count`` SNS publishes fail with ``Throttled`` (SNS over its rate)."""
    _SNS_THROTTLES[0] = count


def _sns_publish(self: SNSBackend, message: str, *args: Any, **kwargs: Any) -> str:
    subject = kwargs.get("subject")
    if subject is not None and not valid_sns_subject(subject):
        raise InvalidParameterValue("Invalid parameter: Subject")
    if len(message.encode("utf-8")) > LIMITS.sns_message_bytes:
        raise InvalidParameterValue("Invalid parameter: Message too long")
    if _SNS_THROTTLES[0] > 0:
        _SNS_THROTTLES[0] -= 1
        raise _Throttled()
    result: str = _ORIGINALS["sns_publish"](self, message, *args, **kwargs)
    return result


def _state_eval_body(self: CommonStateField, env: Any) -> None:
    """Fail the execution (uncatchable, as on AWS) once its history holds the maximum events."""
    if len(env.event_manager._history_event_list) >= LIMITS.history_events:  # no copy per state
        env.set_error(
            ExecutionFailedEventDetails(
                error="States.Runtime",
                cause=f"The execution reached the maximum number of history events "
                f"({LIMITS.history_events}).",
            )
        )
        return
    _ORIGINALS["state_eval_body"](self, env)


#: errors AWS's ``States.ALL`` does not match ("can't catch the States.DataLimitExceeded terminal
#: error type and runtime error types"): they fail the execution
_TERMINAL = (StatesErrorNameType.StatesStatesDataLimitExceeded, StatesErrorNameType.StatesRuntime)


def _error_equals(self: ErrorEqualsDecl, env: Any) -> None:
    error_name = env.stack[-1]
    terminal = isinstance(error_name, StatesErrorName) and error_name.typ in _TERMINAL
    _ORIGINALS["error_equals"](self, env)
    if terminal and error_name not in self.error_names:  # only a retrier/catcher naming it matches
        env.stack[-1] = False


class _LoggingSession(CloudWatchLoggingSession):
    """moto's session, writing in the shape moto's own Logs backend takes (moto's passes a
    string timestamp and a LogEvent where put_log_events wants dicts, and never creates the
    stream: it expects a ClientError the backend does not raise)."""

    def publish_history_log(self, history_log: Any) -> None:
        stamp = history_log["event_timestamp"]
        if isinstance(stamp, str):
            stamp = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        event = {"timestamp": int(stamp.timestamp() * 1000), "message": json.dumps(history_log, default=str)}
        logs: Any = self._logs_client
        group, stream = self.configuration.log_group_name, self.configuration.log_stream_name
        if group not in logs.groups:  # AWS drops what it cannot deliver
            return
        if stream not in logs.groups[group].streams:
            logs.create_log_stream(group, stream)
        logs.put_log_events(group, stream, [event])


def _execution(*args: Any, **kwargs: Any) -> Any:
    """moto's Execution, with the logging session its state machine's configuration asks for."""
    machine = kwargs.get("state_machine")
    config = getattr(machine, "loggingConfiguration", None) or {}
    if kwargs.get("cloud_watch_logging_session") is None and config.get("level", "OFF") != "OFF":
        logging_config = CloudWatchLoggingConfiguration.from_logging_configuration(
            state_machine_arn=getattr(machine, "arn", ""),
            logging_configuration=config,  # type: ignore[arg-type]
        )
        if logging_config is not None:
            kwargs["cloud_watch_logging_session"] = _LoggingSession(
                execution_arn=kwargs["exec_arn"], configuration=logging_config
            )
    return _ORIGINALS["Execution"](*args, **kwargs)


def _not_visible(backend: Any, instance_ids: list[str]) -> list[str]:
    """The ids among ``instance_ids`` of instances launched too recently to be found."""
    if LIMITS.ec2_visible_after <= 0:
        return []
    young = []
    for instance_id in instance_ids:
        instance = backend.get_instance_by_id(instance_id)
        launched = getattr(instance, "launch_time", None)
        if launched is not None and (utcnow() - launched).total_seconds() < LIMITS.ec2_visible_after:
            young.append(instance_id)
    return young


def _describe_instances_response(self: InstanceResponse) -> Any:
    hidden = _not_visible(self.ec2_backend, self._get_param("InstanceIds", []))
    if hidden:
        raise InvalidInstanceIdError(hidden)
    return _ORIGINALS["describe_instances_response"](self)


def _create_tags_response(self: TagResponse) -> Any:
    ids = [r for r in self._get_param("Resources", []) if str(r).startswith("i-")]
    hidden = _not_visible(self.ec2_backend, ids)
    if hidden:
        raise InvalidInstanceIdError(hidden)
    return _ORIGINALS["create_tags_response"](self)


def _describe_instances_backend(self: InstanceBackend, filters: Any = None) -> Any:
    """A filtered DescribeInstances does not list an instance EC2 has not propagated yet."""
    reservations = _ORIGINALS["describe_instances_backend"](self, filters)
    if LIMITS.ec2_visible_after <= 0:
        return reservations
    visible = []
    for reservation in reservations:  # copies (all_reservations): their lists may be replaced
        hidden = set(_not_visible(self, [i.id for i in reservation.instances]))
        reservation.instances = [i for i in reservation.instances if i.id not in hidden]
        if reservation.instances:
            visible.append(reservation)
    return visible


def _setup_heartbeat_endpoint(self: CallbackEndpoint, heartbeat_seconds: int) -> HeartbeatEndpoint:
    endpoint: HeartbeatEndpoint = _ORIGINALS["setup_heartbeat_endpoint"](self, heartbeat_seconds)
    if self.get_outcome() is not None:  # the answer came before the wait began
        endpoint.notify()
    return endpoint


def _notify_heartbeat(self: CallbackEndpoint) -> bool:
    """14.: before the heartbeat timer exists the task still waits for its token: fine (the
    timer starts its window when it is set up)."""
    if _ORIGINALS["notify_heartbeat"](self):
        return True
    return self.get_outcome() is None


def _stop_execution(self: StepFunctionResponse) -> Any:
    arn = self._get_param("executionArn")
    backend: Any = self.stepfunction_backend
    execution = backend.describe_execution(arn)  # raises ExecutionDoesNotExist as AWS does
    if execution.status == "RUNNING" and getattr(execution, "exec_worker", None) is not None:
        execution.stop(
            stop_date=dt.datetime.now(dt.UTC), error=self._get_param("error"), cause=self._get_param("cause")
        )
        env = getattr(execution.exec_worker, "env", None)
        pool = getattr(getattr(env, "callback_pool_manager", None), "_pool", {}) or {}
        for endpoint in list(pool.values()):  # wake the Launch trainer wait: the program is stopped
            endpoint.interrupt_all()
        for _ in range(250):  # the worker thread ends and writes its status
            if execution.status != "RUNNING":
                break
            time.sleep(0.02)
        # moto lets the woken task fail after the stop (FAILED): the stop came first, as on AWS
        execution.exec_status = ExecutionStatus.ABORTED
        execution.error = self._get_param("error")
        execution.cause = self._get_param("cause")
    else:
        execution = backend.stop_execution(arn)
    return ActionResult({"stopDate": execution.stop_date})


def _spot_price_history(self: SpotInstances) -> ActionResult:
    """moto prices every spot hour at $0.00001, so every local cost read $0.00 and "100% less
    than on-demand": answer each offered type and zone at the dated table's spot estimate."""
    from spotyolo.core.cost import spot_estimate

    prices = self.ec2_backend.describe_spot_price_history(
        self._get_param("InstanceTypes", []), self._filters_from_querystring()
    )
    zone = self._get_param("AvailabilityZone")
    history = [
        {
            "InstanceType": p["InstanceType"],
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": f"{spot_estimate(p['InstanceType']):.6f}",
            "AvailabilityZone": p["Location"],
            "Timestamp": "2026-01-01T00:00:00.000Z",
        }
        for p in prices
        if not zone or p["Location"] == zone
    ]
    return ActionResult({"SpotPriceHistory": history})


#: instance states that hold their vCPUs under a quota
_LIVE_STATES = frozenset({"pending", "running"})


def type_vcpus(instance_type: str) -> int | None:
    """The vCPUs of a type as the emulator's DescribeInstanceTypes knows it (None: unknown)."""
    info = INSTANCE_TYPES.get(instance_type, {}).get("VCpuInfo", {})
    return int(info["DefaultVCpus"]) if info.get("DefaultVCpus") else None


def _vcpus_in_use(backend: Any, quota: ec2_quotas.Quota) -> int:
    """The vCPUs the live instances counted by ``quota`` hold."""
    used = 0
    for instance in backend.all_instances():
        spot = getattr(instance, "lifecycle", None) == "spot"
        capacity: ec2_quotas.Capacity = "spot" if spot else "on-demand"
        if instance.state in _LIVE_STATES and ec2_quotas.quota_for(instance.instance_type, capacity) == quota:
            used += type_vcpus(instance.instance_type) or 0
    return used


def _quota_refusals(backend: Any, configs: list[dict[str, Any]], capacity: str, limit: float) -> list[Any]:
    """EC2's errors for each override the quota refuses, or [] when any override fits."""
    errors = []
    for config in configs:
        spec = {k: v for k, v in config.get("LaunchTemplateSpecification", {}).items() if v is not None}
        for override in config.get("Overrides") or [{}]:
            instance_type = str(override.get("InstanceType", ""))
            quota = ec2_quotas.quota_for(instance_type, "spot" if capacity == "spot" else "on-demand")
            vcpus = type_vcpus(instance_type)
            if quota is None or vcpus is None or _vcpus_in_use(backend, quota) + vcpus <= limit:
                return []  # a type this limit does not count, or one that fits
            if capacity == "spot":
                code, message = "MaxSpotInstanceCountExceeded", "Max spot instance count exceeded"
            else:
                code, message = (
                    "VcpuLimitExceeded",
                    f"You have requested more vCPU capacity than your current vCPU limit of {limit:g} allows "
                    "for the instance bucket that the specified instance type belongs to. Please visit "
                    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
                )
            shown = {k: override[k] for k in ("InstanceType", "SubnetId") if override.get(k)}
            errors.append(
                {
                    "LaunchTemplateAndOverrides": {"LaunchTemplateSpecification": spec, "Overrides": shown},
                    "Lifecycle": capacity,
                    "ErrorCode": code,
                    "ErrorMessage": message,
                }
            )
    return errors


def _create_fleet(self: Fleets) -> ActionResult:
    """An instant fleet the account's quota refuses launches nothing and says why, as EC2 does
    (a 200 answer whose ``Errors`` name the code, no instances)."""
    limit = LIMITS.ec2_quota_vcpus
    if limit is not None and self._get_param("Type") == "instant":
        target = self._get_param("TargetCapacitySpecification", {})
        capacity = str(target.get("DefaultTargetCapacityType") or "on-demand")
        refused = _quota_refusals(
            self.ec2_backend, self._get_param("LaunchTemplateConfigs", []), capacity, limit
        )
        if refused:
            return ActionResult({"FleetId": f"fleet-{uuid.uuid4()}", "Errors": refused, "Instances": []})
    return _ORIGINALS["create_fleet"](self)  # type: ignore[no-any-return]


def _emulated_quota(service_code: str, quota_code: str) -> dict[str, Any]:
    """The emulated account's value of one of the quotas spotyolo reads, as Service Quotas
    describes a quota; ``NoSuchResourceException`` for any other, or without a limit."""
    quota = next((q for q in ec2_quotas.QUOTAS if q.code == quota_code), None)
    if service_code != ec2_quotas.SERVICE_CODE or quota is None or LIMITS.ec2_quota_vcpus is None:
        raise NoSuchResource
    return {
        "ServiceCode": service_code,
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaArn": f"arn:aws:servicequotas:us-east-1::{service_code}/{quota_code}",
        "QuotaCode": quota_code,
        "QuotaName": quota.name,
        "Value": float(LIMITS.ec2_quota_vcpus),
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }


def _get_service_quota(self: ServiceQuotasBackend, service_code: str, quota_code: str) -> dict[str, Any]:
    if service_code == ec2_quotas.SERVICE_CODE:
        if not LIMITS.ec2_quota_applied:
            raise NoSuchResource
        return _emulated_quota(service_code, quota_code)
    return _ORIGINALS["get_service_quota"](self, service_code, quota_code)  # type: ignore[no-any-return]


def _get_aws_default_service_quota(self: ServiceQuotasResponse) -> str:
    params = json.loads(self.body)
    quota = _emulated_quota(str(params.get("ServiceCode")), str(params.get("QuotaCode")))
    return json.dumps({"Quota": quota})


#: (owner, attribute, replacement) of the patches without special cases
_PLAIN: list[tuple[Any, str, str, Any]] = [
    (StepFunctionResponse, "send_task_success", "send_task_success", _send_task_success),
    (SNSBackend, "publish", "sns_publish", _sns_publish),
    (CommonStateField, "_eval_body", "state_eval_body", _state_eval_body),
    (ErrorEqualsDecl, "_eval_body", "error_equals", _error_equals),
    (parser_models, "Execution", "Execution", _execution),
    (InstanceResponse, "describe_instances", "describe_instances_response", _describe_instances_response),
    (TagResponse, "create_tags", "create_tags_response", _create_tags_response),
    (SpotInstances, "describe_spot_price_history", "spot_price_history", _spot_price_history),
    (InstanceBackend, "describe_instances", "describe_instances_backend", _describe_instances_backend),
    (Fleets, "create_fleet", "create_fleet", _create_fleet),
    (CallbackEndpoint, "notify_heartbeat", "notify_heartbeat", _notify_heartbeat),
]


_DYNAMODB_WRITES = threading.RLock()


def _atomic(name: str) -> Callable[..., Any]:
    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _DYNAMODB_WRITES:
            return _ORIGINALS[f"dynamodb_{name}"](self, *args, **kwargs)

    write.__name__ = name
    return write


_DYNAMODB_WRITE_METHODS = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
)


def install_atomic_dynamodb() -> None:
    """Only patch 13 (a test of code that races on DynamoDB without the whole emulator)."""
    for name in _DYNAMODB_WRITE_METHODS:
        if f"dynamodb_{name}" not in _ORIGINALS:
            _ORIGINALS[f"dynamodb_{name}"] = getattr(DynamoDBBackend, name)
            setattr(DynamoDBBackend, name, _atomic(name))


def uninstall_atomic_dynamodb() -> None:
    for name in _DYNAMODB_WRITE_METHODS:
        if f"dynamodb_{name}" in _ORIGINALS:
            setattr(DynamoDBBackend, name, _ORIGINALS.pop(f"dynamodb_{name}"))


def _filtered_call(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Any:
    answer = _FILTER[-1](environ) if _FILTER else None
    if answer is None:
        return _ORIGINALS["dispatcher_call"](self, environ, start_response)
    status, headers, body = answer
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


def install_request_filter(request_filter: RequestFilter | None) -> None:
    """Show every request to ``request_filter`` first (None: remove the filter)."""
    _FILTER[:] = [request_filter] if request_filter is not None else []
    if request_filter is not None and "dispatcher_call" not in _ORIGINALS:
        _ORIGINALS["dispatcher_call"] = DomainDispatcherApplication.__call__
        DomainDispatcherApplication.__call__ = _filtered_call  # type: ignore[method-assign]


def install(router: Router, *, port: int | None = None) -> None:
    """Route every Lambda invocation of the emulator to ``router``; keep SendTaskFailure's cause;
    enforce AWS's limits and eventual consistency (see the module's docstring)."""
    if port is not None:
        os.environ["MOTO_PORT"] = str(port)
    _ROUTER[:] = [router]
    for owner, attribute, key, replacement in _PLAIN:
        if key not in _ORIGINALS:
            _ORIGINALS[key] = getattr(owner, attribute)
            setattr(owner, attribute, replacement)
    if "_invoke_lambda" not in _ORIGINALS:
        _ORIGINALS["_invoke_lambda"] = LambdaFunction._invoke_lambda
        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
    if "send_task_failure" not in _ORIGINALS:
        _ORIGINALS["send_task_failure"] = StepFunctionResponse.send_task_failure
        StepFunctionResponse.send_task_failure = _send_task_failure  # type: ignore[method-assign]
    if "stop_execution" not in _ORIGINALS:
        _ORIGINALS["stop_execution"] = StepFunctionResponse.stop_execution
        StepFunctionResponse.stop_execution = _stop_execution  # type: ignore[method-assign]
    if "setup_heartbeat_endpoint" not in _ORIGINALS:
        _ORIGINALS["setup_heartbeat_endpoint"] = CallbackEndpoint.setup_heartbeat_endpoint
        CallbackEndpoint.setup_heartbeat_endpoint = _setup_heartbeat_endpoint  # type: ignore[method-assign]
    install_service_quotas()
    install_atomic_dynamodb()


def install_service_quotas() -> None:
    """Only the Service Quotas answers (12.): for tests that run a step's logic under moto
    without the rest of the patches (moto raises NotImplementedError on
    GetAWSDefaultServiceQuota). ``uninstall`` removes them too."""
    if "get_service_quota" not in _ORIGINALS:
        _ORIGINALS["get_service_quota"] = ServiceQuotasBackend.get_service_quota
        ServiceQuotasBackend.get_service_quota = _get_service_quota  # type: ignore[method-assign]
    # moto has no GetAWSDefaultServiceQuota: an action added, not replaced
    ServiceQuotasResponse.get_aws_default_service_quota = _get_aws_default_service_quota  # type: ignore[attr-defined]


def uninstall() -> None:
    """Put moto back as it was (tests)."""
    for owner, attribute, key, _ in _PLAIN:
        if key in _ORIGINALS:
            setattr(owner, attribute, _ORIGINALS.pop(key))
    _SNS_THROTTLES[0] = 0
    if "get_service_quota" in _ORIGINALS:
        ServiceQuotasBackend.get_service_quota = _ORIGINALS.pop("get_service_quota")  # type: ignore[method-assign]
    if hasattr(ServiceQuotasResponse, "get_aws_default_service_quota"):
        del ServiceQuotasResponse.get_aws_default_service_quota  # type: ignore[attr-defined]
    if "_invoke_lambda" in _ORIGINALS:
        LambdaFunction._invoke_lambda = _ORIGINALS.pop("_invoke_lambda")  # type: ignore[method-assign]
    if "send_task_failure" in _ORIGINALS:
        StepFunctionResponse.send_task_failure = _ORIGINALS.pop("send_task_failure")  # type: ignore[method-assign]
    if "stop_execution" in _ORIGINALS:
        StepFunctionResponse.stop_execution = _ORIGINALS.pop("stop_execution")  # type: ignore[method-assign]
    if "setup_heartbeat_endpoint" in _ORIGINALS:
        CallbackEndpoint.setup_heartbeat_endpoint = _ORIGINALS.pop("setup_heartbeat_endpoint")  # type: ignore[method-assign]
    if "dispatcher_call" in _ORIGINALS:
        DomainDispatcherApplication.__call__ = _ORIGINALS.pop("dispatcher_call")  # type: ignore[method-assign]
    uninstall_atomic_dynamodb()
    _FILTER.clear()
    _ROUTER.clear()


def installed() -> bool:
    return bool(_ROUTER) and LambdaFunction._invoke_lambda is _invoke_lambda  # type: ignore[comparison-overlap]
