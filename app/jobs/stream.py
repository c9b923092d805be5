"""Server-Sent Events for one job: metrics, progress, status and events, each with an id, resumable with
Last-Event-ID, ending with the final status. Redis Streams when configured, the database otherwise."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.core.db import transaction
from app.jobs.feed import DB_PREFIX, FeedEvent, decode_entry, read_database, stream_key
from app.jobs.schemas import TERMINAL
from app.jobs.tables import TrainingJob

logger = logging.getLogger("samtune.jobs.stream")

KEEPALIVE_SECONDS = 15.0
# After the row says the job ended, wait this long for its final event before writing one from the row.
FINAL_GRACE_SECONDS = 3.0
# XRANGE's and XREAD's answers from a RESP2 client without decode_responses, as this module's are (redis-py
# types them for every protocol and decoding at once).
_Entries = list[tuple[bytes, dict[bytes, bytes]]]
_Streams = list[tuple[bytes, _Entries]]


def format_event(event: FeedEvent) -> str:
    head = f"id: {event.id}\n" if event.id is not None else ""
    return f"{head}event: {event.kind}\ndata: {json.dumps(event.data, default=str)}\n\n"


def _is_final(event: FeedEvent) -> bool:
    return event.kind == "status" and event.data.get("status") in TERMINAL


def _job_state(factory: sessionmaker[Session], job_id: uuid.UUID) -> tuple[str, dict[str, Any], str | None]:
    with transaction(factory) as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None
        return job.status, dict(job.progress or {}), job.error


def _progress_event(progress: dict[str, Any]) -> FeedEvent:
    keys = ("step", "total_steps", "epoch", "eta_seconds", "steps_per_second", "phase")
    return FeedEvent(None, "progress", {k: progress.get(k) for k in keys})


async def finished_for(
    factory: sessionmaker[Session], job_id: uuid.UUID, last_event_id: str | None, redis_url: str | None
) -> bool:
    """True when the job has ended and the client, reconnecting with Last-Event-ID, already has every event
    up to the final one. The endpoint then answers 204, which tells EventSource to stop reconnecting."""
    if not last_event_id:
        return False
    status, _, _ = await run_in_threadpool(_job_state, factory, job_id)
    if status not in TERMINAL:
        return False
    if last_event_id.startswith(DB_PREFIX) or not redis_url:

        def rest() -> list[FeedEvent]:
            with transaction(factory) as session:
                return read_database(session, job_id, last_event_id)[0]

        return not any(_is_final(e) for e in await run_in_threadpool(rest))
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        later = cast(_Entries, await client.xrange(stream_key(job_id), min=f"({last_event_id}", count=10_000))
    except redis.RedisError:
        return False  # cannot tell: stream what there is
    finally:
        await client.aclose()
    return not any(_is_final(decode_entry(i, f)) for i, f in later)


async def events(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    last_event_id: str | None,
    redis_url: str | None,
    is_disconnected: Any,
    *,
    poll_seconds: float = 1.0,
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    client = None
    if redis_url and not (last_event_id or "").startswith(DB_PREFIX):
        client = live = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
        try:
            if not await live.exists(stream_key(job_id)):
                # A job from before Redis, or its stream expired or was lost: the rows still have it all.
                await live.aclose()
                client = None
        except redis.RedisError:
            await live.aclose()
            client = None
    source = (
        _redis_events(client, factory, job_id, last_event_id, is_disconnected)
        if client
        else (_database_events(factory, job_id, last_event_id, is_disconnected, poll_seconds))
    )
    try:
        async for chunk in source:
            yield chunk
    finally:
        if client is not None:
            await client.aclose()


async def _database_events(
    factory: sessionmaker[Session], job_id: uuid.UUID, cursor: str | None, is_disconnected: Any,
    poll_seconds: float,
) -> AsyncIterator[str]:  # fmt: skip
    def read(c: str | None) -> tuple[list[FeedEvent], str]:
        with transaction(factory) as session:
            return read_database(session, job_id, c)

    last_progress: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    while not await is_disconnected():
        status, progress, _ = await run_in_threadpool(_job_state, factory, job_id)
        batch, cursor = await run_in_threadpool(read, cursor)
        for event in batch:
            yield format_event(event)
            if _is_final(event):
                return
        if batch:
            quiet_since = time.monotonic()
        if progress.get("step") is not None and progress != last_progress:
            last_progress = progress
            yield format_event(_progress_event(progress))
        if status in TERMINAL and not batch:
            return  # the final status was sent before this client (re)connected
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(poll_seconds)


async def _redis_events(
    client: aioredis.Redis, factory: sessionmaker[Session], job_id: uuid.UUID, cursor: str | None,
    is_disconnected: Any,
) -> AsyncIterator[str]:  # fmt: skip
    cursor = cursor or "0"
    key = stream_key(job_id)
    ended_at: float | None = None
    quiet_since = time.monotonic()
    while not await is_disconnected():
        try:
            reply = cast(_Streams, await client.xread({key: cursor}, block=1000, count=500))
        except redis.RedisError as exc:
            logger.warning("reading job %s's live events from Redis failed: %s", job_id, exc)
            reply = []
            await asyncio.sleep(1.0)
        for _, entries in reply:
            for entry_id, fields in entries:
                event = decode_entry(entry_id, fields)
                cursor = event.id or cursor
                quiet_since = time.monotonic()
                yield format_event(event)
                if _is_final(event):
                    return
        status, progress, error = await run_in_threadpool(_job_state, factory, job_id)
        if status in TERMINAL:
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > FINAL_GRACE_SECONDS:
                # The final event never reached Redis (it was down): say it from the row, under the last id.
                data = {"kind": "status", "status": status, "message": f"job {status}", "error": error}
                yield format_event(FeedEvent(cursor, "status", data))
                return
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
