"""The SNS topic the state machine publishes to, with its subscriptions.

Encrypted with the AWS-managed key ``alias/aws/sns``: free (a customer-managed key would bill
$1 a month while idle) and enough here, since the only publisher is the state machine's role
in this account. Email is the default channel; SMS needs the account out of the SNS SMS
sandbox (and, for US numbers, an origination identity): see README "Deploy to AWS".
"""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from cdk.config import DeployConfig


class NotificationsConstruct(Construct):
    def __init__(self, scope: Construct, construct_id: str, cfg: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name="spotyolo",
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        for email in cfg.emails:
            self.topic.add_subscription(subs.EmailSubscription(email))
        for phone in cfg.phones:
            self.topic.add_subscription(subs.SmsSubscription(phone))
