"""A job's live events: published to a Redis Stream by whoever changes the job (worker or API) and read
back by the event-stream endpoint. Without Redis (the embedded default) the database rows are the feed.

Event ids: Redis stream ids ("1732700000000-0"), or "db-{metric id}-{event id}" cursors, so that a client
reconnecting with Last-Event-ID resumes in the same feed it left.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.tables import JobEvent, Metric
from app.settings import Settings

logger = logging.getLogger("samtune.jobs.feed")

_MAXLEN = 200_000
DB_PREFIX = "db-"
_MAX_ID = 2**63 - 1


def stream_key(job_id: uuid.UUID | str) -> str:
    return f"samtune:job:{job_id}:events"


@dataclass
class FeedEvent:
    id: str | None  # None: not resumable (progress snapshots); the client keeps its last id
    kind: str  # metrics | progress | status | event
    data: dict[str, Any]


class Publisher(Protocol):
    def publish(self, job_id: uuid.UUID, kind: str, data: dict[str, Any]) -> None: ...
    def expire(self, job_id: uuid.UUID, seconds: int) -> None: ...


class NullPublisher:
    def publish(self, job_id: uuid.UUID, kind: str, data: dict[str, Any]) -> None:
        pass

    def expire(self, job_id: uuid.UUID, seconds: int) -> None:
        pass


class RedisPublisher:
    """Best effort: the database is the record, so a Redis outage costs live updates, never the job."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.quiet_until = 0.0

    def publish(self, job_id: uuid.UUID, kind: str, data: dict[str, Any]) -> None:
        if time.monotonic() < self.quiet_until:
            return  # Redis failed a moment ago: do not make every training step wait on its timeout
        try:
            self.client.xadd(
                stream_key(job_id), {"kind": kind, "data": json.dumps(data, default=str)},
                maxlen=_MAXLEN, approximate=True,
            )  # fmt: skip
        except redis.RedisError as exc:
            self.quiet_until = time.monotonic() + 5.0
            logger.warning("live event for job %s not published (Redis: %s)", job_id, exc)

    def expire(self, job_id: uuid.UUID, seconds: int) -> None:
        try:
            self.client.expire(stream_key(job_id), seconds)
        except redis.RedisError as exc:
            logger.warning("could not set expiry of job %s's stream (Redis: %s)", job_id, exc)


def make_publisher(settings: Settings) -> Publisher:
    return RedisPublisher(settings.redis_url) if settings.redis_url else NullPublisher()


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> FeedEvent:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return FeedEvent(eid, fields[b"kind"].decode(), json.loads(fields[b"data"]))


# --- the database feed ---------------------------------------------------------------------------------


def parse_db_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor and cursor.startswith(DB_PREFIX):
        try:
            metric_id, event_id = cursor[len(DB_PREFIX) :].split("-")
            # Ids are 64-bit: a larger one (a forged Last-Event-ID) would fail in PostgreSQL; it means "after all".
            return min(int(metric_id), _MAX_ID), min(int(event_id), _MAX_ID)
        except ValueError:
            pass
    return 0, 0


def read_database(session: Session, job_id: uuid.UUID, cursor: str | None) -> tuple[list[FeedEvent], str]:
    """Events after `cursor` from the rows themselves: metric points grouped by step, then job events
    (status changes, restarts, rollbacks). Returns them with the new cursor."""
    metric_after, event_after = parse_db_cursor(cursor)
    out: list[FeedEvent] = []
    rows = session.scalars(
        select(Metric)
        .where(Metric.job_id == job_id, Metric.id > metric_after)
        .order_by(Metric.id)
        .limit(5000)
    ).all()
    steps: OrderedDict[int, dict[str, Any]] = OrderedDict()
    last_id: dict[int, int] = {}
    for m in rows:
        point = steps.setdefault(m.step, {"step": m.step, "epoch": m.epoch, "metrics": {}})
        point["metrics"][m.name] = m.value
        last_id[m.step] = max(last_id.get(m.step, 0), m.id)
    for step, point in steps.items():
        metric_after = max(metric_after, last_id[step])
        out.append(FeedEvent(f"{DB_PREFIX}{metric_after}-{event_after}", "metrics", point))
    events = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > event_after, JobEvent.kind != "log")
        .order_by(JobEvent.id)
    ).all()
    for e in events:
        event_after = e.id
        kind = "status" if e.kind == "status" else "event"
        data = {"kind": e.kind, "message": e.message, "attempt": e.attempt, **e.data}
        out.append(FeedEvent(f"{DB_PREFIX}{metric_after}-{event_after}", kind, data))
    return out, f"{DB_PREFIX}{metric_after}-{event_after}"
