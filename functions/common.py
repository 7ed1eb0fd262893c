"""What every Lambda handler shares: Powertools objects and boto3 clients.

Handlers stay a few lines: decorators, parse the event with a model, call a logic function
from ``spotyolo``/``functions`` with clients made here. Clients honour ``AWS_ENDPOINT_URL``
(boto3 does), which is how the local engine points them at the emulator.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer

from spotyolo.settings import Settings

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "spotyolo")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "spotyolo")

logger = Logger()
tracer = Tracer()
metrics = Metrics()


def settings() -> Settings:
    return Settings.from_env()


@cache
def _client(name: str, region: str, endpoint: str | None) -> Any:
    return boto3.client(name, region_name=region)  # type: ignore[call-overload]


def client(name: str) -> Any:
    """A cached boto3 client for this region and endpoint."""
    return _client(name, settings().region, os.environ.get("AWS_ENDPOINT_URL"))
