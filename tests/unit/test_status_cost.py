"""What `spotyolo status` says a job cost: the same numbers as the notification (one
computation, ``core/cost.cost_report``), in the table and in one job's detail."""

from __future__ import annotations

import datetime as dt

from spotyolo.cli.status import detail_text, job_row, jobs_table
from spotyolo.core.models import AttemptRecord, JobItem

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def attempt(number: int, capacity: str, hours: float, outcome: str = "succeeded") -> AttemptRecord:
    start = T0 + dt.timedelta(hours=number - 1)
    return AttemptRecord(
        number=number,
        capacity=capacity,
        instance="i-1",
        instance_type="g5.xlarge",
        az="us-east-1a",
        start=start.isoformat(),
        end=(start + dt.timedelta(hours=hours)).isoformat(),
        outcome=outcome,
    )


def detail(row: dict[str, object]) -> dict[str, object]:
    return {**row, "run_id": "r1", "execution": None, "attempts": [], "states": [], "plots": []}


def test_status_shows_the_recorded_cost_and_what_spot_saved() -> None:
    item = JobItem(job="shapes", status="complete", attempts=[attempt(1, "spot", 1.0)], cost_usd=0.33)
    row = job_row(item, now=T0 + dt.timedelta(hours=2))
    assert (row["cost_usd"], row["on_demand_usd"], row["saving_percent"]) == (0.33, 1.006, 67)
    assert row["cost"] == "$0.33 on spot, 67% less than on-demand"
    assert "$0.33 (-67%)" in jobs_table([row])
    assert "  cost $0.33 on spot, 67% less than on-demand (on-demand $1.01) · " in detail_text(detail(row))


def test_status_of_a_run_all_on_demand_claims_no_saving() -> None:
    item = JobItem(job="pets", status="complete", attempts=[attempt(1, "on-demand", 0.5)])
    row = job_row(item, now=T0 + dt.timedelta(hours=2))
    assert row["saving_percent"] is None and row["cost"] == "$0.50 on-demand"
    assert "(-" not in jobs_table([row]) and "less than" not in detail_text(detail(row))


def test_status_shows_a_queued_jobs_place_and_how_many_are_ahead() -> None:
    """Issue 12: a job waiting for an instance slot says where it is in the queue."""
    queued = JobItem(
        job="pets",
        status="queued",
        execution="arn:x",
        queue={"ticket": 7, "position": 3, "ahead": 2, "running": 2, "slots": 2},
    )
    row = job_row(queued, now=T0)
    assert row["queue"] == {"position": 3, "ahead": 2, "running": 2, "slots": 2}
    assert "queued 3 (2 ahead)" in jobs_table([row])
    assert "queued for an instance: 3rd in line (2 jobs ahead) · 2/2 instances running" in detail_text(
        detail(row)
    )
    # once it holds a slot, the queue is no longer shown
    training = JobItem.model_validate(
        {**queued.model_dump(), "status": "training", "queue": {"ticket": 7, "granted": "now"}}
    )
    assert job_row(training, now=T0)["queue"] is None


def test_spotyolo_local_prints_a_queued_jobs_place_when_it_changes() -> None:
    import io

    from spotyolo.local.cli import Console, Follower

    places = iter([(2, 1), (2, 1), (1, 0)])

    class Engine:
        def job_item(self, job: str) -> JobItem:
            position, ahead = next(places)
            queue = {"ticket": 9, "position": position, "ahead": ahead, "running": 2, "slots": 2}
            return JobItem(job=job, status="queued", execution="arn:x", queue=queue)

    out = io.StringIO()
    follower = Follower(Engine(), Console(stream=out), "pets", {"States": {}})
    for _ in range(3):
        follower._table()
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == [
        "  queued for an instance: 2nd in line (1 job ahead) · 2/2 instances running",
        "  queued for an instance: 1st in line (0 jobs ahead) · 2/2 instances running",
    ]
