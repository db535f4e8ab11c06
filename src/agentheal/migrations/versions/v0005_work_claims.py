"""Work shared by several workers on one database: the gaps to heal, each claimed by one worker
under a lease it renews, and the workers themselves with their last heartbeat.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Two partial unique indexes carry the rules the claims rely on: one open item per fingerprint (a
fault detected by several workers opens one gap) and one claimed item per component key (one heal
per component across all workers).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "work_items" not in have:
        op.create_table(
            "work_items",
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("key", sa.String(300), nullable=False),
            sa.Column("component", sa.String(200)),
            sa.Column("gap", sa.JSON, nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("worker", sa.String(200)),
            sa.Column("lease_until", sa.DateTime),
            sa.Column("claims", sa.Integer, nullable=False),
            sa.Column("queued_at", sa.DateTime, nullable=False),
            sa.Column("claimed_at", sa.DateTime),
            sa.Column("finished_at", sa.DateTime),
            sa.Column("outcome", sa.String(32)),
        )
        op.create_index("ix_work_items_state_queued", "work_items", ["state", "queued_at"])
        op.create_index("ix_work_items_worker", "work_items", ["worker"])
        open_only = sa.text("state <> 'done'")
        claimed_only = sa.text("state = 'claimed'")
        op.create_index(
            "ux_work_items_open_fingerprint",
            "work_items",
            ["fingerprint"],
            unique=True,
            postgresql_where=open_only,
            sqlite_where=open_only,
        )
        op.create_index(
            "ux_work_items_claimed_key",
            "work_items",
            ["key"],
            unique=True,
            postgresql_where=claimed_only,
            sqlite_where=claimed_only,
        )
    if "workers" not in have:
        op.create_table(
            "workers",
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("started_at", sa.DateTime, nullable=False),
            sa.Column("heartbeat_at", sa.DateTime, nullable=False),
            sa.Column("stopped_at", sa.DateTime),
            sa.Column("lease_s", sa.Float, nullable=False),
            sa.Column("max_heals", sa.Integer, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("work_items")
