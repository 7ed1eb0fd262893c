"""Finding a deployment: the stack's outputs, on AWS or in ``spotyolo local serve``.

``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) points every client at the emulator, which keeps a
stack with the CDK app's outputs (``spotyolo/contract/outputs.py``); without it the clients go
to AWS. Either way one ``DescribeStacks`` names the bucket, the state machine, the job table
and the log group, so a user never pastes an ARN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from spotyolo.cli.exits import NO_DEPLOYMENT, CliError
from spotyolo.contract.outputs import DEFAULT_STACK, REQUIRED_OUTPUTS, StackOutput
from spotyolo.core.awserrors import error_code
from spotyolo.core.jobtable import JobTable

#: the emulator's region and credentials when none are configured (it accepts any)
LOCAL_REGION = "us-east-1"
_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)


@dataclass
class Deployment:
    stack: str
    endpoint: str | None
    session: Any
    outputs: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, endpoint_url=self.endpoint, config=_CONFIG)
        return self._clients[service]

    @property
    def bucket(self) -> str:
        return self.outputs[StackOutput.BUCKET]

    @property
    def state_machine(self) -> str:
        return self.outputs[StackOutput.STATE_MACHINE]

    @property
    def log_group(self) -> str:
        return self.outputs[StackOutput.TRAINER_LOG_GROUP]

    @property
    def local(self) -> bool:
        return self.endpoint is not None

    def table(self) -> JobTable:
        return JobTable(self.client("dynamodb"), self.outputs[StackOutput.JOB_TABLE])


def _session(endpoint: str | None) -> Any:
    session = boto3.Session()
    if endpoint is None:
        if session.region_name is None:
            raise CliError(
                "no AWS region configured: set AWS_REGION (or `aws configure`) to the stack's region",
                NO_DEPLOYMENT,
            )
        return session
    region = session.region_name or LOCAL_REGION
    if session.get_credentials() is None:  # the emulator takes any credentials
        return boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)
    return boto3.Session(region_name=region)


def connect(stack: str = DEFAULT_STACK, endpoint: str | None = None) -> Deployment:
    """The deployment named by ``stack``'s outputs; a one-line :class:`CliError` when there is none."""
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    deployment = Deployment(stack=stack, endpoint=endpoint, session=_session(endpoint))
    try:
        stacks = deployment.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except ClientError as err:
        if error_code(err) == "ValidationError":
            where = f"the emulator at {endpoint}" if endpoint else f"AWS ({deployment.session.region_name})"
            hint = (
                "is it `spotyolo local serve`?"
                if endpoint
                else "deploy it (README, 'Deploy') or pass --stack NAME / --endpoint-url URL"
            )
            raise CliError(f"stack {stack!r} not found in {where}: {hint}", NO_DEPLOYMENT) from err
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise CliError(
            f"stack {stack!r} lacks the outputs {', '.join(missing)}: is it a spotyolo stack "
            "(deploy the current version)?",
            NO_DEPLOYMENT,
        )
    deployment.outputs = outputs
    return deployment
