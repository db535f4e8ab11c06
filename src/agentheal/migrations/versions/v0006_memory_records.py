"""Memory's records on PostgreSQL: each record's text, metadata and outcome, its terms as a tsvector
under a GIN index (lexical recall), the records per term and the corpus figures BM25 needs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

PostgreSQL only. On SQLite memory keeps its records in `memory/records.sqlite` beside the embedded
chromadb folder (agentheal.memory_store), a file of its own that several processes never share:
these tables would be unused in the event store's file. The terms version starts at 0, so the
first agentheal that opens memory indexes the terms with its own `memory_lexical.terms`.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = (
    "CREATE TABLE memory_records ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,"  # insertion order: BM25 ties, as SQLite's rowid
    " id TEXT PRIMARY KEY,"
    " document TEXT NOT NULL,"
    " metadata TEXT NOT NULL,"  # JSON as memory wrote it
    " fingerprint TEXT NOT NULL,"
    " facts_digest TEXT NOT NULL,"
    " plan_signature TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " occurred_at DOUBLE PRECISION NOT NULL,"
    " version BIGINT NOT NULL,"  # stored_ns: which write of this id a flush indexed
    " vector BYTEA,"  # float32, kept while the record waits to be indexed
    " indexed BOOLEAN NOT NULL,"
    " terms TEXT NOT NULL,"  # memory_lexical.indexed_text: the scoring's input and a replacement's old counts
    " n INTEGER NOT NULL,"  # how many terms
    " tsv TSVECTOR NOT NULL)",
    "CREATE INDEX memory_records_by_fingerprint ON memory_records (fingerprint, facts_digest)",
    "CREATE INDEX memory_records_by_plan ON memory_records (plan_signature, outcome)",
    "CREATE INDEX memory_records_pending ON memory_records (indexed) WHERE NOT indexed",
    "CREATE INDEX memory_records_tsv ON memory_records USING gin (tsv)",
    "CREATE TABLE memory_lexical_terms (term TEXT PRIMARY KEY, docs BIGINT NOT NULL)",
    "CREATE TABLE memory_lexical_stats (one INTEGER PRIMARY KEY CHECK (one = 0),"
    " docs BIGINT NOT NULL, terms BIGINT NOT NULL, terms_version INTEGER NOT NULL)",
    "INSERT INTO memory_lexical_stats VALUES (0, 0, 0, 0)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _TABLES:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("memory_lexical_stats", "memory_lexical_terms", "memory_records"):
        op.execute(f"DROP TABLE {table}")
