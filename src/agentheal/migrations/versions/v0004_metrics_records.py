"""The records the figures read beside the heal events: predictions and their follow-up, evolutions and
their outcome, and probe results (counted per batch) for availability.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

These tables were made at first use (SQLAlchemy's create_all) before they had a revision: a table
already there is kept, and a probe_results table of that time (one row per probe answer, a column
`ok`) becomes one of counts, each old row a batch of one answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _req(name: str, type_: object) -> sa.Column[object]:
    return sa.Column(name, type_, nullable=False)  # type: ignore[arg-type]


def _tables() -> dict[str, tuple[list[sa.Column[object]], list[list[str]]]]:
    """Per table: its columns, and its indexes (each a list of column names)."""
    return {
        "predictions": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _req("series", sa.String(200)),
                sa.Column("component", sa.String(200)),
                _req("text", sa.Text),
                _req("made_at", sa.DateTime),
                sa.Column("expected_at", sa.DateTime),
                sa.Column("confidence", sa.Float),
                sa.Column("limit", sa.Float),
                _req("acted", sa.Boolean),
                sa.Column("measure", sa.JSON),
                _req("outcome", sa.String(16)),
                sa.Column("checked_at", sa.DateTime),
                _req("data", sa.JSON),
            ],
            [["series"], ["made_at"], ["outcome"], ["checked_at"]],
        ),
        "evolutions": (
            [
                sa.Column("id", sa.String(32), primary_key=True),
                _req("kind", sa.String(32)),
                _req("target", sa.String(300)),
                sa.Column("fingerprint", sa.String(64)),
                _req("status", sa.String(16)),
                _req("created_at", sa.DateTime),
                sa.Column("decided_at", sa.DateTime),
                _req("reason", sa.Text),
                _req("data", sa.JSON),
            ],
            [["status"], ["created_at"], ["decided_at"]],
        ),
        "probe_results": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _req("component", sa.String(200)),
                _req("at", sa.DateTime),
                _req("answers", sa.Integer),
                _req("passed", sa.Integer),
            ],
            [["component", "at"]],
        ),
    }


def _index_name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def _counts_from_answers() -> None:
    """A probe_results table of one row per answer (`ok`) becomes one of counts."""
    with op.batch_alter_table("probe_results") as batch:
        batch.add_column(sa.Column("answers", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("passed", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE probe_results SET passed = CASE WHEN ok THEN 1 ELSE 0 END")
    with op.batch_alter_table("probe_results") as batch:
        batch.drop_column("ok")
        batch.alter_column("answers", server_default=None)
        batch.alter_column("passed", server_default=None)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = set(inspector.get_table_names())
    for name, (columns, indexes) in _tables().items():
        if name not in have:
            op.create_table(name, *columns)
            for cols in indexes:
                op.create_index(_index_name(name, cols), name, cols)
        elif name == "probe_results" and "ok" in {c["name"] for c in inspector.get_columns(name)}:
            _counts_from_answers()


def downgrade() -> None:
    for name in reversed(list(_tables())):
        op.drop_table(name)
