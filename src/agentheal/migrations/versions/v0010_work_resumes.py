"""Resumes through the work table: an item says what kind of work it is (a gap to heal, or the
resume of a run after an approval or a remote agent's answer) and carries that resume's answer, so
any worker can claim a resume and it outlives the worker that received it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("work_items")}
    with op.batch_alter_table("work_items") as batch:
        if "kind" not in have:
            batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="heal"))
        if "payload" not in have:
            batch.add_column(sa.Column("payload", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("payload")
        batch.drop_column("kind")
