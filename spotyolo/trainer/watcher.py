"""Watch the instance metadata service (IMDSv2) for a spot interruption notice.

``spot/instance-action`` answers 404 until EC2 decides to take the instance back; then 200
with ``{"action": "terminate", "time": ...}`` about two minutes ahead. Only a 200 naming an
action is a notice: a 404 page, an error or an unreachable service is not. A rebalance
recommendation is logged (it is an early warning, not a deadline).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254/"
TOKEN_TTL = 21600


@dataclass(frozen=True)
class Notice:
    action: str
    #: when EC2 acts, as IMDS writes it (``2026-11-29T23:04:32Z``)
    time: str

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the action (negative once past), or None when ``time`` is unreadable."""
        try:
            when = dt.datetime.strptime(self.time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
        return when.timestamp() - (time.time() if now is None else now)


class MetadataClient:
    """The few IMDSv2 calls the trainer needs (the endpoint botocore uses, overridable)."""

    def __init__(self, endpoint: str | None = None, timeout: float = 2.0) -> None:
        endpoint = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _fetch_token(self) -> str:
        request = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            token: str = response.read().decode()
            return token

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of ``/latest/meta-data/<path>``; refreshes the session token once on 401."""
        for _ in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            request = urllib.request.Request(
                f"{self.endpoint}/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self._token}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as err:
                if err.code == 401:
                    self._token = None
                    continue
                return err.code, err.read().decode(errors="replace")
        return 401, ""

    def get_json(self, path: str) -> dict[str, Any] | None:
        """A 200 answer's JSON object, else None (404 = nothing announced, or not a JSON object)."""
        status, body = self.get(path)
        if status != 200:
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def instance_action(self) -> Notice | None:
        """The interruption notice, or None (404, or a body that names no action)."""
        data = self.get_json("spot/instance-action")
        if not data or not data.get("action"):
            return None
        return Notice(action=str(data["action"]), time=str(data.get("time", "")))

    def rebalance(self) -> str | None:
        data = self.get_json("events/recommendations/rebalance")
        return None if data is None else str(data.get("noticeTime", ""))


class InterruptionWatcher(threading.Thread):
    """Polls every ``interval`` seconds; on a notice sets :attr:`notice` and calls ``on_notice``."""

    def __init__(
        self,
        client: MetadataClient,
        interval: float = 5.0,
        on_notice: Callable[[Notice], None] | None = None,
    ) -> None:
        super().__init__(name="imds-watcher", daemon=True)
        self.client = client
        self.interval = interval
        self.on_notice = on_notice
        self.notice: Notice | None = None
        self.noticed = threading.Event()
        self.polls = 0
        self._stop_event = threading.Event()
        self._rebalance_logged = False
        self._unreachable_logged = False

    def stop(self) -> None:
        self._stop_event.set()

    def poll_once(self) -> Notice | None:
        """One poll of both paths; returns the notice when there is one."""
        self.polls += 1
        try:
            if not self._rebalance_logged:
                when = self.client.rebalance()
                if when is not None:
                    self._rebalance_logged = True
                    log.warning("rebalance recommendation (noticed %s): an interruption may follow", when)
            return self.client.instance_action()
        except (OSError, urllib.error.URLError) as err:
            if not self._unreachable_logged:
                self._unreachable_logged = True
                log.warning("instance metadata service not reachable at %s: %s", self.client.endpoint, err)
            return None

    def run(self) -> None:
        while not self._stop_event.is_set():
            notice = self.poll_once()
            if notice is not None:
                self.notice = notice
                self.noticed.set()
                log.warning("spot interruption notice: action=%s at %s", notice.action, notice.time)
                if self.on_notice is not None:
                    self.on_notice(notice)
                return
            self._stop_event.wait(self.interval)
