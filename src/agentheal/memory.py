"""Resolution memory: every finished heal and imported incident history, recalled by meaning.

One chromadb collection (cosine space) in `settings.memory_dir` holds the vectors. Embeddings
come from `agentheal.embedding` and are always passed explicitly: chromadb's default embedding
function would download a model, which many hosts cannot do. Every record is also in a SQLite
record store beside it (`agentheal.memory_store`), which is written first, answers the exact
lookups (the plans tried on a fingerprint, outcome counts) and lets a heal's record reach the
collection in batches. Playbooks and remembered plans are derived from the stored records of a
fingerprint each time they are asked for, so there is no second copy of the outcomes that could
drift from the records.

For several workers (`agentheal.memory_backends`) the collection is on a Chroma server
(`AGENTHEAL_MEMORY_URL`) and the record store in PostgreSQL (`agentheal.memory_pg`, when
`AGENTHEAL_DATABASE_URL` is set); everything below works the same on either.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from agentheal.embedding import get_embedder
from agentheal.memory_lexical import MODES, LexicalScorer, fused, terms
from agentheal.memory_store import Record
from agentheal.models import GapKind, MemoryHit, Plan, Resolution, clean_component, clean_text, fingerprint_of
from agentheal.storage.errors import StorageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.config import Settings
    from agentheal.models import Gap

COLLECTION = "resolutions"
# Texts per embedding call on import: large enough to amortise the call, small enough to stay in cache.
_EMBED_BATCH = 64
_SUMMARY_CHARS = 1000
_NOT_JSON = object()  # an import line that did not parse (already reported)
# Candidates each side of a fused search brings: k times this, and at least _MIN_POOL.
_POOL_PER_K, _MIN_POOL = 4, 20
# Postings a hybrid search lets FTS5 rank: the rarest query terms up to this many matching records.
# A term in more records than that says little (its IDF is low) and would cost more than the
# dense search; it still counts in each candidate's score.
_LEXICAL_BUDGET = 2000
# Vectors kept in the process by record id (1.5 KB each): a hybrid search needs the cosine of the
# records only its lexical half found, and the same past records come up heal after heal; asking
# chromadb for them each time cost a heal ~1 ms. A record id never gets another text (heal ids are
# new, import ids digest the text), so a kept vector never goes stale.
_VECTORS_KEPT = 8192


class MemoryStoreError(StorageError):
    """Memory cannot be opened (its folder, its Chroma server, its PostgreSQL tables) or used as asked;
    a StorageError, so every door reports it as the other stores' errors."""


class MemoryImportError(MemoryStoreError):
    """An import file is missing, unreadable, empty, or has no valid line."""


class ImportReport(BaseModel):
    """What `import_jsonl` did: records added, lines skipped, and why each skipped line was."""

    imported: int
    skipped: int
    errors: list[str]


class ImportLine(BaseModel):
    """One record of the import contract (a line of `memory import`, an item of `POST /memory`)."""

    model_config = ConfigDict(extra="forbid")

    gap: str
    resolution: str
    outcome: Literal["healed", "failed"]
    component: str | None = None
    kind: GapKind = GapKind.incident
    tags: list[str] = []
    occurred_at: datetime | None = None

    @field_validator("gap", "resolution")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        return clean_text(v)

    @field_validator("component")
    @classmethod
    def _component(cls, v: str | None) -> str | None:
        return clean_component(v)


def facts_digest(facts: list[str]) -> str:
    """A short digest of a set of diagnosis facts: order and repeats do not matter."""
    return hashlib.sha256("\n".join(sorted(set(facts))).encode()).hexdigest()[:16]


def _summary(resolution: Resolution) -> str:
    """The resolution text of a heal: what the plan did and why, and how it ended."""
    plan = resolution.plan
    if plan is not None and plan.steps:
        text = plan.signature() + (f" — {plan.hypothesis}" if plan.hypothesis else "")
    else:
        text = "no plan"
    if not resolution.healed:
        text += f" — did not heal ({resolution.status.value})"
        if resolution.reason:
            text += f": {resolution.reason}"
    return text[:_SUMMARY_CHARS]


def _metadata(
    fingerprint: str,
    gap_kind: str,
    component: str | None,
    outcome: str,
    resolution: str,
    occurred_at: datetime,
    source: Literal["heal", "import"],
    **extra: str,
) -> dict[str, Any]:
    """The metadata of one record; chromadb takes no None, so absent values are empty strings."""
    return {
        "fingerprint": fingerprint,
        "component": component or "",
        "kind": gap_kind,
        "outcome": outcome,
        "resolution": resolution,
        "occurred_at": occurred_at.timestamp(),
        "stored_ns": time.time_ns(),  # orders records stored within one clock tick
        "source": source,
        **{
            key: extra.get(key, "") for key in ("plan", "plan_signature", "facts_digest", "run_id", "persona")
        },
        "facts": extra.get("facts", "[]"),
        "tags": extra.get("tags", "[]"),
    }


def heal_record(resolution: Resolution, facts: list[str]) -> Record:
    """The id, document and metadata memory keeps for a finished heal.

    The id comes from the run and the plan, so storing the same attempt twice (a resumed run)
    overwrites instead of counting it twice.
    """
    plan, gap = resolution.plan, resolution.gap
    signature = plan.signature() if plan is not None else ""
    metadata = _metadata(
        gap.fingerprint,
        gap.kind.value,
        gap.component,
        "healed" if resolution.healed else "failed",
        _summary(resolution),
        resolution.finished_at,
        "heal",
        plan=plan.model_dump_json() if plan is not None else "",
        plan_signature=signature,
        facts_digest=facts_digest(facts),
        facts=json.dumps(sorted(set(facts))),
        run_id=resolution.run_id,
        persona=resolution.persona or "",
    )
    record_id = f"heal-{resolution.run_id}-{hashlib.sha256(signature.encode()).hexdigest()[:8]}"
    return record_id, gap.text, metadata


def _import_record(line: ImportLine) -> Record:
    occurred = line.occurred_at or datetime.now(UTC)
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)  # the contract's times are UTC unless they say otherwise
    # The same line imported twice is one record; a line without a time is the same whenever imported.
    given = occurred.timestamp() if line.occurred_at else None
    key = json.dumps([line.gap, line.resolution, line.outcome, line.component, line.kind.value, given])
    metadata = _metadata(
        fingerprint_of(line.kind.value, line.component, line.gap),
        line.kind.value,
        line.component,
        line.outcome,
        line.resolution,
        occurred,
        "import",
        tags=json.dumps(line.tags),
    )
    return "import-" + hashlib.sha256(key.encode()).hexdigest()[:20], line.gap, metadata


def _why(exc: ValidationError) -> str:
    """A pydantic error as one short sentence per problem, naming the field."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "line"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r}")
        elif err["type"] == "missing":
            parts.append(f"field {field!r} is missing")
        else:
            parts.append(f"field {field!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Memory:
    """Past resolutions in a chromadb collection, with their outcomes."""

    def __init__(self, settings: Settings) -> None:
        from chromadb.errors import ChromaError

        from agentheal.memory_backends import MemoryUrlError, chroma_client, record_store

        self.settings = settings
        self.embedder = get_embedder(settings)
        self.path = settings.memory_dir
        self.where = str(self.path)  # or the Chroma server's URL, once it answered
        try:
            self._client, self.where = chroma_client(settings)
            # embedding_function=None: we always pass embeddings, and the default one downloads a model.
            self.collection: Any = self._client.get_or_create_collection(
                COLLECTION,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedder": self.embedder.name},
                embedding_function=None,
            )
        except MemoryUrlError as exc:
            raise MemoryStoreError(str(exc)) from None
        except (ChromaError, OSError, ValueError, RuntimeError) as exc:
            raise MemoryStoreError(f"cannot open memory at {self.where}: {exc}") from exc
        made_by = (self.collection.metadata or {}).get("embedder")
        if made_by and made_by != self.embedder.name:
            raise MemoryStoreError(
                f"memory at {self.where} was built with the embedder {made_by!r}, but {self.embedder.name!r} "
                "is configured; their vectors do not compare. Use the same embedder, or move the folder away "
                "and import the history again"
            )
        self._batch = int(self._client.get_max_batch_size())
        self._vectors: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._vectors_lock = threading.Lock()
        self._index_batch = settings.memory_index_batch
        for stale in self.path.glob("outcomes.sqlite*"):  # the outcome index of earlier versions
            stale.unlink(missing_ok=True)
        try:
            self._records = record_store(settings)
            if self._records.count(indexed=True) != self.count_indexed():
                self._reconcile()
        except sqlite3.Error as exc:
            raise MemoryStoreError(f"cannot open {self.path / 'records.sqlite'}: {exc}") from exc
        except StorageError as exc:
            raise MemoryStoreError(f"memory's records: {exc}") from exc

    def _reconcile(self) -> None:
        """Make the record store and the collection agree after a process was killed between them,
        the collection was lost, or the folder was written by an earlier version (whose collection
        held documents and metadata): records only in such a collection are copied into the store,
        vectors with no record are dropped, records missing from the collection are indexed again."""
        in_collection: set[str] = set()
        orphans: list[str] = []
        for offset in range(0, self.count_indexed(), self._batch):
            page = self.collection.get(include=["documents", "metadatas"], limit=self._batch, offset=offset)
            in_collection.update(page["ids"])
            stored = self._records.known(page["ids"])
            legacy = []
            for rid, doc, md in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                if rid in stored:
                    continue
                if doc is not None and md:
                    legacy.append((rid, doc, md))
                else:
                    orphans.append(rid)
            if legacy:
                self._records.put(legacy, indexed=True)
        if orphans:
            self.collection.delete(ids=orphans)
        missing = sorted(self._records.indexed_ids() - in_collection)
        if missing:
            self._records.mark_missing(missing)
            self.flush()

    def add_records(
        self, records: list[Record], vectors: npt.NDArray[np.float32], replace: bool = False
    ) -> None:
        """Add records (id, document, metadata) with their embeddings to the store and the vector
        index at once, in batches chromadb accepts (the import path). `replace` overwrites records
        with the same id; otherwise ids must be new.
        """
        write = self.collection.upsert if replace else self.collection.add
        for start in range(0, len(records), self._batch):
            part = records[start : start + self._batch]
            # The store first: a process killed after it leaves pending records the next flush
            # embeds and indexes; the other order would leave vectors with no record.
            self._records.put(part)
            write(ids=[r[0] for r in part], embeddings=vectors[start : start + self._batch])
            self._records.mark_indexed([(r[0], int(r[2].get("stored_ns", 0))) for r in part])

    def flush(self) -> int:
        """Move pending records into the collection now; returns how many were moved."""
        import numpy as np

        pending = self._records.pending()
        if not pending:
            return 0
        # A record re-marked for indexing (its collection was lost) has no vector: embed it again.
        unembedded = [document for _, document, vector, _ in pending if vector is None]
        fresh: Iterator[npt.NDArray[np.float32]] = iter(self.embedder.embed(unembedded) if unembedded else [])
        vectors = np.stack(
            [np.frombuffer(v, dtype="<f4") if v is not None else next(fresh) for _, _, v, _ in pending]
        )
        for start in range(0, len(pending), self._batch):
            part = pending[start : start + self._batch]
            # Vectors only: the records' text and metadata live in the store, one copy.
            self.collection.upsert(ids=[p[0] for p in part], embeddings=vectors[start : start + self._batch])
            self._records.mark_indexed([(p[0], p[3]) for p in part])
        return len(pending)

    def close(self) -> None:
        """Index what is pending and close the record store."""
        self.flush()
        self._records.close()

    def count(self) -> int:
        """How many records memory holds (indexed or waiting to be)."""
        return self._records.count()

    def count_indexed(self) -> int:
        """How many records the vector collection holds."""
        return int(self.collection.count())

    def store(self, resolution: Resolution, facts: list[str]) -> str:
        """Remember a finished heal (healed or not), with its plan, its signature and its facts digest.

        The record is committed to the record store at once and reaches the vector collection
        with the next batch; recall finds it either way.

        Returns:
            The record id.
        """
        record = heal_record(resolution, facts)
        vectors = self.embedder.embed([record[1]])
        pending = self._records.put([record], vectors)
        self._keep_vectors({record[0]: vectors[0]})
        if pending >= self._index_batch:
            self.flush()
        return record[0]

    def import_jsonl(self, path: Path) -> ImportReport:
        """Import incident history from JSON Lines; bad lines are reported by number, good ones kept.

        Each line: `{"gap", "resolution", "outcome": "healed"|"failed", "component"?, "kind"?,
        "tags"?, "occurred_at"?}`. A line identical to an earlier one, or already imported, is skipped.

        Raises:
            MemoryImportError: the file cannot be read, is empty, or has no valid line.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise MemoryImportError(f"{path}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise MemoryImportError(f"{path}: cannot read it as UTF-8 text: {exc}") from exc
        errors: list[str] = []
        entries: list[tuple[int, Any]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                entries.append((number, json.loads(raw)))
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: not JSON: {exc.msg} at column {exc.colno}")
                entries.append((number, _NOT_JSON))
        if not entries:
            raise MemoryImportError(f"{path}: the file is empty; expected one JSON object per line")
        return self._import(entries, errors, f"{path}: ", "line")

    def import_objects(self, items: list[Any]) -> ImportReport:
        """Import incident history given as objects (the HTTP door), by the same rules as `import_jsonl`;
        problems name the item by its 0-based index (`records.3: field 'gap' is missing`).

        Raises:
            MemoryImportError: no item given, or none is valid.
        """
        if not items:
            raise MemoryImportError("no records given; expected a list of resolution objects")
        return self._import(list(enumerate(items)), [], "", "records.")

    def _import(
        self, entries: list[tuple[int, Any]], errors: list[str], where: str, label: str
    ) -> ImportReport:
        import numpy as np

        def name(number: int) -> str:
            return f"line {number}" if label == "line" else f"{label}{number}"

        records: dict[str, tuple[int, str, dict[str, Any]]] = {}
        for number, data in entries:
            if data is _NOT_JSON:
                continue
            if not isinstance(data, dict):
                errors.append(f"{name(number)}: expected a JSON object, got {type(data).__name__}")
                continue
            try:
                line = ImportLine.model_validate(data)
            except ValidationError as exc:
                errors.append(f"{name(number)}: {_why(exc)}")
                continue
            record_id, document, metadata = _import_record(line)
            if record_id in records:
                errors.append(f"{name(number)}: skipped, the same record as {name(records[record_id][0])}")
                continue
            records[record_id] = (number, document, metadata)
        if not records:
            shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
            raise MemoryImportError(f"{where}no valid {'line' if label == 'line' else 'record'}: {shown}")
        known = self._records.known(list(records))
        for record_id in sorted(known, key=lambda r: records[r][0]):
            errors.append(f"{name(records[record_id][0])}: skipped, already in memory")
        new: list[Record] = [(rid, doc, md) for rid, (_, doc, md) in records.items() if rid not in known]
        for part in _chunks(new, self._batch):
            vectors = [self.embedder.embed([r[1] for r in texts]) for texts in _chunks(part, _EMBED_BATCH)]
            self.add_records(part, np.concatenate(vectors))
        return ImportReport(imported=len(new), skipped=len(entries) - len(new), errors=errors)

    def search(self, text: str, k: int = 5, mode: str | None = None) -> list[MemoryHit]:
        """The `k` records that best match `text`, best first.

        Args:
            text: What to look for: a gap's text, symptoms, an error code.
            k: How many records.
            mode: `dense` ranks by meaning (cosine of embeddings), `lexical` by BM25 over terms that
                keep identifiers whole, `hybrid` by a weighted sum of both (`memory_hybrid_weight`);
                default `memory_search_mode`. A hit's `similarity` is its cosine in every mode.

        Raises:
            MemoryStoreError: The text is blank, `k` is below 1 or the mode unknown.
        """
        return self._search(text, k, mode)[0]

    def _search(
        self, text: str, k: int, mode: str | None, tallied: bool = False
    ) -> tuple[list[MemoryHit], dict[tuple[str, str], int] | None]:
        """`search`, and (`tallied`, when the record store reads it with the candidates) `tally` of
        the candidates' plans, which `recall` reads otherwise."""
        text = text.strip()
        if not text:
            raise MemoryStoreError("the search text is empty: say what to look for")
        if k < 1:
            raise MemoryStoreError(f"k is {k}; ask for at least 1 result")
        mode = mode or self.settings.memory_search_mode
        if mode not in MODES:
            raise MemoryStoreError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        # Fusion ranks a pool from each side, so a record second on both can beat one first on one.
        pool = k if mode == "dense" else max(k * _POOL_PER_K, _MIN_POOL)
        # The lexical half first: a heal's gap is being embedded on another thread meanwhile
        # (`Embedder.prefetch`), and SQLite lets go of the GIL while it looks.
        query_terms = terms(text)
        lexical_ids: list[str] = []
        dfs: dict[str, int] = {}
        docs, mean_terms = 0, 0.0
        # The pending records' vectors, read once a search (with the lexical half where the store can)
        pending: list[tuple[str, bytes]] | None = None
        if mode != "dense":
            # the terms' record counts, the corpus figures BM25 needs, and the candidates they rank
            budget = _LEXICAL_BUDGET if mode == "hybrid" else None
            read = self._records.lexical(query_terms, pool, budget, pending=True)
            dfs, docs, mean_terms, lexical_ids, pending = read

        def pending_vectors() -> list[tuple[str, bytes]]:
            nonlocal pending
            if pending is None:
                pending = self._records.pending_vectors()
            return pending

        query = self.embedder.embed([text])
        cosines = self._dense(query, pool, pending_vectors) if mode != "lexical" else {}
        candidates = lexical_ids if mode == "lexical" else list(dict.fromkeys([*cosines, *lexical_ids]))
        # documents and metadata in one read; the metadata parsed for the few returned only
        entries, tally = self._records.entries(candidates, tallied) if candidates else ({}, None)
        rows = {rid: doc for rid, (doc, _) in entries.items()}
        unseen = [rid for rid in rows if rid not in cosines]
        if unseen:
            cosines.update(self._cosines(unseen, query[0], pending_vectors))
        if mode == "dense":
            ranked = sorted(rows, key=lambda rid: -cosines.get(rid, -1.0))
        else:
            score = LexicalScorer(query_terms, dfs, docs, mean_terms)
            lexical = {rid: score(doc) for rid, doc in rows.items()}
            weight = 0.0 if mode == "lexical" else self.settings.memory_hybrid_weight
            ranked = sorted(
                rows,
                key=lambda rid: (
                    -fused(cosines.get(rid, -1.0), lexical[rid], weight),
                    -cosines.get(rid, -1.0),
                ),
            )
        hits = [
            _hit(rid, entries[rid][0], json.loads(entries[rid][1]), 1.0 - cosines.get(rid, 0.0))
            for rid in ranked[:k]
        ]
        return hits, tally

    def _dense(
        self, query: npt.NDArray[np.float32], n: int, pending: Callable[[], list[tuple[str, bytes]]]
    ) -> dict[str, float]:
        """Cosine similarity of the `n` nearest records, indexed or `pending`."""
        found = self.collection.query(query_embeddings=query, n_results=n, include=["distances"])
        ids, distances = (found["ids"][0], found["distances"][0]) if found["ids"] else ([], [])
        cosines = {rid: 1.0 - float(d) for rid, d in zip(ids, distances, strict=True)}
        # A pending write of an id is the newer one.
        cosines.update({rid: 1.0 - dist for rid, dist in _nearest(pending(), query[0], n).items()})
        return cosines

    def _cosines(
        self, ids: list[str], query: npt.NDArray[np.float32], pending: Callable[[], list[tuple[str, bytes]]]
    ) -> dict[str, float]:
        """Cosine similarity of these records to the query, from their stored vectors (kept, `pending`,
        or the collection's)."""
        import numpy as np

        with self._vectors_lock:
            vectors = {rid: self._vectors[rid] for rid in ids if rid in self._vectors}
        rest = [rid for rid in ids if rid not in vectors]
        if rest:
            waiting = dict(pending())
            found = {rid: np.frombuffer(waiting[rid], dtype="<f4") for rid in rest if rid in waiting}
            rest = [rid for rid in rest if rid not in found]
            if rest:
                got = self.collection.get(ids=rest, include=["embeddings"])
                found.update(
                    {
                        rid: np.asarray(v, dtype=np.float32)
                        for rid, v in zip(got["ids"], got["embeddings"], strict=True)
                    }
                )
            self._keep_vectors(found)
            vectors.update(found)
        return {rid: float(v @ query) for rid, v in vectors.items()}

    def _keep_vectors(self, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        with self._vectors_lock:
            for rid, vector in vectors.items():
                self._vectors[rid] = vector
                self._vectors.move_to_end(rid)
            while len(self._vectors) > _VECTORS_KEPT:
                self._vectors.popitem(last=False)

    def recall(self, gap: Gap, k: int = 5) -> list[MemoryHit]:
        """Past resolutions similar to `gap`, each with how often its plan healed and failed."""
        hits, read = self._search(gap.text, k, None, tallied=True)
        signatures = sorted({h.plan.signature() for h in hits if h.plan is not None and h.plan.steps})
        # The tally read with the candidates counts every record of each of their plans: all a hit's
        # plan needs, unless its signature is not that stored with it (a record of another version).
        if read is None or not {sig for sig, _ in read}.issuperset(signatures):
            read = self._records.tally(signatures) if signatures else {}
        tally = read
        for hit in hits:
            if hit.plan is not None and hit.plan.steps:
                signature = hit.plan.signature()
                hit.healed_count = tally.get((signature, "healed"), 0)
                hit.failed_count = tally.get((signature, "failed"), 0)
            else:
                # No plan to group by (imported history): the record speaks for itself only.
                hit.healed_count = int(hit.outcome == "healed")
                hit.failed_count = int(hit.outcome == "failed")
        return hits

    def known_plans(self, fingerprint: str, facts: list[str]) -> list[Plan]:
        """The playbook and the remembered plan for a fingerprint, in that order, from one lookup."""
        histories = self._histories(fingerprint, facts)
        found = [self._playbook(histories), self._remembered(histories)]
        return [plan for plan in found if plan is not None]

    def playbook(self, fingerprint: str, facts: list[str]) -> Plan | None:
        """A plan that healed this fingerprint `playbook_after` times in a row since its last failure.

        Returned with source "playbook"; replaying it needs no LLM.
        """
        return self._playbook(self._histories(fingerprint, facts))

    def _playbook(self, histories: list[list[dict[str, Any]]]) -> Plan | None:
        best = None
        for history in histories:
            streak = 0
            for md in reversed(history):
                if md["outcome"] != "healed":
                    break
                streak += 1
            if streak >= self.settings.playbook_after:
                rank = (streak, history[-1]["occurred_at"])
                if best is None or rank > best[0]:
                    best = (rank, history[-1])
        return self._plan(best[1], "playbook") if best else None

    def remembered_plan(self, fingerprint: str, facts: list[str]) -> Plan | None:
        """A plan that healed this fingerprint at least once and has not failed since (source "memory").

        A plan that failed last is offered again only when the facts differ from those of its
        failure: new evidence.
        """
        return self._remembered(self._histories(fingerprint, facts))

    def _remembered(self, histories: list[list[dict[str, Any]]]) -> Plan | None:
        best = None
        for history in histories:
            healed = [md for md in history if md["outcome"] == "healed"]
            if healed and (best is None or healed[-1]["occurred_at"] > best["occurred_at"]):
                best = healed[-1]
        return self._plan(best, "memory") if best else None

    def _plan(self, record: dict[str, Any], source: Literal["playbook", "memory"]) -> Plan:
        """The plan of a record of `_histories`: from its metadata when the history brought it."""
        rid = record["id"]
        md = (
            json.loads(record["metadata"])
            if record["metadata"] is not None
            else self._records.get([rid])[rid][1]
        )
        plan = Plan.model_validate_json(md["plan"])
        return plan.model_copy(update={"source": source, "playbook": rid})

    def _histories(self, fingerprint: str, facts: list[str]) -> list[list[dict[str, Any]]]:
        """The records of each plan tried on this fingerprint under these same findings, oldest
        first; plans whose latest outcome under them is a failure are left out.

        A plan is replayed only where it was proven: the same gap with other findings (a crash
        loop where a process had simply died, a full disk where a probe had failed) is another
        problem, and the personas' playbooks, or an LLM, judge it afresh.
        """
        by_plan: dict[str, list[dict[str, Any]]] = {}
        for rid, signature, outcome, occurred_at, md in self._records.plan_history(
            fingerprint, facts_digest(facts)
        ):
            by_plan.setdefault(signature, []).append(
                {"id": rid, "outcome": outcome, "occurred_at": occurred_at, "metadata": md}
            )
        histories = []
        for history in by_plan.values():
            if history[-1]["outcome"] == "failed":
                continue
            histories.append(history)
        return histories


def _nearest(pending: list[tuple[str, bytes]], query: npt.NDArray[np.float32], k: int) -> dict[str, float]:
    """The `k` nearest pending records by cosine distance (at most about a batch of them: brute force);
    one without a vector waits for a flush to embed it."""
    import numpy as np

    if not pending:
        return {}
    vectors = np.frombuffer(b"".join(v for _, v in pending), dtype="<f4").reshape(len(pending), -1)
    distances = 1.0 - vectors @ query
    return {pending[i][0]: float(distances[i]) for i in np.argsort(distances)[:k]}


def _hit(record_id: str, document: str, md: dict[str, Any], distance: float) -> MemoryHit:
    return MemoryHit(
        id=record_id,
        gap=document,
        resolution=md.get("resolution", ""),
        outcome="healed" if md.get("outcome") == "healed" else "failed",
        similarity=max(-1.0, min(1.0, 1.0 - float(distance))),
        component=md.get("component") or None,
        kind=md.get("kind") or None,
        fingerprint=md.get("fingerprint") or None,
        plan=Plan.model_validate_json(md["plan"]) if md.get("plan") else None,
    )
