"""`samtune up`: the inference service, the API, one worker and beat as one supervised process group.

A child that dies is restarted (with a growing pause if it keeps dying); SIGINT/SIGTERM stop them all. At the
first start, a child with a `ready_url` is waited for (up to READY_WAIT_S) before the next starts: the API
forwards predictions to the inference service and should not meet it half-started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("samtune.supervise")

MAX_BACKOFF_S = 30.0
READY_WAIT_S = 120.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local child, never via a proxy
# A child that ran this long before dying is considered healthy again: its backoff resets.
HEALTHY_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    next_start: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=os.environ | self.env if self.env else None)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d)", self.name, self.process.pid)


def supervise(children: list[Child], *, poll_s: float = 0.5) -> int:
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        for child in children:
            if stopping:
                break
            child.start()
            if child.ready_url:
                _wait_ready(child, lambda: stopping)
        while not stopping:
            now = time.monotonic()
            for child in children:
                proc = child.process
                if proc is not None and proc.poll() is not None:
                    ran = now - child.started_at
                    child.backoff = 0.5 if ran > HEALTHY_AFTER_S else min(child.backoff * 2, MAX_BACKOFF_S)
                    child.next_start = now + child.backoff
                    logger.warning(
                        "%s exited with %s; restarting in %.1fs", child.name, proc.returncode, child.backoff
                    )
                    child.process = None
                if child.process is None and now >= child.next_start:
                    child.restarts += 1
                    child.start()
            time.sleep(poll_s)
    finally:
        _terminate(children)
    return 0


def _wait_ready(child: Child, stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    assert child.ready_url is not None
    while time.monotonic() < deadline and not stopping():
        if child.process is not None and child.process.poll() is not None:
            return  # it died: the loop below restarts it
        try:
            with _DIRECT.open(child.ready_url, timeout=2):
                return
        except OSError:  # refused while it starts, or an HTTP error
            time.sleep(0.25)
    logger.warning("%s did not answer %s within %.0fs; starting the others anyway", child.name,
                   child.ready_url, READY_WAIT_S)  # fmt: skip


def _terminate(children: list[Child], grace_s: float = 30.0) -> None:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def samtune_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]
