"""What a run costs: EC2 hourly prices and the sum over a run's attempts.

Where prices come from (README, "What a job costs"):

- a spot attempt: ``DescribeSpotPriceHistory`` for its instance type and AZ, time-weighted over
  the attempt's interval (the spot price in effect each second it ran);
- an on-demand attempt: the AWS Price List API (``pricing:GetProducts``) for the deployment's
  region, cached per type and region for the life of the process (a warm Lambda);
- only when neither answers (no permission, throttled, the local emulator, which has no Price
  List API): the dated table below, us-east-1 Linux on-demand list prices, with spot estimated
  as ``SPOT_FRACTION`` of it.

An estimate for the notification and for ``max_cost_usd``, not a bill: EBS, data transfer and
the Lambdas/Step Functions (cents per run) are not counted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spotyolo.core.models import AttemptRecord

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset
    from mypy_boto3_ec2 import EC2Client

#: a boto3 ``pricing`` client (its stubs are not installed)
PricingClient = Any

#: when and where the fallback table was read
TABLE_DATE = "2025-06-05"
TABLE_SOURCE = (
    "https://aws.amazon.com/ec2/pricing/on-demand/ (US East (N. Virginia), Linux, USD per hour), "
    "after AWS's June 2025 P4/P5 price reduction"
)
#: the fallback: used only when the Price List API does not answer
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
    # p4d: 8x A100, p5: 8x H100 (June 2025: -33 % and -44 %)
    "p4d.24xlarge": 21.96,
    "p5.48xlarge": 55.04,
}

#: spot price as a fraction of on-demand when no live price is known (GPU spot: ~30-50 %)
SPOT_FRACTION = 0.4
#: price of an unknown type: a mid-range single-GPU machine, so budgets still bite
UNKNOWN_ON_DEMAND = 1.5

PriceFn = Callable[[str, str, str | None], float]

#: the Price List API answers in these regions only (each serves every region's prices)
PRICING_ENDPOINTS = ("us-east-1", "eu-central-1", "ap-south-1")
#: on-demand prices read from the Price List API: (region, type) -> USD per hour
_ON_DEMAND_CACHE: dict[tuple[str, str], float] = {}


def pricing_region(region: str) -> str:
    """The Price List API endpoint nearest ``region``."""
    if region.startswith(("eu-", "me-", "af-", "il-")):
        return "eu-central-1"
    if region.startswith("ap-"):
        return "ap-south-1"
    return "us-east-1"


def on_demand_price(instance_type: str) -> float:
    """The fallback table's price (see :data:`TABLE_DATE`)."""
    return ON_DEMAND_USD_PER_HOUR.get(instance_type, UNKNOWN_ON_DEMAND)


def spot_estimate(instance_type: str) -> float:
    return round(on_demand_price(instance_type) * SPOT_FRACTION, 4)


def price_list_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """The one Linux, shared-tenancy, no-license, on-demand product of ``instance_type``."""
    fields = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "licenseModel": "No License required",
        "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def hourly_from_price_list(price_list: Iterable[str]) -> float | None:
    """The USD hourly on-demand price in GetProducts' ``PriceList`` (JSON strings, aws_v1)."""
    for item in price_list:
        product = json.loads(item)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if dimension.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def listed_on_demand_price(pricing: PricingClient, instance_type: str, region: str) -> float | None:
    """The on-demand price of ``instance_type`` in ``region`` from the Price List API, cached;
    None when it does not answer (the caller falls back to the table)."""
    key = (region, instance_type)
    if key not in _ON_DEMAND_CACHE:
        try:
            response = pricing.get_products(
                ServiceCode="AmazonEC2",
                Filters=price_list_filters(instance_type, region),
                FormatVersion="aws_v1",
                MaxResults=10,
            )
        except Exception:  # no permission, throttled, no Price List API (the emulator)
            return None
        price = hourly_from_price_list(response.get("PriceList", []))
        if price is None:
            return None
        _ON_DEMAND_CACHE[key] = price
    return _ON_DEMAND_CACHE[key]


def live_spot_price(ec2: EC2Client, instance_type: str, az: str | None = None) -> float | None:
    """The newest spot price of ``instance_type`` (in ``az`` if given), or None if unknown."""
    history = _spot_history(ec2, instance_type, az, dt.datetime.now(dt.UTC), None)
    return max(p for _, _, p in history) if history else None


def _spot_history(
    ec2: EC2Client, instance_type: str, az: str | None, start: dt.datetime, end: dt.datetime | None
) -> list[tuple[str, dt.datetime, float]]:
    """(AZ, since, USD per hour) of every spot price in effect from ``start`` to ``end``
    (DescribeSpotPriceHistory also returns the price in effect at ``start``); [] if unknown."""
    kwargs: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": start,
        "MaxResults": 1000,
    }
    if end is not None:
        kwargs["EndTime"] = end
    if az:
        kwargs["AvailabilityZone"] = az
    found: list[tuple[str, dt.datetime, float]] = []
    try:
        for _ in range(10):  # a few pages at most: one attempt spans hours, not years
            page = ec2.describe_spot_price_history(**kwargs)
            for h in page.get("SpotPriceHistory", []):
                if h.get("InstanceType") == instance_type and "Timestamp" in h:
                    stamp = h["Timestamp"]
                    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
                    found.append((h.get("AvailabilityZone", ""), stamp, float(h["SpotPrice"])))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
    except Exception:  # no permission, throttled: fall back to the estimate
        return []
    return found


def time_weighted(points: list[tuple[dt.datetime, float]], start: dt.datetime, end: dt.datetime) -> float:
    """USD per hour averaged over [start, end]: each price counts for the time it was in effect
    (a price set before ``start`` is in effect until the next one)."""
    points = sorted(points)
    seconds = (end - start).total_seconds()
    if seconds <= 0:
        before = [p for t, p in points if t <= start]
        return before[-1] if before else points[0][1]
    total = 0.0
    for i, (since, price) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        lo, hi = max(since, start), min(until, end)
        if i == 0:
            lo = start  # the earliest price known covers the time before it too
        if hi > lo:
            total += price * (hi - lo).total_seconds()
    return total / seconds


class Prices:
    """Hourly prices for one deployment (see the module docstring for the sources). Called as
    a :data:`PriceFn` it gives the price now (the budget of the next attempt);
    :meth:`attempt_usd` gives what a finished or running attempt cost."""

    def __init__(
        self, ec2: EC2Client | None = None, pricing: PricingClient | None = None, region: str | None = None
    ) -> None:
        self.ec2, self.pricing = ec2, pricing
        self.region = region or (ec2.meta.region_name if ec2 is not None else None) or "us-east-1"
        self._spot_now: dict[tuple[str, str | None], float] = {}

    def on_demand(self, instance_type: str) -> float:
        listed = listed_on_demand_price(self.pricing, instance_type, self.region) if self.pricing else None
        return listed if listed is not None else on_demand_price(instance_type)

    def __call__(self, instance_type: str, capacity: str, az: str | None) -> float:
        if capacity != "spot":
            return self.on_demand(instance_type)
        if (instance_type, az) not in self._spot_now:
            live = live_spot_price(self.ec2, instance_type, az) if self.ec2 is not None else None
            self._spot_now[(instance_type, az)] = live if live is not None else spot_estimate(instance_type)
        return self._spot_now[(instance_type, az)]

    def attempt_usd(self, record: AttemptRecord, seconds: float, now: dt.datetime | None = None) -> float:
        """USD for ``seconds`` of the attempt's instance, from its start."""
        hourly = self.on_demand(record.instance_type or "")
        start = _parse(record.start)
        if record.capacity == "spot" and record.instance_type and start is not None:
            end = start + dt.timedelta(seconds=seconds)
            history = _spot_history(self.ec2, record.instance_type, record.az, start, end) if self.ec2 else []
            by_az: dict[str, list[tuple[dt.datetime, float]]] = {}
            for az, since, price in history:
                by_az.setdefault(az, []).append((since, price))
            # the AZ is known once launched; without it, the dearest AZ (a budget must not undercount)
            weighted = [time_weighted(points, start, end) for points in by_az.values()]
            hourly = max(weighted) if weighted else spot_estimate(record.instance_type)
        return hourly * seconds / 3600.0


def price_fn(
    ec2: EC2Client | None = None, pricing: PricingClient | None = None, region: str | None = None
) -> Prices:
    """The prices of this deployment: live where the clients can tell, else the table."""
    return Prices(ec2, pricing, region)


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
        if isinstance(price, Prices):
            total += price.attempt_usd(record, seconds, now)
        else:
            total += price(record.instance_type, record.capacity, record.az) * seconds / 3600.0
    return round(total, 4)


@dataclass(frozen=True)
class CostReport:
    """What a run cost, what the same attempts would have cost on-demand, and the saving: said
    in the notification, ``status`` and ``weights/<job>/metrics.json``."""

    cost_usd: float
    #: the same attempts' seconds at the on-demand price of their instance types
    on_demand_usd: float
    #: how many launched attempts ran on spot
    spot_attempts: int

    @property
    def saving_pct(self) -> int | None:
        """Percent less than on-demand; None when no attempt ran on spot or nothing was saved."""
        if not self.spot_attempts or self.on_demand_usd <= 0 or self.cost_usd >= self.on_demand_usd:
            return None
        return round(100 * (1 - self.cost_usd / self.on_demand_usd))

    def words(self) -> str:
        """``$0.83 on spot, 68% less than on-demand``; ``$2.10 on-demand`` when no spot ran."""
        if not self.spot_attempts:
            return f"${self.cost_usd:.2f} on-demand"
        saving = self.saving_pct
        return f"${self.cost_usd:.2f} on spot" + (f", {saving}% less than on-demand" if saving else "")

    def as_metrics(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "on_demand_usd": self.on_demand_usd, "saving_pct": self.saving_pct}


def cost_report(
    attempts: Iterable[AttemptRecord],
    price: PriceFn | None = None,
    now: dt.datetime | None = None,
    cost_usd: float | None = None,
) -> CostReport:
    """The run's :class:`CostReport`; ``cost_usd`` when the spend is already recorded (the job
    table), else :func:`run_cost` with ``price``."""
    records = list(attempts)
    price = price or price_fn()
    on_demand = price.on_demand if isinstance(price, Prices) else on_demand_price
    spent = run_cost(records, price, now) if cost_usd is None else cost_usd
    equivalent = run_cost(records, lambda kind, _capacity, _az: on_demand(kind), now)
    spot = sum(1 for r in records if r.instance_type and r.start and r.capacity == "spot")
    return CostReport(cost_usd=round(spent, 4), on_demand_usd=equivalent, spot_attempts=spot)
