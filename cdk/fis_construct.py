"""An AWS FIS experiment template that rehearses a spot interruption on AWS (README, "Interrupt
your own job").

FIS sends a real interruption notice (``aws:ec2:send-spot-instance-interruptions``) two minutes
before EC2 interrupts the instance, so the trainer's notice watcher, the checkpoint upload, the
``SpotInterrupted`` retry and the resume all run as they would on a real interruption. A
template's targets are fixed, so it cannot name a job: it targets the one running spotyolo spot
instance that the user marked ``interrupt=yes`` (``aws ec2 create-tags`` on their job's
instance), and nothing else, whatever else runs in the account. An idle template costs nothing.

FIS is not in every region (``FIS_REGIONS``): elsewhere the stack has no template (a known region
at synth: a warning; an unknown one: a CloudFormation condition), and deploys all the same.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_fis as fis
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import acknowledge, as_finding
from spotyolo.core.fleet import APP, APP_TAG, INTERRUPT, INTERRUPT_TAG, JOB_TAG

ACTION = "aws:ec2:send-spot-instance-interruptions"
#: the regions with AWS::FIS::ExperimentTemplate, from cfn-lint 1.58's region schemas (a test keeps
#: this equal to them: upgrade cfn-lint, and the test names the regions to add)
FIS_REGIONS = (
    *("af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1"),
    *("ap-southeast-1", "ap-southeast-2", "ca-central-1", "eu-central-1", "eu-central-2"),
    *("eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3"),
    *("me-central-1", "me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2"),
    *("us-gov-east-1", "us-gov-west-1", "us-iso-east-1", "us-iso-west-1", "us-isob-east-1"),
    *("us-isob-west-1", "us-isof-east-1", "us-isof-south-1", "eu-isoe-west-1", "eusc-de-east-1"),
)
#: the notice comes this long before the interruption (FIS accepts PT2M to PT15M)
NOTICE = "PT2M"


class FisConstruct(Construct):
    @staticmethod
    def available(stack: cdk.Stack) -> bool:
        """False only where the region is known at synth and has no FIS."""
        return cdk.Token.is_unresolved(stack.region) or stack.region in FIS_REGIONS

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        marked = {APP_TAG: APP, INTERRUPT_TAG: INTERRUPT}
        instances = f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:instance/*"
        experiments = f"arn:{stack.partition}:fis:{stack.region}:{stack.account}:experiment/*"
        self.role = iam.Role(
            self,
            "Role",
            description="AWS FIS: send a spot interruption notice to a marked spotyolo trainer",
            # only FIS experiments of this account and region (confused deputy)
            assumed_by=iam.ServicePrincipal(
                "fis.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": experiments},
                },
            ),
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InterruptMarkedTrainers",
                actions=["ec2:SendSpotInstanceInterruptions"],
                resources=[instances],
                conditions={"StringEquals": {f"aws:ResourceTag/{k}": v for k, v in marked.items()}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="FindTargets", actions=["ec2:DescribeInstances"], resources=["*"])
        )
        acknowledge(
            self.role,
            "IAM5",
            "Instance ids are per run: SendSpotInstanceInterruptions is limited to instances tagged "
            f"{APP_TAG}={APP} and {INTERRUPT_TAG}={INTERRUPT}.",
            f"Resource::{as_finding(self, instances)}",
        )
        acknowledge(
            self.role,
            "IAM5",
            "FIS resolves the experiment's targets with ec2:DescribeInstances, which has no resource type.",
            "Resource::*",
        )
        self.template = fis.CfnExperimentTemplate(
            self,
            "InterruptTrainer",
            description=f"spotyolo: spot interruption notice ({NOTICE} ahead) to the running trainer "
            f"tagged {INTERRUPT_TAG}={INTERRUPT}",
            role_arn=self.role.role_arn,
            stop_conditions=[
                fis.CfnExperimentTemplate.ExperimentTemplateStopConditionProperty(source="none")
            ],
            targets={
                "MarkedTrainer": fis.CfnExperimentTemplate.ExperimentTemplateTargetProperty(
                    resource_type="aws:ec2:spot-instance",
                    resource_tags=marked,
                    filters=[
                        fis.CfnExperimentTemplate.ExperimentTemplateTargetFilterProperty(
                            path="State.Name", values=["running"]
                        )
                    ],
                    selection_mode="COUNT(1)",
                )
            },
            actions={
                "Interrupt": fis.CfnExperimentTemplate.ExperimentTemplateActionProperty(
                    action_id=ACTION,
                    description="send the two-minute spot interruption notice",
                    parameters={"durationBeforeInterruption": NOTICE},
                    targets={"SpotInstances": "MarkedTrainer"},
                )
            },
            tags={"Name": f"{stack.stack_name}-interrupt-trainer"},
        )
        condition = self._only_where_fis_exists(stack)
        region = f" --region {stack.region}"
        template_id = self.template.attr_id
        outputs = {
            "InterruptTemplateId": (template_id, "FIS: spot interruption notice to a marked instance"),
            "InterruptCommand": (
                f"I=$(aws ec2 describe-instances{region} --filters Name=tag:{APP_TAG},Values={APP} "
                f"Name=tag:{JOB_TAG},Values=myjob Name=instance-state-name,Values=running "
                "--query 'Reservations[].Instances[].InstanceId' --output text) && "
                f"aws ec2 create-tags{region} --resources $I --tags Key={INTERRUPT_TAG},Value={INTERRUPT} && "
                f"aws fis start-experiment{region} --experiment-template-id {template_id} "
                "--tags Name=interrupt-myjob",
                "rehearse a spot interruption of job myjob's trainer: it checkpoints, a new instance resumes",
            ),
        }
        for name, (value, description) in outputs.items():
            cdk.CfnOutput(stack, name, value=value, description=description, condition=condition)

    def _only_where_fis_exists(self, stack: cdk.Stack) -> cdk.CfnCondition | None:
        """A region unknown at synth: every resource here gets a condition on FIS_REGIONS."""
        if not cdk.Token.is_unresolved(stack.region):
            return None
        equals = [cdk.Fn.condition_equals(stack.region, region) for region in FIS_REGIONS]
        groups = [cdk.Fn.condition_or(*equals[i : i + 10]) for i in range(0, len(equals), 10)]  # 10 at most
        condition = cdk.CfnCondition(stack, "FisAvailable", expression=cdk.Fn.condition_or(*groups))
        for child in self.node.find_all():
            if isinstance(child, cdk.CfnResource):
                child.cfn_options.condition = condition
        return condition
