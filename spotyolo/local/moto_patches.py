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

Patches must live in the process that runs the emulator (the test process, or the local
engine's moto server thread). ``install`` is idempotent: a second call swaps the router.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moto.awslambda.models import LambdaFunction
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult, EmptyResult
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackEndpoint, HeartbeatEndpoint
from moto.stepfunctions.responses import StepFunctionResponse

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
    return json.dumps(result), False, ""


def _send_task_failure(self: StepFunctionResponse) -> Any:
    task_token = self._get_param("taskToken")
    error = self._get_param("error")
    cause = self._get_param("cause")
    backend: Any = self.stepfunction_backend  # the ASL-executing backend takes a cause
    backend.send_task_failure(task_token, error=error, cause=cause)
    return EmptyResult()


def _setup_heartbeat_endpoint(self: CallbackEndpoint, heartbeat_seconds: int) -> HeartbeatEndpoint:
    endpoint: HeartbeatEndpoint = _ORIGINALS["setup_heartbeat_endpoint"](self, heartbeat_seconds)
    if self.get_outcome() is not None:  # the answer came before the wait began
        endpoint.notify()
    return endpoint


def _stop_execution(self: StepFunctionResponse) -> Any:
    arn = self._get_param("executionArn")
    backend: Any = self.stepfunction_backend
    execution = backend.describe_execution(arn)  # raises ExecutionDoesNotExist as AWS does
    if execution.status == "RUNNING" and getattr(execution, "exec_worker", None) is not None:
        import datetime as dt

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
    """Route every Lambda invocation of the emulator to ``router``; keep SendTaskFailure's cause."""
    if port is not None:
        os.environ["MOTO_PORT"] = str(port)
    _ROUTER[:] = [router]
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


def uninstall() -> None:
    """Put moto back as it was (tests)."""
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
    _FILTER.clear()
    _ROUTER.clear()


def installed() -> bool:
    return bool(_ROUTER) and LambdaFunction._invoke_lambda is _invoke_lambda  # type: ignore[comparison-overlap]
