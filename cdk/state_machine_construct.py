"""The state machine, from the very ASL file the local engine runs (docs/ARCHITECTURE.md, "The workflow").

``DefinitionBody.from_string`` inlines the file unchanged; CloudFormation substitutes the
``${...}`` placeholders (``DefinitionSubstitutions``) at deploy time. The definition is checked
at synth (spotyolo/contract/asl.py), so a broken ASL fails here and not in the console.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.common import retention
from cdk.config import DeployConfig
from cdk.nag import acknowledge
from spotyolo.contract import asl
from spotyolo.contract.lambdas import STATE_MACHINE_LAMBDAS, LambdaName


class StateMachineConstruct(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cfg: DeployConfig,
        functions: dict[LambdaName, lambda_.IFunction],
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        text = asl.check_template()
        substitutions = asl.substitutions(lambda name: functions[name].function_arn, topic.topic_arn)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(cfg.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(text),
            definition_substitutions=substitutions,
            # failures only, no execution data: the task token must not reach the log group
            logs=sfn.LogOptions(
                destination=self.log_group,
                level=sfn.LogLevel[asl.LOG_LEVEL],
                include_execution_data=asl.LOG_EXECUTION_DATA,
            ),
            tracing_enabled=True,
        )
        # explicit and exact: the unqualified ARNs the ASL invokes, the one topic
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="InvokePipelineLambdas",
                actions=["lambda:InvokeFunction"],
                resources=[functions[name].function_arn for name in STATE_MACHINE_LAMBDAS.values()],
            )
        )
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(sid="Notify", actions=["sns:Publish"], resources=[topic.topic_arn])
        )
        acknowledge(
            self.state_machine,
            "SF1",
            "Logs failures (level ERROR) without execution data, on purpose: the Launch trainer "
            "task's parameters hold its task token, and whoever reads a token can answer the task. "
            "Each execution's full history stays in Step Functions (GetExecutionHistory).",
        )
        acknowledge(
            self.state_machine.role,
            "IAM5",
            "Added by CDK for logging and tracing: CloudWatch Logs vended delivery "
            "(logs:CreateLogDelivery, ...) and X-Ray (xray:PutTraceSegments, ...) have no "
            "resource type.",
            "Resource::*",
        )
