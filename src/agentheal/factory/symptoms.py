"""Symptoms: the kinds of trouble a gap's words or facts name, and what treats each.

Each symptom brings the facts that show it, the catalogue actions that treat it and the built-in
persona that owns its generic form. The offline design and the factory's dry run (which facts a
gap's words imply when no estate reported any) read this table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agentheal.models import Gap

HEALTHY_FACTS = frozenset({"process_running", "probes_ok"})


@dataclass(frozen=True)
class Symptom:
    """A kind of trouble: how a gap's words name it, the facts that show it and what treats it."""

    label: str
    pattern: str
    facts: tuple[str, ...]
    remedy: tuple[str, ...]
    observe: tuple[str, ...]
    owner: str
    needs: str | None  # a fact the remedy's target or path comes from: required, not optional
    cause: str


SYMPTOMS = (
    Symptom(
        "latency",
        r"time[sd]?[ -]?outs?|timing out|\bslow|latenc|\bhangs?\b|\bhung\b|stall|\bp9\d\b|unresponsive",
        ("slow_response", "probe_failed"),
        ("restart",),
        ("probe", "process_stats", "tail_logs"),
        "performance",
        None,
        "the process is left degraded (stuck workers, a backlog, an exhausted pool) and answers late; "
        "a supervised restart resets it",
    ),
    Symptom(
        "outage",
        r"\bdown\b|not running|crash|\bdied\b|\bdies\b|exited|refus|unreachable|\bdead\b|\bstopped\b"
        r"|\b50[23]\b",
        ("process_down", "probe_failed"),
        ("restart",),
        ("process_stats", "tail_logs", "probe"),
        "availability",
        None,
        "the process stopped serving; a supervised restart brings it back under its probes",
    ),
    Symptom(
        "disk",
        r"\bdisk|no space|enospc|storage|quota|inode|\bfull\b",
        ("disk_over_budget",),
        ("clean_dir",),
        ("process_stats", "tail_logs"),
        "capacity",
        "disk_over_budget",
        "a declared data folder is over its budget; cleaning it frees the space",
    ),
    Symptom(
        "logs",
        r"\blogs? (?:files? )?(?:grow|large|huge|fill|big|size)|rotat|logfile",
        ("logs_large",),
        ("rotate_logs",),
        ("tail_logs",),
        "capacity",
        "logs_large",
        "a log file is over its budget; rotating it frees the space while the process keeps writing",
    ),
    Symptom(
        "memory",
        r"memory|\boom\b|\brss\b|leak|\bheap\b|\bswap",
        ("memory_high",),
        ("restart",),
        ("process_stats", "probe"),
        "capacity",
        "memory_high",
        "the process holds more memory than its budget; a restart returns it",
    ),
    Symptom(
        "config",
        r"config|setting|\.conf\b|\.ya?ml\b|\.toml\b|\.ini\b",
        ("config_changed", "config_missing"),
        ("restore_config", "restart"),
        ("read_config", "tail_logs"),
        "configuration",
        None,
        "a config file differs from its last known good copy; restoring it and restarting repairs it",
    ),
    Symptom(
        "dependency",
        r"upstream|dependenc|depends on|\bbackend\b|database|\bdb\b",
        ("dependency_down",),
        ("restart",),
        ("dependencies", "probe"),
        "dependencies",
        "dependency_down",
        "a component it depends on is down; restarting that dependency first heals both",
    ),
    Symptom(
        "errors",
        r"\berrors?\b|exception|traceback|\bfail|\b5\d\d\b",
        ("log_errors", "probe_failed"),
        ("restart",),
        ("tail_logs", "probe"),
        "availability",
        None,
        "the process keeps failing requests with errors; a supervised restart clears a poisoned state",
    ),
)
OBSERVE_ONLY = Symptom(
    "observe", "", (), (), ("probe", "process_stats", "tail_logs"), "triage-lead", None, "no known cause yet"
)


def gap_text(gap: Gap) -> str:
    return "\n".join([gap.text, *gap.evidence])


def text_symptoms(gap: Gap) -> list[Symptom]:
    """The symptoms the gap's text and evidence name, in table order."""
    text = gap_text(gap)
    return [s for s in SYMPTOMS if re.search(s.pattern, text, re.I)]


def implied_facts(gap: Gap) -> list[str]:
    """The fact each symptom named in the gap's words shows first: the dry run's facts with no estate."""
    return list(dict.fromkeys(s.needs or s.facts[0] for s in text_symptoms(gap)))


def symptoms_of(gap: Gap, fact_names: Sequence[str]) -> list[Symptom]:
    """Symptoms shown by abnormal facts first, then those named in the gap's words."""
    found = [s for name in fact_names if name not in HEALTHY_FACTS for s in SYMPTOMS if name in s.facts[:1]]
    found += [s for name in fact_names for s in SYMPTOMS if name in s.facts]
    return list(dict.fromkeys([*found, *text_symptoms(gap)]))
