"""Attempt planning as a user meets it: which capacity each attempt gets, how long it may run,
and which limit ends the job (with a message that says which). Pure functions, fixed clock."""

from __future__ import annotations

from typing import Any

import pytest

from spotyolo.contract.errors import BudgetExceeded, NoCapacity, QuotaExceeded, TooManyInterruptions
from spotyolo.core import planning
from spotyolo.core.models import Attempt, JobConfig, JobSpec

NOW = 1_800_000_000.0
TYPES = ["g5.xlarge", "g6.xlarge"]


def job(hours_left: float = 10, stall: int = 600, **config: Any) -> JobSpec:
    cfg = JobConfig.model_validate({"model": "yolo11n.yaml", **config})
    return JobSpec(
        name="shapes",
        bucket="bkt",
        run_id="run-a",
        execution="exec",
        config=cfg,
        dataset={"bytes": 1, "files": 1},
        instance_types=TYPES,
        deadline=int(NOW + hours_left * 3600),
        stall_seconds=stall,
    )


def first(j: JobSpec, price: Any = None) -> Attempt:
    return planning.first_attempt(j.config, j.instance_types, j.deadline, now=NOW, price=price)


def interrupted(j: JobSpec, a: Attempt, **kw: Any) -> Attempt:
    return planning.next_attempt(j, a, "SpotInterrupted", now=kw.pop("now", NOW), **kw)


def launch_round(j: JobSpec, a: Attempt, error: str = "NoCapacity", **kw: Any) -> Attempt:
    kw.setdefault("backoff_seconds", 30)
    kw.setdefault("max_waits", 5)
    return planning.next_launch_round(j, a, error, "EC2 said no", now=kw.pop("now", NOW), **kw)


def flat(usd_per_hour: float) -> Any:
    return lambda instance_type, capacity, az: usd_per_hour


# ------------------------------------------------------------------ the capacity ladder

# plan -> capacity of: attempt 1, attempt 2 (after an interruption), attempt 1's second launch
# round after spot had no capacity, after the account's quota said no
LADDER = [
    ("spot", "spot", "spot", "spot", "spot"),
    ("on-demand", "on-demand", "on-demand", "on-demand", "on-demand"),
    ("spot-then-on-demand", "spot", "on-demand", "on-demand", "spot"),
]


@pytest.mark.parametrize(("plan", "first_cap", "after_loss", "after_no_capacity", "after_quota"), LADDER)
def test_each_capacity_plan_through_the_ladder(
    plan: str, first_cap: str, after_loss: str, after_no_capacity: str, after_quota: str
) -> None:
    j = job(capacity=plan)
    a1 = first(j)
    assert a1.capacity == first_cap
    assert interrupted(j, a1).capacity == after_loss
    assert interrupted(j, interrupted(j, a1)).capacity == after_loss  # and stays there
    assert launch_round(j, a1, "NoCapacity").capacity == after_no_capacity
    assert launch_round(j, a1, "QuotaExceeded").capacity == after_quota


def test_an_on_demand_attempt_never_drops_back_to_spot_between_launch_rounds() -> None:
    j = job(capacity="spot-then-on-demand")
    moved = launch_round(j, first(j), "NoCapacity")  # spot had none: on-demand
    assert moved.capacity == "on-demand"
    for error in ("QuotaExceeded", "NoCapacity"):
        assert launch_round(j, moved, error).capacity == "on-demand"


def test_a_spot_job_stays_on_spot_even_when_spot_has_no_capacity() -> None:
    j = job(capacity="spot")
    a = first(j)
    for _ in range(3):
        a = launch_round(j, a, "NoCapacity")
        assert a.capacity == "spot"


@pytest.mark.parametrize("plan", ["spot", "on-demand", "spot-then-on-demand"])
def test_capacity_for_each_plan_and_history(plan: str) -> None:
    fresh = planning.capacity_for(plan, 0)  # type: ignore[arg-type]
    lost = planning.capacity_for(plan, 1)  # type: ignore[arg-type]
    short = planning.capacity_for(plan, 0, spot_unavailable=True)  # type: ignore[arg-type]
    expected = {
        "spot": ("spot", "spot", "spot"),
        "on-demand": ("on-demand", "on-demand", "on-demand"),
        "spot-then-on-demand": ("spot", "on-demand", "on-demand"),
    }[plan]
    assert (fresh, lost, short) == expected


# ------------------------------------------------------------------ attempts and launch rounds


def test_an_interruption_starts_the_next_attempt_on_the_same_types() -> None:
    j = job(max_interruptions=3)
    a1 = first(j)
    assert (a1.number, a1.interruptions, a1.launch_waits, a1.wait_seconds) == (1, 0, 0, 0)
    assert a1.instance_types == TYPES and a1.seconds_left == 10 * 3600
    a2 = interrupted(j, a1)
    assert (a2.number, a2.interruptions, a2.launch_waits, a2.wait_seconds) == (2, 1, 0, 0)
    assert a2.instance_types == TYPES and a2.seconds_left == 10 * 3600
    assert interrupted(j, a2).interruptions == 2


def test_a_launch_round_keeps_the_attempt_and_its_interruption_count() -> None:
    j = job(max_interruptions=2, capacity="spot")
    a2 = interrupted(j, first(j))
    waited = launch_round(j, a2, "NoCapacity", backoff_seconds=30)
    assert (waited.number, waited.interruptions, waited.launch_waits, waited.wait_seconds) == (2, 1, 1, 30)
    assert waited.instance_types == TYPES
    # the count survives the round: two more losses reach max_interruptions (2)
    a3 = interrupted(j, launch_round(j, waited, "QuotaExceeded"))
    assert a3.interruptions == 2
    with pytest.raises(TooManyInterruptions):
        interrupted(j, launch_round(j, a3))


def test_launch_rounds_wait_longer_each_time_up_to_fifteen_minutes() -> None:
    j = job()
    a = first(j)
    waits = []
    for _ in range(7):
        a = launch_round(j, a, backoff_seconds=30, max_waits=10)
        waits.append(a.wait_seconds)
    assert waits == [30, 60, 120, 240, 480, 900, 900]
    assert [a.launch_waits] == [7]


@pytest.mark.parametrize(("error", "cls"), [("NoCapacity", NoCapacity), ("QuotaExceeded", QuotaExceeded)])
def test_after_max_waits_rounds_the_launch_error_itself_ends_the_job(error: str, cls: type) -> None:
    j = job()
    a = first(j)
    a = launch_round(j, a, error, max_waits=2)
    a = launch_round(j, a, error, max_waits=2)
    assert a.launch_waits == 2
    with pytest.raises(cls, match=r"^EC2 said no \(gave up after 3 launch tries; try other instance_types"):
        launch_round(j, a, error, max_waits=2)


@pytest.mark.parametrize(("limit", "losses_allowed"), [(0, 0), (1, 1), (3, 3)])
def test_max_interruptions_is_how_many_losses_a_job_survives(limit: int, losses_allowed: int) -> None:
    j = job(max_interruptions=limit, capacity="spot")
    a = first(j)
    for _ in range(losses_allowed):
        a = interrupted(j, a)
    message = (
        rf"shapes: {limit + 1} interruptions \(InstanceLost on attempt {limit + 1}\) is more than "
        rf"max_interruptions \({limit}\) in config.yaml"
    )
    with pytest.raises(TooManyInterruptions, match=message):
        planning.next_attempt(j, a, "InstanceLost", now=NOW)


# ------------------------------------------------------------------ the time budget (max_hours)


def test_an_attempt_gets_what_is_left_of_max_hours() -> None:
    j = job(hours_left=2)
    assert first(j).seconds_left == 7200
    late = interrupted(j, first(j), now=NOW + 7200 - 600)
    assert late.seconds_left == 600 and late.budget_end == 0


@pytest.mark.parametrize(("left", "refused"), [(59, True), (60, False), (0, True), (-100, True)])
def test_a_minute_is_the_least_an_attempt_is_started_with(left: int, refused: bool) -> None:
    j = job(hours_left=1, max_hours=1)
    at = j.deadline - left
    if refused:
        message = rf"max_hours \(1 h\) in config.yaml: {max(left, 0)} s left is too little"
        with pytest.raises(BudgetExceeded, match=message):
            interrupted(j, first(j), now=at)
    else:
        assert interrupted(j, first(j), now=at).seconds_left == 60


@pytest.mark.parametrize(
    ("left", "wait", "refused"),
    [(200, 150, True), (209, 150, True), (210, 150, False), (4000, 900, False)],
)
def test_waiting_for_capacity_never_outlasts_max_hours(left: int, wait: int, refused: bool) -> None:
    j = job(hours_left=3, max_hours=3)
    a = first(j)
    at = j.deadline - left
    if refused:
        message = (
            rf"^EC2 said no; waiting {wait} s more for capacity would leave too little of max_hours "
            r"\(3 h\); raise max_hours or try other instance_types"
        )
        with pytest.raises(BudgetExceeded, match=message):
            launch_round(j, a, backoff_seconds=wait, now=at)
    else:
        waited = launch_round(j, a, backoff_seconds=wait, now=at)
        # the wait is spent before the launch: the attempt gets what is left after it
        assert (waited.wait_seconds, waited.seconds_left) == (wait, left - wait)
        assert waited.heartbeat_seconds == min(600, left - wait - 1)


def test_the_stall_window_is_stall_hours_kept_below_the_timeout() -> None:
    j = job(hours_left=1, stall=600, stall_hours=600 / 3600)
    assert first(j).heartbeat_seconds == 600
    late = interrupted(j, first(j), now=j.deadline - 300)
    assert (late.seconds_left, late.heartbeat_seconds) == (300, 299)
    assert planning.heartbeat_seconds(600, 1) == 1
    assert planning.heartbeat_seconds(5, 100) == 5
    assert planning.stall_seconds(JobConfig(model="m.yaml", stall_hours=0.5)) == 1800
    assert planning.stall_seconds(JobConfig(model="m.yaml", stall_hours=0.0001)) == 1


def test_seconds_left_counts_down_to_zero() -> None:
    assert planning.seconds_left(1000, now=400.5) == 599
    assert planning.seconds_left(1000, now=1000) == 0
    assert planning.seconds_left(1000, now=5000) == 0


# ------------------------------------------------------------------ the money budget (max_cost_usd)


def test_no_max_cost_usd_means_only_time_bounds_an_attempt() -> None:
    j = job(hours_left=5)
    a = first(j, price=flat(1000.0))
    assert a.seconds_left == 5 * 3600 and a.budget_end == 0
    assert planning.budget_seconds(j.config, "spot", TYPES, 0.0, flat(1000.0)) is None


def test_the_budget_pays_for_the_dearest_of_the_types_at_the_attempts_capacity() -> None:
    prices = {("g5.xlarge", "spot"): 0.5, ("g6.xlarge", "spot"): 2.0, ("g5.xlarge", "on-demand"): 4.0}

    def price(instance_type: str, capacity: str, az: str | None) -> float:
        return prices.get((instance_type, capacity), 1.0)

    cfg = JobConfig(model="m.yaml", max_cost_usd=10.0)
    assert planning.budget_seconds(cfg, "spot", TYPES, 0.0, price) == 5 * 3600  # $10 at $2/h
    assert planning.budget_seconds(cfg, "on-demand", TYPES, 0.0, price) == 9000  # $10 at $4/h
    assert planning.budget_seconds(cfg, "spot", TYPES, 6.0, price) == 2 * 3600  # $4 left at $2/h


@pytest.mark.parametrize(("spent", "refused"), [(700.0, False), (701.0, True), (999.0, True)])
def test_an_attempt_the_budget_pays_under_five_minutes_for_is_not_launched(
    spent: float, refused: bool
) -> None:
    cfg = JobConfig(model="m.yaml", max_cost_usd=1000.0)
    per_second = flat(3600.0)  # $1 a second
    if refused:
        message = (
            rf"\${1000 - spent:.2f} left of max_cost_usd \(\$1000.00\) in config.yaml pays for "
            rf"{int(1000 - spent)} s of spot g5.xlarge, g6.xlarge at up to \$3600.000/h"
        )
        with pytest.raises(BudgetExceeded, match=message):
            planning.budget_seconds(cfg, "spot", TYPES, spent, per_second)
    else:
        assert planning.budget_seconds(cfg, "spot", TYPES, spent, per_second) == 300


@pytest.mark.parametrize(("spent", "refused"), [(9.99, False), (10.0, True), (12.5, True)])
def test_a_job_that_has_cost_max_cost_usd_is_stopped(spent: float, refused: bool) -> None:
    j = job(hours_left=5, max_cost_usd=10.0)
    a = first(j, price=flat(0.001))
    if refused:
        message = rf"the job has cost about \${spent:.2f}, which reaches its max_cost_usd \(\$10.00\)"
        with pytest.raises(BudgetExceeded, match=message):
            interrupted(j, a, cost_usd=spent, price=flat(0.001))
        with pytest.raises(BudgetExceeded, match=message):
            launch_round(j, a, cost_usd=spent, price=flat(0.001))
    else:
        assert interrupted(j, a, cost_usd=spent, price=flat(0.001)).number == 2


def test_money_that_runs_out_before_time_ends_the_attempt_at_budget_end() -> None:
    j = job(hours_left=10, max_cost_usd=2.0, stall_hours=600 / 3600)
    a1 = first(j, price=flat(1.0))  # $2 at $1/h: 2 h of 10
    assert (a1.seconds_left, a1.budget_end) == (7200, int(NOW + 7200))
    assert a1.heartbeat_seconds == 600
    a2 = interrupted(j, a1, cost_usd=1.5, price=flat(1.0))  # $0.50 left: 30 min
    assert (a2.seconds_left, a2.budget_end) == (1800, int(NOW + 1800))
    # waiting for capacity costs nothing: the paid time starts after the wait
    waited = launch_round(j, a1, cost_usd=1.5, price=flat(1.0), backoff_seconds=120)
    assert (waited.seconds_left, waited.budget_end) == (1800, int(NOW + 120 + 1800))


def test_when_time_runs_out_first_max_hours_ends_the_attempt() -> None:
    j = job(hours_left=1, max_cost_usd=100.0)
    a = first(j, price=flat(1.0))  # $100 pays for 100 h; 1 h left
    assert (a.seconds_left, a.budget_end) == (3600, 0)
    exact = job(hours_left=1, max_cost_usd=1.0)
    b = first(exact, price=flat(1.0))  # money and time end together: max_hours says so
    assert (b.seconds_left, b.budget_end) == (3600, 0)


# ------------------------------------------------------------------ what the messages say


def test_the_refusals_end_with_what_to_do() -> None:
    j = job(max_interruptions=0)
    with pytest.raises(TooManyInterruptions) as many:
        interrupted(j, first(j))
    assert str(many.value).endswith(
        "raise max_interruptions, or use capacity: spot-then-on-demand (or on-demand) so a retry cannot "
        "be interrupted"
    )
    cfg = JobConfig(model="m.yaml", max_cost_usd=1.0)
    with pytest.raises(BudgetExceeded) as poor:
        planning.budget_seconds(cfg, "spot", TYPES, 0.99, flat(1.0))
    assert str(poor.value).endswith("too little for another instance; raise max_cost_usd to let it continue")


@pytest.mark.parametrize(
    ("max_hours", "shown"), [(1.0049, "1 h"), (1.00514, "1.01 h"), (0.5, "0.5 h"), (36, "36 h")]
)
def test_max_hours_is_named_as_the_user_wrote_it(max_hours: float, shown: str) -> None:
    j = job(hours_left=max_hours, max_hours=max_hours)
    with pytest.raises(BudgetExceeded, match=rf"the job used its max_hours \({shown}\) in config.yaml"):
        interrupted(j, first(j), now=j.deadline - 10)
    with pytest.raises(BudgetExceeded, match=rf"too little of max_hours \({shown}\)"):
        launch_round(j, first(j), now=j.deadline - 100, backoff_seconds=60)


def test_the_budget_is_priced_at_the_capacity_the_attempt_gets() -> None:
    def price(instance_type: str, capacity: str, az: str | None) -> float:
        return {"spot": 1.0, "on-demand": 4.0}[capacity]

    spot = job(capacity="spot", max_cost_usd=2.0)
    on_demand = job(capacity="on-demand", max_cost_usd=2.0)
    ladder = job(capacity="spot-then-on-demand", max_cost_usd=2.0)
    assert first(spot, price).seconds_left == 7200  # $2 at $1/h
    assert first(on_demand, price).seconds_left == 1800  # $2 at $4/h
    assert interrupted(ladder, first(ladder, price), price=price).seconds_left == 1800  # now on-demand
    assert launch_round(ladder, first(ladder, price), price=price).seconds_left == 1800
    assert launch_round(spot, first(spot, price), "QuotaExceeded", price=price).seconds_left == 7200


def test_nothing_spent_yet_leaves_the_whole_budget() -> None:
    j = job(max_cost_usd=2.0)
    a = first(j, flat(1.0))
    assert planning.next_attempt(j, a, "InstanceLost", now=NOW, price=flat(1.0)).seconds_left == 7200
    waited = planning.next_launch_round(
        j, a, "NoCapacity", "none", backoff_seconds=30, max_waits=3, now=NOW, price=flat(1.0)
    )
    assert waited.seconds_left == 7200


def test_without_a_clock_given_plans_count_from_now() -> None:
    import time

    now = time.time()
    assert 98 <= planning.seconds_left(int(now) + 100) <= 100
    cfg = JobConfig(model="m.yaml", max_cost_usd=2.0)
    a = planning.first_attempt(cfg, TYPES, int(now) + 36000, price=flat(1.0))
    assert a.seconds_left == 7200 and abs(a.budget_end - (now + 7200)) < 5
    assert planning.stall_seconds(JobConfig(model="m.yaml", stall_hours=1)) == 3600


@pytest.mark.parametrize(
    ("capacity", "starts"),
    [("spot-then-on-demand", "on-demand"), ("spot", "spot"), ("on-demand", "on-demand")],
)
def test_a_job_whose_spot_quota_allows_none_starts_where_its_plan_says(capacity: str, starts: str) -> None:
    """Validate found the account's spot quota allows none of the types: ``spot-then-on-demand``
    starts on demand at once; a ``spot`` job stays on spot (it never moves to on-demand)."""
    j = job(capacity=capacity)
    a = planning.first_attempt(j.config, j.instance_types, j.deadline, now=NOW, spot_unavailable=True)
    assert a.capacity == starts
    assert first(j).capacity == ("on-demand" if capacity == "on-demand" else "spot")


def test_a_time_bound_attempt_granted_after_a_wait_gets_the_whole_max_hours_from_the_grant() -> None:
    """Without a money bound the attempt's timeout is all of max_hours left at the grant (the
    deadline moved by the wait), and its heartbeat the stall window below it."""
    j = job(hours_left=1, stall=600)
    a = Attempt(number=1, capacity="spot", instance_types=TYPES, seconds_left=900, heartbeat_seconds=899)
    moved_job, moved = planning.after_queue(j, a, 1800, now=NOW + 1800)
    assert moved_job.deadline == j.deadline + 1800
    assert (moved.seconds_left, moved.heartbeat_seconds, moved.budget_end) == (3600, 600, 0)


def test_a_job_granted_with_no_time_left_gets_the_shortest_valid_attempt() -> None:
    """Its deadline passed (a grant long after the wait was accounted): a 2 s timeout above a
    1 s heartbeat, as the States Language requires, which ends the attempt at once."""
    j = job(hours_left=1)
    a = first(j)
    _, moved = planning.after_queue(j, a, 0, now=NOW + 7200)
    assert (moved.seconds_left, moved.heartbeat_seconds) == (2, 1)
