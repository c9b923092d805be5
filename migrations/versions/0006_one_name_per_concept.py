"""one name per concept: a model's version_name and checkpoint_prefix; evaluation results keyed as the API's

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

`model.name` held the version name ('{dataset slug}/{number}') and becomes `version_name`; `checkpoint_key`
held a directory prefix and becomes `checkpoint_prefix` (as a job's is called). `model.eval_results` moves
from {"base", "fine_tuned", "valid_best"} to {"best_valid", "test": {"base", "fine_tuned"}}, the keys of the
run result, the model card and the API; the downgrade puts the old keys back.
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_models = sa.table("model", sa.column("id", sa.Uuid()), sa.column("eval_results", sa.JSON()))


def _results(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    return dict(value or {})


def _rewrite(convert: Any) -> None:
    conn = op.get_bind()
    for model_id, results in conn.execute(sa.select(_models.c.id, _models.c.eval_results)).all():
        conn.execute(
            _models.update().where(_models.c.id == model_id).values(eval_results=convert(_results(results)))
        )


def _new_keys(old: dict[str, Any]) -> dict[str, Any]:
    return {
        "best_valid": old.get("valid_best"),
        "test": {"base": old.get("base"), "fine_tuned": old.get("fine_tuned")},
    }


def _old_keys(new: dict[str, Any]) -> dict[str, Any]:
    test = new.get("test") or {}
    return {
        "base": test.get("base"),
        "fine_tuned": test.get("fine_tuned"),
        "valid_best": new.get("best_valid"),
    }


def upgrade() -> None:
    # RENAME COLUMN in place (SQLite 3.25+), not batch mode's copy-and-drop, which the foreign keys of
    # batch_prediction rows would refuse.
    with op.batch_alter_table("model", schema=None, recreate="never") as batch_op:
        batch_op.alter_column("name", new_column_name="version_name")
        batch_op.alter_column("checkpoint_key", new_column_name="checkpoint_prefix")
    _rewrite(_new_keys)


def downgrade() -> None:
    _rewrite(_old_keys)
    with op.batch_alter_table("model", schema=None, recreate="never") as batch_op:
        batch_op.alter_column("checkpoint_prefix", new_column_name="checkpoint_key")
        batch_op.alter_column("version_name", new_column_name="name")
