"""Where agentheal keeps what it records: SQLite files under the home folder by default, one
PostgreSQL database for several workers (`AGENTHEAL_DATABASE_URL`).

- `urls`: what a database URL may say, and each driver's form of it.
- `schema`: the event store's Alembic revision, checked on open, upgraded by `agentheal db upgrade`.
- `checkpoints`: the heal graph's checkpointer (SqliteSaver or PostgresSaver), from one factory.

Submodules import their heavy libraries (SQLAlchemy, Alembic, psycopg, LangGraph) when used.
"""

from agentheal.storage.errors import UPGRADE_COMMAND, SchemaNotCurrent, StorageError

__all__ = ["UPGRADE_COMMAND", "SchemaNotCurrent", "StorageError"]
