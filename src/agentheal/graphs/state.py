"""Reading the heal graph's state: the gap, the findings, and evidence cut to a budget."""

from __future__ import annotations

from typing import Any

from agentheal.models import Gap

_EVIDENCE_CHARS = 1500


def gap_of(state: dict[str, Any]) -> Gap:
    return Gap.model_validate(state["gap"])


def facts_of(state: dict[str, Any]) -> list[Any]:
    from agentheal.estate.local import Fact

    return [Fact.model_validate(f) for f in state.get("facts", [])]


def fact_names(state: dict[str, Any]) -> list[str]:
    return sorted({f["name"] for f in state.get("facts", [])})


def cut_evidence(text: str, budget: int = _EVIDENCE_CHARS) -> str:
    """Evidence redacted, then cut to `budget` keeping both ends (cut after: a cut could halve a secret)."""
    from agentheal.redaction import redact

    text = redact(text)
    if len(text) <= budget:
        return text
    half = budget // 2
    return f"{text[:half]}\n[… {len(text) - budget} chars cut …]\n{text[-half:]}"
