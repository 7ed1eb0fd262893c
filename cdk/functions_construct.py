"""The seven Lambdas (docs/ARCHITECTURE.md, "The steps"), each with its own role granting only
what its logic does.

One code asset (``cdk/lambda_bundle.py``: functions/ + spotyolo/ + Powertools, pydantic, PyYAML;
no layer, so the stack deploys in every region), X-Ray tracing, one log group each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk import lambda_bundle
from cdk.common import retention
from cdk.config import DeployConfig
from cdk.nag import acknowledge, as_finding
from cdk.trainer_construct import TrainerConstruct
from spotyolo.contract.env import Settings
from spotyolo.contract.lambdas import LAMBDAS, LambdaName

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.X86_64
assert RUNTIME.name == f"python{lambda_bundle.PYTHON_VERSION}", "wheels and runtime must match"


#: what costing an attempt reads (spotyolo/core/cost.py): spot price history, the Price List API;
#: neither action has a resource type
PRICE_ACTIONS = ["ec2:DescribeSpotPriceHistory", "pricing:GetProducts"]
#: the account's EC2 quotas and the vCPUs they count (spotyolo.core.quotas): read-only, no
#: resource type in the Service Authorization Reference
QUOTA_ACTIONS = [
    "servicequotas:GetServiceQuota",
    "servicequotas:GetAWSDefaultServiceQuota",
    "ec2:DescribeInstanceTypes",
]


@dataclass(frozen=True)
class FunctionSpec:
    name: LambdaName
    description: str
    timeout_s: int
    memory_mb: int = 256
    invoked_by_events: bool = False  # asynchronous invocation: give it a DLQ


SPECS = (
    FunctionSpec(
        LambdaName.VALIDATE,
        "Validate job: check config + dataset, settle uploads, lock, plan attempt 1",
        300,
        512,
    ),
    FunctionSpec(LambdaName.LAUNCH, "Launch trainer: store the task token, start one EC2 instance", 120),
    FunctionSpec(LambdaName.PREPARE_RETRY, "Prepare retry: next attempt after an interruption", 60),
    FunctionSpec(
        LambdaName.CHECK_RESULT, "Check result: promote weights, metrics vs target, cost, message", 300, 512
    ),
    FunctionSpec(
        LambdaName.CLEANUP,
        "Clean up: terminate the run's instances, clear the token, release the lock",
        120,
        invoked_by_events=True,
    ),
    FunctionSpec(
        LambdaName.INSTANCE_LOST,
        "An instance of ours stopped unannounced: fail its task with InstanceLost",
        60,
        invoked_by_events=True,
    ),
    FunctionSpec(
        LambdaName.CANCEL, "config.yaml deleted: stop the job's running execution", 60, invoked_by_events=True
    ),
    FunctionSpec(
        LambdaName.SLOT_QUEUE, "Instance-slot queue: wait for a slot, or go back after QuotaExceeded", 60
    ),
)

#: what giving back or granting an instance slot does (spotyolo/core/slots.py): the semaphore and
#: the queue items (TransactWriteItems is authorized as its UpdateItem and DeleteItem)
SLOT_TABLE_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
]
#: the Lambdas that pump the queue: the queue's own, and the two that end runs
SLOT_PUMPS = (LambdaName.SLOT_QUEUE, LambdaName.CLEANUP, LambdaName.CANCEL)


class FunctionsConstruct(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cfg: DeployConfig,
        bucket: s3.IBucket,
        table_arn: str,
        table_name: str,
        slot_table: tuple[str, str],
        topic_arn: str,
        trainer: TrainerConstruct,
        subnet_ids: list[str],
        dlq: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        code = lambda_.Code.from_asset(str(lambda_bundle.lambda_asset(cfg.lambda_wheels)))

        settings = Settings(
            bucket=bucket.bucket_name,
            job_table=table_name,
            slot_table=slot_table[1],
            max_instances=cfg.max_instances,
            topic_arn=topic_arn,
            trainer_image=trainer.image_uri,
            launch_template_id=trainer.launch_template.launch_template_id or "",
            launch_template_version=trainer.launch_template.latest_version_number,
            subnet_ids=[cdk.Fn.join(",", subnet_ids)],
            default_instance_types=list(cfg.instance_types),
            settle_seconds=cfg.settle_seconds,
            root_volume_base_gb=cfg.root_volume_gb,
        )
        environment = {
            **settings.to_env(),
            "POWERTOOLS_SERVICE_NAME": "spotyolo",
            "POWERTOOLS_METRICS_NAMESPACE": "spotyolo",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }

        self.functions: dict[LambdaName, lambda_.Function] = {}
        for spec in SPECS:
            role = iam.Role(
                self,
                f"{_camel(spec.name)}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"spotyolo {spec.name} Lambda",
            )
            log_group = logs.LogGroup(
                self,
                f"{_camel(spec.name)}Logs",
                retention=retention(cfg.log_retention_days),
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="OwnLogs",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                )
            )
            fn = lambda_.Function(
                self,
                _camel(spec.name),
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=LAMBDAS[spec.name].handler,
                code=code,
                role=role,
                log_group=log_group,
                description=spec.description,
                timeout=cdk.Duration.seconds(spec.timeout_s),
                memory_size=spec.memory_mb,
                tracing=lambda_.Tracing.ACTIVE,
                environment=environment,
                dead_letter_queue=dlq if spec.invoked_by_events else None,
                retry_attempts=2 if spec.invoked_by_events else None,
                max_event_age=cdk.Duration.hours(6) if spec.invoked_by_events else None,
            )
            self.functions[spec.name] = fn

        table = [table_arn]
        objects = bucket.arn_for_objects
        ours = {"StringEquals": {"ec2:ResourceTag/app": "spotyolo"}}
        instances = [_ec2_arn(stack, "instance/*")]
        p = self._grant
        # (a test keeps these in step with the boto3 calls in functions/ and spotyolo/)
        # validate: read the job, is it trained, settle (multipart uploads), write job.json, lock
        p(LambdaName.VALIDATE, ["s3:GetObject"], [objects("jobs/*"), objects("weights/*")])
        # ListBucket also makes a missing key answer 404 (not 403) to head_object
        p(
            LambdaName.VALIDATE,
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            {"StringLike": {"s3:prefix": ["jobs/*", "weights/*"]}},
        )
        p(LambdaName.VALIDATE, ["s3:ListBucketMultipartUploads"], [bucket.bucket_arn])
        p(LambdaName.VALIDATE, ["s3:PutObject"], [objects("runs/*/job.json")])
        p(LambdaName.VALIDATE, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)
        # (states:DescribeExecution: grant_executions, once the state machine exists)
        # a takeover of an ended execution's lock terminates that run's instances
        p(LambdaName.VALIDATE, ["ec2:DescribeInstances"], ["*"])
        # a job no quota of the account lets launch is refused (spotyolo.core.quotas)
        p(LambdaName.VALIDATE, QUOTA_ACTIONS, ["*"])
        p(LambdaName.VALIDATE, ["ec2:TerminateInstances"], instances, ours)
        # launch: one instance from our template, tagged app=spotyolo, with the trainer role
        self._grant_launch(trainer, subnet_ids, table)
        # prepare_retry: cost so far, terminate leftovers of the interrupted attempt
        p(LambdaName.PREPARE_RETRY, ["ec2:DescribeInstances", *PRICE_ACTIONS], ["*"])
        p(LambdaName.PREPARE_RETRY, ["ec2:TerminateInstances"], instances, ours)
        p(LambdaName.PREPARE_RETRY, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)
        # check_result: copy the run's files to weights/<job>/ (previous ones to previous/)
        p(LambdaName.CHECK_RESULT, ["s3:GetObject"], [objects("runs/*"), objects("weights/*")])
        # DeleteObject: a run without results.csv must not leave the previous run's beside its weights
        p(LambdaName.CHECK_RESULT, ["s3:PutObject", "s3:DeleteObject"], [objects("weights/*")])
        p(
            LambdaName.CHECK_RESULT,
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            {"StringLike": {"s3:prefix": ["runs/*", "weights/*"]}},
        )
        p(LambdaName.CHECK_RESULT, PRICE_ACTIONS, ["*"])
        p(LambdaName.CHECK_RESULT, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)
        # cleanup (and cancel, which cleans up too): terminate only our instances, notify
        for name in (LambdaName.CLEANUP, LambdaName.CANCEL):
            p(name, ["ec2:DescribeInstances", *PRICE_ACTIONS], ["*"])
            p(name, ["ec2:TerminateInstances"], instances, ours)
            p(name, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)
            p(name, ["sns:Publish"], [topic_arn])
        # (cancel's states:StopExecution: grant_executions)
        # cancel acts only when config.yaml is really gone (HeadObject; ListBucket makes it a 404)
        p(LambdaName.CANCEL, ["s3:GetObject"], [objects("jobs/*/config.yaml")])
        jobs_prefix = {"StringLike": {"s3:prefix": ["jobs/*"]}}
        p(LambdaName.CANCEL, ["s3:ListBucket"], [bucket.bucket_arn], jobs_prefix)
        # instance_lost: whose instance is it (tags), fail its pending task
        p(LambdaName.INSTANCE_LOST, ["ec2:DescribeInstances"], ["*"])
        p(LambdaName.INSTANCE_LOST, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)
        p(LambdaName.INSTANCE_LOST, ["states:SendTaskFailure"], ["*"])
        # the instance-slot queue: the semaphore, the places in the job table, the waiters' tokens
        # (states:DescribeExecution, is a slot's holder still running: grant_executions)
        for name in SLOT_PUMPS:
            p(name, SLOT_TABLE_ACTIONS, [slot_table[0]])
            p(name, ["states:SendTaskSuccess", *QUOTA_ACTIONS], ["*"])
        p(LambdaName.SLOT_QUEUE, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)

        self._acknowledge_wildcards(stack, bucket)

    def grant_executions(self, state_machine: sfn.StateMachine) -> None:
        """Validate may describe and cancel may stop the pipeline's executions. A policy of its
        own, created after the state machine: the state machine needs the functions' ARNs, so
        the functions (and their roles' default policies) cannot wait for it, and a fixed state
        machine name, which would break the cycle, blocks every replacement of it."""
        stack = cdk.Stack.of(self)
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        slot_holder = "is an instance slot's holder still running?"
        for name, action, why, suffix in (
            (LambdaName.VALIDATE, "states:DescribeExecution", "is the lock holder still running?", ""),
            (LambdaName.CANCEL, "states:StopExecution", "stop the job's running execution", ""),
            (LambdaName.CANCEL, "states:DescribeExecution", slot_holder, "SlotHolders"),
            (LambdaName.CLEANUP, "states:DescribeExecution", slot_holder, "SlotHolders"),
            (LambdaName.SLOT_QUEUE, "states:DescribeExecution", slot_holder, "SlotHolders"),
        ):
            role = self.functions[name].role
            assert role is not None
            policy = iam.Policy(
                self,
                f"{_camel(name)}{suffix or 'Executions'}",
                roles=[role],
                statements=[iam.PolicyStatement(actions=[action], resources=[executions])],
            )
            acknowledge(
                policy,
                "IAM5",
                f"{action} on this one state machine's executions ({why}); execution names are "
                "generated per job.",
                f"Resource::{as_finding(self, executions)}",
            )

    def _grant(
        self,
        name: LambdaName,
        actions: list[str],
        resources: list[str],
        conditions: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        fn = self.functions[name]
        assert fn.role is not None
        fn.role.add_to_principal_policy(
            iam.PolicyStatement(actions=actions, resources=resources, conditions=conditions)
        )

    def _grant_launch(self, trainer: TrainerConstruct, subnet_ids: list[str], table: list[str]) -> None:
        stack = cdk.Stack.of(self)
        lt = trainer.launch_template
        p = self._grant
        launch = ["ec2:CreateFleet", "ec2:RunInstances"]
        created = ("volume", "network-interface", "spot-instances-request", "fleet")
        # instances must be created tagged app=spotyolo (cleanup terminates only those)
        p(
            LambdaName.LAUNCH,
            launch,
            [_ec2_arn(stack, "instance/*")],
            {"StringEquals": {"aws:RequestTag/app": "spotyolo"}},
        )
        p(LambdaName.LAUNCH, launch, [_ec2_arn(stack, f"{kind}/*") for kind in created])
        p(
            LambdaName.LAUNCH,
            launch,
            [
                _ec2_arn(stack, f"launch-template/{lt.launch_template_id}"),
                _ec2_arn(stack, f"security-group/{trainer.security_group.security_group_id}"),
                *(_ec2_arn(stack, f"subnet/{s}") for s in subnet_ids),
                f"arn:{stack.partition}:ec2:{stack.region}::image/*",
            ],
        )
        p(
            LambdaName.LAUNCH,
            ["ec2:CreateTags"],
            [_ec2_arn(stack, f"{kind}/*") for kind in ("instance", "fleet")],
            {"StringEquals": {"ec2:CreateAction": ["CreateFleet", "RunInstances"]}},
        )
        # the root volume is tagged after launch (instant fleets tag instances only)
        p(
            LambdaName.LAUNCH,
            ["ec2:CreateTags"],
            [_ec2_arn(stack, "volume/*")],
            {"StringEquals": {"aws:RequestTag/app": "spotyolo"}},
        )
        p(
            LambdaName.LAUNCH,
            ["ec2:TerminateInstances"],
            [_ec2_arn(stack, "instance/*")],
            {"StringEquals": {"ec2:ResourceTag/app": "spotyolo"}},
        )
        p(
            LambdaName.LAUNCH,
            ["iam:PassRole"],
            [trainer.role.role_arn],
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        )
        # the first spot launch of an account creates EC2's spot / fleet service-linked roles
        services = ["spot.amazonaws.com", "ec2fleet.amazonaws.com"]
        p(
            LambdaName.LAUNCH,
            ["iam:CreateServiceLinkedRole"],
            [f"arn:{stack.partition}:iam::{stack.account}:role/aws-service-role/{svc}/*" for svc in services],
            {"StringEquals": {"iam:AWSServiceName": services}},
        )
        p(LambdaName.LAUNCH, ["ec2:DescribeInstances", "ec2:DescribeSubnets"], ["*"])
        p(LambdaName.LAUNCH, ["dynamodb:GetItem", "dynamodb:UpdateItem"], table)

    def _acknowledge_wildcards(self, stack: cdk.Stack, bucket: s3.IBucket) -> None:
        """One acknowledgement per (role, finding), each saying why that wildcard is needed."""
        objects = f"Resource::<{stack.get_logical_id(_default_child(bucket))}.Arn>"
        # known account/region when the CLI passes them, <AWS::...> otherwise (cdk/nag.py)
        where = f"{stack.region}:{stack.account}"
        arn = "Resource::" + as_finding(self, f"arn:{stack.partition}:{{svc}}:{where}:{{rest}}")
        xray = "X-Ray tracing: xray:PutTraceSegments/PutTelemetryRecords have no resource type."
        per_job = "the job (and run) name is only known per execution, so access is scoped by prefix"
        created = {
            kind: f"EC2 creates the {kind} id during RunInstances/CreateFleet, so it cannot be named "
            "in advance; "
            + (
                "creating, tagging and terminating one requires the tag app=spotyolo."
                if kind == "instance"
                else "tags only with app=spotyolo or within the launch call (ec2:CreateAction)."
            )
            for kind in ("instance", "volume", "network-interface", "spot-instances-request", "fleet")
        }
        images = "Resource::" + as_finding(self, f"arn:{stack.partition}:ec2:{stack.region}::image/*")
        slr = as_finding(self, f"arn:{stack.partition}:iam::{stack.account}:role/aws-service-role/{{svc}}/*")
        slr_reason = (
            "The first spot launch of an account creates EC2's service-linked role for {svc} "
            "(restricted by iam:AWSServiceName)."
        )
        services = ("spot.amazonaws.com", "ec2fleet.amazonaws.com")
        slots = (
            "states:SendTaskSuccess (wake the next job in the instance-slot queue) authorises by task "
            "token and takes no resource ARN; servicequotas:GetServiceQuota/GetAWSDefaultServiceQuota and "
            "ec2:DescribeInstanceTypes (the slot count from the account's quota) have no resource type."
        )
        terminate = (
            "TerminateInstances is limited to instances tagged app=spotyolo; instance ids are per run."
        )
        findings: dict[LambdaName, dict[str, str]] = {
            LambdaName.VALIDATE: {
                "Resource::*": f"{xray} ec2:DescribeInstances (the instances of a run whose lock is taken "
                "over), ec2:DescribeInstanceTypes and servicequotas:GetServiceQuota/"
                "GetAWSDefaultServiceQuota (the account's EC2 quotas) have no resource type.",
                f"{objects}/jobs/*": "Reads config.yaml and the dataset listing of a job under jobs/: "
                f"{per_job}.",
                f"{objects}/weights/*": f"Checks whether weights/<job>/ exists (already trained): {per_job}.",
                f"{objects}/runs/*/job.json": "Writes runs/<job>/<run>/job.json, nothing else there: "
                f"{per_job}.",
                arn.format(svc="ec2", rest="instance/*"): terminate,
            },
            LambdaName.LAUNCH: {
                "Resource::*": f"{xray} ec2:DescribeInstances (is this attempt's instance already "
                "running?) and ec2:DescribeSubnets (the AZ of the subnet EC2 chose) have no resource type.",
                **{arn.format(svc="ec2", rest=f"{kind}/*"): reason for kind, reason in created.items()},
                images: "The AMI id comes from the public ECS GPU AMI SSM parameter and changes with "
                "each release.",
                **{f"Resource::{slr.format(svc=svc)}": slr_reason.format(svc=svc) for svc in services},
            },
            LambdaName.PREPARE_RETRY: {
                "Resource::*": f"{xray} ec2:DescribeInstances/DescribeSpotPriceHistory, pricing:GetProducts "
                "(leftovers, cost so far) have no resource type.",
                arn.format(svc="ec2", rest="instance/*"): terminate,
            },
            LambdaName.CHECK_RESULT: {
                "Resource::*": f"{xray} ec2:DescribeSpotPriceHistory, pricing:GetProducts (the run's cost) "
                "have no resource type.",
                f"{objects}/runs/*": f"Reads the run's artifacts under runs/<job>/<run>/: {per_job}.",
                f"{objects}/weights/*": "Promotes them to weights/<job>/ (previous ones to previous/): "
                f"{per_job}.",
            },
            LambdaName.SLOT_QUEUE: {
                "Resource::*": f"{xray} {slots}",
            },
            LambdaName.CLEANUP: {
                "Resource::*": f"{xray} ec2:DescribeInstances/DescribeSpotPriceHistory, pricing:GetProducts "
                f"(the run's instances, its cost) have no resource type. {slots}",
                arn.format(svc="ec2", rest="instance/*"): terminate,
            },
            LambdaName.INSTANCE_LOST: {
                "Resource::*": f"{xray} ec2:DescribeInstances (the instance's tags) has no resource type; "
                "states:SendTaskFailure authorises by task token and takes no resource ARN.",
            },
            LambdaName.CANCEL: {
                "Resource::*": f"{xray} ec2:DescribeInstances/DescribeSpotPriceHistory, pricing:GetProducts "
                f"(cancel cleans up the run's instances and reports its cost) have no resource type. {slots}",
                arn.format(svc="ec2", rest="instance/*"): terminate,
                f"{objects}/jobs/*/config.yaml": "Checks that a job's config.yaml is really gone before it "
                f"cancels (a late Deleted event after a re-upload): {per_job}.",
            },
        }
        for name, reasons in findings.items():
            role = self.functions[name].role
            assert role is not None
            for finding, reason in reasons.items():
                acknowledge(role, "IAM5", reason, finding)


def _ec2_arn(stack: cdk.Stack, resource: str) -> str:
    return f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:{resource}"


def _default_child(bucket: s3.IBucket) -> cdk.CfnElement:
    child = bucket.node.default_child
    assert isinstance(child, cdk.CfnElement)
    return child


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
