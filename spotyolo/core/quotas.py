"""The account's EC2 quotas as instance slots (the ``quota`` branch writes the real body; this
branch holds only the signature the instance-slot queue calls, spotyolo/core/slots.py)."""

from __future__ import annotations

from typing import Any


def instance_slots(
    quotas_client: Any, ec2_client: Any, instance_types: list[str], capacity: str
) -> int | None:
    """How many instances of ``instance_types`` the account's Service Quotas value for
    ``capacity`` allows at once (the quota in vCPUs divided by the type's vCPUs); None when it
    cannot tell (treated as no limit)."""
    return None
