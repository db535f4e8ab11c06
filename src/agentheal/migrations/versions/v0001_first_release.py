"""The event store of agentheal's first release: gaps, runs and each run's node events, actions and
LLM calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

A store made before agentheal used Alembic has some or all of these tables already (SQLAlchemy's
create_all made them): only the missing ones are created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _req(name: str, type_: object, *args: object) -> sa.Column[object]:
    return sa.Column(name, type_, *args, nullable=False)  # type: ignore[arg-type]


def _run_ref() -> sa.Column[object]:
    return _req("run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"))


def _tables() -> dict[str, tuple[list[sa.Column[object] | sa.Index], list[str]]]:
    """Per table: its columns (and composite indexes), and its one-column indexes."""
    return {
        "gaps": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _req("fingerprint", sa.String(64)),
                _req("kind", sa.String(32)),
                sa.Column("component", sa.String(200)),
                _req("severity", sa.String(16)),
                _req("text", sa.Text),
                _req("gap", sa.JSON),
                _req("created_at", sa.DateTime),
                _req("recorded_at", sa.DateTime),
            ],
            ["fingerprint", "recorded_at"],
        ),
        "runs": (
            [
                sa.Column("run_id", sa.String(64), primary_key=True),
                _req("fingerprint", sa.String(64)),
                sa.Column("component", sa.String(200)),
                _req("gap_text", sa.Text),
                _req("gap", sa.JSON),
                _req("status", sa.String(32)),
                sa.Column("persona", sa.String(200)),
                sa.Column("source", sa.String(32)),
                sa.Column("reason", sa.Text),
                sa.Column("result", sa.JSON),
                _req("started_at", sa.DateTime),
                sa.Column("finished_at", sa.DateTime),
            ],
            ["fingerprint", "status", "started_at"],
        ),
        "node_events": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _run_ref(),
                _req("node", sa.String(100)),
                _req("detail", sa.Text),
                _req("data", sa.JSON),
                _req("at", sa.DateTime),
            ],
            ["run_id"],
        ),
        "actions": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _run_ref(),
                _req("action", sa.String(100)),
                _req("component", sa.String(200)),
                _req("dry_run", sa.Boolean),
                _req("outcome", sa.String(16)),
                _req("step", sa.JSON),
                _req("result", sa.JSON),
                _req("at", sa.DateTime),
            ],
            ["run_id"],
        ),
        "llm_calls": (
            [
                sa.Column("id", sa.Integer, primary_key=True),
                _run_ref(),
                _req("model", sa.String(200)),
                _req("purpose", sa.String(100)),
                _req("prompt_tokens", sa.Integer),
                _req("completion_tokens", sa.Integer),
                _req("duration_s", sa.Float),
                _req("ok", sa.Boolean),
                _req("at", sa.DateTime),
            ],
            ["run_id"],
        ),
    }


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    for name, (columns, indexed) in _tables().items():  # runs before the tables that refer to it
        if name in have:
            continue
        op.create_table(name, *columns)
        for column in indexed:
            op.create_index(f"ix_{name}_{column}", name, [column])
        if name == "actions":
            op.create_index("ix_actions_component_action_at", name, ["component", "action", "at"])


def downgrade() -> None:
    for name in reversed(list(_tables())):
        op.drop_table(name)
