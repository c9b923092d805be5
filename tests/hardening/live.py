"""The API as a real server process (uvicorn), configured only through SAMTUNE_ environment variables, with
every log line it writes captured in a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def debug_logging_config(path: Path) -> Path:
    """A dictConfig that sends every logger, at DEBUG, to stderr in one format: uvicorn's access and error
    logs, the app's `samtune.*` loggers, SQLAlchemy, botocore, multipart parsing."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        },
        "root": {"level": "DEBUG", "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": "DEBUG", "handlers": [], "propagate": True},
            "uvicorn.error": {"level": "DEBUG", "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "DEBUG", "handlers": [], "propagate": True},
            "sqlalchemy.engine": {"level": "DEBUG"},
        },
    }
    path.write_text(json.dumps(config))
    return path


def samtune_env(settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env.update({f"SAMTUNE_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """`uvicorn app.asgi:app` in a child process; stdout and stderr go to `log_path`."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        log_config: Path | None = None,
        log_level: str = "info",
    ) -> None:
        self.env, self.log_path, self.workers = env, log_path, workers
        self.log_config, self.log_level = log_config, log_level
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        cmd += ["--workers", str(self.workers), "--log-level", self.log_level]
        if self.log_config:
            cmd += ["--log-config", str(self.log_config)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"uvicorn did not answer /healthz within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-n:]) if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
