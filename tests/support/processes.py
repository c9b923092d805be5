"""Long-running samtune processes (workers, beat, an API) that tests start, kill and stop together."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class Proc:
    """A child process in its own process group (so that a kill reaches the Celery prefork children too),
    its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.done = False
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.popen = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            assert self.alive() or re.search(pattern, self.log()), (
                f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-3000:]}"
            )
            return re.search(pattern, self.log())

        return wait_until(seen, timeout=timeout, interval=0.25, message=f"{self.name} to log {pattern!r}")

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole group: the parent and every child at once, no cleanup anywhere."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._log.close()
        self.done = True

    def stop(self, grace: float = 15) -> None:
        """SIGTERM (a Celery worker's warm shutdown), then SIGKILL to what is left of the group."""
        if self.done:
            return
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()
        self.done = True


def stop_together(*procs: Proc) -> None:
    for proc in procs:
        if not proc.done:
            proc.signal_group(signal.SIGTERM)
    for proc in procs:
        proc.stop()
