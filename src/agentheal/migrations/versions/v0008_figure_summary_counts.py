"""The figures' summary read by counting index ranges: indexes whose leading columns are the ones a
figure groups by (persona, status, approval; a report's earlier heal; a heal's recurrence), so each
count is one range of an index instead of an expression evaluated on every row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_figure_runs_quality", table_name="figure_runs")
    op.create_index("ix_figure_runs_quality", "figure_runs", ["status", "recurred", "finished_at"])
    op.create_index("ix_figure_runs_groups", "figure_runs", ["persona", "status", "auto", "finished_at"])
    op.drop_index("ix_figure_gaps_counted", table_name="figure_gaps")
    op.create_index("ix_figure_gaps_counted", "figure_gaps", ["counted", "back", "recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_figure_gaps_counted", table_name="figure_gaps")
    op.create_index("ix_figure_gaps_counted", "figure_gaps", ["counted", "recorded_at", "back"])
    op.drop_index("ix_figure_runs_groups", table_name="figure_runs")
    op.drop_index("ix_figure_runs_quality", table_name="figure_runs")
    op.create_index("ix_figure_runs_quality", "figure_runs", ["status", "finished_at", "recurred"])
