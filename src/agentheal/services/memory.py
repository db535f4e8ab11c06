"""Resolution memory as every door uses it: search by meaning, import incident history.

The CLI (`agentheal memory search|import`) and the HTTP API (`GET /memory/search`, `POST /memory`)
call these functions with the `Memory` they hold: the CLI opens one per command, the server keeps
the heal context's one for its lifetime (chromadb's import and the embedding model are paid once).
Rules live in `agentheal.memory`; this module says what a door gets back and which errors it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agentheal.memory import ImportLine, ImportReport, Memory

MAX_K = 100
MAX_IMPORT = 10_000  # records per request: a larger history is imported in parts, or from a file


class MemoryQueryError(ValueError):
    """A search that cannot be answered as asked (empty text, k out of range); the message says why."""


class MemoryMatch(BaseModel):
    """One past resolution found by a search, as `memory search --json` prints it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The record's id in memory.")
    gap: str = Field(description="The gap the resolution was for, in words.")
    resolution: str = Field(description="What was done, and how it ended.")
    outcome: Literal["healed", "failed"]
    similarity: float = Field(description="Cosine similarity to the query, in [-1, 1]; higher is closer.")
    component: str | None = None


class MemoryImportResult(BaseModel):
    """What an import did: records added, records skipped, and why each skipped one was."""

    model_config = ConfigDict(extra="forbid")

    imported: int
    skipped: int
    errors: list[str] = Field(description="One line per skipped record, naming it and the problem.")
    total: int = Field(description="Records memory holds after the import.")


def _checked(text: str, k: int) -> str:
    text = text.strip()
    if not text:
        raise MemoryQueryError("the search text is empty: say what to look for")
    if not 1 <= k <= MAX_K:
        raise MemoryQueryError(f"k is {k}; ask for 1 to {MAX_K} results")
    return text


def search(memory: Memory, text: str, k: int = 5, mode: str | None = None) -> list[MemoryMatch]:
    """The `k` past resolutions that best match `text`, best first.

    `mode`: `hybrid` (meaning and words, the default), `dense` (meaning) or `lexical` (BM25 over
    words that keep identifiers such as error codes and paths whole); None takes the setting.

    Raises:
        MemoryQueryError: The text is blank, `k` is outside 1..100 or the mode unknown.
    """
    from agentheal.memory_lexical import MODES

    if mode is not None and mode not in MODES:
        raise MemoryQueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    hits = memory.search(_checked(text, k), k=k, mode=mode)
    return [
        MemoryMatch(
            id=h.id,
            gap=h.gap,
            resolution=h.resolution,
            outcome=h.outcome,
            similarity=h.similarity,
            component=h.component,
        )
        for h in hits
    ]


def _result(report: ImportReport, memory: Memory) -> MemoryImportResult:
    return MemoryImportResult(
        imported=report.imported, skipped=report.skipped, errors=report.errors, total=memory.count()
    )


def import_file(memory: Memory, path: Path) -> MemoryImportResult:
    """Import a JSON Lines file of past resolutions (`agentheal memory import FILE`).

    Raises:
        MemoryImportError: The file is missing, unreadable, empty, or has no valid line.
    """
    return _result(memory.import_jsonl(path), memory)


def import_records(memory: Memory, records: Sequence[ImportLine | dict[str, Any]]) -> MemoryImportResult:
    """Import past resolutions given as objects (`POST /memory`), by the rules of `import_file`.

    A record already in memory, or the same as an earlier one of the request, is skipped and named.

    Raises:
        MemoryImportError: No record given, too many, or none valid.
    """
    from agentheal.memory import MemoryImportError

    if len(records) > MAX_IMPORT:
        raise MemoryImportError(
            f"{len(records)} records in one request; at most {MAX_IMPORT} (send the rest in another, "
            "or use `agentheal memory import FILE`)"
        )
    items = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in records]
    return _result(memory.import_objects(items), memory)


def counts(memory: Memory) -> dict[str, int]:
    """How many records memory holds, and how many of them are in the vector index yet."""
    return {"records": memory.count(), "indexed": memory.count_indexed()}
