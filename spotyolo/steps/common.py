"""What the step logic and the Lambda entry points (functions/) share: Powertools objects and
boto3 clients.

An entry point stays a few lines: decorators, parse the event with the step's model, call its
logic with clients made here. Clients honour ``AWS_ENDPOINT_URL`` (boto3 does), which is how
the local engine points them at the emulator.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Collection, Sequence
from functools import cache
from time import sleep
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from botocore.config import Config
from botocore.exceptions import ClientError

from spotyolo.contract.env import Settings
from spotyolo.core.awserrors import error_code
from spotyolo.core.cost import pricing_region
from spotyolo.core.jobtable import JobTable
from spotyolo.core.slots import SlotQueue, configured_slots

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "spotyolo")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "spotyolo")

logger = Logger()
tracer = Tracer()
metrics = Metrics()

#: what a log line shows instead of a task token
REDACTED = "[task token]"


class SecretFilter(logging.Filter):
    """Keeps task tokens out of the Lambdas' logs: whoever reads a token can answer the task.

    Masks every field whose name says token and every token this process has handled
    (:func:`hide`), in the message and in the extra fields, however deep."""

    def __init__(self) -> None:
        super().__init__()
        #: the tokens seen lately (a warm Lambda handles many; old ones are answered already)
        self.secrets: deque[str] = deque(maxlen=64)

    def _mask(self, value: Any, key: str = "") -> Any:
        if "token" in key.lower() and key.lower() not in ("client_token", "clienttoken") and value:
            return REDACTED
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._mask(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._mask(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = record.getMessage(), None
        record.msg = self._mask(record.msg) if isinstance(record.msg, str | dict) else record.msg
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_FIELDS:
                record.__dict__[key] = self._mask(value, key)
        return True


_RECORD_FIELDS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
secrets = SecretFilter()
logger.addFilter(secrets)


def hide(token: str) -> None:
    """Never log ``token`` (a task token this invocation holds)."""
    if token and token not in secrets.secrets:
        secrets.secrets.append(token)


T = TypeVar("T")


def settings() -> Settings:
    """The deployment's settings; raises ``SettingsMissing`` naming what the environment lacks.

    Entry points call it at import (a Lambda's cold start fails at once) and per invocation
    (the local engine deploys several emulator worlds into one process, one after another)."""
    return Settings.from_env()


@cache
def _client(name: str, region: str, endpoint: str | None, pool: int) -> Any:
    config = Config(max_pool_connections=pool)
    return boto3.client(name, region_name=region, config=config)  # type: ignore[call-overload]


def client(name: str, *, pool: int = 10) -> Any:
    """A cached boto3 client for this region and endpoint (``pool``: connections it may hold)."""
    return _client(name, settings().region, os.environ.get("AWS_ENDPOINT_URL"), pool)


def s3_client(pool: int = 10) -> S3Client:
    return client("s3", pool=pool)  # type: ignore[no-any-return]


def ec2_client() -> EC2Client:
    return client("ec2")  # type: ignore[no-any-return]


def dynamodb_client() -> DynamoDBClient:
    return client("dynamodb")  # type: ignore[no-any-return]


def sfn_client() -> SFNClient:
    return client("stepfunctions")  # type: ignore[no-any-return]


def sns_client() -> SNSClient:
    return client("sns")  # type: ignore[no-any-return]


def quotas_client() -> Any:
    """Service Quotas (its stubs are not installed): the account's EC2 quotas."""
    return client("service-quotas")


def pricing_client() -> Any:
    """The AWS Price List API, at its endpoint nearest this region (it has three)."""
    return _client("pricing", pricing_region(settings().region), os.environ.get("AWS_ENDPOINT_URL"), 2)


def job_table() -> JobTable:
    return JobTable(dynamodb_client(), settings().job_table)


def slot_queue() -> SlotQueue:
    """The instance-slot queue of this deployment (its count: MAX_INSTANCES, else the quota)."""
    cfg = settings()
    count = configured_slots(cfg.max_instances, quotas_client(), ec2_client())
    return SlotQueue(dynamodb_client(), cfg.slot_table, sfn=sfn_client(), count=count, jobs=job_table())


def retrying(call: Callable[[], T], codes: Collection[str], delays: Sequence[float]) -> T:
    """``call()``, tried again after each of ``delays`` while it fails with one of ``codes``.

    For the errors AWS means as "ask again soon" (a resource it has not propagated yet,
    throttling): a short, bounded wait inside the Lambda instead of failing the job.
    """
    for delay in delays:
        try:
            return call()
        except ClientError as err:
            if error_code(err) not in codes:
                raise
            logger.info("retrying", extra={"error": error_code(err), "delay_s": delay})
            sleep(delay)
    return call()
