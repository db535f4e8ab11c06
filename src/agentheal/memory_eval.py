"""How well memory search finds the right past incident: hit@k of each search mode on a retrieval set.

A retrieval set is two JSON Lines files in one folder (`eval/retrieval/`): `records.jsonl`, past
incidents in the `memory import` format, each tagged `cause:NAME`; and `queries.jsonl`, one
`{"query": TEXT, "cause": NAME}` per line, the symptoms of a new incident and the root cause a
useful answer shares. A query hits at k when a record of its cause is among the first k results.
The records are imported into a fresh memory in a temporary folder with the configured embedder,
so the figures are those of the real search, not of a copy of it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentheal.memory_lexical import MODES

KS = (1, 3, 5)


class RetrievalSetError(ValueError):
    """A retrieval set that cannot be used; the message names the file and line."""


class ModeScore(BaseModel):
    """hit@k of one search mode over the queries of a retrieval set."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    weight: float | None = None
    queries: int
    hits: dict[int, float]  # k -> share of queries with a right record among the first k
    mrr: float


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    cause: str


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RetrievalSetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RetrievalSetError(f"{path} line {number}: not JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise RetrievalSetError(f"{path} line {number}: expected a JSON object")
        out.append(item)
    return out


def load_set(folder: Path) -> tuple[Path, dict[str, str], list[Query]]:
    """The records file, each record's gap text -> cause, and the queries.

    Raises:
        RetrievalSetError: A file is missing or malformed, a record has no cause tag, or a query
            names a cause no record has.
    """
    records_file, queries_file = folder / "records.jsonl", folder / "queries.jsonl"
    causes: dict[str, str] = {}
    for number, record in enumerate(_read(records_file), start=1):
        tags = [t for t in record.get("tags", []) if isinstance(t, str) and t.startswith("cause:")]
        if not tags or not isinstance(record.get("gap"), str):
            raise RetrievalSetError(f"{records_file} record {number}: needs a gap and a 'cause:NAME' tag")
        causes[record["gap"].strip()] = tags[0].removeprefix("cause:")
    queries = []
    for number, item in enumerate(_read(queries_file), start=1):
        try:
            query = Query.model_validate(item)
        except ValueError as exc:
            raise RetrievalSetError(f"{queries_file} line {number}: {exc}") from None
        if query.cause not in causes.values():
            raise RetrievalSetError(f"{queries_file} line {number}: no record has cause {query.cause!r}")
        queries.append(query)
    if not queries:
        raise RetrievalSetError(f"{queries_file}: no query")
    return records_file, causes, queries


def _score(
    memory: Any, causes: dict[str, str], queries: list[Query], mode: str, weight: float | None
) -> ModeScore:
    ranks = []
    for q in queries:
        hits = memory.search(q.query, k=max(KS), mode=mode)
        found = [i for i, h in enumerate(hits, start=1) if causes.get(h.gap) == q.cause]
        ranks.append(found[0] if found else None)
    n = len(queries)
    return ModeScore(
        mode=mode,
        weight=weight,
        queries=n,
        hits={k: round(sum(1 for r in ranks if r is not None and r <= k) / n, 3) for k in KS},
        mrr=round(sum(1.0 / r for r in ranks if r is not None) / n, 3),
    )


def evaluate(folder: Path, weights: list[float] | None = None) -> list[ModeScore]:
    """hit@1/3/5 and MRR of lexical, dense and hybrid search (at each of `weights`, when given).

    Raises:
        RetrievalSetError: The set cannot be read (see `load_set`).
    """
    from agentheal.config import Settings
    from agentheal.memory import Memory

    records_file, causes, queries = load_set(folder)
    with tempfile.TemporaryDirectory(prefix="agentheal-retrieval-") as tmp:
        settings = Settings(home=Path(tmp))
        memory = Memory(settings)
        try:
            memory.import_jsonl(records_file)
            scores = [_score(memory, causes, queries, mode, None) for mode in ("lexical", "dense")]
            default = settings.memory_hybrid_weight
            for weight in weights or [default]:
                memory.settings = settings.model_copy(update={"memory_hybrid_weight": weight})
                scores.append(_score(memory, causes, queries, "hybrid", weight))
        finally:
            memory.close()
    return scores


def markdown(scores: list[ModeScore]) -> str:
    """The scores as a Markdown table (the README's)."""
    head = "| mode | " + " | ".join(f"hit@{k}" for k in KS) + " | MRR |"
    rows = [head, "|" + "---|" * (len(KS) + 2)]
    for s in scores:
        name = s.mode if s.weight is None else f"{s.mode} (weight {s.weight:g})"
        rows.append(f"| {name} | " + " | ".join(f"{s.hits[k]:.3f}" for k in KS) + f" | {s.mrr:.3f} |")
    return "\n".join(rows)


__all__ = ["KS", "MODES", "ModeScore", "RetrievalSetError", "evaluate", "load_set", "markdown"]
