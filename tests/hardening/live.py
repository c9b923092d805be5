"""The API as a real server process (uvicorn, run by tests.support.servers.ServerProcess), configured only
through SAMTUNE_ environment variables, with every log line it writes captured in a file."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.servers import ServerProcess

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


def uvicorn_server(
    env: dict[str, str],
    log_path: Path,
    *,
    workers: int = 1,
    log_config: Path | None = None,
    log_level: str = "info",
) -> ServerProcess:
    """`uvicorn app.asgi:app` on a free port, not started yet; stdout and stderr go to `log_path`."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--log-level", log_level]
    if log_config:
        argv += ["--log-config", str(log_config)]
    return ServerProcess(
        argv, port=port, env=env, log_path=log_path, cwd=REPO, stop_signal=signal.SIGINT, name="uvicorn"
    )
