"""web UI sessions ended by signing out

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 08:20:00

`ended_session`: the nonce of each UI session signed out before its cookie expired, kept until that expiry
(app/ui/session.py): a signed-out cookie is refused by every API process.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ended_session",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_ended_session")),
    )
    op.create_index(op.f("ix_ended_session_expires_at"), "ended_session", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ended_session_expires_at"), table_name="ended_session")
    op.drop_table("ended_session")
