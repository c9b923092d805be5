"""One lease protocol for every row a worker runs: training jobs, version builds, batch predictions.

A worker *claims* a row with one conditional UPDATE that writes a fresh token and an expiry: of two deliveries
of one message (or two workers), exactly one wins. While it works it *renews* the lease; every write it makes
on the row's behalf is *fenced* by its token, so an attempt presumed dead (its lease taken over) changes
nothing. Beat's reapers *reap* rows whose lease expired: the silent holder is fenced out (token cleared) and the
row is retried or, past its attempts, failed. What retry and failure mean is each package's business; which
rows, and whether another attempt may start, is decided here, once. So is the rule for a row whose
message was lost before any worker took it (`forgotten`): it waits, unheld, long after it was last sent.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from app.core.db import UTCDateTime, transaction, utcnow

logger = logging.getLogger("samtune.lease")

Row = TypeVar("Row")


class LeaseColumns:
    """The columns a leased table carries (its attempt counter it names itself: see `Leased.attempt`)."""

    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last claim or renewal: what the UI shows as "last seen", and how long a row sat unclaimed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Leased(Generic[Row]):
    """How one table takes part: its mapped class, the status of a row waiting for a worker, the status while
    a worker holds it (a build is `building` in both), the column counting attempts, and the column saying
    when the row's message was last sent (NULL: when the row was created)."""

    table: type[Row]
    waiting: str
    running: str
    attempt: Any
    sent: Any


def may_start(attempt: int, max_attempts: int) -> bool:
    """The one give-up rule: attempt number `attempt` (counting from 1) may run iff it is within
    `max_attempts`. The claim asks it about the attempt it has just numbered; the reaper asks it about the
    next one (`attempt + 1`). Written with `>` after the claim's increment and `>=` before the reaper's
    hand-over, as it once was, it is the same rule at two moments; written once, it cannot drift."""
    return attempt <= max_attempts


def claim(
    session: Session, leased: Leased[Any], row_id: uuid.UUID, token: str, now: datetime, lease: timedelta,
    *, where: tuple[ColumnElement[bool], ...] = (), values: Mapping[str, Any] | None = None,
) -> bool:  # fmt: skip
    """Take the row for one attempt, and count it: one conditional UPDATE, so exactly one claimant wins. A
    waiting row is claimable while nobody holds it; a running one only once its lease has expired (its worker
    is gone)."""
    t: Any = leased.table
    claimable = ((t.status == leased.waiting) & t.lease_token.is_(None)) | (
        (t.status == leased.running) & (t.lease_expires_at < now)
    )
    changes: dict[str, Any] = {
        "status": leased.running,
        "lease_token": token,
        "lease_expires_at": now + lease,
        "heartbeat_at": now,
        leased.attempt.key: leased.attempt + 1,
        **(values or {}),
    }
    stmt = update(t).where(t.id == row_id, claimable, *where).values(**changes)
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]


def renew(
    session: Session, leased: Leased[Any], row_id: uuid.UUID, token: str, now: datetime, lease: timedelta,
    values: Mapping[str, Any] | None = None,
) -> bool:  # fmt: skip
    """Extend our lease (writing `values` with it); False when the lease is no longer ours."""
    t: Any = leased.table
    stmt = (
        update(t)
        .where(t.id == row_id, t.lease_token == token, t.status == leased.running)
        .values(lease_expires_at=now + lease, heartbeat_at=now, **(values or {}))
    )
    return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]


def fenced(session: Session, leased: Leased[Row], row_id: uuid.UUID, token: str) -> Row | None:
    """The row, row-locked (PostgreSQL), if `token` still holds its lease; None for a stale attempt. Hold it
    for the whole transaction that writes on the attempt's behalf."""
    t: Any = leased.table
    stmt = (
        select(t).where(t.id == row_id, t.lease_token == token, t.status == leased.running).with_for_update()
    )
    return session.scalars(stmt).first()


@dataclass(frozen=True)
class Expired(Generic[Row]):
    row: Row
    retry: bool  # False: the attempt that just died was its last


def reap(
    session: Session, leased: Leased[Row], now: datetime, max_attempts: Callable[[Row], int]
) -> list[Expired[Row]]:
    """Running rows whose lease expired, each fenced out (token cleared, in case its worker is only slow) and
    judged by `may_start` for one more attempt. Rows another reaper has locked are skipped, not waited for. A
    row already fenced out holds no lease to expire: a build, `building` still while it waits, is judged once,
    not at every pass until a worker claims it."""
    t: Any = leased.table
    stmt = select(t).where(t.status == leased.running, t.lease_token.is_not(None), t.lease_expires_at < now)
    expired = []
    for row in session.scalars(stmt.with_for_update(skip_locked=True)):
        row.lease_token = None
        used = getattr(row, leased.attempt.key) or 0
        expired.append(Expired(row, may_start(used + 1, max_attempts(row))))
    return expired


def forgotten(session: Session, leased: Leased[Row], older_than: datetime) -> list[Row]:
    """Waiting rows nobody holds whose message was last sent (or, never re-sent, the row created) before
    `older_than`: a worker would have claimed them by now, so the message must be lost (a broker restarted
    without persistence, a reaper whose send failed after it committed). The reaper sends them again and
    marks them with `sent` (a duplicate is harmless: only one claim wins). Rows another reaper has locked
    are skipped, not waited for."""
    t: Any = leased.table
    stmt = select(t).where(
        t.status == leased.waiting,
        t.lease_token.is_(None),
        func.coalesce(leased.sent, t.created_at) < older_than,
    )
    return list(session.scalars(stmt.with_for_update(skip_locked=True)))


def sent(leased: Leased[Row], row: Row, now: datetime) -> None:
    """Record that the row's message was (re-)sent at `now`: `forgotten` leaves it alone for a while."""
    setattr(row, leased.sent.key, now)


class Heartbeat:
    """Renews a lease on a thread of its own while slow work runs (a model load, a loop over images), so the
    work itself never waits on the database. `lost` turns True once a renewal finds the lease taken."""

    def __init__(
        self, factory: sessionmaker[Session], leased: Leased[Any], row_id: uuid.UUID, token: str,
        lease: timedelta, every: float,
    ) -> None:  # fmt: skip
        self.factory, self.leased, self.row_id, self.token = factory, leased, row_id, token
        self.lease, self.every = lease, every
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{row_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with transaction(self.factory) as session:
                    if not renew(session, self.leased, self.row_id, self.token, utcnow(), self.lease):
                        self.lost = True
                        return
            except Exception:  # a database blip must not end the heartbeat; the lease gives us time
                logger.exception("lease renewal of %s failed; retrying", self.row_id)
