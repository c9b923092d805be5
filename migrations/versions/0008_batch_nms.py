"""batch predictions keep their mask-NMS options

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00

`batch_prediction.iou_threshold` and `class_agnostic_nms`: a batch merges duplicate masks as the predict
routes do (Roboflow's `iou_threshold`, default 0.5, per class). They are columns, not task arguments, because
the reaper sends a batch again with its id alone. Existing batches read the default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("iou_threshold", sa.Float(), nullable=False, server_default="0.5"))
        batch_op.add_column(
            sa.Column("class_agnostic_nms", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_prediction", schema=None) as batch_op:
        batch_op.drop_column("class_agnostic_nms")
        batch_op.drop_column("iou_threshold")
