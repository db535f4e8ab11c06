"""The record store under memory: every record in SQLite, the source of truth beside chromadb.

Memory keeps two things per record: its text, metadata and outcome (here, in one SQLite file)
and its vector (in the chromadb collection, which answers "what is similar"). A new heal's
record is committed here first, with its vector, and marked pending; pending records are
moved into the collection in batches (`Settings.memory_index_batch`), because one chromadb
write costs about as much as writing thirty at once. Until then recall searches them here, by
brute force over at most a batch of vectors, so a pending record is found like any other.

Exact lookups (the plans tried on a fingerprint, outcome counts per plan) are answered here by
index, never by a chromadb metadata scan. Each record's gap text is also kept as terms in an FTS5
table (`records_fts`, rowid = the record's rowid, written in the same transaction), which answers
lexical recall (`agentheal.memory_lexical`); a store written before it, or with other terms, is
indexed again when opened. A record is written here before its vector goes to
the collection, so a process killed at any point loses nothing: a pending record is still here
and is indexed by the next flush (`Memory` reconciles the two on open).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from agentheal.memory_lexical import TERMS_VERSION, TOKENCHARS, fts_query, indexed_text

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Record = tuple[str, str, dict[str, Any]]  # id, document (the gap text), metadata


class Lexical(NamedTuple):
    """What a search reads from a record store before it ranks (`lexical`)."""

    dfs: dict[str, int]  # records per query term (terms in none left out)
    docs: int  # records
    mean_terms: float  # their mean number of terms
    ids: list[str]  # the records best matching the query's terms by BM25, best first
    pending: list[tuple[str, bytes]] | None  # the pending records' vectors, when read with these


def retrieval_terms(query_terms: list[str], dfs: dict[str, int], budget: int | None) -> list[str]:
    """The query terms FTS5 ranks candidates by: all of them, or the rarest within `budget` postings."""
    present = sorted((t for t in dict.fromkeys(query_terms) if dfs.get(t)), key=lambda t: dfs[t])
    if budget is None:
        return present
    chosen, total = [], 0
    for term in present:
        total += dfs[term]
        if total > budget:
            break
        chosen.append(term)
    return chosen


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS records ("
    " id TEXT PRIMARY KEY,"
    " document TEXT NOT NULL,"
    " metadata TEXT NOT NULL,"  # JSON: outcome, resolution, plan, facts, run, persona...
    " fingerprint TEXT NOT NULL,"
    " facts_digest TEXT NOT NULL,"
    " plan_signature TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " occurred_at REAL NOT NULL,"
    " version INTEGER NOT NULL,"  # stored_ns: which write of this id a flush indexed
    " vector BLOB,"  # float32, kept while the record waits to be indexed
    " indexed INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS records_by_fingerprint ON records (fingerprint, facts_digest)",
    "CREATE INDEX IF NOT EXISTS records_by_plan ON records (plan_signature, outcome)",
    "CREATE INDEX IF NOT EXISTS records_pending ON records (indexed) WHERE indexed = 0",
    # Terms are made in Python (memory_lexical.terms); FTS5 only splits on the spaces between them.
    "CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5("
    f"terms, n UNINDEXED, tokenize = \"unicode61 tokenchars '{TOKENCHARS}'\")",
    "CREATE TABLE IF NOT EXISTS lexical_stats (one INTEGER PRIMARY KEY CHECK (one = 0),"
    " docs INTEGER NOT NULL, terms INTEGER NOT NULL)",
    # Records per term, kept here because FTS5's vocabulary counts a term's postings at each read
    # (milliseconds for a common term in 100,000 records).
    "CREATE TABLE IF NOT EXISTS lexical_terms (term TEXT PRIMARY KEY, docs INTEGER NOT NULL) WITHOUT ROWID",
)
_UPSERT = (
    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " document = excluded.document, metadata = excluded.metadata, fingerprint = excluded.fingerprint,"
    " facts_digest = excluded.facts_digest, plan_signature = excluded.plan_signature,"
    " outcome = excluded.outcome, occurred_at = excluded.occurred_at, version = excluded.version,"
    " vector = excluded.vector, indexed = excluded.indexed"  # an update keeps the rowid the terms use
)


def _length(text: str) -> int:
    return text.count(" ") + 1 if text else 0


class RecordStore:
    """Records by id in SQLite (WAL): written before the vector index, read by exact lookups."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit survives a killed process in WAL mode with NORMAL; only a power cut can lose
        # the last ones, and the collection then still holds what was indexed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        if self._db.execute("PRAGMA user_version").fetchone()[0] != TERMS_VERSION:
            self._index_terms()

    def _index_terms(self) -> None:
        """(Re)build the lexical index from the records: a store from before it, or older terms."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # another process may be doing the same: one does it
            try:
                if self._db.execute("PRAGMA user_version").fetchone()[0] == TERMS_VERSION:
                    self._db.execute("COMMIT")
                    return
                self._db.execute("DELETE FROM records_fts")
                self._db.execute("DELETE FROM lexical_terms")
                total = docs = 0
                per_term: Counter[str] = Counter()
                rows = self._db.execute("SELECT rowid, document FROM records").fetchall()
                for start in range(0, len(rows), 5000):
                    part = [(rowid, indexed_text(doc)) for rowid, doc in rows[start : start + 5000]]
                    made = [(rowid, text, _length(text)) for rowid, text in part]
                    self._db.executemany("INSERT INTO records_fts (rowid, terms, n) VALUES (?, ?, ?)", made)
                    total += sum(m[2] for m in made)
                    docs += len(made)
                    for _, text in part:
                        per_term.update(set(text.split()))
                self._db.executemany("INSERT INTO lexical_terms VALUES (?, ?)", per_term.items())
                self._db.execute("INSERT OR REPLACE INTO lexical_stats VALUES (0, ?, ?)", (docs, total))
                self._db.execute(f"PRAGMA user_version = {TERMS_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(
        self, records: list[Record], vectors: npt.NDArray[np.float32] | None = None, indexed: bool = False
    ) -> int:
        """Write records, pending (not yet in the collection, with their vectors when given) or indexed.

        Returns:
            How many records are pending once they are written.
        """
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
                int(indexed),
            )
            for i, (rid, document, md) in enumerate(records)
        ]
        texts = [indexed_text(document) for _, document, _ in records]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                old = self._old_terms([r[0] for r in records])
                self._db.executemany(_UPSERT, rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO records_fts (rowid, terms, n)"
                    " SELECT rowid, ?, ? FROM records WHERE id = ?",
                    [(t, _length(t), r[0]) for t, r in zip(texts, records, strict=True)],
                )
                added = sum(_length(t) for t in texts) - sum(_length(t) for t in old.values())
                change: Counter[str] = Counter()
                for text in texts:
                    change.update(set(text.split()))
                for text in old.values():
                    change.subtract(set(text.split()))
                self._db.executemany(
                    "INSERT INTO lexical_terms VALUES (?, ?) ON CONFLICT (term) DO UPDATE SET"
                    " docs = docs + excluded.docs",
                    [(t, n) for t, n in change.items() if n],
                )
                self._db.execute(
                    "INSERT INTO lexical_stats VALUES (0, ?, ?) ON CONFLICT (one) DO UPDATE SET"
                    " docs = docs + excluded.docs, terms = terms + excluded.terms",
                    (len({r[0] for r in records} - set(old)), added),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(self._db.execute("SELECT count(*) FROM records WHERE indexed = 0").fetchone()[0])

    def _old_terms(self, ids: list[str]) -> dict[str, str]:
        """Indexed terms of the records among `ids` already stored (their replacement changes the counts)."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            found.update(
                self._db.execute(
                    "SELECT r.id, f.terms FROM records AS r JOIN records_fts AS f ON f.rowid = r.rowid"
                    f" WHERE r.id IN ({marks})",
                    part,
                ).fetchall()
            )
        return found

    def lexical_stats(self) -> tuple[int, float]:
        """(records, their mean number of terms): the corpus figures BM25 needs."""
        with self._lock:
            row = self._db.execute("SELECT docs, terms FROM lexical_stats").fetchone()
        if row is None or not row[0]:
            return 0, 0.0
        return int(row[0]), row[1] / row[0]

    def doc_freqs(self, query_terms: list[str]) -> dict[str, int]:
        """How many records hold each term (absent terms are left out)."""
        unique = list(dict.fromkeys(query_terms))
        if not unique:
            return {}
        marks = ",".join("?" * len(unique))
        with self._lock:
            rows = self._db.execute(f"SELECT term, docs FROM lexical_terms WHERE term IN ({marks})", unique)
            return {term: int(n) for term, n in rows if n > 0}

    def lexical(
        self, query_terms: list[str], limit: int, budget: int | None, pending: bool = False
    ) -> Lexical:
        """What a search reads before it ranks: `doc_freqs`, `lexical_stats`, and the `lexical_ids` of
        the terms `retrieval_terms` chooses within `budget` (the PostgreSQL store reads them at once,
        with the pending vectors when asked; here those are left to `pending_vectors`)."""
        dfs = self.doc_freqs(query_terms)
        docs, mean_terms = self.lexical_stats()
        ids = self.lexical_ids(retrieval_terms(query_terms, dfs, budget), limit) if query_terms else []
        return Lexical(dfs, docs, mean_terms, ids, None)

    def lexical_ids(self, query_terms: list[str], limit: int) -> list[str]:
        """Ids of the records best matching any of the terms by FTS5's BM25, at most `limit`."""
        if not query_terms:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT r.id FROM (SELECT rowid, rank FROM records_fts WHERE records_fts MATCH ?"
                " ORDER BY rank LIMIT ?) AS f JOIN records AS r ON r.rowid = f.rowid ORDER BY f.rank",
                (fts_query(query_terms), limit),
            )
            return [r[0] for r in rows]

    def count(self, indexed: bool | None = None) -> int:
        sql = "SELECT count(*) FROM records" + ("" if indexed is None else f" WHERE indexed = {int(indexed)}")
        with self._lock:
            return int(self._db.execute(sql).fetchone()[0])

    def known(self, ids: list[str]) -> set[str]:
        """Which of these ids are stored."""
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                found.update(
                    r[0] for r in self._db.execute(f"SELECT id FROM records WHERE id IN ({marks})", part)
                )
        return found

    def pending(self) -> list[tuple[str, str, bytes | None, int]]:
        """Records not yet in the collection: (id, document, vector bytes or None, version), oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT id, document, vector, version FROM records WHERE indexed = 0 ORDER BY version"
            ).fetchall()

    def pending_vectors(self) -> list[tuple[str, bytes]]:
        """(id, vector bytes) of the pending records that have a vector."""
        with self._lock:
            return self._db.execute(
                "SELECT id, vector FROM records WHERE indexed = 0 AND vector IS NOT NULL"
            ).fetchall()

    def documents(self, ids: list[str]) -> dict[str, str]:
        """id → document for those of `ids` that are stored, in `get`'s order (a search ranks these
        and reads the metadata of the few it returns only)."""
        marks = ",".join("?" * len(ids))
        with self._lock:
            return dict(self._db.execute(f"SELECT id, document FROM records WHERE id IN ({marks})", ids))

    def entries(
        self, ids: list[str], tallied: bool = False
    ) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], int] | None]:
        """`documents` with each record's metadata as stored (JSON text), in `get`'s order. The PostgreSQL
        store reads `tally` of their plans with them when `tallied`; here that is left to `tally` (None)."""
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(f"SELECT id, document, metadata FROM records WHERE id IN ({marks})", ids)
            return {rid: (doc, md) for rid, doc, md in rows}, None

    def get(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """id → (document, metadata) for those of `ids` that are stored."""
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(f"SELECT id, document, metadata FROM records WHERE id IN ({marks})", ids)
            return {rid: (doc, json.loads(md)) for rid, doc, md in rows}

    def mark_indexed(self, versions: list[tuple[str, int]]) -> None:
        """These records are in the collection, as of these versions (a newer write stays pending)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE records SET indexed = 1, vector = NULL WHERE id = ? AND version = ?", versions
            )
            self._db.execute("COMMIT")

    def mark_missing(self, ids: list[str]) -> None:
        """These records are not in the collection after all: index them again (re-embedded)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE records SET indexed = 0 WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")

    def indexed_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM records WHERE indexed = 1")}

    def plan_history(self, fingerprint: str, digest: str) -> list[tuple[str, str, str, float, str | None]]:
        """(id, plan signature, outcome, occurred_at, None) of every record of a fingerprint under one
        facts digest that has a plan, oldest first: light rows, however long the fingerprint's history
        (the PostgreSQL store gives the metadata of each plan's latest record in place of None)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, plan_signature, outcome, occurred_at FROM records"
                " WHERE fingerprint = ? AND facts_digest = ? AND plan_signature != ''"
                " ORDER BY occurred_at, version",
                (fingerprint, digest),
            ).fetchall()
        return [(*row, None) for row in rows]

    def tally(self, signatures: list[str]) -> dict[tuple[str, str], int]:
        """(plan signature, outcome) → how many records."""
        marks = ",".join("?" * len(signatures))
        sql = (
            "SELECT plan_signature, outcome, count(*) FROM records"
            f" WHERE plan_signature IN ({marks}) GROUP BY plan_signature, outcome"
        )
        with self._lock:
            return {(sig, outcome): n for sig, outcome, n in self._db.execute(sql, signatures)}
