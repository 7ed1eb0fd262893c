"""The Lambda functions: their names, handler paths and the ASL placeholder of each.

The CDK app deploys one function per entry here (``handler`` relative to the code asset, which
holds ``functions/`` and ``spotyolo/``); the local engine routes each invocation to the same
``functions/<name>.py``; the ASL file names the ones the state machine calls by placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LambdaName(StrEnum):
    VALIDATE = "validate"
    LAUNCH = "launch"
    PREPARE_RETRY = "prepare_retry"
    CHECK_RESULT = "check_result"
    CLEANUP = "cleanup"
    INSTANCE_LOST = "instance_lost"
    CANCEL = "cancel"
    #: "Wait for an instance slot" and "Back to the queue": the instance-slot queue
    SLOT_QUEUE = "slot_queue"


@dataclass(frozen=True)
class LambdaSpec:
    name: LambdaName
    #: ``${...}`` placeholder of its ARN in the ASL file (None: invoked by an EventBridge rule)
    placeholder: str | None

    @property
    def module(self) -> str:
        """The entry point's module in the code asset (functions/<name>.py)."""
        return f"functions.{self.name.value}"

    @property
    def handler(self) -> str:
        """Lambda's ``Handler`` setting."""
        return f"{self.module}.handler"


LAMBDAS: dict[LambdaName, LambdaSpec] = {
    spec.name: spec
    for spec in (
        LambdaSpec(LambdaName.VALIDATE, "ValidateFunctionArn"),
        LambdaSpec(LambdaName.LAUNCH, "LaunchFunctionArn"),
        LambdaSpec(LambdaName.PREPARE_RETRY, "PrepareRetryFunctionArn"),
        LambdaSpec(LambdaName.CHECK_RESULT, "CheckResultFunctionArn"),
        LambdaSpec(LambdaName.CLEANUP, "CleanupFunctionArn"),
        LambdaSpec(LambdaName.INSTANCE_LOST, None),
        LambdaSpec(LambdaName.CANCEL, None),
        LambdaSpec(LambdaName.SLOT_QUEUE, "SlotQueueFunctionArn"),
    )
}

#: the Lambdas the state machine invokes, by their ASL placeholder
STATE_MACHINE_LAMBDAS: dict[str, LambdaName] = {
    spec.placeholder: name for name, spec in LAMBDAS.items() if spec.placeholder is not None
}
