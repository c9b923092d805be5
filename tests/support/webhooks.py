"""A webhook receiver: a real HTTP server that answers as told and records what it received."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waiting import wait_until


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    answered: int
    at: float


@dataclass
class WebhookReceiver:
    """A real HTTP server in a thread: answers each POST with the next status of `script` (then 200) and
    records what it received."""

    script: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = receiver.script.pop(0) if receiver.script else 200
                receiver.deliveries.append(
                    Delivery(body, {k.lower(): v for k, v in self.headers.items()}, code, time.monotonic())
                )
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self, *script: int) -> None:
        """Answer the next POSTs with these statuses (then 200), forgetting what was received."""
        self.script[:] = list(script)
        self.deliveries.clear()

    def wait_for(self, n: int, timeout: float) -> list[Delivery]:
        """The deliveries once there are `n`, or those there are after `timeout`: the caller's assertions on
        them say what was missing."""
        with contextlib.suppress(AssertionError):
            wait_until(lambda: len(self.deliveries) >= n, timeout=timeout, interval=0.05)
        return self.deliveries
