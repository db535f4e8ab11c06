"""Lexical recall: gap texts as terms that keep identifiers whole, BM25 over them, fused with meaning.

Dense embeddings place "ORA-00257" or "/var/lib/pg" near whatever else looks like a code or a
path; words do not. So every record's gap text is also kept as terms in a SQLite FTS5 table
beside the records (`memory_store`), and a search can rank by BM25 (`lexical`), by cosine
(`dense`) or by a weighted sum of both (`hybrid`).

Terms are made here, not by FTS5's tokenizer, so that the same function serves the index, the
query and the scoring: an identifier (an error code, a path, a hostname, an address, `exit 137`)
is one term, and its parts are terms too, so `ORA-00257` matches itself first and `pg` still
finds `/var/lib/pg`. Plain words are lower-cased and lightly stemmed; a few function words
are dropped. FTS5 then only splits on the spaces between terms (`tokenchars` keeps the rest).

The lexical score of a record is its BM25 (k1 = 1.2, b = 0.75, Lucene's always-positive IDF)
divided by the sum of the query terms' IDF, so it reads as "how much of the query, weighted by
rarity, this record explains", in [0, 1]. That makes it comparable with a cosine, whatever the
size of memory: a weighted sum of the two can be tuned once (`eval/retrieval`).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal

SearchMode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "lexical")

# Bump when `terms` changes: a store indexed by another version is indexed again on open.
TERMS_VERSION = 2
TOKENCHARS = "-_./:"
_K1, _B = 1.2, 0.75

_EXIT = re.compile(
    r"\b(exit|exited|status|code|signal|errno|rc)(?:\s+(?:with|code|status|=))*\s*[=:]?\s*(-?\d+)\b", re.I
)
_TOKEN = re.compile(
    r"(?:/[\w.\-]+)+/?"  # a path: /var/lib/pg, /dev/sda1
    r"|\w+(?:[-.:]\w+)+"  # a compound: ORA-00257, db-01.prod, 10.0.0.7:5432, user:42, v1.2.3
    r"|\w+"
)
_SPLIT = re.compile(r"[-_.:/]+")
_STOP = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "has", "have", "in",
     "into", "is", "it", "its", "of", "on", "or", "that", "the", "their", "then", "there", "this", "to",
     "was", "were", "will", "with", "after", "before", "while", "when"}
)  # fmt: skip
_EXIT_WORDS = {"exited": "exit", "rc": "exit", "code": "exit"}


def _stem(word: str) -> str:
    """A light suffix strip for plain words, so that 'writes', 'writing' and 'write' meet (as 'writ')."""
    if not word.isalpha() or len(word) <= 4 or word.endswith(("ss", "us", "is")):
        return word
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if suffix == "ies":
                stem += "y"
            elif suffix == "es" and not stem.endswith(("s", "x", "z", "ch", "sh")):
                stem = word[:-1]  # "files" is "file" + "s"
            elif suffix in ("ing", "ed") and len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]  # stopped, running
            word = stem
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def terms(text: str) -> list[str]:
    """The terms of a text as the lexical index keeps them, in order, repeats kept.

    Identifiers stay whole (`ora-00257`, `/var/lib/pg`, `db-01.prod`, `econnrefused`, `sigkill`)
    and add their parts; an exit, status or signal number joins its word (`exit:137`).
    """
    return list(_terms(text))


# Every recall scores its candidates' texts again, and the same past records come up again and
# again: their terms are kept (a heal's recall went from ~7 ms to ~2 ms of it at 150 records).
@functools.lru_cache(maxsize=8192)
def _terms(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for m in _EXIT.finditer(text):
        word = m.group(1).lower()
        out.append(f"{_EXIT_WORDS.get(word, word)}:{m.group(2)}")
    for m in _TOKEN.finditer(text):
        raw = m.group(0).rstrip("./")
        token = raw.lower()
        if not token:
            continue
        if _SPLIT.search(token):
            out.append(token)
            host, _, port = token.rpartition(":")
            if port.isdigit() and _SPLIT.search(host):
                out.append(host)  # db-01.prod:5432 is also db-01.prod
            out.extend(p for p in _SPLIT.split(token) if p and p not in _STOP)
        elif token not in _STOP:
            # An upper-case word is a name (ECONNREFUSED, SIGKILL, OOM): kept as it is.
            out.append(token if raw.isupper() else _stem(token))
    return tuple(out)


def indexed_text(text: str) -> str:
    """The terms joined by spaces: what the FTS5 table stores for a record."""
    return " ".join(terms(text))


def fts_query(query_terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of the terms, each quoted (no operator in a term is read)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in dict.fromkeys(query_terms))


def idf(docs: int, df: int) -> float:
    """Lucene's BM25 IDF: positive however common the term."""
    return math.log(1.0 + (docs - df + 0.5) / (df + 0.5))


def lexical_score(
    query_terms: list[str], doc_terms: list[str], dfs: Mapping[str, int], docs: int, avg_len: float
) -> float:
    """BM25 of a record for the query over the IDF mass of the query's terms, in [0, 1]."""
    tf = Counter(doc_terms)
    return LexicalScorer(query_terms, dfs, docs, avg_len)._score(tf, len(doc_terms))


class LexicalScorer:
    """`lexical_score` of many records' texts for one query: the query's weights worked out once,
    each text's term counts kept from one recall to the next (the same records come up again)."""

    def __init__(self, query_terms: list[str], dfs: Mapping[str, int], docs: int, avg_len: float) -> None:
        self._weights = {t: idf(docs, dfs.get(t, 0)) for t in dict.fromkeys(query_terms)}
        self._mass = sum(self._weights.values())
        self._avg_len = max(avg_len, 1.0)

    def __call__(self, text: str) -> float:
        tf, length = _term_counts(text)
        return self._score(tf, length)

    def _score(self, tf: Mapping[str, int], length: int) -> float:
        if self._mass <= 0 or not length:
            return 0.0
        norm = _K1 * (1 - _B + _B * length / self._avg_len)
        score = 0.0
        for t, weight in self._weights.items():
            n = tf.get(t, 0)
            if n:
                score += weight * n * (_K1 + 1) / (n + norm)
        return min(1.0, score / self._mass)


@functools.lru_cache(maxsize=8192)
def _term_counts(text: str) -> tuple[Counter[str], int]:
    found = _terms(text)
    return Counter(found), len(found)


def fused(similarity: float, lexical: float, weight: float) -> float:
    """The hybrid score: `weight` of the cosine, the rest of the lexical score."""
    return weight * similarity + (1.0 - weight) * lexical
