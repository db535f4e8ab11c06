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
Statements run in autocommit on a few connections per store, each used by one thread at a time (a
worker's heals recall and learn at once). The statements of one read, or of one write, go in one
pipeline: one round trip. A write's statements run as one transaction, so a killed process leaves
either all of a batch or none of it, and the advisory lock is held only while PostgreSQL runs them.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentheal.memory_lexical import TERMS_VERSION, terms
from agentheal.memory_store import Lexical
from agentheal.storage.errors import UPGRADE_COMMAND, SchemaNotCurrent, StorageError
from agentheal.storage.urls import libpq_url, shown

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.memory_store import Record

CONNECT_TIMEOUT_S = 10
# Connections a store opens at most: a worker runs a few heals at once, each recalling and learning;
# a thread beyond these waits for one.
CONNECTIONS = 8
REVISION = "0006"  # the schema revision that made these tables
_WRITE_LOCK = 0x61676865616D656D  # "aghealmem": one writer of the records and their term counts at a time
# tsvector limits: a lexeme under 2 KB, positions 1..16383, 256 positions a lexeme at most.
_MAX_LEXEME_BYTES, _MAX_POSITION, _MAX_POSITIONS = 2046, 16383, 256
_T = TypeVar("_T")
_K1, _B = 1.2, 0.75  # FTS5's bm25() defaults, which the SQLite store ranks candidates with

_COLUMNS = (
    "id, document, metadata, fingerprint, facts_digest, plan_signature, outcome, occurred_at, version,"
    " vector, indexed, terms, n, tsv"
)
# A write of records, run once the advisory lock is held (its own statement: it reads what the
# writers before it committed): the records replaced (`old`), the records upserted in id order (two
# transactions locking the same rows lock them in one order, so neither waits on the other forever;
# mark_indexed too), every term's count changed by the new records' terms (given) less the replaced
# ones', in term order, and the corpus figures.
_PUT = f"""
WITH old AS MATERIALIZED (SELECT id, terms, n FROM memory_records WHERE id = ANY(%(ids)b::text[])),
up AS (INSERT INTO memory_records ({_COLUMNS})
       SELECT r.id, r.document, r.metadata, r.fingerprint, r.facts_digest, r.plan_signature, r.outcome,
              r.occurred_at, r.version, r.vector, r.indexed, r.terms, r.n, r.tsv::tsvector
       FROM unnest(%(ids)b::text[], %(documents)b::text[], %(metadata)b::text[], %(fingerprints)b::text[],
                   %(digests)b::text[], %(signatures)b::text[], %(outcomes)b::text[], %(occurred)b::float8[],
                   %(versions)b::bigint[], %(vectors)b::bytea[], %(indexed)b::bool[], %(terms)b::text[],
                   %(n)b::int[], %(tsv)b::text[])
            AS r({_COLUMNS})
       ORDER BY r.id COLLATE "C"
       ON CONFLICT (id) DO UPDATE SET document = excluded.document, metadata = excluded.metadata,
       fingerprint = excluded.fingerprint, facts_digest = excluded.facts_digest,
       plan_signature = excluded.plan_signature, outcome = excluded.outcome,
       occurred_at = excluded.occurred_at, version = excluded.version, vector = excluded.vector,
       indexed = excluded.indexed, terms = excluded.terms, n = excluded.n, tsv = excluded.tsv),
change AS (SELECT term, sum(docs)::bigint AS docs
           FROM (SELECT term, docs FROM unnest(%(added)b::text[], %(added_docs)b::bigint[]) AS a(term, docs)
                 UNION ALL
                 SELECT term, -count(*) FROM (SELECT DISTINCT old.id, term
                                              FROM old, unnest(string_to_array(old.terms, ' ')) AS term) AS o
                 GROUP BY term) AS c
           GROUP BY term HAVING sum(docs) <> 0),
counted AS (INSERT INTO memory_lexical_terms SELECT term, docs FROM change ORDER BY term COLLATE "C"
            ON CONFLICT (term) DO UPDATE SET docs = memory_lexical_terms.docs + excluded.docs)
UPDATE memory_lexical_stats SET docs = docs + %(records)b - (SELECT count(*) FROM old),
                                terms = terms + %(length)b - (SELECT coalesce(sum(n), 0) FROM old)
"""
_PENDING = "SELECT count(*) FROM memory_records WHERE NOT indexed"
# FTS5's bm25() over the candidates the GIN index finds: IDF log((N - df + 0.5) / (df + 0.5)), at
# least 1e-6; a record's length and the mean length in terms. The query's terms ranked by are chosen
# here, from the same counts, as `memory_store.retrieval_terms` chooses them: those in any record,
# rarest first (then in the query's order), all of them or those within `budget` records in all.
# The candidates are taken first (the planner, misled by the scoring's estimate, would scan the
# table), each scored by an array lookup of its few lexemes (a join per candidate costs several
# times more).
_LEXICAL_IDS = f"""
WITH s AS MATERIALIZED (SELECT docs::float8 AS docs, terms::float8 / greatest(docs, 1) AS avgdl
                        FROM memory_lexical_stats),
present AS MATERIALIZED (SELECT g.term, g.quoted, sum(t.docs) OVER (ORDER BY t.docs, g.at) AS running
                         FROM unnest(%(terms)s::text[], %(quoted)s::text[])
                              WITH ORDINALITY AS g(term, quoted, at)
                         JOIN memory_lexical_terms AS t ON t.term = g.term WHERE t.docs > 0),
chosen AS MATERIALIZED (SELECT term, quoted FROM present
                        WHERE %(budget)s::bigint IS NULL OR running <= %(budget)s::bigint),
q AS MATERIALIZED (SELECT array_agg(t.term) AS terms,
                          array_agg(greatest(ln((s.docs - t.docs + 0.5) / (t.docs + 0.5)), 1e-6)) AS idf,
                          (SELECT string_agg(quoted, ' | ') FROM chosen)::tsquery AS query
                   FROM memory_lexical_terms AS t, s WHERE t.term IN (SELECT term FROM chosen)),
m AS MATERIALIZED (SELECT seq, id, n, tsv FROM memory_records, q WHERE tsv @@ q.query)
SELECT m.id FROM m, s, q
ORDER BY (SELECT sum(q.idf[array_position(q.terms, u.lexeme)] * cardinality(u.positions) * {_K1 + 1}
                     / (cardinality(u.positions) + {_K1} * ({1 - _B} + {_B} * m.n / greatest(s.avgdl, 1e-9))))
          FROM unnest(m.tsv) AS u WHERE u.lexeme = ANY(q.terms)) DESC, m.seq
LIMIT %(limit)s
"""
_FIGURES = (
    "SELECT s.docs, s.terms, t.term, t.docs FROM (SELECT 1) AS one"
    " LEFT JOIN memory_lexical_stats AS s ON true"
    " LEFT JOIN memory_lexical_terms AS t ON t.term = ANY(%s) AND t.docs > 0"
)
_PENDING_VECTORS = "SELECT id, vector FROM memory_records WHERE NOT indexed AND vector IS NOT NULL"
_ENTRIES = 'SELECT id, document, metadata FROM memory_records WHERE id = ANY(%s) ORDER BY id COLLATE "C"'
# Records indexed as of these versions, in one statement, their rows locked in id order (see _PUT)
_MARK_INDEXED = (
    "WITH v AS (SELECT r.id FROM memory_records AS r"
    " JOIN unnest(%b::text[], %b::bigint[]) AS v(id, version) ON r.id = v.id AND r.version = v.version"
    ' ORDER BY r.id COLLATE "C" FOR UPDATE OF r)'
    " UPDATE memory_records SET indexed = true, vector = NULL FROM v WHERE memory_records.id = v.id"
)
# The outcomes of the plans of these records (what `tally` reads for a recall's hits, read for its
# candidates in the round trip that reads them)
_CANDIDATES_TALLY = (
    "SELECT plan_signature, outcome, count(*) FROM memory_records WHERE plan_signature IN"
    " (SELECT plan_signature FROM memory_records WHERE id = ANY(%s) AND plan_signature != '')"
    " GROUP BY plan_signature, outcome"
)


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
        # A few connections, each used by one thread at a time: a worker's heals recall and learn at
        # once, and one connection would queue them behind each other's round trips.
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._slots = threading.BoundedSemaphore(CONNECTIONS)
        self._closed = False
        if self._run(self._version) != TERMS_VERSION:
            self._index_terms()

    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            # No JIT: the planner's estimate for the BM25 ranking is high enough to compile it, tens
            # of milliseconds each time for a statement that runs in a few. (Not `options=` on
            # connect: that would replace any the URL gives.)
            conn.execute("SET jit = off")
        except psycopg.OperationalError as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {self.where}: {exc}".strip()) from None
        return conn

    def _run(self, work: Callable[[Any], _T]) -> _T:
        """`work` on a connection of this thread's own while it runs, made again and `work` run again
        once when PostgreSQL dropped it (a restart, a failover, an idle time-out): a long-lived
        worker's recall does not fail for that. A write runs in one transaction, so running it again
        after a drop writes it once."""
        import psycopg

        with self._slots:
            with self._lock:
                conn: Any = self._idle.pop() if self._idle else None
            try:
                for attempt in (1, 2):
                    fresh = conn is None or conn.closed
                    if fresh:
                        conn = self._connect()
                    try:
                        return work(conn)
                    except psycopg.OperationalError:
                        if not conn.broken or fresh or attempt == 2:
                            raise
                        conn.close()
                raise AssertionError("unreachable")
            finally:
                self._give_back(conn)

    def _give_back(self, conn: Any) -> None:
        """A connection back to the idle ones, unless it is closed, broken, left in a transaction
        (a failed pipeline) or the store was closed meanwhile."""
        from psycopg.pq import TransactionStatus

        if conn is None or conn.closed:
            return
        with self._lock:
            if (
                not self._closed
                and not conn.broken
                and conn.info.transaction_status == TransactionStatus.IDLE
            ):
                self._idle.append(conn)
                return
        conn.close()

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
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def put(
        self, records: list[Record], vectors: npt.NDArray[np.float32] | None = None, indexed: bool = False
    ) -> int:
        """Write records, pending (not yet in the collection, with their vectors when given) or indexed.

        Returns:
            How many records are pending once they are written.
        """
        # One write of an id: the last given (an id given twice would be upserted twice by one statement)
        last = {rid: i for i, (rid, _, _) in enumerate(records)}
        chosen = [(i, records[i]) for i in sorted(last.values())]
        made = [terms(document) for _, (_, document, _) in chosen]
        texts = [" ".join(found) for found in made]
        added: Counter[str] = Counter()
        for text in texts:
            added.update(set(text.split()))
        changed = sorted(added.items())
        mds = [md for _, (_, _, md) in chosen]
        params = {
            "ids": [rid for _, (rid, _, _) in chosen],
            "documents": [document for _, (_, document, _) in chosen],
            "metadata": [json.dumps(md) for md in mds],
            "fingerprints": [md["fingerprint"] for md in mds],
            "digests": [md.get("facts_digest", "") for md in mds],
            "signatures": [md.get("plan_signature", "") for md in mds],
            "outcomes": [md["outcome"] for md in mds],
            "occurred": [float(md.get("occurred_at", 0.0)) for md in mds],
            "versions": [int(md.get("stored_ns", 0)) for md in mds],
            "vectors": [
                None if vectors is None or indexed else vectors[i].astype("<f4").tobytes() for i, _ in chosen
            ],
            "indexed": [indexed] * len(chosen),
            "terms": texts,
            "n": [_length(text) for text in texts],
            "tsv": [tsvector_text(found) for found in made],
            "added": [t for t, _ in changed],
            "added_docs": [n for _, n in changed],
            "records": len(chosen),
            "length": sum(_length(text) for text in texts),
        }

        def write(conn: Any) -> int:
            # One round trip, one implicit transaction (a pipeline's statements up to its sync): the
            # lock, then the write, which reads the replaced records' terms as the writers before it
            # left them, then the pending records counted with these among them.
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                conn.execute(_PUT, params)
                pending = conn.execute(_PENDING)
            return int(pending.fetchone()[0])

        return self._run(write)

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

    def lexical(
        self, query_terms: list[str], limit: int, budget: int | None, pending: bool = False
    ) -> Lexical:
        """What a search reads before it ranks, in one round trip: the terms' record counts, the corpus
        figures, the ids of the records best matching the query's terms by FTS5's BM25 (at most
        `limit`, ranked by the terms `retrieval_terms` chooses within `budget`), and (`pending`) the
        vectors of the pending records."""
        unique = list(dict.fromkeys(query_terms))

        def read(conn: Any) -> Lexical:
            with conn.pipeline():
                figures = conn.execute(_FIGURES, (unique,))
                ids = None
                if unique:
                    quoted = [_quoted(t) if _fits(t) else None for t in unique]
                    params = {"terms": unique, "quoted": quoted, "budget": budget, "limit": limit}
                    ids = conn.execute(_LEXICAL_IDS, params)
                # after the ids: a pending record they found is among these, or else in the collection
                vectors = conn.execute(_PENDING_VECTORS) if pending else None
            rows = figures.fetchall()
            dfs = {term: int(n) for _, _, term, n in rows if term is not None}
            docs, total = rows[0][0], rows[0][1]
            return Lexical(
                dfs,
                int(docs) if docs else 0,
                total / docs if docs else 0.0,
                [r[0] for r in ids.fetchall()] if ids is not None else [],
                [(rid, bytes(v)) for rid, v in vectors.fetchall()] if vectors is not None else None,
            )

        return self._run(read)

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
        return [(rid, bytes(v)) for rid, v in self._rows(_PENDING_VECTORS)]

    def entries(
        self, ids: list[str], tallied: bool = False
    ) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], int] | None]:
        """id → (document, metadata as stored, JSON text) for those of `ids` that are stored, in `get`'s
        order: a search ranks these and parses the metadata of the few it returns only. `tallied`:
        with `tally` of the plans of these records, read in the same round trip (None without)."""

        def read(conn: Any) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], int] | None]:
            with conn.pipeline():
                rows = conn.execute(_ENTRIES, (ids,))
                tally = conn.execute(_CANDIDATES_TALLY, (ids,)) if tallied else None
            entries = {rid: (doc, md) for rid, doc, md in rows.fetchall()}
            if tally is None:
                return entries, None
            return entries, {(sig, outcome): int(n) for sig, outcome, n in tally.fetchall()}

        return self._run(read)

    def get(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """id → (document, metadata) for those of `ids` that are stored, in the SQLite store's order."""
        return {rid: (doc, json.loads(md)) for rid, doc, md in self._rows(_ENTRIES, (ids,))}

    def mark_indexed(self, versions: list[tuple[str, int]]) -> None:
        """These records are in the collection, as of these versions (a newer write stays pending)."""
        params = ([rid for rid, _ in versions], [version for _, version in versions])
        self._run(lambda conn: conn.execute(_MARK_INDEXED, params))

    def mark_missing(self, ids: list[str]) -> None:
        """These records are not in the collection after all: index them again (re-embedded)."""
        self._run(
            lambda conn: conn.execute("UPDATE memory_records SET indexed = false WHERE id = ANY(%s)", (ids,))
        )

    def indexed_ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM memory_records WHERE indexed")}

    def plan_history(self, fingerprint: str, digest: str) -> list[tuple[str, str, str, float, str | None]]:
        """(id, plan signature, outcome, occurred_at, metadata) of every record of a fingerprint under one
        facts digest that has a plan, oldest first; the metadata (JSON text) of the latest record of
        each plan only, the one a playbook or a remembered plan is read from, in the same round trip."""
        rows = self._rows(
            "SELECT id, plan_signature, outcome, occurred_at, CASE WHEN row_number() OVER"
            ' (PARTITION BY plan_signature ORDER BY occurred_at DESC, version DESC, id COLLATE "C" DESC) = 1'
            " THEN metadata END"
            " FROM memory_records WHERE fingerprint = %s AND facts_digest = %s AND plan_signature != ''"
            ' ORDER BY occurred_at, version, id COLLATE "C"',
            (fingerprint, digest),
        )
        return [(rid, sig, outcome, float(at), md) for rid, sig, outcome, at, md in rows]

    def tally(self, signatures: list[str]) -> dict[tuple[str, str], int]:
        """(plan signature, outcome) → how many records."""
        rows = self._rows(
            "SELECT plan_signature, outcome, count(*) FROM memory_records"
            " WHERE plan_signature = ANY(%s) GROUP BY plan_signature, outcome",
            (signatures,),
        )
        return {(sig, outcome): int(n) for sig, outcome, n in rows}


__all__ = ["PgRecordStore", "tsquery_text", "tsvector_text"]
