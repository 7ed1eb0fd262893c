"""The fake metadata service speaks IMDSv2 like EC2, and the watcher reacts only to a real notice."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest

from spotyolo.local.imds import FakeMetadataService
from spotyolo.trainer.watcher import InterruptionWatcher, MetadataClient


@pytest.fixture
def imds():
    with FakeMetadataService(instance_id="i-0abc", tags={"job": "shapes", "attempt": "2"}) as service:
        yield service


def _open(request: urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_session_token_is_required_like_imdsv2(imds: FakeMetadataService):
    status, _ = _open(urllib.request.Request(imds.url + "latest/meta-data/instance-id"))
    assert status == 401
    status, _ = _open(urllib.request.Request(imds.url + "latest/api/token", method="PUT"))
    assert status == 400  # the TTL header is mandatory
    put = urllib.request.Request(
        imds.url + "latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    status, token = _open(put)
    assert status == 200 and token
    get = urllib.request.Request(
        imds.url + "latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
    )
    assert _open(get) == (200, "i-0abc")


def test_client_reads_instance_facts_and_tags(imds: FakeMetadataService):
    client = MetadataClient(imds.url)
    assert client.get("instance-id") == (200, "i-0abc")
    assert client.get("tags/instance/attempt") == (200, "2")
    status, body = client.get("spot/instance-action")
    assert status == 404 and "404 - Not Found" in body  # an HTML page, not JSON
    assert client.instance_action() is None


def test_watcher_ignores_404_then_reacts_to_a_notice(imds: FakeMetadataService):
    seen = []
    watcher = InterruptionWatcher(MetadataClient(imds.url), interval=0.02, on_notice=seen.append)
    watcher.start()
    try:
        deadline = time.monotonic() + 5
        while watcher.polls < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.polls >= 10 and watcher.notice is None and not seen  # ten 404s: no notice
        imds.announce_interruption()
        assert watcher.noticed.wait(5)
    finally:
        watcher.stop()
        watcher.join(5)  # `noticed` is set before the callback runs: let it finish
    assert watcher.notice is not None and watcher.notice.action == "terminate"
    assert seen == [watcher.notice]
    statuses = {status for _, path, status in imds.requests if path.endswith("spot/instance-action")}
    assert statuses == {404, 200}


def test_a_200_without_an_action_is_not_a_notice(imds: FakeMetadataService, monkeypatch: pytest.MonkeyPatch):
    client = MetadataClient(imds.url)
    monkeypatch.setattr(imds, "_value", lambda path: (200, "text/plain", json.dumps({"time": "x"})))
    assert client.instance_action() is None
    monkeypatch.setattr(imds, "_value", lambda path: (200, "text/plain", "not json"))
    assert client.instance_action() is None


def test_rebalance_is_logged_once_and_is_not_a_notice(
    imds: FakeMetadataService, caplog: pytest.LogCaptureFixture
):
    watcher = InterruptionWatcher(MetadataClient(imds.url), interval=0.01)
    imds.announce_rebalance()
    with caplog.at_level(logging.WARNING, logger="spotyolo.trainer.watcher"):
        assert watcher.poll_once() is None
        assert watcher.poll_once() is None
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "rebalance" in r.message)
    ) == 1


def test_unreachable_service_is_no_notice(caplog: pytest.LogCaptureFixture):
    watcher = InterruptionWatcher(MetadataClient("http://127.0.0.1:9", timeout=0.2), interval=0.01)
    with caplog.at_level(logging.WARNING, logger="spotyolo.trainer.watcher"):
        assert watcher.poll_once() is None
        assert watcher.poll_once() is None
    assert sum("not reachable" in r.message for r in caplog.records) == 1


def test_token_expiry_is_handled_by_refetching(imds: FakeMetadataService):
    client = MetadataClient(imds.url)
    assert client.get("instance-id")[0] == 200
    imds._tokens.clear()  # the session token expired
    assert client.get("instance-id") == (200, "i-0abc")
