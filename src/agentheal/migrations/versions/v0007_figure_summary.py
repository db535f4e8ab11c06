"""The figures' summary (agentheal.metrics.summary): a narrow row per ended heal run and per gap
report with the values the figures derive from them, and how far it has read the events.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

It starts empty: the first figures read after the upgrade fold in every event recorded so far.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _req(name: str, type_: object) -> sa.Column[object]:
    return sa.Column(name, type_, nullable=False)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "figure_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        _req("fingerprint", sa.String(64)),
        sa.Column("persona", sa.String(200)),
        _req("status", sa.String(32)),
        _req("finished_at", sa.DateTime),
        _req("took_s", sa.Float),
        _req("auto", sa.Boolean),
        _req("recurred", sa.Boolean),
    )
    op.create_index("ix_figure_runs_finished", "figure_runs", ["finished_at", "persona", "status", "auto"])
    op.create_index("ix_figure_runs_took", "figure_runs", ["status", "took_s", "finished_at"])
    op.create_index("ix_figure_runs_quality", "figure_runs", ["status", "finished_at", "recurred"])
    op.create_index("ix_figure_runs_fingerprint", "figure_runs", ["fingerprint", "status", "finished_at"])
    op.create_table(
        "figure_gaps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        _req("fingerprint", sa.String(64)),
        _req("recorded_at", sa.DateTime),
        _req("lag_s", sa.Float),
        _req("timed", sa.Boolean),
        _req("counted", sa.Boolean),
        _req("back", sa.Boolean),
    )
    op.create_index("ix_figure_gaps_counted", "figure_gaps", ["counted", "recorded_at", "back"])
    op.create_index("ix_figure_gaps_timed", "figure_gaps", ["timed", "lag_s", "recorded_at"])
    op.create_index("ix_figure_gaps_fingerprint", "figure_gaps", ["fingerprint", "recorded_at"])
    op.create_table(
        "figure_marks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        _req("gap_id", sa.Integer),
        _req("gaps", sa.Integer),
        sa.Column("run_end", sa.DateTime),
        _req("runs", sa.Integer),
        _req("audit_id", sa.Integer),
        _req("approvals", sa.Integer),
    )


def downgrade() -> None:
    for name in ("figure_marks", "figure_gaps", "figure_runs"):
        op.drop_table(name)
