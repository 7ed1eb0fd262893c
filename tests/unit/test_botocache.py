"""The shared botocore model cache: a new session gets the models already parsed, unchanged."""

from __future__ import annotations

import boto3
import botocore.session

from spotyolo.local import botocache


def test_a_new_session_reuses_the_parsed_models_and_they_still_work() -> None:
    botocache.install()
    botocache.install()  # idempotent: not wrapped twice
    first = botocore.session.get_session().get_component("data_loader")
    second = botocore.session.get_session().get_component("data_loader")
    assert first is not second
    assert first.load_service_model("ec2", "service-2") is second.load_service_model("ec2", "service-2")
    assert first.load_data("endpoints") is second.load_data("endpoints")

    client = boto3.session.Session().client("ec2", region_name="us-east-1")
    assert client.meta.service_model.operation_model("CreateFleet").name == "CreateFleet"
    assert client.meta.region_name == "us-east-1"
