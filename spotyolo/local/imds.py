"""A fake EC2 instance metadata service (IMDSv2) for the trainer's tests and the local engine.

The trainer watches ``spot/instance-action`` through IMDSv2, exactly as on EC2; pointing
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` at :attr:`FakeMetadataService.url` lets the local
engine (and the tests) announce a spot interruption to one "instance" without touching code.
Like the real service it wants a session token (``PUT /latest/api/token``) on every GET and
answers 404 for the notices until one is announced.

    imds = FakeMetadataService(instance_id="i-0123456789abcdef0", tags={"job": "shapes"})
    imds.start()
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.url
    ...
    imds.announce_interruption()      # spot/instance-action -> 200 {"action": "terminate", ...}
    imds.stop()
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_PATH = "/latest/api/token"
META = "/latest/meta-data/"
INSTANCE_ACTION = "spot/instance-action"
REBALANCE = "events/recommendations/rebalance"

#: the body EC2 serves for a path that has no value yet (a 404 page, not JSON)
NOT_FOUND_PAGE = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    " <head>\n  <title>404 - Not Found</title>\n </head>\n <body>\n  <h1>404 - Not Found</h1>\n"
    " </body>\n</html>\n"
)


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeMetadataService:
    """A threaded HTTP server on 127.0.0.1 speaking the IMDSv2 subset the pipeline uses."""

    def __init__(
        self,
        instance_id: str = "i-00000000000000000",
        *,
        tags: dict[str, str] | None = None,
        availability_zone: str = "us-east-1a",
        instance_type: str = "g5.xlarge",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.instance_id = instance_id
        self.tags = dict(tags or {})
        self.availability_zone = availability_zone
        self.instance_type = instance_type
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._instance_action: dict[str, str] | None = None
        self._rebalance: dict[str, str] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: (method, path, status) of every request, for tests that check how the service was used
        self.requests: list[tuple[str, str, int]] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeMetadataService:
        if self._server is not None:
            return self
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stdout
                pass

            def do_PUT(self) -> None:
                service._handle(self, "PUT")

            def do_GET(self) -> None:
                service._handle(self, "GET")

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-imds", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeMetadataService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint for ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (``http://127.0.0.1:<port>/``)."""
        if self._server is None:
            raise RuntimeError("FakeMetadataService is not started: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    # ------------------------------------------------------------ announcements

    def announce_interruption(self, action: str = "terminate", *, in_seconds: int = 120) -> None:
        """Serve a spot interruption notice (EC2 gives about two minutes of warning)."""
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=in_seconds)
        with self._lock:
            self._instance_action = {"action": action, "time": _iso(when)}

    def announce_rebalance(self) -> None:
        """Serve a rebalance recommendation (an elevated risk of interruption, no deadline)."""
        with self._lock:
            self._rebalance = {"noticeTime": _iso(dt.datetime.now(dt.UTC))}

    def clear(self) -> None:
        """Withdraw both notices (a fresh instance)."""
        with self._lock:
            self._instance_action = None
            self._rebalance = None

    # ------------------------------------------------------------ serving

    def _value(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for a GET of ``/latest/meta-data/<path>``."""
        with self._lock:
            action, rebalance = self._instance_action, self._rebalance
        text = "text/plain"
        if path == INSTANCE_ACTION:
            return (200, text, json.dumps(action)) if action else (404, "text/html", NOT_FOUND_PAGE)
        if path == REBALANCE:
            return (200, text, json.dumps(rebalance)) if rebalance else (404, "text/html", NOT_FOUND_PAGE)
        simple = {
            "instance-id": self.instance_id,
            "instance-type": self.instance_type,
            "placement/availability-zone": self.availability_zone,
            "placement/region": self.availability_zone[:-1],
            "instance-life-cycle": "spot",
        }
        if path in simple:
            return 200, text, simple[path]
        if path in ("tags/instance", "tags/instance/"):
            return 200, text, "\n".join(sorted(self.tags))
        if path.startswith("tags/instance/") and path[len("tags/instance/") :] in self.tags:
            return 200, text, self.tags[path[len("tags/instance/") :]]
        if path == "":
            return 200, text, "\n".join(["instance-id", "instance-type", "placement/", "spot/", "tags/"])
        return 404, "text/html", NOT_FOUND_PAGE

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = request.path.split("?", 1)[0]
        status, ctype, body = 404, "text/html", NOT_FOUND_PAGE
        if method == "PUT" and path == TOKEN_PATH:
            ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                status, ctype, body = 400, "text/plain", "Bad Request: token TTL header missing or invalid"
            else:
                token = secrets.token_urlsafe(32)
                with self._lock:
                    self._tokens.add(token)
                status, ctype, body = 200, "text/plain", token
        elif method == "PUT":
            status, ctype, body = 405, "text/plain", "Method Not Allowed"
        elif path.startswith(META) or path == META.rstrip("/"):
            presented = request.headers.get("X-aws-ec2-metadata-token")
            with self._lock:
                known = presented is not None and presented in self._tokens
            if not known:  # IMDSv2 required, as the launch template sets it
                status, ctype, body = 401, "text/plain", "Unauthorized"
            else:
                status, ctype, body = self._value(path[len(META) :])
        self.requests.append((method, path, status))
        payload = body.encode()
        request.send_response(status)
        request.send_header("Content-Type", ctype)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)
