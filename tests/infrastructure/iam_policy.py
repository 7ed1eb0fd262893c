"""A small, honest IAM policy evaluator for the infrastructure tests, and the synthesized
template's values as a deployment would see them.

moto evaluates no Resource and no Condition, so the only place a missing tag-on-create grant,
a wrong ARN or a condition that can never match shows up before AWS is a test that evaluates
the synthesized policies against the requests the code really makes. This evaluator does what
IAM's identity-based policy logic does for one principal (no SCPs, boundaries or resource
policies): an explicit Deny wins, else any Allow, else implicitly denied.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html

Supported (anything else raises, so a new operator cannot be silently ignored):
Action/NotAction, Resource/NotResource with ``*``/``?`` wildcards, and the condition operators
String(Not)Equals(IgnoreCase), String(Not)Like, ArnEquals/ArnLike (and Not), Bool, Null,
Numeric*, each with ``IfExists`` and the ``ForAllValues:``/``ForAnyValue:`` set operators.
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdk_testing import ACCOUNT, REGION, fake_value

PARTITION = "aws"
Context = Mapping[str, str | list[str]]


@dataclass(frozen=True)
class Request:
    """One authorization IAM makes: an action on one resource with its request context."""

    action: str
    resource: str
    context: Context = field(default_factory=dict)
    why: str = ""

    def __str__(self) -> str:
        ctx = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return (
            f"{self.action} on {self.resource}"
            + (f" with {ctx}" if ctx else "")
            + (f"  [{self.why}]" if self.why else "")
        )


def _wildcard(pattern: str, *, case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", 0 if case else re.IGNORECASE | re.DOTALL)


def matches(pattern: str, value: str, *, case: bool = True) -> bool:
    return bool(_wildcard(pattern, case=case).match(value))


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _arn_like(pattern: str, value: str) -> bool:
    """ArnLike compares the six colon-separated parts one by one (the resource part keeps
    its own colons)."""
    p, v = pattern.split(":", 5), value.split(":", 5)
    return len(p) == len(v) == 6 and all(matches(a, b) for a, b in zip(p, v, strict=True))


def _bool(policy: str, value: str) -> bool:
    return str(policy).lower() == str(value).lower()


def _numeric(op: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    return lambda policy, value: op(float(value), float(policy))


_BASE: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.lower() == v.lower(),
    "StringLike": lambda p, v: matches(p, v),
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": _arn_like,
    "Bool": _bool,
    "NumericEquals": _numeric(lambda v, p: v == p),
    "NumericLessThan": _numeric(lambda v, p: v < p),
    "NumericLessThanEquals": _numeric(lambda v, p: v <= p),
    "NumericGreaterThan": _numeric(lambda v, p: v > p),
    "NumericGreaterThanEquals": _numeric(lambda v, p: v >= p),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _lookup(context: Context, key: str) -> list[str] | None:
    """Context keys are case-insensitive; a missing key is None."""
    for k, v in context.items():
        if k.lower() == key.lower():
            return [str(x) for x in listed(v)]
    return None


def condition_holds(operator: str, key: str, policy_values: Any, context: Context) -> bool:
    """One operator/key pair of a Condition block (the values of one key are ORed)."""
    wanted = [str(v) if not isinstance(v, bool) else str(v).lower() for v in listed(policy_values)]
    values = _lookup(context, key)
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if op == "Null":
        return (values is None) == (wanted[0].lower() == "true")
    negated = op in _NEGATED
    base = _BASE.get(_NEGATED.get(op, op))
    if base is None:
        raise NotImplementedError(f"condition operator {operator!r} is not modelled: add it to iam_policy.py")
    if qualifier == "ForAllValues":  # every value in the request is allowed (true when there are none)
        return all(any(base(w, v) for w in wanted) != negated for v in values or [])
    if qualifier == "ForAnyValue":  # at least one value in the request matches
        return any(any(base(w, v) for w in wanted) != negated for v in values or [])
    if qualifier:
        raise NotImplementedError(f"set operator {qualifier!r} is not modelled")
    if values is None:
        return if_exists or negated
    hit = any(base(w, v) for w in wanted for v in values)
    return not hit if negated else hit


def statement_applies(st: Mapping[str, Any], request: Request) -> bool:
    if "Action" in st:
        ok = any(matches(a, request.action, case=False) for a in listed(st["Action"]))
    else:
        ok = not any(matches(a, request.action, case=False) for a in listed(st["NotAction"]))
    if not ok:
        return False
    patterns = listed(st.get("Resource", st.get("NotResource")))
    if any("${" in str(r) for r in patterns):
        raise NotImplementedError(f"policy variables are not modelled: {patterns}")
    if "Resource" in st:
        ok = any(matches(r, request.resource) for r in listed(st["Resource"]))
    else:
        ok = not any(matches(r, request.resource) for r in listed(st["NotResource"]))
    if not ok:
        return False
    return all(
        condition_holds(op, key, values, request.context)
        for op, block in st.get("Condition", {}).items()
        for key, values in block.items()
    )


def decide(statements: Iterable[Mapping[str, Any]], request: Request) -> str:
    """'Allow', 'ExplicitDeny' or 'ImplicitDeny'."""
    applying = [st for st in statements if statement_applies(st, request)]
    if any(st["Effect"] == "Deny" for st in applying):
        return "ExplicitDeny"
    return "Allow" if any(st["Effect"] == "Allow" for st in applying) else "ImplicitDeny"


def refused(statements: Sequence[Mapping[str, Any]], requests: Iterable[Request]) -> list[str]:
    """Each request the statements do not allow, with the decision (empty: all allowed)."""
    return [f"{decision}: {r}" for r in requests if (decision := decide(statements, r)) != "Allow"]


# --- the template's values as deployed: consistent Ref / GetAtt for the resource types the
# policies and the Lambdas' environment use (the same value wherever a resource is named)


class Deployed:
    """Resolves CloudFormation intrinsics to realistic values: ARNs in the formats the
    services document, ids shaped like EC2's. ``ids`` overrides a resource's physical id
    (e.g. the moto world's subnet ids for the synthesized subnets)."""

    def __init__(self, template: dict[str, Any], ids: Mapping[str, str] | None = None) -> None:
        self.resources: dict[str, Any] = template["Resources"]
        self.parameters: dict[str, Any] = template.get("Parameters", {})
        self.ids = dict(ids or {})

    def physical_id(self, logical_id: str) -> str:
        if logical_id in self.ids:
            return self.ids[logical_id]
        cfn_type = self.resources[logical_id]["Type"] if logical_id in self.resources else ""
        short = re.sub(r"[^a-z0-9]", "", logical_id.lower())
        prefix = {
            "AWS::EC2::LaunchTemplate": "lt-",
            "AWS::EC2::SecurityGroup": "sg-",
            "AWS::EC2::Subnet": "subnet-",
            "AWS::EC2::VPC": "vpc-",
        }.get(cfn_type)
        if prefix:
            return prefix + short[-17:]
        return short[:60]

    def ref(self, logical_id: str) -> str:
        if logical_id.startswith("AWS::"):
            return fake_value(self.resources, logical_id)
        if logical_id in self.parameters:  # SSM parameters: the AMI id for the image parameter
            default = str(self.parameters[logical_id].get("Default", ""))
            return "ami-0123456789abcdef0" if "image_id" in default else f"param-{logical_id[:20]}"
        cfn_type = self.resources[logical_id]["Type"]
        name = self.physical_id(logical_id)
        if cfn_type == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}"
        if cfn_type == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        return name

    def get_att(self, logical_id: str, attribute: str) -> str:
        cfn_type = self.resources[logical_id]["Type"]
        name = self.physical_id(logical_id)
        arns = {
            "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
            "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
            "AWS::IAM::InstanceProfile": f"arn:{PARTITION}:iam::{ACCOUNT}:instance-profile/{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}",
            "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::ECR::Repository": f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{name}",
            "AWS::StepFunctions::StateMachine": (
                f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
            ),
        }
        if attribute == "Arn" and cfn_type in arns:
            return arns[cfn_type]
        if cfn_type == "AWS::StepFunctions::StateMachine" and attribute == "Name":
            return name
        if cfn_type == "AWS::EC2::SecurityGroup" and attribute == "GroupId":
            return name
        if cfn_type == "AWS::EC2::LaunchTemplate" and attribute in (
            "LatestVersionNumber",
            "DefaultVersionNumber",
        ):
            return "1"
        raise NotImplementedError(f"GetAtt {logical_id}.{attribute} ({cfn_type}) is not modelled")

    def role_of_profile(self, profile_arn: str) -> str:
        """The ARN of the role in the instance profile whose ARN is ``profile_arn``."""
        for logical_id, res in self.resources.items():
            if res["Type"] == "AWS::IAM::InstanceProfile" and self.get_att(logical_id, "Arn") == profile_arn:
                (role,) = res["Properties"]["Roles"]
                return self.get_att(role["Ref"], "Arn")
        raise KeyError(profile_arn)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self.get_att(*value["Fn::GetAtt"])
        if set(value) == {"Fn::Join"}:
            sep, parts = value["Fn::Join"]
            return sep.join(str(self.resolve(p)) for p in parts)
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._sub(m.group(1)), text)
        if set(value) == {"Fn::Select"}:
            index, items = value["Fn::Select"]
            return self.resolve(items)[int(index)]
        if set(value) == {"Fn::Split"}:
            sep, text = value["Fn::Split"]
            return str(self.resolve(text)).split(sep)
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, name: str) -> str:
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return self.get_att(logical_id, attribute)
        return self.ref(name)

    def statements_of_role(self, role_id: str) -> list[dict[str, Any]]:
        """Every statement of every policy attached to the role, resolved."""
        found: list[dict[str, Any]] = []
        for res in self.resources.values():
            if res["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in res["Properties"]["Roles"]:
                found += res["Properties"]["PolicyDocument"]["Statement"]
        for inline in self.resources[role_id]["Properties"].get("Policies", []):
            found += inline["PolicyDocument"]["Statement"]
        assert not self.resources[role_id]["Properties"].get("ManagedPolicyArns"), role_id
        return [self.resolve(st) for st in found]
