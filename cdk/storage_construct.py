"""The job bucket (docs/ARCHITECTURE.md, "The S3 layout"), its access-log bucket, and the job
table (docs/ARCHITECTURE.md, "The steps")."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import DeployConfig


class StorageConstruct(Construct):
    def __init__(self, scope: Construct, construct_id: str, cfg: DeployConfig) -> None:
        super().__init__(scope, construct_id)

        # Server access logs: who uploaded or fetched what (the bucket holds user datasets
        # and weights). Storage only: costs nothing while idle beyond a few KB of logs.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(365))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # (nag S1 knows this is a log destination: no access logs of its own needed)

        self.bucket = s3.Bucket(
            self,
            "Jobs",
            bucket_name=cfg.bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="jobs-bucket/",
            lifecycle_rules=[
                # interrupted multipart uploads of big datasets would be billed forever, and would keep
                # "Validate job" waiting (an open upload under a job means "still uploading")
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(1)),
            ],
            # user datasets and trained weights outlive the stack (README: destroy)
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # S3 -> EventBridge, declared on the bucket itself: CDK's `event_bridge_enabled` would
        # add a Node.js custom-resource Lambda just to set this one property.
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )

        # one item per job; on demand: no charge while idle beyond storage
        self.table = dynamodb.Table(
            self,
            "JobTable",
            partition_key=dynamodb.Attribute(name="job", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.DEFAULT,  # AWS-owned key: encrypted, no KMS charges
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        # the instance-slot queue (spotyolo/core/slots.py): a semaphore item and one item per
        # queued execution; its own table, so nothing that lists jobs ever sees them
        self.slot_table = dynamodb.Table(
            self,
            "SlotTable",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.NUMBER),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.DEFAULT,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
