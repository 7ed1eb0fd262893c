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


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` on ``scope`` (each of ``findings`` separately, if given)."""
    ids = [f"AwsSolutions::AwsSolutions-{rule}[{f}]" for f in findings] or [
        f"AwsSolutions::AwsSolutions-{rule}"
    ]
    for ack_id in ids:
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=ack_id, reason=reason))
