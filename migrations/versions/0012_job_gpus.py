"""a job may ask for several devices; workers register what they have

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 21:40:00

`training_job.gpus`: the devices (DDP processes) the job asked for; NULL: not asked, one. `worker`: one row per
training worker process, refreshed by its heartbeat (app/workers/registry.py), so the API can refuse a job
asking for more devices than any live worker has.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=True))
    op.create_table(
        "worker",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("device_type", sa.String(length=16), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker")),
    )
    op.create_index(op.f("ix_worker_seen_at"), "worker", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_seen_at"), table_name="worker")
    op.drop_table("worker")
    # As in 0011: DROP COLUMN, not batch mode's copy-and-drop (SQLite's foreign keys refuse that).
    with op.batch_alter_table("training_job", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("gpus")
