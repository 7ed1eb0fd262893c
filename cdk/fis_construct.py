"""An AWS FIS experiment template that rehearses a spot interruption on AWS (README, "Interrupt
your own job").

FIS sends a real interruption notice (``aws:ec2:send-spot-instance-interruptions``) two minutes
before EC2 interrupts the instance, so the trainer's notice watcher, the checkpoint upload, the
``SpotInterrupted`` retry and the resume all run as they would on a real interruption. A
template's targets are fixed, so it cannot name a job: it targets the one running spotyolo spot
instance that the user marked ``interrupt=yes`` (``aws ec2 create-tags`` on their job's
instance), and nothing else, whatever else runs in the account. An idle template costs nothing.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_fis as fis
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import acknowledge
from spotyolo.core.fleet import APP, APP_TAG, INTERRUPT, INTERRUPT_TAG

ACTION = "aws:ec2:send-spot-instance-interruptions"
#: the notice comes this long before the interruption (FIS accepts PT2M to PT15M)
NOTICE = "PT2M"


class FisConstruct(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        marked = {APP_TAG: APP, INTERRUPT_TAG: INTERRUPT}
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
                resources=[f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:instance/*"],
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
            "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*",
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
