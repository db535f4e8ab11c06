"""Memory's record store on PostgreSQL: the same records and lexical index as `memory_store`'s SQLite
file, in the database every worker shares (`AGENTHEAL_DATABASE_URL`).

Tables (made by `agentheal db upgrade`, revision 0006): `memory_records` (one row per record, with
its terms as text and as a `tsvector` under a GIN index), `memory_lexical_terms` (records per term)
and `memory_lexical_stats` (records, terms, and the version of `memory_lexical.terms` they were made
with).

Lexical candidates come from the GIN index, ranked in SQL by the BM25 SQLite's FTS5 ranks with (its
IDF, k1 = 1.2, b = 0.75, term counts from the tsvector's positions, ties in insertion order), so the
candidates, and after `memory_lexical`'s scoring in Python the hits, are those of the SQLite store.
PostgreSQL's own `ts_rank` is not BM25 and would pick other candidates.

Several processes write at once: each write takes one transaction-level advisory lock, so the
counts of terms (read, then changed) stay exact, and a re-index of the terms (a new `TERMS_VERSION`)
takes the same lock and finds the work done when it was waiting on another process's re-index.
Statements run in autocommit on one connection per store; a write runs in one transaction, so a
killed process leaves either all of a batch or none of it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentheal.memory_lexical import TERMS_VERSION, terms
from agentheal.storage.errors import UPGRADE_COMMAND, SchemaNotCurrent, StorageError
from agentheal.storage.urls import libpq_url, shown

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.memory_store import Record

CONNECT_TIMEOUT_S = 10
REVISION = "0006"  # the schema revision that made these tables
_WRITE_LOCK = 0x61676865616D656D  # "aghealmem": one writer of the records and their term counts at a time
# tsvector limits: a lexeme under 2 KB, positions 1..16383, 256 positions a lexeme at most.
_MAX_LEXEME_BYTES, _MAX_POSITION, _MAX_POSITIONS = 2046, 16383, 256
_T = TypeVar("_T")
_K1, _B = 1.2, 0.75  # FTS5's bm25() defaults, which the SQLite store ranks candidates with

_UPSERT = (
    "INSERT INTO memory_records (id, document, metadata, fingerprint, facts_digest, plan_signature,"
    " outcome, occurred_at, version, vector, indexed, terms, n, tsv)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::tsvector)"
    " ON CONFLICT (id) DO UPDATE SET document = excluded.document, metadata = excluded.metadata,"
    " fingerprint = excluded.fingerprint, facts_digest = excluded.facts_digest,"
    " plan_signature = excluded.plan_signature, outcome = excluded.outcome,"
    " occurred_at = excluded.occurred_at, version = excluded.version, vector = excluded.vector,"
    " indexed = excluded.indexed, terms = excluded.terms, n = excluded.n, tsv = excluded.tsv"
)
# Terms' record counts changed in one statement, in the order given (term order: see put)
_ADD_TERMS = (
    "INSERT INTO memory_lexical_terms SELECT term, docs"
    " FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS c(term, docs, at) ORDER BY at"
    " ON CONFLICT (term) DO UPDATE SET docs = memory_lexical_terms.docs + excluded.docs"
)
# FTS5's bm25() over the candidates the GIN index finds: IDF log((N - df + 0.5) / (df + 0.5)), at
# least 1e-6; a record's length and the mean length in terms. The candidates are taken first (the
# planner, misled by the scoring's estimate, would scan the table), each scored by an array lookup
# of its few lexemes (a join per candidate costs several times more).
_LEXICAL_IDS = f"""
WITH s AS MATERIALIZED (SELECT docs::float8 AS docs, terms::float8 / greatest(docs, 1) AS avgdl
                        FROM memory_lexical_stats),
q AS MATERIALIZED (SELECT array_agg(t.term) AS terms,
                          array_agg(greatest(ln((s.docs - t.docs + 0.5) / (t.docs + 0.5)), 1e-6)) AS idf
                   FROM memory_lexical_terms AS t, s WHERE t.term = ANY(%(terms)s)),
m AS MATERIALIZED (SELECT seq, id, n, tsv FROM memory_records WHERE tsv @@ %(query)s::tsquery)
SELECT m.id FROM m, s, q
ORDER BY (SELECT sum(q.idf[array_position(q.terms, u.lexeme)] * cardinality(u.positions) * {_K1 + 1}
                     / (cardinality(u.positions) + {_K1} * ({1 - _B} + {_B} * m.n / greatest(s.avgdl, 1e-9))))
          FROM unnest(m.tsv) AS u WHERE u.lexeme = ANY(q.terms)) DESC, m.seq
LIMIT %(limit)s
"""


def _quoted(lexeme: str) -> str:
    """A lexeme as tsvector and tsquery text read it: quoted, its quotes doubled, backslashes escaped."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _fits(term: str) -> bool:
    return len(term.encode()) <= _MAX_LEXEME_BYTES


def tsvector_text(doc_terms: list[str]) -> str:
    """The terms of a record as a tsvector literal, each with its positions (its count is BM25's tf)."""
    positions: dict[str, list[int]] = {}
    for at, term in enumerate(doc_terms, start=1):
        if _fits(term):
            positions.setdefault(term, []).append(min(at, _MAX_POSITION))
    return " ".join(
        f"{_quoted(term)}:{','.join(map(str, sorted(set(found))[:_MAX_POSITIONS]))}"
        for term, found in positions.items()
    )


def tsquery_text(query_terms: list[str]) -> str:
    """A tsquery matching any of the terms (the FTS5 store's `fts_query`)."""
    return " | ".join(_quoted(t) for t in dict.fromkeys(query_terms) if _fits(t))


def _length(text: str) -> int:
    return text.count(" ") + 1 if text else 0


class PgRecordStore:
    """Records by id in PostgreSQL: what `memory_store.RecordStore` does, for several workers."""

    def __init__(self, url: str) -> None:
        self.url = libpq_url(url)
        self.where = shown(url)
        # One connection, one statement at a time (as the SQLite store): a recall's statements take
        # well under a millisecond each, and a connection nobody closes leaves no thread behind.
        self._lock = threading.Lock()
        self._db: Any = None
        if self._run(self._version) != TERMS_VERSION:
            self._index_terms()

    def _run(self, work: Callable[[Any], _T]) -> _T:
        """`work` on the connection, made again and `work` run again once when PostgreSQL dropped it
        (a restart, a failover, an idle time-out): a long-lived worker's recall does not fail for that.
        A write runs in one transaction, so running it again after a drop writes it once."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                fresh = self._db is None or self._db.closed
                if fresh:
                    try:
                        self._db = psycopg.connect(
                            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                        )
                        # No JIT: the planner's estimate for the BM25 ranking is high enough to compile
                        # it, tens of milliseconds each time for a statement that runs in a few. (Not
                        # `options=` on connect: that would replace any the URL gives.)
                        self._db.execute("SET jit = off")
                    except psycopg.OperationalError as exc:
                        raise StorageError(
                            f"cannot connect to PostgreSQL at {self.where}: {exc}".strip()
                        ) from None
                try:
                    return work(self._db)
                except psycopg.OperationalError:
                    if not self._db.broken or fresh or attempt == 2:
                        raise
                    self._db.close()
            raise AssertionError("unreachable")

    def _version(self, conn: Any) -> int:
        if conn.execute("SELECT to_regclass('memory_lexical_stats')").fetchone()[0] is None:
            raise SchemaNotCurrent(
                f"the database at {self.where} has no memory tables (schema revision {REVISION}): "
                f"run `{UPGRADE_COMMAND}`"
            )
        row = conn.execute("SELECT terms_version FROM memory_lexical_stats").fetchone()
        return int(row[0]) if row else -1

    def _index_terms(self) -> None:
        """(Re)build the lexical index from the records: a store whose terms another version made."""
        self._run(self._reindex)

    def _reindex(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            if self._version(conn) == TERMS_VERSION:  # another process did it while this one waited
                return
            rows = conn.execute("SELECT id, document FROM memory_records").fetchall()
            per_term: Counter[str] = Counter()
            total = 0
            with conn.cursor() as cur:
                for start in range(0, len(rows), 5000):
                    made = []
                    for rid, document in rows[start : start + 5000]:
                        found = terms(document)
                        text = " ".join(found)
                        made.append((text, _length(text), tsvector_text(found), rid))
                        per_term.update(set(found))
                        total += _length(text)
                    cur.executemany(
                        "UPDATE memory_records SET terms = %s, n = %s, tsv = %s::tsvector WHERE id = %s", made
                    )
                conn.execute("DELETE FROM memory_lexical_terms")
                cur.executemany("INSERT INTO memory_lexical_terms VALUES (%s, %s)", sorted(per_term.items()))
            conn.execute(
                "INSERT INTO memory_lexical_stats VALUES (0, %s, %s, %s) ON CONFLICT (one) DO UPDATE SET"
                " docs = excluded.docs, terms = excluded.terms, terms_version = excluded.terms_version",
                (len(rows), total, TERMS_VERSION),
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    def put(
        self, records: list[Record], vectors: npt.NDArray[np.float32] | None = None, indexed: bool = False
    ) -> None:
        """Write records, pending (not yet in the collection, with their vectors when given) or indexed."""
        made = [terms(document) for _, document, _ in records]
        texts = [" ".join(found) for found in made]
        rows = [
            (
                rid,
                document,
                json.dumps(md),
                md["fingerprint"],
                md.get("facts_digest", ""),
                md.get("plan_signature", ""),
                md["outcome"],
                float(md.get("occurred_at", 0.0)),
                int(md.get("stored_ns", 0)),
                None if vectors is None or indexed else vectors[i].astype("<f4").tobytes(),
                indexed,
                texts[i],
                _length(texts[i]),
                tsvector_text(made[i]),
            )
            for i, (rid, document, md) in enumerate(records)
        ]
        ids = [r[0] for r in records]

        def write(conn: Any) -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                old = dict(
                    conn.execute("SELECT id, terms FROM memory_records WHERE id = ANY(%s)", (ids,)).fetchall()
                )
                change: Counter[str] = Counter()
                for text in texts:
                    change.update(set(text.split()))
                for text in old.values():
                    change.subtract(set(text.split()))
                # Rows in id order, here and in mark_indexed: two transactions locking the same
                # rows lock them in one order, so neither waits on the other forever.
                ordered = sorted(rows, key=lambda row: row[0])
                if len(ordered) == 1:  # a heal's record: one statement (executemany's pipeline costs more)
                    conn.execute(_UPSERT, ordered[0])
                else:
                    with conn.cursor() as cur:
                        cur.executemany(_UPSERT, ordered)
                changed = sorted((t, n) for t, n in change.items() if n)
                if changed:  # every term's count in one statement, in term order
                    conn.execute(_ADD_TERMS, ([t for t, _ in changed], [n for _, n in changed]))
                added = sum(_length(t) for t in texts) - sum(_length(t) for t in old.values())
                conn.execute(
                    "UPDATE memory_lexical_stats SET docs = docs + %s, terms = terms + %s",
                    (len(set(ids) - set(old)), added),
                )

        self._run(write)

    def _rows(self, sql: str, params: Any = None) -> list[Any]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def lexical_stats(self) -> tuple[int, float]:
        """(records, their mean number of terms): the corpus figures BM25 needs."""
        rows = self._rows("SELECT docs, terms FROM memory_lexical_stats")
        if not rows or not rows[0][0]:
            return 0, 0.0
        return int(rows[0][0]), rows[0][1] / rows[0][0]

    def doc_freqs(self, query_terms: list[str]) -> dict[str, int]:
        """How many records hold each term (absent terms are left out)."""
        unique = list(dict.fromkeys(query_terms))
        if not unique:
            return {}
        rows = self._rows("SELECT term, docs FROM memory_lexical_terms WHERE term = ANY(%s)", (unique,))
        return {term: int(n) for term, n in rows if n > 0}

    def lexical_figures(self, query_terms: list[str]) -> tuple[dict[str, int], int, float]:
        """`doc_freqs` and `lexical_stats` in one read (one round trip a search, not two)."""
        rows = self._rows(
            "SELECT s.docs, s.terms, t.term, t.docs FROM (SELECT 1) AS one"
            " LEFT JOIN memory_lexical_stats AS s ON true"
            " LEFT JOIN memory_lexical_terms AS t ON t.term = ANY(%s) AND t.docs > 0",
            (list(dict.fromkeys(query_terms)),),
        )
        dfs = {term: int(n) for _, _, term, n in rows if term is not None}
        docs, total = rows[0][0], rows[0][1]
        return (dfs, int(docs), total / docs) if docs else (dfs, 0, 0.0)

    def lexical_ids(self, query_terms: list[str], limit: int) -> list[str]:
        """Ids of the records best matching any of the terms by FTS5's BM25, at most `limit`."""
        query = tsquery_text(query_terms)
        if not query:
            return []
        params = {"terms": list(dict.fromkeys(query_terms)), "query": query, "limit": limit}
        return [r[0] for r in self._rows(_LEXICAL_IDS, params)]

    def count(self, indexed: bool | None = None) -> int:
        where = "" if indexed is None else f" WHERE {'' if indexed else 'NOT '}indexed"
        return int(self._rows("SELECT count(*) FROM memory_records" + where)[0][0])

    def known(self, ids: list[str]) -> set[str]:
        """Which of these ids are stored."""
        return {r[0] for r in self._rows("SELECT id FROM memory_records WHERE id = ANY(%s)", (ids,))}

    def pending(self) -> list[tuple[str, str, bytes | None, int]]:
        """Records not yet in the collection: (id, document, vector bytes or None, version), oldest first."""
        rows = self._rows(
            "SELECT id, document, vector, version FROM memory_records WHERE NOT indexed ORDER BY version"
        )
        return [(rid, doc, bytes(v) if v is not None else None, int(ver)) for rid, doc, v, ver in rows]

    def pending_vectors(self) -> list[tuple[str, bytes]]:
        """(id, vector bytes) of the pending records that have a vector."""
        rows = self._rows("SELECT id, vector FROM memory_records WHERE NOT indexed AND vector IS NOT NULL")
        return [(rid, bytes(v)) for rid, v in rows]

    def documents(self, ids: list[str]) -> dict[str, str]:
        """id → document for those of `ids` that are stored, in `get`'s order."""
        rows = self._rows(
            'SELECT id, document FROM memory_records WHERE id = ANY(%s) ORDER BY id COLLATE "C"', (ids,)
        )
        return dict(rows)

    def entries(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """`documents` with each record's metadata as stored (JSON text): a search ranks these and
        parses the metadata of the few it returns only, read in the same round trip."""
        rows = self._rows(
            'SELECT id, document, metadata FROM memory_records WHERE id = ANY(%s) ORDER BY id COLLATE "C"',
            (ids,),
        )
        return {rid: (doc, md) for rid, doc, md in rows}

    def get(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """id → (document, metadata) for those of `ids` that are stored, in the SQLite store's order."""
        rows = self._rows(
            'SELECT id, document, metadata FROM memory_records WHERE id = ANY(%s) ORDER BY id COLLATE "C"',
            (ids,),
        )
        return {rid: (doc, json.loads(md)) for rid, doc, md in rows}

    def mark_indexed(self, versions: list[tuple[str, int]]) -> None:
        """These records are in the collection, as of these versions (a newer write stays pending)."""

        def mark(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "UPDATE memory_records SET indexed = true, vector = NULL WHERE id = %s AND version = %s",
                    sorted(versions),
                )

        self._run(mark)

    def mark_missing(self, ids: list[str]) -> None:
        """These records are not in the collection after all: index them again (re-embedded)."""
        self._run(
            lambda conn: conn.execute("UPDATE memory_records SET indexed = false WHERE id = ANY(%s)", (ids,))
        )

    def indexed_ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM memory_records WHERE indexed")}

    def plan_history(self, fingerprint: str, digest: str) -> list[tuple[str, str, str, float]]:
        """(id, plan signature, outcome, occurred_at) of every record of a fingerprint under one facts
        digest that has a plan, oldest first."""
        rows = self._rows(
            "SELECT id, plan_signature, outcome, occurred_at FROM memory_records"
            " WHERE fingerprint = %s AND facts_digest = %s AND plan_signature != ''"
            " ORDER BY occurred_at, version",
            (fingerprint, digest),
        )
        return [(rid, sig, outcome, float(at)) for rid, sig, outcome, at in rows]

    def tally(self, signatures: list[str]) -> dict[tuple[str, str], int]:
        """(plan signature, outcome) → how many records."""
        rows = self._rows(
            "SELECT plan_signature, outcome, count(*) FROM memory_records"
            " WHERE plan_signature = ANY(%s) GROUP BY plan_signature, outcome",
            (signatures,),
        )
        return {(sig, outcome): int(n) for sig, outcome, n in rows}


__all__ = ["PgRecordStore", "tsquery_text", "tsvector_text"]
