"""Alembic's environment for the event store: run on the connection `agentheal.storage.schema` hands
over (`config.attributes["connection"]`), inside the transaction it holds, so a migration and the
check that asked for it see one state of the database."""

from __future__ import annotations

from alembic import context

if context.is_offline_mode():
    raise SystemExit("agentheal's migrations run against a database: `agentheal db upgrade`")

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    # SQLite alters most of a table only by copying it: later migrations write op.batch_alter_table
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
