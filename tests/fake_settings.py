"""Deployment settings for tests that call step logic directly (placeholders for the rest)."""

from __future__ import annotations

from typing import Any

from spotyolo.contract.env import Settings


def make_settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "bucket": "test-bucket",
        "job_table": "test-jobs",
        "slot_table": "test-slots",
        "topic_arn": "arn:aws:sns:us-east-1:123456789012:test-topic",
        "trainer_image": "local",
        "launch_template_id": "lt-test",
        "subnet_ids": ["subnet-test"],
    }
    return Settings(**{**base, **values})
