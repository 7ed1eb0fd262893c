"""What an attempt costs: spot from DescribeSpotPriceHistory (time-weighted over the attempt),
on-demand from the Price List API (cached), the dated table only as the fallback."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber

from spotyolo.core import cost
from spotyolo.core.models import AttemptRecord

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def record(
    capacity: str, hours: float, instance_type: str = "g5.xlarge", az: str | None = "eu-west-1a"
) -> AttemptRecord:
    return AttemptRecord(
        number=1,
        capacity=capacity,
        instance_type=instance_type,
        az=az,
        start=T0.isoformat(),
        end=(T0 + dt.timedelta(hours=hours)).isoformat(),
    )


def price_list_item(instance_type: str, region: str, usd: str) -> str:
    """One GetProducts PriceList entry, in the shape the Price List API returns (aws_v1)."""
    sku = "8JBQ9XYGUN5T8ZQU"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "capacitystatus": "Used",
                    "preInstalledSw": "NA",
                    "licenseModel": "No License required",
                    "servicecode": "AmazonEC2",
                    "usagetype": f"EU-BoxUsage:{instance_type}",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                                "appliesTo": [],
                                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-02-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20260201000000",
            "publicationDate": "2026-02-01T00:00:00Z",
        }
    )


def filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """The one Linux, shared-tenancy, no-license, on-demand product: any other filter matches the
    Windows, dedicated or reserved-capacity price of the same type."""
    fields = [
        ("instanceType", instance_type),
        ("regionCode", region),
        ("operatingSystem", "Linux"),
        ("tenancy", "Shared"),
        ("preInstalledSw", "NA"),
        ("licenseModel", "No License required"),
        ("capacitystatus", "Used"),
    ]
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in fields]


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cost._ON_DEMAND_CACHE.clear()


def test_on_demand_comes_from_the_price_list_api_for_the_deployment_region_and_is_cached() -> None:
    pricing = boto3.client(
        "pricing",
        region_name=cost.pricing_region("eu-west-1"),
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    assert pricing.meta.region_name == "eu-central-1"
    with Stubber(pricing) as stub:
        stub.add_response(
            "get_products",
            {
                "FormatVersion": "aws_v1",
                "PriceList": [price_list_item("g5.xlarge", "eu-west-1", "1.1230000000")],
            },
            {
                "ServiceCode": "AmazonEC2",
                "Filters": filters("g5.xlarge", "eu-west-1"),
                "FormatVersion": "aws_v1",
                "MaxResults": 10,
            },
        )
        prices = cost.price_fn(None, pricing, "eu-west-1")
        assert prices("g5.xlarge", "on-demand", None) == 1.123  # not the table's us-east-1 1.006
        assert cost.run_cost([record("on-demand", 2.0)], prices) == pytest.approx(2.246)
        # cached: a second costing asks nothing (the Stubber would refuse an unexpected call)
        assert cost.price_fn(None, pricing, "eu-west-1").on_demand("g5.xlarge") == 1.123
        stub.assert_no_pending_responses()


def test_without_the_price_list_api_the_dated_table_is_the_fallback() -> None:
    pricing = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(pricing) as stub:
        stub.add_client_error("get_products", "AccessDeniedException", "not allowed")
        assert (
            cost.price_fn(None, pricing, "us-east-1").on_demand("p5.48xlarge")
            == cost.ON_DEMAND_USD_PER_HOUR["p5.48xlarge"]
        )
    assert cost.TABLE_DATE >= "2025-06-01" and "aws.amazon.com" in cost.TABLE_SOURCE
    assert cost.ON_DEMAND_USD_PER_HOUR["p5.48xlarge"] < 98.32  # after the June 2025 price cut
    assert cost.ON_DEMAND_USD_PER_HOUR["p4d.24xlarge"] < 32.773


def test_a_spot_attempt_is_costed_at_the_prices_in_effect_while_it_ran() -> None:
    ec2 = boto3.client("ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    history = [  # newest first, as EC2 returns it; the first is in effect at the start
        {
            "AvailabilityZone": "eu-west-1a",
            "InstanceType": "g5.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.600000",
            "Timestamp": T0 + dt.timedelta(hours=1),
        },
        {
            "AvailabilityZone": "eu-west-1a",
            "InstanceType": "g5.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.300000",
            "Timestamp": T0 - dt.timedelta(hours=5),
        },
    ]
    with Stubber(ec2) as stub:
        stub.add_response(
            "describe_spot_price_history",
            {"SpotPriceHistory": history},
            {
                "InstanceTypes": ["g5.xlarge"],
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": T0,
                "EndTime": T0 + dt.timedelta(hours=3),
                "MaxResults": 1000,
                "AvailabilityZone": "eu-west-1a",
            },
        )
        # 1 h at 0.30, then 2 h at 0.60: 1.50, not 3 h at today's price
        assert cost.run_cost([record("spot", 3.0)], cost.price_fn(ec2)) == pytest.approx(1.5)


def test_time_weighting() -> None:
    points = [(T0 + dt.timedelta(minutes=30), 2.0), (T0 - dt.timedelta(days=1), 1.0)]
    assert cost.time_weighted(points, T0, T0 + dt.timedelta(hours=1)) == pytest.approx(1.5)
    assert cost.time_weighted([(T0 + dt.timedelta(hours=2), 4.0)], T0, T0 + dt.timedelta(hours=1)) == 4.0
    assert (
        cost.pricing_region("ap-northeast-1") == "ap-south-1"
        and cost.pricing_region("ca-central-1") == "us-east-1"
    )


def test_spot_without_any_price_history_is_estimated_from_the_table() -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ec2) as stub:
        stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "no")
        usd = cost.run_cost([record("spot", 1.0, az="us-east-1a")], cost.price_fn(ec2))
    assert usd == pytest.approx(cost.spot_estimate("g5.xlarge"))


# ------------------------------------------------------------------ the saving a user reads


def test_the_saving_is_against_the_same_seconds_on_demand() -> None:
    # no EC2 client: spot is the table's estimate, SPOT_FRACTION (40 %) of on-demand
    report = cost.cost_report([record("spot", 2.0)], cost.price_fn())
    assert report.on_demand_usd == pytest.approx(2 * 1.006)
    assert report.cost_usd == pytest.approx(2 * 1.006 * 0.4)
    assert report.saving_pct == 60
    assert report.words() == "$0.80 on spot, 60% less than on-demand"
    assert report.as_metrics() == {"cost_usd": 0.8048, "on_demand_usd": 2.012, "saving_pct": 60}


def test_a_run_all_on_demand_claims_no_saving() -> None:
    report = cost.cost_report([record("on-demand", 1.0, "g4dn.xlarge")], cost.price_fn())
    assert report.cost_usd == report.on_demand_usd == pytest.approx(0.526)
    assert report.saving_pct is None
    assert report.words() == "$0.53 on-demand"
    assert report.as_metrics()["saving_pct"] is None


def test_a_spot_then_on_demand_run_saves_on_the_spot_part_only() -> None:
    spot, on_demand = record("spot", 1.0), record("on-demand", 1.0)
    report = cost.cost_report([spot, on_demand], cost.price_fn())
    assert report.on_demand_usd == pytest.approx(2 * 1.006)
    assert report.saving_pct == 30  # 1.4 hours' worth of 2 on-demand hours
    assert report.words() == "$1.41 on spot, 30% less than on-demand"


def test_a_recorded_cost_is_compared_with_the_on_demand_equivalent() -> None:
    report = cost.cost_report([record("spot", 1.0)], cost.price_fn(), cost_usd=0.25)
    assert (report.cost_usd, report.saving_pct) == (0.25, 75)
    dear = cost.cost_report([record("spot", 1.0)], cost.price_fn(), cost_usd=2.0)
    assert dear.saving_pct is None and dear.words() == "$2.00 on spot"  # never a negative saving
    never_launched = AttemptRecord(number=1, capacity="spot")
    assert cost.cost_report([never_launched]).words() == "$0.00 on-demand"


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("eu-west-1", "eu-central-1"),
        ("me-south-1", "eu-central-1"),
        ("af-south-1", "eu-central-1"),
        ("il-central-1", "eu-central-1"),
        ("ap-northeast-1", "ap-south-1"),
        ("us-west-2", "us-east-1"),
        ("sa-east-1", "us-east-1"),
    ],
)
def test_the_price_list_api_is_asked_at_its_endpoint_nearest_the_region(region: str, endpoint: str) -> None:
    assert cost.pricing_region(region) == endpoint


def _spot(az: str, usd: str, at: dt.datetime) -> dict[str, object]:
    return {
        "AvailabilityZone": az,
        "InstanceType": "g5.xlarge",
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": usd,
        "Timestamp": at,
    }


def test_an_attempt_without_its_zone_is_costed_at_the_dearest_zone_over_every_page() -> None:
    """EC2 pages the spot price history: every page is read, and each zone's prices are weighted
    apart (the dearest zone counts: a budget must not undercount)."""
    ec2 = boto3.client("ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    asked = {
        "InstanceTypes": ["g5.xlarge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": T0,
        "EndTime": T0 + dt.timedelta(hours=2),
        "MaxResults": 1000,
    }
    with Stubber(ec2) as stub:
        page = [_spot("eu-west-1a", "0.300000", T0 - dt.timedelta(hours=5))]
        stub.add_response("describe_spot_price_history", {"SpotPriceHistory": page, "NextToken": "n1"}, asked)
        page = [_spot("eu-west-1b", "0.500000", T0 - dt.timedelta(hours=6))]
        stub.add_response(
            "describe_spot_price_history", {"SpotPriceHistory": page}, {**asked, "NextToken": "n1"}
        )
        spent = cost.run_cost([record("spot", 2.0, az=None)], cost.price_fn(ec2))
        stub.assert_no_pending_responses()
    assert spent == pytest.approx(1.0)  # 2 h at eu-west-1b's 0.50, not eu-west-1a's 0.30


def test_the_price_of_an_instant_and_of_prices_that_change_during_an_attempt() -> None:
    h = dt.timedelta(hours=1)
    points = [(T0 - 2 * h, 0.2), (T0 - h, 0.3), (T0, 0.4), (T0 + h, 0.5)]
    assert cost.time_weighted(points, T0, T0) == 0.4  # the price set at that instant
    assert cost.time_weighted(points[:2], T0, T0) == 0.3  # the last one set before it
    assert cost.time_weighted([(T0 + h, 0.5), (T0 + 2 * h, 0.6)], T0, T0) == 0.5  # none before: the first
    changes = [(T0 - h, 0.3), (T0 + h, 0.6), (T0 + 2 * h, 0.9)]
    assert cost.time_weighted(changes, T0, T0 + 3 * h) == pytest.approx(0.6)  # an hour at each
    second = dt.timedelta(seconds=1)
    assert cost.time_weighted([(T0 - h, 0.3), (T0 + second / 2, 0.6)], T0, T0 + second) == pytest.approx(0.45)


def test_the_hourly_price_is_the_first_positive_price_per_hour_of_the_product() -> None:
    item = json.loads(price_list_item("g5.xlarge", "us-east-1", "0.5260000000"))
    (term,) = item["terms"]["OnDemand"].values()
    (real,) = term["priceDimensions"].values()
    term["priceDimensions"] = {
        "upfront": {**real, "unit": "Quantity", "pricePerUnit": {"USD": "100.0000000000"}},
        "free": {**real, "pricePerUnit": {"USD": "0.0000000000"}},
        "hourly": real,
    }
    assert cost.hourly_from_price_list([json.dumps(item)]) == 0.526


def test_each_type_and_region_has_its_own_listed_price() -> None:
    pricing = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(pricing) as stub:
        for kind, usd in (("g5.xlarge", "1.2340000000"), ("g6.xlarge", "0.9870000000")):
            stub.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": [price_list_item(kind, "us-east-1", usd)]},
                {
                    "ServiceCode": "AmazonEC2",
                    "Filters": filters(kind, "us-east-1"),
                    "FormatVersion": "aws_v1",
                    "MaxResults": 10,
                },
            )
        prices = cost.price_fn(None, pricing)  # no region and no EC2 client: us-east-1
        assert (prices.on_demand("g5.xlarge"), prices.on_demand("g6.xlarge")) == (1.234, 0.987)
        stub.assert_no_pending_responses()


def test_the_deployments_region_is_the_ec2_clients() -> None:
    cost._ON_DEMAND_CACHE[("eu-west-1", "g5.xlarge")] = 1.123
    ec2 = boto3.client("ec2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert cost.price_fn(ec2, pricing=object()).on_demand("g5.xlarge") == 1.123  # type: ignore[arg-type]


def test_the_cost_report_uses_the_prices_and_the_time_it_is_given() -> None:
    """A running attempt is costed until ``now``; spent at the given prices, its on-demand
    equivalent at the listed on-demand price; a recorded spend is reported to the cent's hundredth."""
    running = AttemptRecord(
        number=1, capacity="spot", instance_type="g5.xlarge", az="eu-west-1a", start=T0.isoformat()
    )
    report = cost.cost_report([running], lambda kind, capacity, az: 0.5, now=T0 + dt.timedelta(hours=2))
    assert (report.cost_usd, report.on_demand_usd, report.spot_attempts) == (
        1.0,
        round(2 * cost.ON_DEMAND_USD_PER_HOUR["g5.xlarge"], 4),
        1,
    )
    cost._ON_DEMAND_CACHE[("eu-west-1", "g5.xlarge")] = 1.123
    listed = cost.price_fn(None, pricing=object(), region="eu-west-1")  # type: ignore[arg-type]
    report = cost.cost_report([record("on-demand", 2.0)], listed, cost_usd=1.23456)
    assert (report.cost_usd, report.on_demand_usd, report.spot_attempts) == (1.2346, 2.246, 0)
