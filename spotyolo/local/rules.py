"""The bridge's half of the EventBridge rules: which rule delivered a message to the shared
target queue, and what the start rule's input transformer makes of an S3 event. The patterns
themselves are the contract's (:mod:`spotyolo.contract.events`)."""

from __future__ import annotations

from typing import Any

from spotyolo.contract.events import (
    EC2_SOURCE,
    OBJECT_CREATED,
    S3_SOURCE,
    STATES_SOURCE,
    RuleName,
)


def start_input(event: dict[str, Any]) -> dict[str, str]:
    """What the input transformer makes of an S3 event (moto skips transformers for S3 events,
    so the bridge applies it; an already transformed message passes through)."""
    if "detail" not in event:
        return {"bucket": event["bucket"], "key": event["key"]}
    return {"bucket": event["detail"]["bucket"]["name"], "key": event["detail"]["object"]["key"]}


def rule_of(message: dict[str, Any]) -> RuleName:
    """Which rule delivered a message to the shared target queue."""
    if "detail-type" not in message:  # the start rule's transformed input
        return RuleName.CONFIG_CREATED
    source, kind = message.get("source"), message["detail-type"]
    if source == S3_SOURCE:
        return RuleName.CONFIG_CREATED if kind == OBJECT_CREATED else RuleName.CONFIG_DELETED
    if source == STATES_SOURCE:
        return RuleName.EXECUTION_ENDED
    if source == EC2_SOURCE:
        return RuleName.INSTANCE_STATE
    raise ValueError(f"no rule sends {source} / {kind}")
