"""Where trainer instances run: public subnets, no NAT gateway, an S3 gateway endpoint.

Default: a small VPC of our own (one public subnet per AZ, up to 3 AZs, so the fleet can look
for spot capacity in every AZ; an internet gateway; an S3 gateway endpoint so datasets and
checkpoints do not cross the internet gateway). Every part of it is free while no instance
runs, and synth needs no AWS account (no ``Vpc.from_lookup``, no context cache). Instances get
a public IPv4 address (billed per hour only while they run) and a security group without
ingress, so nothing can reach them.

Alternative: ``-c vpc_id=vpc-... -c subnet_ids=subnet-a,subnet-b`` uses existing public subnets
(e.g. the default VPC's; they must auto-assign public IPv4). They are not changed: add an S3
gateway endpoint there yourself if you want one.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.common import retention
from cdk.config import DeployConfig


class NetworkConstruct(Construct):
    def __init__(self, scope: Construct, construct_id: str, cfg: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self.vpc: ec2.IVpc
        if cfg.vpc_id:
            # only the security group needs the VPC; launches name the subnets directly
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=cfg.vpc_id,
                availability_zones=cdk.Stack.of(self).availability_zones[: len(cfg.subnet_ids)],
            )
            self.subnet_ids: list[str] = list(cfg.subnet_ids)
            return

        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=3,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public",
                    subnet_type=ec2.SubnetType.PUBLIC,
                    cidr_mask=20,
                    map_public_ip_on_launch=True,
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            # the default-SG lockdown is a Node.js custom-resource Lambda; nothing uses the
            # default security group here (trainers get their own, without ingress)
            restrict_default_security_group=False,
        )
        # Flow logs (nag VPC7): an audit trail of where trainers (which load user-supplied
        # pickles) connect; billed per GB of records, i.e. only while instances run.
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(cfg.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        self.vpc = vpc
        self.subnet_ids = [s.subnet_id for s in vpc.public_subnets]
