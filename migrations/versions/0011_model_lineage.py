"""a job may start from a model of its workspace, and remembers the lineage of its base

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02 21:00:00

`training_job.base_model_id`: the workspace model a job continues from (NULL: a catalog base model, the only
kind before). No foreign key: deleting that model later must not be refused, nor rewrite the job's record;
a queued job whose base model was deleted fails with a message saying so. `training_job.base_lineage`: the
base model's name, then the base of that base and so on (["shapes/2 (model <id>)", "samtune/sam3-tiny-shapes"]);
NULL for jobs made before, which read as [base_model].
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_model_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("base_lineage", sa.JSON(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode's copy-and-drop: with models that reference
    # their jobs, SQLite's foreign keys refuse to drop the original table (as in 0005).
    with op.batch_alter_table("training_job", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("base_lineage")
        batch_op.drop_column("base_model_id")
