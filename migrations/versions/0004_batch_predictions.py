"""batch predictions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 20:16:43.686658
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_prediction",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("split", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
        sa.Column("num_detections", sa.Integer(), nullable=False),
        sa.Column("result_key", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["model.id"], name=op.f("fk_batch_prediction_model_id_model"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_version.id"],
            name=op.f("fk_batch_prediction_version_id_dataset_version"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspace.id"],
            name=op.f("fk_batch_prediction_workspace_id_workspace"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_prediction")),
    )
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_prediction_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_prediction_version_id"), ["version_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_prediction_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_prediction_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_batch_prediction_version_id"))
        batch_op.drop_index(batch_op.f("ix_batch_prediction_model_id"))

    op.drop_table("batch_prediction")
