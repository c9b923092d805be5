"""A version build holds its version by the lease of app/core/lease.py, as a training job does: the claim counts
the attempt, and every write the build makes after it is fenced by its token. A build presumed dead (its lease
reaped and claimed by a newer attempt) writes nothing more, whether it next reports progress, finishes or
fails, and stops; the newer attempt (or the one after it) builds the version."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.core.db import transaction, utcnow
from app.versions import builder, repository
from app.versions.repository import MAX_ATTEMPTS
from app.versions.tables import DatasetVersion
from tests.factories import simple_coco_zip
from tests.versions.conftest import VersionKit

NEWER = "token-of-the-newer-attempt"


def _take_over(kit: VersionKit, version_id: uuid.UUID) -> None:
    """What happens while the build is presumed dead: its lease expires, the reaper fences it out, and a newer
    attempt (the reaper's message, delivered to another worker) claims the version."""
    with transaction(kit.factory) as session:
        session.execute(
            update(DatasetVersion)
            .where(DatasetVersion.id == version_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        expired = repository.expired_builds(session, utcnow())
        assert [(e.row.id, e.retry) for e in expired] == [(version_id, True)]
        assert repository.claim(session, version_id, NEWER, utcnow())


def _set(kit: VersionKit, version_id: uuid.UUID, **values: Any) -> None:
    with transaction(kit.factory) as session:
        session.execute(update(DatasetVersion).where(DatasetVersion.id == version_id).values(**values))


def _row(kit: VersionKit, version_id: uuid.UUID) -> DatasetVersion:
    with kit.factory() as session:
        row = session.get(DatasetVersion, version_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.mark.parametrize("when", ["progress", "finish", "failure"])
def test_a_stale_build_writes_nothing_after_its_lease_was_taken_over(
    kit: VersionKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 3))
    version_id = uuid.UUID(kit.create(ds)["id"])
    taken: list[bool] = []

    if when == "progress":
        # Taken over after the claim, before the first image: the first renewal finds the lease gone.
        real_plan = builder.plan_version

        def plan_then_take_over(*args: Any, **kwargs: Any) -> Any:
            plan = real_plan(*args, **kwargs)
            _take_over(kit, version_id)
            taken.append(True)
            return plan

        monkeypatch.setattr(builder, "plan_version", plan_then_take_over)
    else:
        # Taken over after every image was written, before the result is recorded: the final write (the
        # snapshot's row, or the failure) is dropped.
        real_document = builder.coco_document

        def take_over_then_document(*args: Any, **kwargs: Any) -> Any:
            if not taken:
                _take_over(kit, version_id)
                taken.append(True)
                if when == "failure":
                    raise RuntimeError("the disk filled up")
            return real_document(*args, **kwargs)

        monkeypatch.setattr(builder, "coco_document", take_over_then_document)

    assert builder.build_version(kit.factory, kit.storage, kit.settings, version_id) == "lease lost"
    assert taken == [True]

    row = _row(kit, version_id)
    # The newer attempt's claim stands, and nothing of the stale one's was written after it.
    assert (row.status, row.lease_token, row.attempts) == ("building", NEWER, 2)
    assert row.error is None and row.snapshot_prefix is None and row.content_hash is None
    assert row.ready_at is None and row.progress < 1.0
    if when == "progress":
        assert row.progress == 0.0
    if when == "failure":
        # The images it wrote stay: the newer attempt writes the same content-named prefix.
        assert [k for k in kit.storage.list("workspaces/") if "/snapshots/" in k]

    # The newer attempt is lost too, silently: the next build claims the expired lease and builds it.
    monkeypatch.undo()
    _set(kit, version_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert builder.build_version(kit.factory, kit.storage, kit.settings, version_id) == "ready"
    row = _row(kit, version_id)
    assert (row.status, row.lease_token, row.lease_expires_at, row.attempts) == ("ready", None, None, 3)
    assert kit.get(str(version_id))["splits"]


def test_a_build_claimed_past_its_attempts_is_given_up(kit: VersionKit, tmp_path: Path) -> None:
    """A redelivered message that claims a build whose lease expired before the reaper saw it, when its last
    attempt was already spent: given up with the reaper's rule and words, not built."""
    ds = kit.dataset(simple_coco_zip(tmp_path / "a.zip", 2))
    version_id = uuid.UUID(kit.create(ds)["id"])
    _set(kit, version_id, lease_token="silent", lease_expires_at=utcnow() - timedelta(seconds=1),
                       attempts=MAX_ATTEMPTS)  # fmt: skip
    assert builder.build_version(kit.factory, kit.storage, kit.settings, version_id) == "failed"
    row = _row(kit, version_id)
    assert (row.status, row.lease_token, row.attempts) == ("failed", None, MAX_ATTEMPTS + 1)
    assert row.error == repository.gave_up(MAX_ATTEMPTS)
    # A build another worker holds (its lease alive) is not taken; nor is a finished one.
    other = uuid.UUID(kit.create(ds)["id"])
    _set(kit, other, lease_token="alive", lease_expires_at=utcnow() + timedelta(minutes=1))
    assert builder.build_version(kit.factory, kit.storage, kit.settings, other) == "building"
    assert _row(kit, other).attempts == 0
    assert builder.build_version(kit.factory, kit.storage, kit.settings, version_id) == "failed"
