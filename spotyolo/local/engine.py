"""LocalEngine: the AWS emulator with the pipeline deployed in it, on 127.0.0.1.

What AWS does by itself, the engine does with threads:
- the EventBridge rules deliver to SQS queues; the *bridge* thread reads them and does what
  the rule's target would (StartExecution, invoke ``cancel``/``cleanup``/``instance_lost``);
- moto emits no execution-status events: a *watcher* publishes them (same shape as AWS) when
  an execution ends FAILED/ABORTED/TIMED_OUT, so the cleanup rule sees them;
- each running instance tagged ``app=spotyolo`` becomes a trainer process
  (:class:`spotyolo.local.instances.InstanceRunner`), which also publishes the EC2
  state-change events that feed ``instance_lost``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

from spotyolo.contract import asl
from spotyolo.contract.env import Settings
from spotyolo.contract.events import (
    CLEANUP_STATUSES,
    EXECUTION_STATUS_CHANGE,
    RULES,
    START_INPUT_PATHS,
    START_INPUT_TEMPLATE,
    STATES_SOURCE,
    RuleName,
)
from spotyolo.contract.lambdas import LAMBDAS, LambdaName
from spotyolo.contract.layout import CONFIG_NAME
from spotyolo.contract.outputs import DEFAULT_STACK, StackOutput
from spotyolo.core.jobtable import JobTable
from spotyolo.core.models import JobItem
from spotyolo.core.slots import create_table as create_slot_table
from spotyolo.local import botocache, rules
from spotyolo.local.chaos import ENGINE_APP_ID, NO_FAULTS, FaultHook, LambdaEffect, Point
from spotyolo.local.functions import LambdaHandler, load_handlers
from spotyolo.local.instances import InstanceRunner, InstanceWorld
from spotyolo.local.logship import LOG_GROUP, LogShipper, ship_loop

if TYPE_CHECKING:  # the stubs are a development dependency
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import TargetTypeDef
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_stepfunctions.type_defs import (
        DescribeExecutionOutputTypeDef,
        ExecutionListItemTypeDef,
        HistoryEventTypeDef,
    )

REGION = "us-east-1"
ACCOUNT = "123456789012"
#: seconds a queue read waits for a message (also how long stop() may wait for the bridge)
LONG_POLL = 1
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}

log = logging.getLogger("spotyolo_local")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def execution_prefix(job: str) -> str:
    # job names are lower case: the upper-case "R" keeps job "a" from matching job "a-2"
    return f"{job[:40]}-R"


def execution_name(job: str) -> str:
    """The name of an execution the upload rule starts (AWS would use a random id)."""
    return f"{execution_prefix(job)}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


#: files this big or bigger are uploaded in parts (the AWS CLI's and boto3's default threshold);
#: smaller ones with one PutObject (a transfer manager per small file costs more than the file)
MULTIPART_THRESHOLD = 8 * 1024 * 1024

#: the header that marks the engine's own requests (they deploy the pipeline before it is ready)
ENGINE_HEADER = "X-Spotyolo-Engine"
#: how long a request made while the engine starts waits for it to be ready
READY_TIMEOUT = 300.0


#: the AWS Price List API's JSON target prefix: moto has no such service
PRICE_LIST_TARGET = "AWSPriceListService."


def _no_price_list(start_response: Any) -> list[bytes]:
    """What the emulator answers the Price List API: a refusal, so the pricing code falls back to
    its dated table at once (moto would print "Unable to find appropriate backend" on stdout,
    into `spotyolo local --json`'s output, and botocore would retry)."""
    body = json.dumps(
        {
            "__type": "AccessDeniedException",
            "message": "the spotyolo local emulator has no Price List API: on-demand prices come "
            "from the dated table in spotyolo/core/cost.py",
        }
    ).encode()
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))]
    start_response("400 Bad Request", headers)
    return [body]


class ReadyGate:
    """WSGI middleware: no request is answered until the pipeline is deployed (the bucket, the
    rules and the bridge), but the engine's own, which deploy it. Without it an upload made as
    soon as the port opened was stored before the bucket's rules existed: no execution ever
    started."""

    def __init__(
        self, app: Any, ready: threading.Event, key: str, before: Callable[[str], None] | None = None
    ) -> None:
        self.app, self.ready, self.key = app, ready, key
        #: called with the service of each request but the engine's own, before moto answers it
        self.before = before

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith(PRICE_LIST_TARGET):
            return _no_price_list(start_response)
        own = environ.get("HTTP_" + ENGINE_HEADER.upper().replace("-", "_")) == self.key
        if not own and not self.ready.wait(READY_TIMEOUT):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"the spotyolo local engine is still starting\n"]
        if not own and self.before is not None:
            self.before(signed_service(environ))
        return self.app(environ, start_response)


def signed_service(environ: dict[str, Any]) -> str:
    """The service a SigV4-signed request is for (its credential scope's fourth part), or ""."""
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    _, found, rest = auth.partition("Credential=")
    scope = rest.split(",", 1)[0].split("/") if found else []
    return scope[3] if len(scope) > 4 else ""


class EmulatorServer:
    """moto's server (as ``ThreadedMotoServer`` runs it) behind a :class:`ReadyGate`; the port is
    bound in ``__init__``, so a taken port fails at once."""

    def __init__(
        self, port: int, ready: threading.Event, key: str, before: Callable[[str], None] | None = None
    ) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = ReadyGate(DomainDispatcherApplication(create_backend_app), ready, key, before)
        self.ready = ready
        self._server = make_server("127.0.0.1", port, app, True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spotyolo-emulator", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.ready.set()  # release any request still waiting: the server is going away
        self._server.shutdown()
        self._thread.join(timeout=10)


class PortInUse(RuntimeError):
    """The emulator's port is taken (moto's server thread would die and leave start() waiting)."""


def _check_port(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise PortInUse(
                f"127.0.0.1:{port} is already in use ({err.strerror}): stop what listens there (another "
                "`spotyolo local serve`, LocalStack, moto_server) or pick another port with --port"
            ) from err


@dataclass
class Resources:
    """Names and ARNs of what the engine deployed into the emulator."""

    bucket: str = "spotyolo-local"
    table: str = "spotyolo-jobs"
    #: the instance-slot queue (spotyolo/core/slots.py)
    slot_table: str = "spotyolo-slots"
    topic_arn: str = ""
    state_machine_arn: str = ""
    launch_template_id: str = ""
    subnet_ids: list[str] = field(default_factory=list)
    function_arns: dict[str, str] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    #: the SQS queue every rule targets (the bridge reads it)
    events_queue: str = ""
    notification_queue: str = ""
    #: the state machine's CloudWatch Logs group (its logging configuration: asl.LOG_LEVEL)
    state_machine_log_group: str = "/aws/vendedlogs/states/spotyolo-training-pipeline"
    #: the trainers' log group (the instances' log driver ships their output there)
    log_group: str = LOG_GROUP


#: an injected invoke error: the next ``count`` invocations of ``function`` fail (``after``: the
#: handler ran, its answer is lost, so a retry repeats its work; ``runs``: handler runs per call)
LambdaFault = LambdaEffect


class LocalEngine:
    """Start with :meth:`start` (or use as a context manager); :meth:`stop` leaves nothing running.

    ``settle_seconds`` is Validate job's upload-settle window (30 s on AWS, a few seconds here),
    ``notice_seconds`` the spot interruption notice (2 minutes on AWS), ``trainer_env`` extra
    environment for every trainer process (test hooks).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        settle_seconds: int = 1,
        notice_seconds: float = 15.0,
        interrupt_at_epochs: Iterable[int] = (),
        trainer_env: dict[str, str] | None = None,
        asl_path: str | os.PathLike[str] | None = None,
        poll_seconds: float = 1.0,
        trainer_command: list[str] | None = None,
        warm_trainer: bool = True,
        boot_seconds: float = 2.0,
        ec2_visible_after: float = 1.0,
        faults: FaultHook = NO_FAULTS,
        quota_instances: int | None = None,
        max_instances: int = 0,
    ) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="spotyolo-local-"))
        self.settle_seconds = settle_seconds
        self.notice_seconds = notice_seconds
        self.interrupt_at_epochs = list(interrupt_at_epochs)
        self.trainer_env = dict(trainer_env or {})
        self.asl_path = Path(asl_path) if asl_path else None
        self.poll_seconds = poll_seconds
        #: what an instance runs (tests of the engine itself swap in a stand-in)
        self.trainer_command = trainer_command or [sys.executable, "-m", "spotyolo.trainer"]
        #: fork trainers from a process that has torch and Ultralytics imported already
        self.warm_trainer = warm_trainer
        #: from running to the trainer's start (a minute or more on EC2): a Launch trainer
        #: retried within its Retry interval finds the instance before its trainer reads a token
        self.boot_seconds = boot_seconds
        #: EC2's eventual consistency: seconds a new instance is "not found" by id (and missing
        #: from tag queries); a few seconds on AWS
        self.ec2_visible_after = ec2_visible_after
        #: the emulated account's EC2 quotas (``--max-instances``), in instances of the default
        #: types (None: no limit)
        self.quota_instances = quota_instances
        self.resources = Resources()
        #: the deploy option max_instances: instances at once, all jobs together (0: the
        #: emulated account's quota, no limit when it has none)
        self.max_instances = max_instances
        #: the fault hook every fault point asks (spotyolo.local.chaos); none by default
        self.fault_hook = faults
        self.faults: list[LambdaFault] = []
        #: handler overrides by function (tests of the engine itself); default functions/<name>.py
        self.handlers: dict[str, Callable[[Any, Any], Any]] = {}
        #: the deployed entry points, loaded anew by each engine (a cold start per emulator world)
        self._deployed: dict[LambdaName, LambdaHandler] = {}
        #: deployed function name -> its Lambda
        self._function_names: dict[str, LambdaName] = {}
        self._faults_lock = threading.Lock()
        #: every Lambda invocation routed in-process: (function name, event)
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        #: bridge actions taken, for progress output and tests: (rule, detail)
        self.bridged: list[tuple[str, dict[str, Any]]] = []
        self._notifications: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._saved_moto_config: dict[str, Any] | None = None
        self._threads: list[threading.Thread] = []
        self._targets = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spotyolo-target")
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._execution_status: dict[str, str] = {}
        self.instances: InstanceRunner | None = None  # set in start()
        self.started = False
        #: set when the pipeline is deployed and the bridge runs: the emulator answers others only then
        self.ready = threading.Event()
        self._key = uuid.uuid4().hex
        self._lambda_log_stream: Any = None
        #: the stack with the deployment's outputs exists (made at the first CloudFormation call)
        self._outputs_deployed = False
        self._outputs_lock = threading.Lock()
        self._lambda_log_restore: list[tuple[logging.StreamHandler[Any], Any]] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalEngine:
        _check_port(self.port)
        botocache.install()  # the in-process Lambdas and the bridge make clients in many threads
        self.ready.clear()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the server's request log and moto's own report of every failed state are noise
        # here: the execution history has both
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        self._set_env()
        self._install_patches()
        self._server = EmulatorServer(self.port, self.ready, self._key, self._before_request)
        self._server.start()
        self.started = True
        try:
            self._configure_emulator()
            self._deploy()
            # the warm trainer image starts here, not first: its imports (seconds of a core)
            # would slow the emulator's start and the upload, which come first on the way to
            # the first batch, on a busy 2-core machine (bench/README.md, "Start-up")
            self.instances = InstanceRunner(self._instance_world())
            self._spawn(self._bridge_loop, "bridge")
            self._spawn(self._notification_loop, "notifications")
            self._spawn(self._execution_watch_loop, "execution-status")
            self._spawn(self.instances.loop, "instances")
            self._spawn(self._log_ship_loop, "trainer-logs")
            self.ready.set()  # everything is in place: answer the world
        except BaseException:
            self.stop()
            raise
        return self

    def _log_ship_loop(self) -> None:
        """Each trainer's output into CloudWatch Logs, as the awslogs driver does on AWS."""
        runner = self.instances
        assert runner is not None
        shipper = LogShipper(self.client("logs"), self.resources.log_group)
        ship_loop(shipper, lambda: list(runner.instances.values()), self._stop, self.poll_seconds)

    def _instance_world(self) -> InstanceWorld:
        return InstanceWorld(
            endpoint=self.endpoint,
            workdir=self.workdir,
            bucket=self.resources.bucket,
            table=self.resources.table,
            client=self.client,
            put_event=self.put_event,
            job_item=self.job_item,
            stopped=self._stop,
            poll_seconds=self.poll_seconds,
            boot_seconds=self.boot_seconds,
            notice_seconds=self.notice_seconds,
            trainer_command=list(self.trainer_command),
            trainer_env=self.trainer_env,
            warm_trainer=self.warm_trainer,
            interrupt_at_epochs=self.interrupt_at_epochs,
            faults=self.fault_hook,
            launched_at=self._launched_at,
        )

    def _launched_at(self, instance_id: str) -> float | None:
        """When EC2 launched the instance, on this process's monotonic clock: its boot counts
        from there, not from the moment the runner's describe first lists it (EC2's eventual
        consistency hides a new instance for ``ec2_visible_after``). None if unknown."""
        from moto.core.utils import utcnow
        from moto.ec2.models import ec2_backends

        try:
            instance = ec2_backends[ACCOUNT][REGION].get_instance_by_id(instance_id)
        except Exception:  # not moto's (a test's stand-in) or gone: the runner counts from now
            return None
        launched = getattr(instance, "launch_time", None)
        if launched is None:
            return None
        return time.monotonic() - max(0.0, (utcnow() - launched).total_seconds())

    def stop(self) -> None:
        """Stop executions, instances, trainer processes and the emulator; restore the env."""
        if not self.started:
            return
        try:
            self._stop_running_executions()
        except Exception:  # the emulator may already be unusable; carry on shutting down
            log.debug("stopping executions failed", exc_info=True)
        if self.instances is not None:
            self.instances.shutdown()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._targets.shutdown(wait=True, cancel_futures=True)
        self._uninstall_patches()
        for handler, stream in self._lambda_log_restore:
            handler.setStream(stream)
        self._lambda_log_restore.clear()
        if self._lambda_log_stream is not None:
            self._lambda_log_stream.close()
            self._lambda_log_stream = None
        if self._server is not None:
            self._server.stop()
        if self._saved_moto_config is not None:
            from moto.core.config import default_user_config

            live: dict[str, Any] = default_user_config  # type: ignore[assignment]  # a TypedDict
            live.clear()
            live.update(self._saved_moto_config)
            self._saved_moto_config = None
        self._restore_env()
        self.started = False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    target()
                    return
                except Exception:  # a loop must outlive one bad poll (emulator hiccup)
                    if self._stop.is_set():
                        return
                    log.exception("local engine thread %s failed; restarting it", name)
                    time.sleep(self.poll_seconds)

        thread = threading.Thread(target=run, name=f"spotyolo-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ environment

    def settings(self) -> Settings:
        """The Lambdas' settings, as the CDK app would set them for this deployment."""
        r = self.resources
        return Settings(
            bucket=r.bucket,
            job_table=r.table,
            slot_table=r.slot_table,
            max_instances=self.max_instances,
            topic_arn=r.topic_arn,
            trainer_image="local",
            launch_template_id=r.launch_template_id,
            subnet_ids=r.subnet_ids,
            settle_seconds=self.settle_seconds,
            # NoCapacity backoff: 60 s doubling on AWS; seconds here
            launch_backoff_seconds=max(1, self.settle_seconds),
            region=REGION,
        )

    def _set_env(self) -> None:
        env = {
            **FAKE_CREDENTIALS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "MOTO_PORT": str(self.port),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME", "spotyolo"),
        }
        for key, value in env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        # Powertools' Logger writes JSON lines to stdout: keep them in a file instead
        self.lambda_log = self.workdir / "lambdas.log"

    def _update_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # ------------------------------------------------------------------ clients

    @overload
    def client(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def client(self, service: Literal["ec2"]) -> EC2Client: ...
    @overload
    def client(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["stepfunctions"]) -> SFNClient: ...
    @overload
    def client(self, service: Literal["sns"]) -> SNSClient: ...
    @overload
    def client(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def client(self, service: Literal["events"]) -> EventBridgeClient: ...
    @overload
    def client(self, service: Literal["lambda"]) -> LambdaClient: ...
    @overload
    def client(self, service: str) -> Any: ...
    def client(self, service: str) -> Any:
        """A boto3 client for the emulator (thread-safe; cached per service)."""
        cache = self.__dict__.setdefault("_clients", {})
        if service not in cache:
            cache[service] = boto3.client(  # type: ignore[call-overload]
                service,
                region_name=REGION,
                endpoint_url=self.endpoint,
                aws_access_key_id="local",
                aws_secret_access_key="local",
                config=Config(
                    retries={"max_attempts": 2},
                    max_pool_connections=32,
                    user_agent_extra=f"app/{ENGINE_APP_ID}",
                ),
            )
            self._mark(cache[service])
        return cache[service]

    def _mark(self, client: Any) -> None:
        """The engine's own requests pass the :class:`ReadyGate` while it deploys."""

        def add_header(request: Any, **_: Any) -> None:
            request.headers[ENGINE_HEADER] = self._key

        client.meta.events.register("before-sign.*.*", add_header)

    @property
    def _lambda_client(self) -> LambdaClient:
        """Invocations are not retried by the client (a retry would run a handler twice) and may
        take as long as a Lambda may (15 minutes)."""
        cache = self.__dict__.setdefault("_clients", {})
        if "lambda-invoke" not in cache:
            cache["lambda-invoke"] = boto3.client(
                "lambda",
                region_name=REGION,
                endpoint_url=self.endpoint,
                aws_access_key_id="local",
                aws_secret_access_key="local",
                config=Config(
                    retries={"total_max_attempts": 1},
                    read_timeout=900,
                    max_pool_connections=8,
                    user_agent_extra=f"app/{ENGINE_APP_ID}",
                ),
            )
            self._mark(cache["lambda-invoke"])
        return cache["lambda-invoke"]

    # ------------------------------------------------------------------ moto set-up

    def _install_patches(self) -> None:
        from spotyolo.local import moto_patches

        moto_patches.install(self.route, port=self.port)
        moto_patches.LIMITS.ec2_visible_after = self.ec2_visible_after
        self.limit_instances(self.quota_instances)
        moto_patches.install_request_filter(self.fault_hook.answer)

    def limit_instances(self, quota_instances: int | None) -> None:
        """The emulated account's EC2 quotas (``--max-instances``): every quota spotyolo reads
        (spot and on-demand, each group) holds ``quota_instances`` of the largest default type;
        EC2 Fleet refuses beyond it and Service Quotas answers it (None: no limit, unknown)."""
        from spotyolo.contract.env import DEFAULT_INSTANCE_TYPES
        from spotyolo.local import moto_patches

        self.quota_instances = quota_instances
        per_instance = max(moto_patches.type_vcpus(t) or 0 for t in DEFAULT_INSTANCE_TYPES)
        moto_patches.LIMITS.ec2_quota_vcpus = (
            None if quota_instances is None else float(quota_instances * per_instance)
        )

    def _uninstall_patches(self) -> None:
        from spotyolo.local import moto_patches

        moto_patches.LIMITS.ec2_visible_after = 0.0
        moto_patches.LIMITS.ec2_quota_vcpus = None
        moto_patches.uninstall()

    def _configure_emulator(self) -> None:
        import urllib.request

        from moto.core.config import default_user_config

        # the POST below changes moto's config for the whole process (the server runs here):
        # stop() puts it back, so code that uses moto after the engine is unaffected
        self._saved_moto_config = copy.deepcopy(dict(default_user_config))
        for path, body in (
            ("/moto-api/reset", b""),
            ("/moto-api/config", json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()),
        ):
            request = urllib.request.Request(
                self.endpoint + path, data=body, method="POST", headers={ENGINE_HEADER: self._key}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    def _deploy(self) -> None:
        r = self.resources
        s3, ddb = self.client("s3"), self.client("dynamodb")
        sns, sqs = self.client("sns"), self.client("sqs")
        s3.create_bucket(Bucket=r.bucket)
        s3.put_bucket_notification_configuration(
            Bucket=r.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        ddb.create_table(
            TableName=r.table,
            KeySchema=[{"AttributeName": "job", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        create_slot_table(ddb, r.slot_table)
        r.topic_arn = sns.create_topic(Name="spotyolo-notifications")["TopicArn"]
        r.notification_queue = sqs.create_queue(QueueName="spotyolo-notifications")["QueueUrl"]
        sns.subscribe(TopicArn=r.topic_arn, Protocol="sqs", Endpoint=self._queue_arn(r.notification_queue))
        self._deploy_ec2()
        self._deploy_lambdas()
        self._deploy_state_machine()
        self._update_env(self.settings().to_env())  # the handlers run in this process
        self._deploy_rules()
        self.client("logs").create_log_group(logGroupName=r.log_group)
        self._outputs_deployed = False  # made when first asked for: _before_request

    def _before_request(self, service: str) -> None:
        """Before moto answers a request (not the engine's own): the first CloudFormation call
        finds the outputs' stack in place. Made then rather than at start: moto's CloudFormation
        costs a second of the start-up that ``spotyolo local JOB`` never asks for."""
        if service != "cloudformation":
            return
        with self._outputs_lock:
            if not self._outputs_deployed:
                self._deploy_outputs()
                self._outputs_deployed = True

    def _deploy_outputs(self) -> None:
        """A stack named as the CDK app's, with the same outputs (an empty template: the
        resources are above), so the ``spotyolo`` commands find this deployment as on AWS."""
        r = self.resources
        values = {
            StackOutput.BUCKET: r.bucket,
            StackOutput.STATE_MACHINE: r.state_machine_arn,
            StackOutput.TOPIC: r.topic_arn,
            StackOutput.JOB_TABLE: r.table,
            StackOutput.TRAINER_LOG_GROUP: r.log_group,
        }
        template = {"Resources": {}, "Outputs": {str(k): {"Value": v} for k, v in values.items()}}
        self.client("cloudformation").create_stack(StackName=DEFAULT_STACK, TemplateBody=json.dumps(template))

    def _queue_arn(self, url: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        arn: str = attrs["Attributes"]["QueueArn"]
        return arn

    def _deploy_ec2(self) -> None:
        ec2 = self.client("ec2")
        r = self.resources
        subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        r.subnet_ids = sorted(s["SubnetId"] for s in subnets)[:3]
        # the GPU ECS-optimised Amazon Linux image, as the CDK app's launch template (a filtered
        # query: listing all of moto's 1300 images costs 1.5 s of the engine's start)
        images = (
            ec2.describe_images(
                Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-ecs-gpu-hvm-*"]}]
            )["Images"]
            or ec2.describe_images(Owners=["amazon"])["Images"]
        )
        image = images[0]["ImageId"]
        template = ec2.create_launch_template(
            LaunchTemplateName="spotyolo-trainer",
            LaunchTemplateData={
                "ImageId": image,
                "InstanceInitiatedShutdownBehavior": "terminate",
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
                "BlockDeviceMappings": [
                    {
                        "DeviceName": "/dev/xvda",
                        "Ebs": {"VolumeSize": 60, "VolumeType": "gp3", "Encrypted": True},
                    }
                ],
            },
        )
        r.launch_template_id = template["LaunchTemplate"]["LaunchTemplateId"]

    def _deploy_lambdas(self) -> None:
        iam, lam = self.client("iam"), self.client("lambda")
        role = iam.create_role(
            RoleName="spotyolo-lambda",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("README.txt", "the local engine runs functions/<name>.py in-process\n")
        for name, spec in LAMBDAS.items():
            function_name = f"spotyolo-{name.replace('_', '-')}"
            self._function_names[function_name] = name
            arn = lam.create_function(
                FunctionName=function_name,
                Runtime="python3.13",
                Role=role,
                Handler=spec.handler,
                Code={"ZipFile": buffer.getvalue()},
                Timeout=300,
            )["FunctionArn"]
            self.resources.function_arns[name] = arn

    def _deploy_state_machine(self) -> None:
        r = self.resources
        values = asl.substitutions(lambda name: r.function_arns[name], r.topic_arn)
        definition = asl.render_asl(values, *([self.asl_path] if self.asl_path else []))
        definition = json.dumps(self._local_timings(json.loads(definition)))
        self.client("logs").create_log_group(logGroupName=r.state_machine_log_group)
        group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{r.state_machine_log_group}:*"
        logging_config: Any = {  # as the CDK app configures it (moto_patches honours it)
            "level": asl.LOG_LEVEL,
            "includeExecutionData": asl.LOG_EXECUTION_DATA,
            "destinations": [{"cloudWatchLogsLogGroup": {"logGroupArn": group_arn}}],
        }
        r.state_machine_arn = self.client("stepfunctions").create_state_machine(
            name="spotyolo-training-pipeline",
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/spotyolo-state-machine",
            loggingConfiguration=logging_config,
        )["stateMachineArn"]

    def state_machine_logs(self) -> list[str]:
        """Every line the state machine wrote to its log group (its logging configuration's)."""
        logs = self.client("logs")
        group = self.resources.state_machine_log_group
        lines: list[str] = []
        for stream in logs.describe_log_streams(logGroupName=group)["logStreams"]:
            events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])
            lines.extend(e["message"] for e in events["events"])
        return lines

    def _local_timings(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The one change made to the ASL locally: a fixed ``Seconds`` of a Wait state (the
        upload settle wait: 30 s, sized for SETTLE_SECONDS on AWS) becomes the local settle
        window. Everything else (SecondsPath waits, retries, catchers) runs as written."""
        for state in definition.get("States", {}).values():
            if state.get("Type") == "Wait" and isinstance(state.get("Seconds"), int):
                state["Seconds"] = min(state["Seconds"], max(1, self.settle_seconds))
        return definition

    def _deploy_rules(self) -> None:
        """The four rules of the CDK app, each with the one SQS queue the bridge reads as target."""
        events, sqs = self.client("events"), self.client("sqs")
        r = self.resources
        r.events_queue = sqs.create_queue(QueueName="spotyolo-rule-targets")["QueueUrl"]
        queue_arn = self._queue_arn(r.events_queue)
        for spec in RULES:
            rule = f"spotyolo-{spec.name}"
            pattern = spec.pattern(r.bucket, r.state_machine_arn)
            events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")
            target: TargetTypeDef = {"Id": "bridge", "Arn": queue_arn}
            if spec.target is None:
                target["InputTransformer"] = {
                    "InputPathsMap": START_INPUT_PATHS,
                    "InputTemplate": START_INPUT_TEMPLATE,
                }
            events.put_targets(Rule=rule, Targets=[target])
            r.rules.append(rule)

    # ------------------------------------------------------------------ Lambda routing

    def inject_fault(
        self, function: str, error: str = "TooManyRequestsException", count: int = 1, *, after: bool = False
    ) -> None:
        """Make the next ``count`` invocations of ``function`` fail with ``Lambda.<error>``
        (the Lambda service failing, which the state machine retries); ``after``: the handler
        runs first and only its answer is lost."""
        with self._faults_lock:
            self.faults.append(LambdaFault(function, error, count, after))

    def _take_fault(self, function: str) -> LambdaFault | None:
        with self._faults_lock:
            for fault in self.faults:
                if fault.function == function and fault.count > 0:
                    fault.count -= 1
                    return fault
        return None

    def route(self, function_name: str, event: Any) -> Any:
        """Run ``functions/<name>.py``'s ``handler(event, context)`` here (moto_patches' router).
        An injected fault raises first, as the Lambda service would (``Lambda.<error>``)."""
        from spotyolo.local import moto_patches

        name = self._function_names.get(function_name) or LambdaName(function_name)
        fault = self._take_fault(name) or self.fault_hook.at(Point.LAMBDA, name)
        if fault is not None and fault.error and not fault.after:
            raise moto_patches.LambdaServiceError(
                f"injected by the local engine ({name})", code=fault.error, status=429
            )
        self.invocations.append((name, event if isinstance(event, dict) else {"event": event}))
        handler = self.handlers.get(name) or self._handler(name)
        self._attach_lambda_log()
        context = moto_patches.LambdaContext(
            function_name=function_name,
            invoked_function_arn=self.resources.function_arns.get(name, ""),
            log_group_name=f"/aws/lambda/{function_name}",
            log_stream_name="local",
        )
        with warnings.catch_warnings():  # Powertools warns when a handler published no metric
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            for _ in range((fault.runs if fault is not None else 1) - 1):  # at least once: a run
                handler(copy.deepcopy(event), context)  # whose answer nobody sees
            result = handler(event, context)
        if fault is not None and fault.error:
            raise moto_patches.LambdaServiceError(
                f"injected by the local engine after {name} ran", code=fault.error, status=429
            )
        return result

    def _handler(self, name: LambdaName) -> LambdaHandler:
        """The deployed entry point, loaded at its first invocation (its cold start, with this
        engine's environment in place)."""
        if not self._deployed:
            self._deployed.update(load_handlers())
        return self._deployed[name]

    def _attach_lambda_log(self) -> None:
        """Send the handlers' Powertools log lines (JSON on stdout in Lambda) to lambdas.log."""
        if self._lambda_log_stream is not None:
            return
        from spotyolo.steps.common import logger

        self._lambda_log_stream = open(self.lambda_log, "a", encoding="utf-8")  # noqa: SIM115
        for handler in logger._logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                self._lambda_log_restore.append((handler, handler.setStream(self._lambda_log_stream)))

    def invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        """Invoke a deployed Lambda through the emulator, as an EventBridge target would."""
        response = self._lambda_client.invoke(
            FunctionName=self.resources.function_arns[name], Payload=json.dumps(event).encode()
        )
        payload = response["Payload"].read()
        result: dict[str, Any] = {"error": response.get("FunctionError")}
        try:
            result["payload"] = json.loads(payload) if payload else None
        except ValueError:
            result["payload"] = payload.decode(errors="replace")
        return result

    # ------------------------------------------------------------------ EventBridge bridge

    def put_event(self, source: str, detail_type: str, detail: dict[str, Any], resources: list[str]) -> None:
        """Publish an event the way the AWS service would (moto does not for EC2 / Step Functions)."""
        self.client("events").put_events(
            Entries=[
                {
                    "Source": source,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Resources": resources,
                }
            ]
        )

    def _bridge_loop(self) -> None:
        """Long-poll the rules' queue (moto wakes the call as a message arrives: no busy polling
        on the 2 cores training needs) and act as each rule's AWS target would."""
        sqs = self.client("sqs")
        url = self.resources.events_queue
        while not self._stop.is_set():
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=LONG_POLL)
            for message in messages.get("Messages", []):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                # targets run concurrently, as on AWS: a slow one never holds up the others
                self._targets.submit(self._deliver, message["Body"])

    def _deliver(self, body: str) -> None:
        try:
            event = json.loads(body)
            rule = rules.rule_of(event)
            fault = self.fault_hook.at(Point.EVENT, rule)  # a late or a repeated delivery
            if fault is not None:
                self._stop.wait(fault.delay)
                for _ in range(fault.copies - 1):
                    self._targets.submit(self._bridge, rule, copy.deepcopy(event))
            self._bridge(rule, event)
        except Exception:
            log.exception("bridging an event failed: %s", body[:500])

    def _notification_loop(self) -> None:
        sqs = self.client("sqs")
        url = self.resources.notification_queue
        while not self._stop.is_set():
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=LONG_POLL)
            for message in messages.get("Messages", []):
                envelope = json.loads(message["Body"])
                self._notifications.append(
                    {"subject": envelope.get("Subject"), "message": envelope.get("Message", "")}
                )
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _bridge(self, rule: RuleName, event: dict[str, Any]) -> None:
        if "detail-type" in event:  # moto's events lack some envelope fields AWS always sends
            event.setdefault("version", "0")
            event.setdefault("id", str(uuid.uuid4()))
            event.setdefault("account", ACCOUNT)
            event.setdefault("region", REGION)
            event.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            event.setdefault("resources", [])
        self.bridged.append((rule, event))
        target = next(spec.target for spec in RULES if spec.name == rule)
        if target is not None:
            self._invoke_target(target, event)
        else:
            start = rules.start_input(event)
            job = start["key"].split("/")[1] if start["key"].count("/") >= 2 else "job"
            name = execution_name(job)
            self.client("stepfunctions").start_execution(
                stateMachineArn=self.resources.state_machine_arn, name=name, input=json.dumps(start)
            )

    def _invoke_target(self, target: str, event: dict[str, Any]) -> None:
        """EventBridge retries a target whose invocation the Lambda service refused
        (throttling, a service error) with backoff, for up to a day on AWS; a few tries here."""
        from botocore.exceptions import ClientError

        for delay in (0.5, 1.0, 2.0, 4.0, None):
            try:
                self.invoke(target, event)
                return
            except ClientError:
                if delay is None or self._stop.is_set():
                    raise
                self._stop.wait(delay)

    def _execution_watch_loop(self) -> None:
        sfn = self.client("stepfunctions")
        while not self._stop.is_set():
            for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=self.resources.state_machine_arn
            ):
                for execution in page["executions"]:
                    self._note_status(execution)
            self._stop.wait(self.poll_seconds * 2)

    def _note_status(self, execution: ExecutionListItemTypeDef) -> None:
        arn, status = execution["executionArn"], execution["status"]
        previous = self._execution_status.get(arn)
        self._execution_status[arn] = status
        if previous == status or status not in CLEANUP_STATUSES:
            return
        described = self.client("stepfunctions").describe_execution(executionArn=arn)
        detail = {
            "executionArn": arn,
            "stateMachineArn": self.resources.state_machine_arn,
            "name": execution["name"],
            "status": status,
            "startDate": int(execution["startDate"].timestamp() * 1000),
            "stopDate": int(described["stopDate"].timestamp() * 1000) if described.get("stopDate") else None,
            "input": described.get("input"),
            "output": described.get("output"),
            "error": described.get("error"),
            "cause": described.get("cause"),
        }
        self.put_event(STATES_SOURCE, EXECUTION_STATUS_CHANGE, detail, [arn])

    def _stop_running_executions(self) -> None:
        sfn = self.client("stepfunctions")
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.resources.state_machine_arn, statusFilter="RUNNING"
        ):
            for execution in page["executions"]:
                sfn.stop_execution(executionArn=execution["executionArn"], cause="local engine stopped")

    # ------------------------------------------------------------------ notifications

    def notifications(self) -> list[dict[str, Any]]:
        """Every SNS message published so far ({"subject", "message"}), oldest first."""
        return list(self._notifications)

    def wait_notifications(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self._notifications) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.notifications()

    # ------------------------------------------------------------------ jobs

    def upload_job(
        self,
        job_dir: str | os.PathLike[str],
        job: str | None = None,
        progress: Callable[[int, int, int], None] | None = None,
        trigger: bool = True,
    ) -> str:
        """Upload a job folder to ``jobs/<job>/``: every other file first, ``config.yaml`` last
        (its upload is the trigger, as on AWS). ``progress(files_done, files_total, bytes_done)``."""
        folder = Path(job_dir)
        job = job or folder.resolve().name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".DS_Store")
        config = folder / CONFIG_NAME
        ordered = [p for p in files if p != config] + ([config] if trigger and config.exists() else [])
        s3 = self.client("s3")
        done = [0, 0]
        lock = threading.Lock()

        def put(path: Path) -> None:
            key = f"jobs/{job}/{path.relative_to(folder).as_posix()}"
            if path.stat().st_size < MULTIPART_THRESHOLD:  # one PutObject, as the AWS CLI does
                s3.put_object(Bucket=self.resources.bucket, Key=key, Body=path.read_bytes())
            else:
                s3.upload_file(str(path), self.resources.bucket, key)
            with lock:
                done[0] += 1
                done[1] += path.stat().st_size
                if progress:
                    progress(done[0], len(ordered), done[1])

        rest, last = (ordered[:-1], ordered[-1:]) if trigger and config.exists() else (ordered, [])
        with ThreadPoolExecutor(max_workers=8) as pool:  # like `aws s3 cp --recursive`
            list(pool.map(put, rest))
        for path in last:  # the trigger, once everything else is in
            put(path)
        return job

    def start_execution(self, payload: dict[str, Any], name: str | None = None) -> str:
        arn: str = self.client("stepfunctions").start_execution(
            stateMachineArn=self.resources.state_machine_arn,
            name=name or f"manual-{uuid.uuid4().hex[:12]}",
            input=json.dumps(payload),
        )["executionArn"]
        return arn

    def executions(self, job: str | None = None) -> list[ExecutionListItemTypeDef]:
        """This state machine's executions (newest first), optionally only those of ``job``."""
        sfn = self.client("stepfunctions")
        found: list[ExecutionListItemTypeDef] = []
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.resources.state_machine_arn
        ):
            found.extend(page["executions"])
        if job is not None:
            found = [e for e in found if e["name"].startswith(execution_prefix(job))]
        return sorted(found, key=lambda e: e["startDate"], reverse=True)

    def wait_for_execution(self, job: str, timeout: float = 30.0, exclude: Iterable[str] = ()) -> str:
        """The ARN of the execution the trigger of ``job`` started (not one in ``exclude``)."""
        skip = set(exclude)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for execution in self.executions(job):
                if execution["executionArn"] not in skip:
                    return str(execution["executionArn"])
            time.sleep(self.poll_seconds)
        raise TimeoutError(f"no execution started for job {job!r} within {timeout:.0f} s")

    def wait_done(self, execution_arn: str, timeout: float = 600.0) -> DescribeExecutionOutputTypeDef:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_arn} still running after {timeout:.0f} s")
            time.sleep(self.poll_seconds)

    def history(self, execution_arn: str) -> Iterator[HistoryEventTypeDef]:
        sfn = self.client("stepfunctions")
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
            yield from page["events"]

    def job_item(self, job: str) -> JobItem | None:
        return JobTable(self.client("dynamodb"), self.resources.table).get(job)

    def download_prefix(self, prefix: str, dest: str | os.PathLike[str]) -> list[Path]:
        """Copy every object under ``prefix`` to ``dest`` (keeping sub-folders)."""
        s3 = self.client("s3")
        out = Path(dest)
        written: list[Path] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.resources.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = out / obj["Key"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(self.resources.bucket, obj["Key"], str(target))
                written.append(target)
        return written

    def running_instances(self) -> list[InstanceTypeDef]:
        reservations = self.client("ec2").describe_instances(
            Filters=[
                {"Name": "tag:app", "Values": ["spotyolo"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]


@contextmanager
def running_engine(**kwargs: Any) -> Iterator[LocalEngine]:
    engine = LocalEngine(**kwargs)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
