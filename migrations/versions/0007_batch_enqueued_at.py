"""batch predictions record when their message was last sent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 11:00:00

`batch_prediction.enqueued_at`, as a training job has: a batch that sits queued long after its message was
last sent (NULL: since it was created) lost that message, and the reaper sends it again (lease.forgotten).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
