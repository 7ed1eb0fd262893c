"""The fault campaign of the instance-slot queue (issue 9's campaign over issue 12's queue):
several jobs in an account whose quota allows one instance, under a seed's faults, with the
queue's own invariants checked (spotyolo/local/queuecampaign.py).

The single-job campaign's schedules must not move: ``spotyolo local JOB --chaos SEED`` draws
what it drew before the queue campaign existed (the tables in bench/README.md and CI's seeds
name them)."""

from __future__ import annotations

import hashlib
import json

import pytest

from spotyolo.local.chaos import draw_schedule

pytestmark = pytest.mark.chaos


def _canonical(seed: int, epochs: int) -> list[object]:
    schedule = draw_schedule(seed, epochs)
    faults = [[str(f.kind), f.target, f.nth, f.param, f.caller, f.service, f.status] for f in schedule.faults]
    return [schedule.prior_weights, faults]


#: seeds 0-200 of the single-job campaign, for a 2-, 3- and 100-epoch job (sha256 of their plans,
#: drawn before the queue campaign was added)
PINNED = {
    2: "513a55b07f97cf270c4f564b529c5a89863889d4be4b78548aff65d2a11af221",
    3: "6b124203e3c2e9f5800d9a51b89d25c2a49b5d79ef4326dbce8a4347eb4c2b1b",
    100: "ed2578e5ed0d1da8f6f7ce5a4500678f6bc7093c6c81982543bbb8f4c6ac45b9",
}


def test_the_single_job_schedules_are_those_drawn_before_the_queue_campaign() -> None:
    # CI's seeds (3, 10) and the seeds bench/README.md tells of (2, 17, 30, 48), in words
    assert _canonical(3, 2) == [True, [
        ["lambda_error_before", "prepare_retry", 1, "TooManyRequestsException", "", "", 400],
        ["spot_notice", "boot", 1, "", "", "", 400],
    ]]  # fmt: skip
    assert _canonical(10, 2) == [False, [
        ["lambda_twice", "launch", 1, "", "", "", 400],
        ["lambda_error_after", "check_result", 1, "TooManyRequestsException", "", "", 400],
        ["event_delay", "instance-state", 1, "1.1", "", "", 400],
        ["lambda_twice", "launch", 1, "", "", "", 400],
    ]]  # fmt: skip
    assert _canonical(2, 2) == [False, [["spot_notice", "checkpoint 2", 1, "", "", "", 400]]]
    assert _canonical(17, 2) == [False, [
        ["cancel", "download", 1, "", "", "", 400],
        ["throttle", "SendTaskHeartbeat", 3, "ThrottlingException", "trainer", "states", 400],
        ["event_delay", "config-created", 1, "0.9", "", "", 400],
    ]]  # fmt: skip
    assert _canonical(30, 2) == [False, [
        ["event_delay", "config-created", 1, "2.7", "", "", 400],
        ["takeover", "checkpoint 1", 1, "", "", "", 400],
        ["lambda_error_after", "validate", 1, "ServiceException", "", "", 400],
    ]]  # fmt: skip
    assert _canonical(48, 2) == [False, [
        ["event_duplicate", "instance-state", 1, "2.4", "", "", 400],
        ["instance_lost", "final", 1, "", "", "", 400],
    ]]  # fmt: skip
    for epochs, digest in PINNED.items():
        plans = json.dumps([_canonical(seed, epochs) for seed in range(201)])
        assert hashlib.sha256(plans.encode()).hexdigest() == digest, f"{epochs}-epoch schedules moved"
