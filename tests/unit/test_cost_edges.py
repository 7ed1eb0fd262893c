"""What a run costs, as ``max_cost_usd`` and the notification count it: each launched attempt's
seconds (a minute at least) at its own type, capacity and zone; attempts that never got an
instance cost nothing. Prices come from the caller (``price``), so the sums are exact."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from spotyolo.core.cost import attempt_seconds, run_cost
from spotyolo.core.models import AttemptRecord

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(start: float | None, end: float | None, **kw: object) -> AttemptRecord:
    return AttemptRecord.model_validate(
        {
            "number": 1,
            "capacity": "spot",
            "instance_type": "g5.xlarge",
            "start": None if start is None else at(start),
            "end": None if end is None else at(end),
            **kw,
        }
    )


def priced(calls: list[tuple[str, str, str | None]] | None = None):  # type: ignore[no-untyped-def]
    prices = {("g5.xlarge", "spot"): 0.6, ("g5.xlarge", "on-demand"): 1.2, ("g6.xlarge", "spot"): 0.3}

    def price(instance_type: str, capacity: str, az: str | None) -> float:
        if calls is not None:
            calls.append((instance_type, capacity, az))
        return prices[(instance_type, capacity)]

    return price


def test_each_attempt_is_paid_at_its_own_type_capacity_and_zone() -> None:
    calls: list[tuple[str, str, str | None]] = []
    records = [
        record(0, 60, az="us-east-1a"),  # 1 h spot g5: $0.60
        record(60, 90, capacity="on-demand", az="us-east-1b"),  # 30 min on-demand g5: $0.60
        record(90, 210, instance_type="g6.xlarge"),  # 2 h spot g6: $0.60
    ]
    assert run_cost(records, priced(calls)) == pytest.approx(1.8)
    assert calls == [
        ("g5.xlarge", "spot", "us-east-1a"),
        ("g5.xlarge", "on-demand", "us-east-1b"),
        ("g6.xlarge", "spot", None),
    ]


def test_an_attempt_that_never_got_an_instance_costs_nothing() -> None:
    no_capacity = AttemptRecord(number=1, capacity="spot", outcome="NoCapacity")
    no_start = record(None, 30)
    no_type = record(0, 60, instance_type=None)
    assert run_cost([no_capacity, no_start, no_type], priced()) == 0.0


def test_an_instance_is_paid_for_a_minute_at_least_then_by_the_second() -> None:
    assert run_cost([record(0, 0.5)], priced()) == pytest.approx(0.6 / 60)  # 30 s billed as 60 s
    assert run_cost([record(0, 1)], priced()) == pytest.approx(0.6 / 60)
    assert run_cost([record(0, 2)], priced()) == pytest.approx(0.6 / 30)
    assert run_cost([record(0, 10)], priced()) == pytest.approx(0.1)


def test_a_running_attempt_is_paid_until_now() -> None:
    running = record(0, None)
    assert run_cost([running], priced(), now=T0 + dt.timedelta(hours=2)) == pytest.approx(1.2)
    assert attempt_seconds(running, now=T0 + dt.timedelta(minutes=5)) == 300
    started_now = AttemptRecord.model_validate(
        {"number": 1, "capacity": "spot", "start": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    assert 0 <= attempt_seconds(started_now) < 5


def test_times_are_read_as_utc_and_never_negative() -> None:
    assert attempt_seconds(record(0, 90)) == 5400
    assert attempt_seconds(record(30, 0)) == 0.0  # a clock skew never refunds
    assert attempt_seconds(record(None, 30)) == 0.0
    offset = AttemptRecord(
        number=1, capacity="spot", start="2026-11-01T00:00:00+00:00", end="2026-11-01T01:00:00Z"
    )
    assert attempt_seconds(offset) == 3600


def test_the_cost_is_rounded_to_a_hundredth_of_a_cent() -> None:
    assert run_cost([record(0, 61)], lambda t, c, az: 1.0) == round(61 / 60, 4)


class SpotHistory:
    """describe_spot_price_history as EC2 answers it (or fails: no permission, throttled)."""

    meta = SimpleNamespace(region_name="us-east-1")

    def __init__(self, history: list[dict[str, str]] | None = None, error: Exception | None = None) -> None:
        self.history, self.error = history or [], error
        self.calls: list[dict[str, object]] = []

    def describe_spot_price_history(self, **kw: object) -> dict[str, object]:
        self.calls.append(kw)
        if self.error:
            raise self.error
        return {"SpotPriceHistory": self.history}


def test_a_live_spot_price_is_the_current_one_of_that_type_and_the_dearest_zone() -> None:
    from spotyolo.core.cost import price_fn

    now = dt.datetime.now(dt.UTC)
    ec2 = SpotHistory(
        [
            {
                "InstanceType": "g5.xlarge",
                "SpotPrice": "0.45",
                "AvailabilityZone": "us-east-1a",
                "Timestamp": now,
            },
            {
                "InstanceType": "g5.xlarge",
                "SpotPrice": "0.39",
                "AvailabilityZone": "us-east-1b",
                "Timestamp": now,
            },
            {
                "InstanceType": "g6.xlarge",
                "SpotPrice": "0.10",
                "AvailabilityZone": "us-east-1a",
                "Timestamp": now,
            },
        ]  # type: ignore[list-item]
    )
    price = price_fn(ec2)  # type: ignore[arg-type]
    # without a zone, the dearest: a budget must not undercount; another type's price never counts
    assert price("g5.xlarge", "spot", None) == 0.45
    assert price("g5.xlarge", "spot", None) == 0.45  # asked once per type and zone
    (call,) = ec2.calls
    assert call["InstanceTypes"] == ["g5.xlarge"] and "AvailabilityZone" not in call
    assert call["ProductDescriptions"] == ["Linux/UNIX"]
    price("g5.xlarge", "spot", "us-east-1b")
    assert ec2.calls[1]["AvailabilityZone"] == "us-east-1b"


def test_without_a_live_spot_price_spot_is_estimated_from_on_demand() -> None:
    from spotyolo.core.cost import SPOT_FRACTION, on_demand_price, price_fn

    estimate = round(on_demand_price("g5.xlarge") * SPOT_FRACTION, 4)
    for ec2 in (SpotHistory([]), SpotHistory(error=RuntimeError("AccessDenied")), None):
        assert price_fn(ec2)("g5.xlarge", "spot", "us-east-1a") == estimate  # type: ignore[arg-type]
    assert 0 < estimate < on_demand_price("g5.xlarge")


def test_on_demand_is_never_priced_as_spot_and_an_unknown_type_still_costs_money() -> None:
    from spotyolo.core.cost import UNKNOWN_ON_DEMAND, on_demand_price, price_fn

    ec2 = SpotHistory(
        [{"InstanceType": "g5.xlarge", "SpotPrice": "0.01", "Timestamp": dt.datetime.now(dt.UTC)}]
    )  # type: ignore[dict-item]
    assert price_fn(ec2)("g5.xlarge", "on-demand", None) == on_demand_price("g5.xlarge") > 0.01  # type: ignore[arg-type]
    assert ec2.calls == []
    assert on_demand_price("x9.unknown") == UNKNOWN_ON_DEMAND > 0


def test_the_spot_price_request_is_one_ec2_accepts() -> None:
    import boto3
    from botocore.stub import ANY, Stubber

    from spotyolo.core.cost import price_fn

    ec2 = boto3.client("ec2", region_name="us-east-1")
    expected = {
        "InstanceTypes": ["g5.xlarge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": ANY,  # now: the current price of each zone, not the history
        "MaxResults": 1000,
        "AvailabilityZone": "us-east-1a",
    }
    answer = {
        "SpotPriceHistory": [
            {
                "InstanceType": "g5.xlarge",
                "SpotPrice": "0.33",
                "AvailabilityZone": "us-east-1a",
                "Timestamp": dt.datetime.now(dt.UTC),
            }
        ]
    }
    with Stubber(ec2) as stub:  # validates the parameters against EC2's API model
        stub.add_response("describe_spot_price_history", answer, expected)
        assert price_fn(ec2)("g5.xlarge", "spot", "us-east-1a") == 0.33
        stub.assert_no_pending_responses()


def test_an_answer_without_a_price_list_falls_back_to_the_estimate() -> None:
    from spotyolo.core.cost import price_fn, spot_estimate

    class Empty:
        meta = SimpleNamespace(region_name="us-east-1")

        def describe_spot_price_history(self, **kw: object) -> dict[str, object]:
            return {}

    assert price_fn(Empty())("g6.xlarge", "spot", None) == spot_estimate("g6.xlarge")  # type: ignore[arg-type]


def test_each_type_has_its_own_on_demand_price() -> None:
    from spotyolo.core.cost import on_demand_price

    assert on_demand_price("g4dn.xlarge") < on_demand_price("g5.xlarge") < on_demand_price("p4d.24xlarge")


def test_a_launch_round_without_capacity_does_not_hide_the_attempts_after_it() -> None:
    refused = AttemptRecord(number=1, capacity="spot", outcome="NoCapacity")
    launched = record(0, 60, capacity="on-demand")  # the next round got an instance: 1 h at $1.20
    assert run_cost([refused, launched], priced()) == pytest.approx(1.2)
    assert run_cost([launched, refused, record(60, 120)], priced()) == pytest.approx(1.8)
