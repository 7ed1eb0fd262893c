"""The EventBridge rules, with retries and a dead-letter queue on every target.

The rules (patterns, targets) are the contract's (spotyolo/contract/events.py), which the local
engine deploys too: what is tested locally is what is deployed.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from spotyolo.contract.events import RULES, START_INPUT_PATHS, RuleName
from spotyolo.contract.lambdas import LambdaName

RETRY_ATTEMPTS = 8
MAX_EVENT_AGE = cdk.Duration.hours(6)
#: construct id of each rule (its logical id in the template)
CONSTRUCT_IDS = {
    RuleName.CONFIG_CREATED: "ConfigCreated",
    RuleName.CONFIG_DELETED: "ConfigDeleted",
    RuleName.INSTANCE_STATE: "InstanceGone",
    RuleName.EXECUTION_ENDED: "ExecutionEnded",
}


def event_pattern(pattern: dict[str, Any]) -> events.EventPattern:
    """An EventBridge JSON pattern (as the local engine writes it) as CDK's EventPattern."""
    return events.EventPattern(
        source=pattern["source"], detail_type=pattern["detail-type"], detail=pattern["detail"]
    )


class EventsConstruct(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        state_machine: sfn.IStateMachine,
        functions: dict[LambdaName, lambda_.IFunction],
        dlq: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        for rule in RULES:
            target: events.IRuleTarget
            if rule.target is None:
                target = targets.SfnStateMachine(
                    state_machine,
                    input=events.RuleTargetInput.from_object(
                        {key: events.EventField.from_path(path) for key, path in START_INPUT_PATHS.items()}
                    ),
                    dead_letter_queue=dlq,
                    retry_attempts=RETRY_ATTEMPTS,
                    max_event_age=MAX_EVENT_AGE,
                )
            else:
                target = targets.LambdaFunction(
                    functions[rule.target],
                    dead_letter_queue=dlq,
                    retry_attempts=RETRY_ATTEMPTS,
                    max_event_age=MAX_EVENT_AGE,
                )
            events.Rule(
                self,
                CONSTRUCT_IDS[rule.name],
                description=rule.description,
                event_pattern=event_pattern(
                    rule.pattern(bucket.bucket_name, state_machine.state_machine_arn)
                ),
                targets=[target],
            )
