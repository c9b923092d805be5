"""models remember scoring below their base, and being promoted anyway

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:00:00

`model.regression`: the fine-tuned model's mask AP on the test split is below its base model's, so the
version's `slug/N` alias (what Roboflow clients call) keeps serving the previous good model. `model.promoted_at`:
when the user made it that version's model explicitly (POST /api/v1/models/{id}/promote). Existing models read
as neither: they were served by the alias before, and still are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("regression", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_column("promoted_at")
        batch_op.drop_column("regression")
