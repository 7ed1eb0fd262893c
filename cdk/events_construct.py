"""The EventBridge rules of DESIGN §8, with retries and a dead-letter queue on every target.

The patterns are the ones the local engine uses (stepfunctions/local/rules.py): one source, so
what is tested locally is what is deployed.
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

from stepfunctions.local import rules

RETRY_ATTEMPTS = 8
MAX_EVENT_AGE = cdk.Duration.hours(6)


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
        functions: dict[str, lambda_.IFunction],
        dlq: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        events.Rule(
            self,
            "ConfigCreated",
            description="jobs/<job>/config.yaml uploaded: start a training execution",
            event_pattern=event_pattern(rules.config_created(bucket.bucket_name)),
            targets=[
                targets.SfnStateMachine(
                    state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "bucket": events.EventField.from_path(rules.START_INPUT_PATHS["bucket"]),
                            "key": events.EventField.from_path(rules.START_INPUT_PATHS["key"]),
                        }
                    ),
                    dead_letter_queue=dlq,
                    retry_attempts=RETRY_ATTEMPTS,
                    max_event_age=MAX_EVENT_AGE,
                )
            ],
        )
        lambda_rules = (
            (
                "ConfigDeleted",
                "jobs/<job>/config.yaml deleted: cancel the job",
                rules.config_deleted(bucket.bucket_name),
                "cancel",
            ),
            (
                "InstanceGone",
                "an EC2 instance is shutting down or terminated: instance_lost fails the "
                "pending task if it was ours and not announced",
                rules.instance_state(),
                "instance_lost",
            ),
            (
                "ExecutionEnded",
                "an execution failed, was aborted or timed out: clean up its instance and lock",
                rules.execution_ended(state_machine.state_machine_arn),
                "cleanup",
            ),
        )
        for rule_id, description, pattern, function in lambda_rules:
            events.Rule(
                self,
                rule_id,
                description=description,
                event_pattern=event_pattern(pattern),
                targets=[
                    targets.LambdaFunction(
                        functions[function],
                        dead_letter_queue=dlq,
                        retry_attempts=RETRY_ATTEMPTS,
                        max_event_age=MAX_EVENT_AGE,
                    )
                ],
            )
