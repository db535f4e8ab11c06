"""LLM calls record whether the endpoint reported its token counts, and the error of a failed call.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("llm_calls")}
    # a store opened by the agentheal that added these (before Alembic) has them already
    if "usage_known" not in have:
        op.add_column(
            "llm_calls", sa.Column("usage_known", sa.Boolean, nullable=False, server_default=sa.true())
        )
    if "error" not in have:
        op.add_column("llm_calls", sa.Column("error", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("error")
        batch.drop_column("usage_known")
