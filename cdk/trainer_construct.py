"""The EC2 side (docs/ARCHITECTURE.md, "The trainer"): trainer image, instance role, launch
template, trainer logs.

The launch Lambda starts instances from this launch template and tags them (app, job, run,
attempt, image, Name). The user data reads those tags from the instance metadata (tags are
enabled there), pulls the image, runs ``python -m spotyolo.trainer`` in it on every GPU, and powers
the instance off when the container exits, whatever happened: shutdown behaviour is
terminate, so the instance role needs no EC2 permission at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.common import retention
from cdk.config import DeployConfig
from cdk.nag import acknowledge
from cdk.network_construct import NetworkConstruct
from spotyolo.contract.env import TrainerVar
from spotyolo.core.fleet import ATTEMPT_TAG, IMAGE_TAG, JOB_TAG, RUN_TAG

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "container/Dockerfile"
#: the ECS-optimised Amazon Linux 2023 GPU AMI: NVIDIA driver, Docker and the NVIDIA container
#: toolkit preinstalled; resolved at deploy time, so a redeploy picks up the newest one
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
#: never part of the image's build context, whatever .dockerignore says (keeps synth fast:
#: the context is copied into cdk.out at every synth)
CONTEXT_EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "cdk.out",
    "build",
    "outputs",
    "runs",
    ".yolo",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "**/__pycache__",
    "**/*.pyc",
    "*.egg-info",
    "examples/*/dataset",
    "bench/results",
]
_ECR_URI = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


class TrainerConstruct(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cfg: DeployConfig,
        network: NetworkConstruct,
        bucket: s3.IBucket,
        table_name: str,
        table_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(cfg.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        # --- instance role: exactly what `python -m spotyolo.trainer` does, nothing on EC2 or IAM
        self.role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="spotyolo trainer instances: read its job, write its run, report to Step Functions",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadJobInput", actions=["s3:GetObject"], resources=[bucket.arn_for_objects("jobs/*")]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadWriteRun",
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects("runs/*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListJobAndRun",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": ["jobs/*", "runs/*"]}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="JobItem", actions=["dynamodb:GetItem", "dynamodb:UpdateItem"], resources=[table_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReportToStepFunctions",
                actions=["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
                resources=["*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="TrainerLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )

        # --- the image: built from container/Dockerfile at deploy time (synth only copies
        # the context), or a prebuilt one
        if cfg.trainer_image:
            self.image_uri = cfg.trainer_image
            match = _ECR_URI.match(cfg.trainer_image)
            if match:
                account, region, name = match.groups()
                ecr.Repository.from_repository_attributes(
                    self,
                    "PrebuiltRepo",
                    repository_name=name,
                    repository_arn=f"arn:{stack.partition}:ecr:{region}:{account}:repository/{name}",
                ).grant_pull(self.role)
        else:
            if not (REPO_ROOT / DOCKERFILE).is_file():
                raise FileNotFoundError(
                    f"{DOCKERFILE} not found in {REPO_ROOT}: the trainer image is built from it. "
                    "Fix: restore it (git checkout -- container/), or pass "
                    "-c trainer_image=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag> "
                    "to use a prebuilt image"
                )
            asset = ecr_assets.DockerImageAsset(
                self,
                "Image",
                directory=str(REPO_ROOT),
                file=DOCKERFILE,
                platform=ecr_assets.Platform.LINUX_AMD64,
                exclude=CONTEXT_EXCLUDES,
            )
            self.image_uri = asset.image_uri
            asset.repository.grant_pull(self.role)
        acknowledge(
            self.role,
            "IAM5",
            "states:SendTaskSuccess/Failure/Heartbeat authorise by task token and take no resource "
            "ARN (the trainer only knows its own job's token, read from its item); "
            "ecr:GetAuthorizationToken has no resource type (pulls are scoped to the image's "
            "repository).",
            "Resource::*",
        )
        bucket_id = stack.get_logical_id(_cfn(bucket))
        acknowledge(
            self.role,
            "IAM5",
            "Reads the dataset of its job under jobs/<job>/: the job name is only known at launch "
            "(one launch template serves every job).",
            f"Resource::<{bucket_id}.Arn>/jobs/*",
        )
        acknowledge(
            self.role,
            "IAM5",
            "Writes checkpoints, artifacts and progress of its run under runs/<job>/<run>/: the "
            "run id is only known at launch.",
            f"Resource::<{bucket_id}.Arn>/runs/*",
        )

        # --- network: no ingress at all; HTTPS out (ECR, S3, DynamoDB, Step Functions, logs)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            allow_all_outbound=False,
            description="spotyolo trainers: no inbound traffic; HTTPS out only",
        )
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs")

        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=ec2.MachineImage.from_ssm_parameter(
                GPU_AMI_PARAMETER, os=ec2.OperatingSystemType.LINUX
            ),
            role=self.role,
            security_group=self.security_group,
            user_data=self._user_data(bucket.bucket_name, table_name),
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        cfg.root_volume_gb,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                )
            ],
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_endpoint=True,
            # 2 hops: the trainer in its container reads the spot notice and its credentials
            http_put_response_hop_limit=2,
            instance_metadata_tags=True,
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
            version_description="spotyolo trainer",
        )
        # No tags from the template (CDK adds Name on instances and volumes): tagging a resource
        # at creation is an ec2:CreateTags authorization per resource type, and the launch
        # role tags only what the launch request names (tests/infrastructure/test_iam.py)
        cdk.Tags.of(self.launch_template).remove("Name")

    def _user_data(self, bucket_name: str, table_name: str) -> ec2.UserData:
        user_data = ec2.UserData.for_linux(shebang="#!/bin/bash")
        user_data.add_commands(
            *trainer_boot_script(
                bucket=bucket_name, table=table_name, log_group=self.log_group.log_group_name
            )
        )
        return user_data


def _cfn(bucket: s3.IBucket) -> cdk.CfnElement:
    child = bucket.node.default_child
    assert isinstance(child, cdk.CfnElement)
    return child


def trainer_boot_script(*, bucket: str, table: str, log_group: str) -> list[str]:
    """The instance's user data, line by line. Tokens (bucket, table, log group) become
    ``Fn::Join`` parts; the job, run, attempt and image come from the instance's own tags,
    so one launch template version serves every job (and no task token is in user data)."""
    return [
        "# spotyolo trainer boot: one attempt of one job, then power off (shutdown = terminate)",
        "set -uo pipefail",
        "trap 'echo \"spotyolo: powering off\"; sync; shutdown -h now' EXIT",
        "systemctl stop ecs.service 2>/dev/null || true   # the AMI's ECS agent is not used",
        "IMDS=http://169.254.169.254/latest",
        'TOKEN=$(curl -sSf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600") \\',
        "  || exit 1",
        'md() { curl -sSf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/meta-data/$1"; }',
        f"JOB=$(md tags/instance/{JOB_TAG}) && RUN_ID=$(md tags/instance/{RUN_TAG}) "
        f"&& ATTEMPT=$(md tags/instance/{ATTEMPT_TAG}) "
        f"&& IMAGE=$(md tags/instance/{IMAGE_TAG}) && REGION=$(md placement/region) "
        "|| { echo 'spotyolo: instance tags job/run/attempt/image missing'; exit 1; }",
        'echo "spotyolo: job=$JOB run=$RUN_ID attempt=$ATTEMPT image=$IMAGE"',
        "REGISTRY=${IMAGE%%/*}",
        'if [[ "$REGISTRY" == *.dkr.ecr.*.amazonaws.com* ]]; then',
        "  command -v aws >/dev/null || dnf install -y -q awscli-2",
        '  aws ecr get-login-password --region "$REGION" \\',
        '    | docker login --username AWS --password-stdin "$REGISTRY" || exit 1',
        "fi",
        'for try in 1 2 3; do docker pull -q "$IMAGE" && break; [ "$try" = 3 ] && exit 1; sleep 15; done',
        "docker run --rm --gpus all --ipc=host --name spotyolo-trainer \\",
        f'  --log-driver awslogs --log-opt awslogs-region="$REGION" --log-opt awslogs-group="{log_group}" \\',
        '  --log-opt awslogs-stream="$JOB/$RUN_ID/attempt-$ATTEMPT" \\',
        f'  -e {TrainerVar.JOB}="$JOB" -e {TrainerVar.RUN_ID}="$RUN_ID" '
        f'-e {TrainerVar.ATTEMPT}="$ATTEMPT" \\',
        f'  -e {TrainerVar.BUCKET}="{bucket}" -e {TrainerVar.JOB_TABLE}="{table}" \\',
        f'  -e AWS_REGION="$REGION" -e AWS_DEFAULT_REGION="$REGION" -e {TrainerVar.EXPECT_GPU}=1 \\',
        '  "$IMAGE"',
        'echo "spotyolo: trainer exited with status $?"',
    ]
