"""The one Stack of spotyolo (docs/ARCHITECTURE.md, "The CDK app"), composed of the *_construct.py files."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.config import DeployConfig
from cdk.events_construct import EventsConstruct
from cdk.fis_construct import FisConstruct
from cdk.functions_construct import FunctionsConstruct
from cdk.network_construct import NetworkConstruct
from cdk.notifications_construct import NotificationsConstruct
from cdk.state_machine_construct import StateMachineConstruct
from cdk.storage_construct import StorageConstruct
from cdk.trainer_construct import TrainerConstruct
from spotyolo.contract.lambdas import LambdaName
from spotyolo.contract.outputs import StackOutput


class SpotYoloStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, cfg: DeployConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="spotyolo: YOLO training on EC2 spot, "
            "orchestrated by Step Functions; nothing runs while no job is in flight",
            **kwargs,
        )
        self.cfg = cfg
        network = NetworkConstruct(self, "Network", cfg)
        storage = StorageConstruct(self, "Storage", cfg)
        notifications = NotificationsConstruct(self, "Notifications", cfg)
        trainer = TrainerConstruct(
            self,
            "Trainer",
            cfg=cfg,
            network=network,
            bucket=storage.bucket,
            table_name=storage.table.table_name,
            table_arn=storage.table.table_arn,
        )

        # where events that could not be delivered or handled end up (14 days to look at them)
        self.dlq = sqs.Queue(
            self,
            "DeadLetters",
            retention_period=cdk.Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )

        functions = FunctionsConstruct(
            self,
            "Functions",
            cfg=cfg,
            bucket=storage.bucket,
            table_arn=storage.table.table_arn,
            table_name=storage.table.table_name,
            slot_table=(storage.slot_table.table_arn, storage.slot_table.table_name),
            topic_arn=notifications.topic.topic_arn,
            trainer=trainer,
            subnet_ids=network.subnet_ids,
            dlq=self.dlq,
        )
        fns: dict[LambdaName, lambda_.IFunction] = dict(functions.functions)
        pipeline = StateMachineConstruct(self, "Pipeline", cfg=cfg, functions=fns, topic=notifications.topic)
        functions.grant_executions(pipeline.state_machine)
        EventsConstruct(
            self,
            "Events",
            bucket=storage.bucket,
            state_machine=pipeline.state_machine,
            functions=fns,
            dlq=self.dlq,
        )

        if FisConstruct.available(self):
            FisConstruct(self, "Fis")
        else:
            cdk.Annotations.of(self).add_warning_v2(
                "spotyolo:noFis",
                f"AWS FIS is not available in {self.region}: the stack has no spot interruption "
                "experiment (README, 'Interrupt your own job'); everything else works.",
            )

        self.bucket, self.table, self.topic = storage.bucket, storage.table, notifications.topic
        self.state_machine, self.functions, self.trainer = pipeline.state_machine, functions, trainer

        bucket, arn = storage.bucket.bucket_name, pipeline.state_machine.state_machine_arn
        region = f" --region {self.region}"
        outputs = {
            StackOutput.BUCKET: (bucket, "the job bucket"),
            StackOutput.STATE_MACHINE: (arn, "the training pipeline"),
            StackOutput.TOPIC: (notifications.topic.topic_arn, "notifications (add subscriptions here)"),
            StackOutput.JOB_TABLE: (storage.table.table_name, "one item per job: lock, attempts, progress"),
            StackOutput.TRAINER_LOG_GROUP: (
                trainer.log_group.log_group_name,
                "trainer output, one stream per attempt",
            ),
            "DeadLetterQueueUrl": (self.dlq.queue_url, "events that could not be delivered or handled"),
            "UploadCommand": (
                f"aws s3 cp ./myjob s3://{bucket}/jobs/myjob/ --recursive --exclude config.yaml{region} && "
                f"aws s3 cp ./myjob/config.yaml s3://{bucket}/jobs/myjob/config.yaml{region}",
                "upload job folder ./myjob (dataset first, config.yaml last: its upload starts training)",
            ),
            "RetrainCommand": (
                f"aws stepfunctions start-execution --state-machine-arn {arn}{region} "
                '--input \'{"job": "myjob", "force": true}\'',
                "train job myjob again (its config and dataset as uploaded)",
            ),
            "CancelCommand": (f"aws s3 rm s3://{bucket}/jobs/myjob/config.yaml{region}", "cancel job myjob"),
        }
        for name, (value, description) in outputs.items():
            cdk.CfnOutput(self, name, value=value, description=description)
        if not (cfg.emails or cfg.phones):
            cdk.Annotations.of(self).add_warning_v2(
                "spotyolo:noSubscription",
                "No notification subscription: pass -c email=you@example.com (or -c phone=+1...) to be told "
                "when a job ends, or subscribe to the TopicArn output later.",
            )
