"""The indexes the figures and the engines' last activity read on the event tables: a heal's next
report of its fingerprint is one seek, the runs' figures a narrow covering index instead of rows
that carry a whole result as JSON, an engine's last step one seek along (node, at). Until this
revision the figures' module made them at its first use, outside any migration; a store that has
them from then keeps them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_gaps_fingerprint_recorded_at": ("gaps", ["fingerprint", "recorded_at"]),
    "ix_runs_figures": ("runs", ["status", "finished_at", "started_at", "fingerprint", "persona", "run_id"]),
    "ix_node_events_node_at": ("node_events", ["node", "at"]),
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for name, (table, columns) in _INDEXES.items():
        if name not in {ix["name"] for ix in inspector.get_indexes(table)}:
            op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _columns) in _INDEXES.items():
        op.drop_index(name, table_name=table)
