"""What IAM authorizes for each AWS call the code makes: the Service Authorization Reference's
resource types and condition keys, kept as data with the page each comes from, and the
derivation of every authorization (explicit and implicit) from the real request parameters.

Only the calls spotyolo makes are listed; a call that is not listed makes the tests fail
(``authorizations`` raises), so a new call cannot go unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cdk_testing import ACCOUNT, REGION
from iam_policy import PARTITION, Request

SAR = "https://docs.aws.amazon.com/service-authorization/latest/reference/"
EC2_PAGE = SAR + "list_amazonec2.html"
S3_PAGE = SAR + "list_amazons3.html"
DYNAMODB_PAGE = SAR + "list_amazondynamodb.html"
STATES_PAGE = SAR + "list_awsstepfunctions.html"
SNS_PAGE = SAR + "list_amazonsns.html"
LOGS_PAGE = SAR + "list_amazoncloudwatchlogs.html"
IAM_PAGE = SAR + "list_awsidentityandaccessmanagementiam.html"
ECR_PAGE = SAR + "list_amazonelasticcontainerregistry.html"
PRICING_PAGE = SAR + "list_awspricelist.html"
QUOTAS_PAGE = SAR + "list_servicequotas.html"
#: "Grant permission to tag resources during creation": a tag-on-create call is also an
#: ec2:CreateTags authorization for each resource type tagged, with ec2:CreateAction = the call
TAG_ON_CREATE_PAGE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html"
#: the resources RunInstances must be allowed on (example policy "Launch instances")
RUN_INSTANCES_EXAMPLE = (
    "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html#iam-example-runinstances"
)
#: "Permissions for EC2 Fleet users": ec2:CreateFleet, ec2:RunInstances, ec2:CreateTags, iam:PassRole
FLEET_USERS_PAGE = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-fleet-prerequisites.html"
#: the EC2 instance profile's role is passed: iam:PassRole with iam:PassedToService
PASS_ROLE_PAGE = "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_passrole.html"

#: action -> (resource types it is authorized on, page). () = "*" (no resource-level
#: permissions: the SAR lists no resource type). Only the types a request can carry here.
RESOURCE_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "ec2:CreateFleet": (
        (
            "fleet",
            "image",
            "instance",
            "key-pair",
            "launch-template",
            "network-interface",
            "placement-group",
            "security-group",
            "snapshot",
            "subnet",
            "volume",
        ),
        EC2_PAGE,
    ),
    "ec2:RunInstances": (
        (
            "image",
            "instance",
            "key-pair",
            "launch-template",
            "network-interface",
            "placement-group",
            "security-group",
            "snapshot",
            "spot-instances-request",
            "subnet",
            "volume",
        ),
        EC2_PAGE,
    ),
    "ec2:CreateTags": (
        ("fleet", "instance", "network-interface", "spot-instances-request", "volume"),
        EC2_PAGE,
    ),
    "ec2:TerminateInstances": (("instance",), EC2_PAGE),
    "ec2:DescribeInstances": ((), EC2_PAGE),
    "ec2:DescribeSubnets": ((), EC2_PAGE),
    "ec2:DescribeSpotPriceHistory": ((), EC2_PAGE),
    "pricing:GetProducts": ((), PRICING_PAGE),
    "ec2:DescribeInstanceTypes": ((), EC2_PAGE),
    "servicequotas:GetServiceQuota": ((), QUOTAS_PAGE),
    "servicequotas:GetAWSDefaultServiceQuota": ((), QUOTAS_PAGE),
    "s3:GetObject": (("object",), S3_PAGE),
    "s3:PutObject": (("object",), S3_PAGE),
    "s3:DeleteObject": (("object",), S3_PAGE),
    "s3:AbortMultipartUpload": (("object",), S3_PAGE),
    "s3:ListBucket": (("bucket",), S3_PAGE),
    "s3:ListBucketMultipartUploads": (("bucket",), S3_PAGE),
    "dynamodb:GetItem": (("table",), DYNAMODB_PAGE),
    "dynamodb:UpdateItem": (("table",), DYNAMODB_PAGE),
    "dynamodb:PutItem": (("table",), DYNAMODB_PAGE),
    "dynamodb:DeleteItem": (("table",), DYNAMODB_PAGE),
    "dynamodb:Query": (("table",), DYNAMODB_PAGE),
    "states:SendTaskSuccess": ((), STATES_PAGE),
    "states:SendTaskFailure": ((), STATES_PAGE),
    "states:SendTaskHeartbeat": ((), STATES_PAGE),
    "states:StopExecution": (("execution",), STATES_PAGE),
    "states:DescribeExecution": (("execution",), STATES_PAGE),
    "sns:Publish": (("topic",), SNS_PAGE),
    # the SAR lists log-group for CreateLogStream, but CloudWatch Logs checks both calls
    # against the stream's ARN (log-group:NAME:log-stream:STREAM), which is why AWS's own
    # examples grant log-group:NAME:* (Lambda developer guide, "execution role")
    "logs:CreateLogStream": (("log-stream",), LOGS_PAGE),
    "logs:PutLogEvents": (("log-stream",), LOGS_PAGE),
    "iam:PassRole": (("role",), IAM_PAGE),
    "ecr:GetAuthorizationToken": ((), ECR_PAGE),
    "ecr:BatchGetImage": (("repository",), ECR_PAGE),
    "ecr:GetDownloadUrlForLayer": (("repository",), ECR_PAGE),
    "ecr:BatchCheckLayerAvailability": (("repository",), ECR_PAGE),
}

#: action -> the condition keys the SAR lists for it (the ones a policy here may use; global
#: aws:* keys other than the tag keys apply to every action). A policy conditioning an action
#: on a key not listed here names a key the request never carries: the statement never matches.
CONDITION_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "ec2:CreateFleet": (("aws:RequestTag/${TagKey}", "aws:TagKeys", "ec2:ResourceTag/${TagKey}"), EC2_PAGE),
    "ec2:RunInstances": (("aws:RequestTag/${TagKey}", "aws:TagKeys", "ec2:ResourceTag/${TagKey}"), EC2_PAGE),
    "ec2:CreateTags": (
        ("aws:RequestTag/${TagKey}", "aws:TagKeys", "ec2:CreateAction", "ec2:ResourceTag/${TagKey}"),
        EC2_PAGE,
    ),
    "ec2:TerminateInstances": (("aws:ResourceTag/${TagKey}", "ec2:ResourceTag/${TagKey}"), EC2_PAGE),
    # the FIS experiment role (cdk/fis_construct.py): an instance-level action like TerminateInstances
    "ec2:SendSpotInstanceInterruptions": (
        ("aws:ResourceTag/${TagKey}", "ec2:ResourceTag/${TagKey}"),
        EC2_PAGE,
    ),
    "iam:PassRole": (("iam:AssociatedResourceArn", "iam:PassedToService"), IAM_PAGE),
    "iam:CreateServiceLinkedRole": (("iam:AWSServiceName",), IAM_PAGE),
    "s3:ListBucket": (("s3:delimiter", "s3:max-keys", "s3:prefix"), S3_PAGE),
    "s3:ListBucketMultipartUploads": (("s3:prefix",), S3_PAGE),
}
SERVICE_SPECIFIC_GLOBALS = ("aws:requesttag/", "aws:resourcetag/", "aws:tagkeys")


def key_is_listed(action: str, key: str) -> bool:
    """Whether the SAR lists condition ``key`` for ``action`` (global keys always apply)."""
    lowered = key.lower()
    if lowered.startswith("aws:") and not lowered.startswith(SERVICE_SPECIFIC_GLOBALS):
        return True
    keys, _ = CONDITION_KEYS.get(action, ((), ""))
    return any(
        lowered == k.lower()
        or (k.endswith("${TagKey}") and lowered.startswith(k[: -len("${TagKey}")].lower()))
        for k in keys
    )


#: resource type -> ARN format (from the "Resource types" table of each page)
ARN_FORMATS: dict[str, str] = {
    "ec2:fleet": "arn:{partition}:ec2:{region}:{account}:fleet/{id}",
    "ec2:image": "arn:{partition}:ec2:{region}::image/{id}",
    "ec2:instance": "arn:{partition}:ec2:{region}:{account}:instance/{id}",
    "ec2:launch-template": "arn:{partition}:ec2:{region}:{account}:launch-template/{id}",
    "ec2:network-interface": "arn:{partition}:ec2:{region}:{account}:network-interface/{id}",
    "ec2:security-group": "arn:{partition}:ec2:{region}:{account}:security-group/{id}",
    "ec2:spot-instances-request": "arn:{partition}:ec2:{region}:{account}:spot-instances-request/{id}",
    "ec2:subnet": "arn:{partition}:ec2:{region}:{account}:subnet/{id}",
    "ec2:volume": "arn:{partition}:ec2:{region}:{account}:volume/{id}",
    "s3:bucket": "arn:{partition}:s3:::{id}",
    "s3:object": "arn:{partition}:s3:::{id}",
    "dynamodb:table": "arn:{partition}:dynamodb:{region}:{account}:table/{id}",
    "states:execution": "{id}",
    "sns:topic": "{id}",
    "logs:log-stream": "arn:{partition}:logs:{region}:{account}:log-group:{id}",
    "iam:role": "{id}",
    "ecr:repository": "arn:{partition}:ecr:{region}:{account}:repository/{id}",
}

#: the EC2 resource types a request can tag at creation, and the ids of resources that
#: do not exist yet (EC2 authorizes a resource being created by its type and a new id)
NEW_ID = {
    "fleet": "fleet-00000000-0000-0000-0000-000000000000",
    "instance": "i-00000000000000000",
    "volume": "vol-00000000000000000",
    "network-interface": "eni-00000000000000000",
    "spot-instances-request": "sir-00000000",
}


def arn(kind: str, ident: str) -> str:
    service, _, rtype = kind.partition(":")
    assert rtype in RESOURCE_TYPE_NAMES[service], f"{kind} is not a resource type of {service} here"
    return ARN_FORMATS[kind].format(partition=PARTITION, region=REGION, account=ACCOUNT, id=ident)


RESOURCE_TYPE_NAMES: dict[str, set[str]] = {}
for _kind in ARN_FORMATS:
    _svc, _, _rtype = _kind.partition(":")
    RESOURCE_TYPE_NAMES.setdefault(_svc, set()).add(_rtype)


def request(action: str, kind: str | None, ident: str = "*", context: Any = None, why: str = "") -> Request:
    """One authorization, checked against the SAR data: ``kind`` must be one of the action's
    resource types, or None for an action without resource-level permissions."""
    types, page = RESOURCE_TYPES[action]
    if kind is None:
        assert not types, f"{action} has resource types {types} ({page})"
        return Request(action, "*", dict(context or {}), why)
    assert kind.split(":", 1)[1] in types, f"{action} is not authorized on {kind} ({page})"
    return Request(action, arn(kind, ident), dict(context or {}), why)


def tag_context(tags: Mapping[str, str]) -> dict[str, str | list[str]]:
    ctx: dict[str, str | list[str]] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    ctx["aws:TagKeys"] = sorted(tags)
    return ctx


def resource_tag_context(tags: Mapping[str, str]) -> dict[str, str | list[str]]:
    return {
        **{f"ec2:ResourceTag/{k}": v for k, v in tags.items()},
        **{f"aws:ResourceTag/{k}": v for k, v in tags.items()},
    }


def _tags_by_type(specs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        out.setdefault(spec["ResourceType"], {}).update({t["Key"]: t["Value"] for t in spec["Tags"]})
    return out


# --- CreateFleet: everything EC2 authorizes for one instant fleet from a launch template


def create_fleet_requests(
    fleet: Mapping[str, Any], template_data: Mapping[str, Any], role_of_profile: Callable[[str], str]
) -> list[Request]:
    """Every authorization EC2 makes for ``fleet`` (CreateFleet's parameters) launching from a
    launch template whose (resolved) LaunchTemplateData is ``template_data``.

    - ec2:CreateFleet on each resource type of the SAR the request involves (fleet, instance,
      volume, network interface, launch template, subnet, security group, image);
    - ec2:RunInstances on the same resources (plus the spot request for spot capacity): EC2
      launches the fleet's instances with the caller's permissions (FLEET_USERS_PAGE);
    - ec2:CreateTags for every resource type tagged at creation, by the request's or the
      launch template's TagSpecifications (TAG_ON_CREATE_PAGE). Which ec2:CreateAction EC2
      puts on the instances a fleet launches is not documented, so both are asked;
    - iam:PassRole of the instance profile's role to ec2.amazonaws.com (PASS_ROLE_PAGE).
    """
    (config,) = fleet["LaunchTemplateConfigs"]
    lt_id = config["LaunchTemplateSpecification"]["LaunchTemplateId"]
    capacity = fleet["TargetCapacitySpecification"]["DefaultTargetCapacityType"]
    tags = _tags_by_type(template_data.get("TagSpecifications", []))
    for rtype, extra in _tags_by_type(fleet.get("TagSpecifications", [])).items():
        tags.setdefault(rtype, {}).update(extra)
    out: list[Request] = []
    fleet_ctx = tag_context(tags.get("fleet", {}))
    out.append(request("ec2:CreateFleet", "ec2:fleet", NEW_ID["fleet"], fleet_ctx, "the fleet"))
    image = template_data["ImageId"]
    profile = template_data.get("IamInstanceProfile", {}).get("Arn")
    for override in config["Overrides"] or [{}]:
        subnet = override.get("SubnetId")
        assert subnet, "an override without a subnet launches into the default VPC: not modelled"
        devices = override.get("BlockDeviceMappings") or template_data.get("BlockDeviceMappings", [])
        instance_ctx = {
            **tag_context(tags.get("instance", {})),
            "ec2:InstanceType": override["InstanceType"],
            "ec2:InstanceMarketType": capacity,
            "ec2:Region": REGION,
            **({"ec2:InstanceProfile": profile} if profile else {}),
        }
        used: list[tuple[str, str, Mapping[str, Any], str]] = [
            ("ec2:instance", NEW_ID["instance"], instance_ctx, "the instance"),
            ("ec2:launch-template", lt_id, {}, "the launch template"),
            ("ec2:subnet", subnet, {}, "the override's subnet"),
            ("ec2:image", image, {}, "the template's AMI"),
            (
                "ec2:network-interface",
                NEW_ID["network-interface"],
                tag_context(tags.get("network-interface", {})),
                "the instance's primary network interface",
            ),
            *(
                ("ec2:security-group", sg, {}, "the template's security group")
                for sg in template_data.get("SecurityGroupIds", [])
            ),
            *(
                (
                    "ec2:volume",
                    NEW_ID["volume"],
                    {
                        **tag_context(tags.get("volume", {})),
                        "ec2:VolumeType": d["Ebs"].get("VolumeType", "gp3"),
                        "ec2:VolumeSize": str(d["Ebs"].get("VolumeSize", "")),
                        "ec2:Encrypted": str(d["Ebs"].get("Encrypted", False)).lower(),
                    },
                    f"the volume of {d['DeviceName']}",
                )
                for d in devices
                if "Ebs" in d
            ),
        ]
        assert "KeyName" not in template_data and "Placement" not in template_data, "not modelled"
        for kind, ident, ctx, why in used:
            out.append(request("ec2:CreateFleet", kind, ident, ctx, why))
            out.append(request("ec2:RunInstances", kind, ident, ctx, f"{why}, launched by the fleet"))
        if capacity == "spot":
            out.append(
                request(
                    "ec2:RunInstances",
                    "ec2:spot-instances-request",
                    NEW_ID["spot-instances-request"],
                    tag_context(tags.get("spot-instances-request", {})),
                    "the one-time spot request",
                )
            )
    for rtype, rtags in sorted(tags.items()):
        actions = ["CreateFleet"] if rtype == "fleet" else ["CreateFleet", "RunInstances"]
        for create_action in actions:
            out.append(
                request(
                    "ec2:CreateTags",
                    f"ec2:{rtype}",
                    NEW_ID[rtype],
                    {**tag_context(rtags), "ec2:CreateAction": create_action},
                    f"tag-on-create of the {rtype} ({', '.join(f'{k}={v}' for k, v in rtags.items())})",
                )
            )
    if profile:
        out.append(
            Request(
                "iam:PassRole",
                role_of_profile(profile),
                {"iam:PassedToService": "ec2.amazonaws.com"},
                "the instance profile's role",
            )
        )
    return out


# --- every other call: boto3 operation -> authorizations (the SAR's action for the operation)

Tags = Callable[[str], dict[str, str]]


def _s3_object(action: str, bucket: str, key: str) -> Request:
    return request(action, "s3:object", f"{bucket}/{key}")


def _s3_list(action: str, p: Mapping[str, Any]) -> Request:
    ctx = {"s3:prefix": p["Prefix"]} if "Prefix" in p else {}
    if "Delimiter" in p:
        ctx["s3:delimiter"] = p["Delimiter"]
    return request(action, "s3:bucket", p["Bucket"], ctx)


def _table(action: str, p: Mapping[str, Any]) -> Request:
    key = p.get("Key") or p.get("Item") or {}
    leading = [str(next(iter(v.values()))) for v in key.values()][:1]
    return request(action, "dynamodb:table", p["TableName"], {"dynamodb:LeadingKeys": leading})


def _instances(action: str, ids: Iterable[str], tags_of: Tags) -> list[Request]:
    return [request(action, "ec2:instance", i, resource_tag_context(tags_of(i))) for i in ids]


def _create_tags(p: Mapping[str, Any], tags_of: Tags) -> list[Request]:
    kinds = {"i-": "ec2:instance", "vol-": "ec2:volume", "eni-": "ec2:network-interface"}
    tags = {t["Key"]: t["Value"] for t in p["Tags"]}
    out = []
    for rid in p["Resources"]:
        kind = next(k for prefix, k in kinds.items() if rid.startswith(prefix))
        ctx = {**tag_context(tags), **resource_tag_context(tags_of(rid))}
        out.append(request("ec2:CreateTags", kind, rid, ctx))
    return out


CALLS: dict[tuple[str, str], Callable[[Mapping[str, Any], Tags], list[Request]]] = {
    ("s3", "GetObject"): lambda p, _: [_s3_object("s3:GetObject", p["Bucket"], p["Key"])],
    ("s3", "HeadObject"): lambda p, _: [_s3_object("s3:GetObject", p["Bucket"], p["Key"])],
    ("s3", "PutObject"): lambda p, _: [_s3_object("s3:PutObject", p["Bucket"], p["Key"])],
    ("s3", "CreateMultipartUpload"): lambda p, _: [_s3_object("s3:PutObject", p["Bucket"], p["Key"])],
    ("s3", "UploadPart"): lambda p, _: [_s3_object("s3:PutObject", p["Bucket"], p["Key"])],
    ("s3", "CompleteMultipartUpload"): lambda p, _: [_s3_object("s3:PutObject", p["Bucket"], p["Key"])],
    ("s3", "AbortMultipartUpload"): lambda p, _: [
        _s3_object("s3:AbortMultipartUpload", p["Bucket"], p["Key"])
    ],
    ("s3", "DeleteObject"): lambda p, _: [_s3_object("s3:DeleteObject", p["Bucket"], p["Key"])],
    ("s3", "CopyObject"): lambda p, _: [
        _s3_object("s3:GetObject", *_copy_source(p["CopySource"])),
        _s3_object("s3:PutObject", p["Bucket"], p["Key"]),
    ],
    ("s3", "ListObjectsV2"): lambda p, _: [_s3_list("s3:ListBucket", p)],
    ("s3", "ListObjects"): lambda p, _: [_s3_list("s3:ListBucket", p)],
    ("s3", "ListMultipartUploads"): lambda p, _: [_s3_list("s3:ListBucketMultipartUploads", p)],
    ("dynamodb", "GetItem"): lambda p, _: [_table("dynamodb:GetItem", p)],
    ("dynamodb", "UpdateItem"): lambda p, _: [_table("dynamodb:UpdateItem", p)],
    ("dynamodb", "PutItem"): lambda p, _: [_table("dynamodb:PutItem", p)],
    ("dynamodb", "DeleteItem"): lambda p, _: [_table("dynamodb:DeleteItem", p)],
    ("dynamodb", "Query"): lambda p, _: [request("dynamodb:Query", "dynamodb:table", p["TableName"])],
    # "TransactWriteItems is authorized as the actions inside it" (the SAR lists no action of its own)
    ("dynamodb", "TransactWriteItems"): lambda p, _: [
        _table(f"dynamodb:{kind}Item", item[kind]) for item in p["TransactItems"] for kind in item
    ],
    ("sfn", "SendTaskSuccess"): lambda p, _: [request("states:SendTaskSuccess", None)],
    ("sfn", "SendTaskFailure"): lambda p, _: [request("states:SendTaskFailure", None)],
    ("sfn", "SendTaskHeartbeat"): lambda p, _: [request("states:SendTaskHeartbeat", None)],
    ("sfn", "StopExecution"): lambda p, _: [
        request("states:StopExecution", "states:execution", p["executionArn"])
    ],
    ("sfn", "DescribeExecution"): lambda p, _: [
        request("states:DescribeExecution", "states:execution", p["executionArn"])
    ],
    ("sns", "Publish"): lambda p, _: [request("sns:Publish", "sns:topic", p["TopicArn"])],
    ("ec2", "DescribeInstances"): lambda p, _: [request("ec2:DescribeInstances", None)],
    ("ec2", "DescribeSubnets"): lambda p, _: [request("ec2:DescribeSubnets", None)],
    ("ec2", "DescribeSpotPriceHistory"): lambda p, _: [request("ec2:DescribeSpotPriceHistory", None)],
    ("pricing", "GetProducts"): lambda p, _: [request("pricing:GetProducts", None)],
    ("ec2", "DescribeInstanceTypes"): lambda p, _: [request("ec2:DescribeInstanceTypes", None)],
    ("service-quotas", "GetServiceQuota"): lambda p, _: [request("servicequotas:GetServiceQuota", None)],
    ("service-quotas", "GetAWSDefaultServiceQuota"): lambda p, _: [
        request("servicequotas:GetAWSDefaultServiceQuota", None)
    ],
    ("ec2", "TerminateInstances"): lambda p, tags_of: _instances(
        "ec2:TerminateInstances", p["InstanceIds"], tags_of
    ),
    ("ec2", "CreateTags"): _create_tags,
}


def _copy_source(source: Any) -> tuple[str, str]:
    if isinstance(source, str):
        bucket, _, key = source.lstrip("/").partition("/")
        return bucket, key
    return source["Bucket"], source["Key"]


def authorizations(service: str, operation: str, params: Mapping[str, Any], tags_of: Tags) -> list[Request]:
    """The authorizations of one boto3 call (``service`` as botocore names the client)."""
    derive = CALLS.get((service, operation))
    if derive is None:
        raise KeyError(
            f"{service}.{operation} is not in tests/infrastructure/iam_reference.py CALLS: add its "
            "action, resource types and condition keys from the Service Authorization Reference"
        )
    return derive(params, tags_of)
