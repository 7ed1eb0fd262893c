"""What a run costs: EC2 hourly prices and the sum over a run's attempts.

Prices are approximate us-east-1 Linux on-demand list prices (USD per hour) of the GPU types
people train YOLO on. They are an estimate for the notification and for ``max_cost_usd``, not
a bill: a live spot price from ``describe_spot_price_history`` is used where the caller passes
an EC2 client, otherwise spot is estimated as ``SPOT_FRACTION`` of on-demand. EBS, data
transfer and the Lambdas/Step Functions (cents per run) are not counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from spotyolo.core.models import AttemptRecord

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    # g4dn: NVIDIA T4
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g4dn.16xlarge": 4.352,
    "g4dn.metal": 7.824,
    # g5: NVIDIA A10G
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096,
    "g5.24xlarge": 8.144,
    "g5.48xlarge": 16.288,
    # g6: NVIDIA L4
    "g6.xlarge": 0.805,
    "g6.2xlarge": 0.978,
    "g6.4xlarge": 1.323,
    "g6.8xlarge": 2.014,
    "g6.12xlarge": 4.602,
    "g6.16xlarge": 3.397,
    "g6.24xlarge": 6.675,
    "g6.48xlarge": 13.35,
    # g6e: NVIDIA L40S
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.242,
    "g6e.4xlarge": 3.004,
    "g6e.8xlarge": 4.529,
    "g6e.12xlarge": 10.493,
    "g6e.16xlarge": 7.577,
    "g6e.24xlarge": 15.066,
    "g6e.48xlarge": 30.131,
    # p3: NVIDIA V100
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p3.16xlarge": 24.48,
    "p3dn.24xlarge": 31.212,
    # p4d: 8x A100, p5: 8x H100
    "p4d.24xlarge": 32.773,
    "p5.48xlarge": 98.32,
}

#: spot price as a fraction of on-demand when no live price is known (GPU spot: ~30-50 %)
SPOT_FRACTION = 0.4
#: price of an unknown type: a mid-range single-GPU machine, so budgets still bite
UNKNOWN_ON_DEMAND = 1.5

PriceFn = Callable[[str, str, str | None], float]


def on_demand_price(instance_type: str) -> float:
    return ON_DEMAND_USD_PER_HOUR.get(instance_type, UNKNOWN_ON_DEMAND)


def spot_estimate(instance_type: str) -> float:
    return round(on_demand_price(instance_type) * SPOT_FRACTION, 4)


def live_spot_price(ec2: EC2Client, instance_type: str, az: str | None = None) -> float | None:
    """The newest spot price of ``instance_type`` (in ``az`` if given), or None if unknown."""
    kwargs: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": dt.datetime.now(dt.UTC),
        "MaxResults": 20,
    }
    if az:
        kwargs["AvailabilityZone"] = az
    try:
        history = ec2.describe_spot_price_history(**kwargs).get("SpotPriceHistory", [])
    except Exception:  # no permission, throttled, emulator without prices: fall back to the estimate
        return None
    prices = [float(h["SpotPrice"]) for h in history if h.get("InstanceType") == instance_type]
    return min(prices) if prices else None


def price_fn(ec2: EC2Client | None = None) -> PriceFn:
    """Hourly price of (type, capacity, az): live spot price where ``ec2`` can tell, else estimates."""
    cache: dict[tuple[str, str | None], float] = {}

    def price(instance_type: str, capacity: str, az: str | None) -> float:
        if capacity != "spot":
            return on_demand_price(instance_type)
        if (instance_type, az) not in cache:
            live = live_spot_price(ec2, instance_type, az) if ec2 is not None else None
            cache[(instance_type, az)] = live if live is not None else spot_estimate(instance_type)
        return cache[(instance_type, az)]

    return price


def _parse(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def attempt_seconds(record: AttemptRecord, now: dt.datetime | None = None) -> float:
    """How long the attempt's instance ran (until now when it has not ended)."""
    start = _parse(record.start)
    if start is None:
        return 0.0
    end = _parse(record.end) or now or dt.datetime.now(dt.UTC)
    return max(0.0, (end - start).total_seconds())


def run_cost(
    attempts: Iterable[AttemptRecord], price: PriceFn | None = None, now: dt.datetime | None = None
) -> float:
    """USD for a run's attempts; EC2 bills per second (60 s minimum) for Linux instances."""
    price = price or price_fn()
    total = 0.0
    for record in attempts:
        if not record.instance_type or not record.start:
            continue  # never launched (NoCapacity): costs nothing
        seconds = max(60.0, attempt_seconds(record, now))
        total += price(record.instance_type, record.capacity, record.az) * seconds / 3600.0
    return round(total, 4)
