"""Servers for the tests. `ServerProcess` is the one way a test runs a server as a child process (samtune up or
serve, uvicorn, moto): started from argv and environment, ready once it answers, stopped at the end, its log
shown when something fails. `LiveServer` runs an app object under uvicorn in a thread of the test process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of `url` answers 200; False while nothing (or something else) answers."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


class ServerProcess:
    """A server in a child process of its own session (a SIGKILL of the group reaches every child it started),
    its stdout and stderr appended to `log_path`. Ready once `url + health_path` answers 200, or, with
    `health_path=None`, once the port takes a connection. Use `with server:` (started on entry, stopped on
    exit, its log printed when the block fails) or start() and stop()."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        health_path: str | None = "/healthz",
        stop_signal: signal.Signals = signal.SIGTERM,
        name: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port, self.log_path, self.env, self.cwd = port, log_path, env, cwd
        self.health_path, self.stop_signal = health_path, stop_signal
        self.name = name or " ".join(self.argv[:3])
        self.url = f"http://127.0.0.1:{port}"
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 90.0, interval: float = 0.25) -> ServerProcess:
        """Start it and wait until it answers; a server that exits or does not answer in time is stopped and
        raises RuntimeError with the end of its log."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime, closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=None if self.env is None else dict(self.env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        target = f"{self.url}{self.health_path}" if self.health_path is not None else f"port {self.port}"
        try:
            wait_until(
                self._ready, timeout=timeout, interval=interval, message=f"{self.name} to answer {target}"
            )
        except (AssertionError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None
        return self

    def _ready(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}")
        if self.health_path is None:
            return port_open(self.port)
        return answers(f"{self.url}{self.health_path}")

    def stop(self, grace: float = 30.0, *, strict: bool = False) -> None:
        """`stop_signal` to the server itself (a supervisor stops its own children), up to `grace` seconds to
        exit, then SIGKILL to its whole group. With `strict`, needing that SIGKILL fails the test: stopping
        cleanly is part of what some tests check."""
        outlived = False
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                outlived = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if outlived and strict:
            raise AssertionError(
                f"{self.name} did not stop within {grace:.0f}s of {self.stop_signal.name}:\n{self.log_tail()}"
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.logs()[-chars:]

    def __enter__(self) -> ServerProcess:
        # `with server.start(timeout=...):` starts it once, with the caller's timeout.
        return self if self.popen is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            # pytest shows a failed test's output: the server's side of the failure.
            print(f"===== {self.name} ({self.log_path}) =====\n{self.log_tail()}")
        self.stop()


class LiveServer:
    """The app under uvicorn in a thread, for clients that must read a response while it is written
    (TestClient hands a streaming body over only once it has ended)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()

        def started() -> bool:
            if not self.server.started and not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            return self.server.started

        try:
            wait_until(started, timeout=30, interval=0.05, message="uvicorn to start")
        except AssertionError:
            raise RuntimeError("uvicorn did not start") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
