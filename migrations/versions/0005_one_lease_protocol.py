"""one lease protocol: builds and batch predictions leased like jobs; a job's resume pointer in columns

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14 10:00:00

The resume pointer moves out of `training_job.progress` (JSON the heartbeat rewrites whole) into columns of
its own; the upgrade carries each job's pointer over, the downgrade puts it back.
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_jobs = sa.table(
    "training_job",
    sa.column("id", sa.Uuid()),
    sa.column("progress", sa.JSON()),
    sa.column("checkpoint_prefix", sa.String()),
    sa.column("checkpoint_step", sa.Integer()),
    sa.column("best_checkpoint_prefix", sa.String()),
)


def _progress(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    return dict(value or {})


def upgrade() -> None:
    with op.batch_alter_table("dataset_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("lease_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("training_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint_prefix", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("checkpoint_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("best_checkpoint_prefix", sa.String(length=500), nullable=True))

    conn = op.get_bind()
    for job_id, progress in conn.execute(sa.select(_jobs.c.id, _jobs.c.progress)).all():
        progress = _progress(progress)
        pointer = progress.pop("checkpoint", None)
        if not pointer:
            continue
        conn.execute(
            _jobs.update()
            .where(_jobs.c.id == job_id)
            .values(
                progress=progress,
                checkpoint_prefix=pointer.get("prefix"),
                checkpoint_step=pointer.get("step"),
                best_checkpoint_prefix=pointer.get("best_prefix"),
            )
        )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_jobs.c.id, _jobs.c.progress, _jobs.c.checkpoint_prefix, _jobs.c.checkpoint_step,
                  _jobs.c.best_checkpoint_prefix).where(_jobs.c.checkpoint_prefix.is_not(None))
    ).all()  # fmt: skip
    for job_id, progress, prefix, step, best in rows:
        pointer: dict[str, Any] = {"prefix": prefix, "step": step}
        if best:
            pointer["best_prefix"] = best
        conn.execute(
            _jobs.update()
            .where(_jobs.c.id == job_id)
            .values(progress=_progress(progress) | {"checkpoint": pointer})
        )

    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode's copy-and-drop: with rows that reference
    # these tables, SQLite's foreign keys refuse to drop the original.
    with op.batch_alter_table("training_job", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("best_checkpoint_prefix")
        batch_op.drop_column("checkpoint_step")
        batch_op.drop_column("checkpoint_prefix")

    with op.batch_alter_table("batch_prediction", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_token")
        batch_op.drop_column("attempt")

    with op.batch_alter_table("dataset_version", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_token")
