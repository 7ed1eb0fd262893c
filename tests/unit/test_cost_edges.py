"""What a run costs, as ``max_cost_usd`` and the notification count it: each launched attempt's
seconds (a minute at least) at its own type, capacity and zone; attempts that never got an
instance cost nothing. Prices come from the caller (``price``), so the sums are exact."""

from __future__ import annotations

import datetime as dt

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
