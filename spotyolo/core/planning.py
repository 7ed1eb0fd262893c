"""Attempt planning: what the next instance of a job should be, or why there is none.

Shared by Validate job (attempt 1) and Prepare retry (after an interruption, or after a launch
found no capacity). An attempt is one instance's life; its number grows only when an instance
was lost. Launch rounds (NoCapacity / QuotaExceeded backoff) keep the number and count
``launch_waits``. The whole job is bounded by its deadline (``max_hours`` from the first
start), its ``max_interruptions`` and its optional ``max_cost_usd``; an attempt's timeout is
what is left of both, so one attempt cannot outspend the budget (``budget_seconds``).
"""

from __future__ import annotations

import time

from spotyolo.contract.errors import (
    BudgetExceeded,
    ErrorName,
    SpotyoloError,
    TooManyInterruptions,
    error_class,
)
from spotyolo.core.cost import PriceFn, price_fn
from spotyolo.core.models import Attempt, Capacity, CapacityPlan, JobConfig, JobSpec

#: an attempt with less time than this cannot boot, download and train anything useful
MIN_ATTEMPT_SECONDS = 60
#: an attempt the budget cannot pay this long for is not launched: it would boot and be stopped
MIN_PAID_SECONDS = 300
#: the longest single backoff between launch rounds
MAX_LAUNCH_WAIT_SECONDS = 900


def seconds_left(deadline: int, now: float | None = None) -> int:
    """Whole seconds until ``deadline`` (epoch seconds); 0 when it has passed."""
    now = time.time() if now is None else now
    return max(0, int(deadline - now))


def stall_seconds(config: JobConfig) -> int:
    """The job's stall window (``stall_hours``) in whole seconds."""
    return max(1, int(config.stall_hours * 3600))


def heartbeat_seconds(stall: int, left: int) -> int:
    """The attempt's heartbeat window: the stall window, kept below the attempt's timeout
    (``left``) as the States Language requires, for a max_hours shorter than stall_hours or an
    attempt late in the job."""
    return max(1, min(stall, left - 1))


def capacity_for(plan: CapacityPlan, interruptions: int, spot_unavailable: bool = False) -> Capacity:
    """The capacity ladder: ``spot-then-on-demand`` leaves spot after its first loss or shortage."""
    if plan == "on-demand":
        return "on-demand"
    if plan == "spot":
        return "spot"
    return "on-demand" if interruptions > 0 or spot_unavailable else "spot"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h"


def _check_budget(config: JobConfig, deadline: int, cost_usd: float, now: float | None) -> int:
    """Seconds left for the next attempt, or ``BudgetExceeded`` saying which limit was hit."""
    if config.max_cost_usd is not None and cost_usd >= config.max_cost_usd:
        raise BudgetExceeded(
            f"the job has cost about ${cost_usd:.2f}, which reaches its max_cost_usd "
            f"(${config.max_cost_usd:.2f}) in config.yaml; raise max_cost_usd to let it continue"
        )
    left = seconds_left(deadline, now)
    if left < MIN_ATTEMPT_SECONDS:
        raise BudgetExceeded(
            f"the job used its max_hours ({_hours(config.max_hours * 3600)}) in config.yaml: "
            f"{left} s left is too little for another instance; raise max_hours to let it continue"
        )
    return left


def budget_seconds(
    config: JobConfig,
    capacity: Capacity,
    instance_types: list[str],
    cost_usd: float,
    price: PriceFn | None = None,
) -> int | None:
    """How long what is left of ``max_cost_usd`` pays for the attempt (None: no budget).

    At the dearest of its instance types for its capacity: the fleet may launch any of them.
    ``BudgetExceeded`` when that is under ``MIN_PAID_SECONDS``.
    """
    if config.max_cost_usd is None:
        return None
    price = price or price_fn()
    hourly = max(price(t, capacity, None) for t in instance_types)
    left_usd = config.max_cost_usd - cost_usd
    seconds = int(left_usd / hourly * 3600)
    if seconds < MIN_PAID_SECONDS:
        raise BudgetExceeded(
            f"${left_usd:.2f} left of max_cost_usd (${config.max_cost_usd:.2f}) in config.yaml pays for "
            f"{seconds} s of {capacity} {', '.join(instance_types)} at up to ${hourly:.3f}/h, too little "
            "for another instance; raise max_cost_usd to let it continue"
        )
    return seconds


def _timeout(left: int, paid: int | None, wait: int, now: float | None, stall: int) -> dict[str, int]:
    """``seconds_left`` (the smaller of time and money), the stall window below it, and, when
    money bounds it, ``budget_end``."""
    if paid is None or paid >= left:
        return {"seconds_left": left, "heartbeat_seconds": heartbeat_seconds(stall, left)}
    start = time.time() if now is None else now
    return {
        "seconds_left": paid,
        "heartbeat_seconds": heartbeat_seconds(stall, paid),
        "budget_end": int(start + wait + paid),
    }


def first_attempt(
    config: JobConfig,
    instance_types: list[str],
    deadline: int,
    now: float | None = None,
    price: PriceFn | None = None,
    spot_unavailable: bool = False,
) -> Attempt:
    """The plan for attempt 1 (Validate job); ``spot_unavailable``: the account's spot quota
    allows none of the types (``spot-then-on-demand`` starts on demand)."""
    left = _check_budget(config, deadline, 0.0, now)
    capacity = capacity_for(config.capacity, 0, spot_unavailable)
    paid = budget_seconds(config, capacity, instance_types, 0.0, price)
    return Attempt(
        number=1,
        capacity=capacity,
        instance_types=list(instance_types),
        **_timeout(left, paid, 0, now, stall_seconds(config)),
    )


def next_attempt(
    job: JobSpec,
    attempt: Attempt,
    error: str,
    cost_usd: float = 0.0,
    now: float | None = None,
    price: PriceFn | None = None,
) -> Attempt:
    """After ``SpotInterrupted`` / ``InstanceLost``: attempt + 1 on a new instance.

    Raises ``TooManyInterruptions`` past ``max_interruptions`` and ``BudgetExceeded`` when
    time or money is used up.
    """
    interruptions = attempt.interruptions + 1
    limit = job.config.max_interruptions
    if interruptions > limit:
        raise TooManyInterruptions(
            f"{job.name}: {interruptions} interruptions ({error} on attempt {attempt.number}) is more "
            f"than max_interruptions ({limit}) in config.yaml; raise max_interruptions, or use "
            "capacity: spot-then-on-demand (or on-demand) so a retry cannot be interrupted"
        )
    left = _check_budget(job.config, job.deadline, cost_usd, now)
    capacity = capacity_for(job.config.capacity, interruptions)
    paid = budget_seconds(job.config, capacity, attempt.instance_types, cost_usd, price)
    return Attempt(
        number=attempt.number + 1,
        capacity=capacity,
        instance_types=list(attempt.instance_types),
        interruptions=interruptions,
        **_timeout(left, paid, 0, now, job.stall_seconds),
    )


def next_launch_round(
    job: JobSpec,
    attempt: Attempt,
    error: str,
    message: str,
    *,
    backoff_seconds: int,
    max_waits: int,
    cost_usd: float = 0.0,
    now: float | None = None,
    price: PriceFn | None = None,
) -> Attempt:
    """After ``NoCapacity`` / ``QuotaExceeded``: the same attempt, after a growing wait.

    After ``max_waits`` rounds the launch error itself ends the job (its message says what
    was tried). ``spot-then-on-demand`` moves to on-demand when spot has no capacity.
    """
    waits = attempt.launch_waits + 1
    if attempt.launch_waits >= max_waits:
        cls: type[SpotyoloError] = error_class(error)
        raise cls(f"{message} (gave up after {waits} launch tries; try other instance_types or later)")
    wait = min(MAX_LAUNCH_WAIT_SECONDS, backoff_seconds * 2**attempt.launch_waits)
    left = _check_budget(job.config, job.deadline, cost_usd, now)
    if left - wait < MIN_ATTEMPT_SECONDS:
        raise BudgetExceeded(
            f"{message}; waiting {wait} s more for capacity would leave too little of max_hours "
            f"({_hours(job.config.max_hours * 3600)}); raise max_hours or try other instance_types"
        )
    spot_short = error == ErrorName.NO_CAPACITY and attempt.capacity == "spot"
    capacity = capacity_for(job.config.capacity, attempt.interruptions, spot_unavailable=spot_short)
    if attempt.capacity == "on-demand":
        capacity = "on-demand"  # never climb back down the ladder
    paid = budget_seconds(job.config, capacity, attempt.instance_types, cost_usd, price)
    return Attempt(
        number=attempt.number,
        capacity=capacity,
        instance_types=list(attempt.instance_types),
        interruptions=attempt.interruptions,
        launch_waits=waits,
        wait_seconds=wait,
        **_timeout(left - wait, paid, wait, now, job.stall_seconds),
    )


def after_queue(
    job: JobSpec, attempt: Attempt, queued_seconds: float, now: float | None = None
) -> tuple[JobSpec, Attempt]:
    """The job and its attempt once it got an instance slot after ``queued_seconds`` in the queue.

    A queued job pays nothing, so the queue does not eat its budget: ``max_hours`` counts from
    the grant (the deadline moves by the time queued), and so does an attempt bounded by
    ``max_cost_usd`` (its ``budget_end``). How long a job may wait is the queue's own limit
    (``spotyolo.core.slots.QUEUE_TIMEOUT_SECONDS``).
    """
    shift = max(0, int(queued_seconds))
    deadline = job.deadline + shift
    left = max(2, seconds_left(deadline, now))
    budget_end = attempt.budget_end + shift if attempt.budget_end else 0
    seconds = min(attempt.seconds_left, left) if budget_end else left
    replanned = attempt.model_copy(
        update={
            "seconds_left": seconds,
            "heartbeat_seconds": heartbeat_seconds(job.stall_seconds, seconds),
            "budget_end": budget_end,
        }
    )
    return job.model_copy(update={"deadline": deadline}), Attempt.model_validate(replanned.model_dump())
