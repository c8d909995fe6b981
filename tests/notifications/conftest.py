"""Fixtures of the notification tests: alice with an email address, a webhook receiver
that is a real HTTP server on 127.0.0.1 (answering as a test scripts it), and a way to
run the notifications sweep as the schedule does."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications import tasks


@pytest.fixture
def alice(alice):
    alice.email = "alice@example.com"
    alice.save(update_fields=["email"])
    return alice


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        """The receiver's check, as docs/guide/notifications.md shows it."""
        signed = self.headers["X-TT-Timestamp"].encode() + b"." + self.body
        expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers["X-TT-Signature"])


@dataclass
class Receiver:
    """A webhook receiver: answers each POST with the next of `answers` (then 204)."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/tt"


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True  # it listens on 127.0.0.1
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append(Received(self.path, dict(self.headers.items()), body))
            status = state.answers.pop(0) if state.answers else 204
            self.send_response(status)
            payload = b"" if status == 204 else f"answer {status}".encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def sweep(run_tasks):
    """Run the notifications schedule once, its tasks inline."""

    def run() -> str:
        with run_tasks():
            return tasks.sweep()

    return run
