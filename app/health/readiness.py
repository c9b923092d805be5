"""What `/readyz` checks: every dependency a request may need (the database, the broker jobs are sent through,
object storage, the live-feed Redis and the inference services when configured), each with its own status, so
that a readiness probe or compose's `depends_on` sends traffic only to an API that can serve it, and an operator
sees which dependency is down. `/healthz` stays the liveness check: a dependency that is down makes this API
not ready, never a process to restart.

Checks run at the same time, each bounded by `CHECK_TIMEOUT_S`; a failure is reported by its kind only (the
exception's class, an HTTP status), since the answer is public and a driver's message can name hosts and users.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
import httpx
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from app.core.storage import ObjectStorage
from app.settings import Settings

logger = logging.getLogger("samtune.health")

CHECK_TIMEOUT_S = 3.0
Status = Literal["ok", "error", "not configured"]


class CheckResult(BaseModel):
    status: Status
    seconds: float = Field(description="How long the check took.")
    detail: str | None = Field(default=None, description="What failed, by kind (no host names or secrets).")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, CheckResult] = Field(
        description="database, broker, storage, live_feed (Redis, when SAMTUNE_REDIS_URL is set) and inference "
        "(the services of SAMTUNE_INFERENCE_URLS; 'not configured' when predictions run in this process)."
    )


def _database(engine: Engine) -> str | None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return None


def _broker(settings: Settings) -> str | None:
    if settings.broker_url.startswith("filesystem://"):
        # The embedded default: messages are files; the broker is reachable when its folder is writable.
        folder = settings.broker_dir
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            return f"the broker folder {folder.name!r} under SAMTUNE_DATA_DIR is missing or not writable"
        return None
    from kombu import Connection

    with Connection(settings.broker_url, connect_timeout=CHECK_TIMEOUT_S) as connection:
        connection.ensure_connection(max_retries=1, timeout=int(CHECK_TIMEOUT_S))
    return None


def _storage(storage: ObjectStorage) -> str | None:
    # A listing, not a HEAD: S3 answers a HEAD for a missing bucket as for a missing key, a listing refuses.
    next(iter(storage.list("readyz-probe/")), None)
    return None


def _live_feed(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()
    return None


async def _inference(urls: list[str]) -> str | None:
    """Ready when at least one service answers its /healthz (the API retries a failed call on another)."""
    down = []
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S, trust_env=False) as client:
        for n, url in enumerate(urls, start=1):
            try:
                r = await client.get(url.rstrip("/") + "/healthz")
                if r.status_code != 200:
                    down.append(f"service {n}: HTTP {r.status_code}")
            except httpx.HTTPError as exc:
                down.append(f"service {n}: {type(exc).__name__}")
    if len(down) == len(urls):
        return "no inference service answers: " + "; ".join(down)
    if down:
        logger.warning("readyz: some inference services are down: %s", "; ".join(down))
    return None


async def _timed(name: str, check: Callable[[], Awaitable[str | None]], into: dict[str, CheckResult]) -> None:
    started = time.monotonic()
    detail: str | None
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S + 1):
            detail = await check()
    except TimeoutError:
        detail = f"no answer within {CHECK_TIMEOUT_S + 1:.0f} s"
    except Exception as exc:  # the kind only: the message may hold hosts, users or keys
        logger.warning("readyz: %s check failed: %r", name, exc)
        detail = type(exc).__name__
    into[name] = CheckResult(
        status="error" if detail else "ok", seconds=round(time.monotonic() - started, 3), detail=detail
    )


async def readiness(settings: Settings, engine: Engine, storage: ObjectStorage) -> Readiness:
    def blocking(fn: Callable[[], str | None]) -> Callable[[], Awaitable[str | None]]:
        return lambda: anyio.to_thread.run_sync(fn, abandon_on_cancel=True)

    checks: dict[str, Callable[[], Awaitable[str | None]]] = {
        "database": blocking(lambda: _database(engine)),
        "broker": blocking(lambda: _broker(settings)),
        "storage": blocking(lambda: _storage(storage)),
    }
    redis_url = settings.redis_url
    if redis_url:
        checks["live_feed"] = blocking(lambda: _live_feed(redis_url))
    urls = settings.inference_urls_list
    if urls:
        checks["inference"] = lambda: _inference(urls)
    results: dict[str, CheckResult] = {}
    async with anyio.create_task_group() as group:
        for name, check in checks.items():
            group.start_soon(_timed, name, check, results)
    for name in ("live_feed", "inference"):
        results.setdefault(name, CheckResult(status="not configured", seconds=0.0))
    order = ["database", "broker", "storage", "live_feed", "inference"]
    ordered = {name: results[name] for name in order}
    ready = all(r.status != "error" for r in ordered.values())
    return Readiness(status="ready" if ready else "not ready", checks=ordered)
