"""cdk-nag (v3 API) wiring: the AwsSolutions pack on every synth, and acknowledgements.

An acknowledgement names ONE finding (``AwsSolutions::AwsSolutions-<rule>[<finding>]``, or the rule
where the finding is the resource itself) and carries the reason a reviewer needs. Without the
``AwsSolutions::`` prefix cdk-nag drops it silently, so ``acknowledge`` adds it.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_checks(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def as_finding(scope: IConstruct, value: str) -> str:
    """``value`` (a string that may hold tokens) as cdk-nag writes it in a finding: a ``Ref`` as
    ``<Name>``, an ``Fn::GetAtt`` as ``<Id.Attr>``, known values as they are. The CDK CLI passes
    the configured account and region, and then ``stack.region`` is ``us-east-1`` and not
    ``<AWS::Region>``: an acknowledgement built with this matches either way."""
    resolved = cdk.Stack.of(scope).resolve(value)
    parts = resolved["Fn::Join"][1] if isinstance(resolved, dict) else [resolved]
    text = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        elif "Ref" in part:
            text.append(f"<{part['Ref']}>")
        elif "Fn::GetAtt" in part:
            text.append("<{}.{}>".format(*part["Fn::GetAtt"]))
        else:
            raise ValueError(f"cdk/nag.py: cannot render {part} of {value!r} as a cdk-nag finding")
    return "".join(text)


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` on ``scope`` (each of ``findings`` separately, if given)."""
    ids = [f"AwsSolutions::AwsSolutions-{rule}[{f}]" for f in findings] or [
        f"AwsSolutions::AwsSolutions-{rule}"
    ]
    for ack_id in ids:
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=ack_id, reason=reason))
