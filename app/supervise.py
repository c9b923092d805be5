"""`samtune up`: the API, one worker and beat as one supervised process group.

A child that dies is restarted (with a growing pause if it keeps dying); SIGINT/SIGTERM stop them all.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

logger = logging.getLogger("samtune.supervise")

MAX_BACKOFF_S = 30.0
# A child that ran this long before dying is considered healthy again: its backoff resets.
HEALTHY_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    next_start: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d)", self.name, self.process.pid)


def supervise(children: list[Child], *, poll_s: float = 0.5) -> int:
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for child in children:
        child.start()
    try:
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
