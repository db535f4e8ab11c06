"""Symptoms: the kinds of trouble a gap's words or facts name, and what (if anything) treats each.

A symptom is either a **subject**, the thing that is wrong (a full disk, a changed config file, a
TLS certificate about to expire), or a **consequence**, what users see of it (slow answers, a
process that stopped, errors). A consequence is explained by the subject when the gap names one:
"clients will fail handshakes" is the certificate's doing, and restarting the process (what
answers a consequence with no subject) would change nothing. Some subjects lie outside every
action of the catalogue: a specialist for them only diagnoses and escalates.

Each symptom brings the facts that show it, the catalogue actions that treat it (each must answer
one of those facts, by the catalogue's `answers`), the built-in persona that owns its generic form,
the role noun a specialist for it is named by, and what such a specialist knows. The offline
design and the factory's dry run (which facts a gap's words imply when no estate reported any)
read this table.
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
    role: str  # the role noun a specialist for it is named by: "disk-space", "tls-certificates"
    knows: str  # what such a specialist knows, in its own words (never the gap's)
    consequence: bool = False  # what users see, not what is wrong: a named subject explains it


def _out_of_reach(label: str, pattern: str, role: str, thing: str, knows: str) -> Symptom:
    """A subject no catalogue action changes: its specialist gathers evidence and escalates."""
    return Symptom(
        label,
        pattern,
        (),
        (),
        ("probe", "tail_logs", "read_config"),
        "triage-lead",
        None,
        f"{thing} is wrong, and no action of the catalogue changes {thing}",
        role,
        knows,
    )


SYMPTOMS = (
    Symptom(
        "disk",
        r"\bdisk|no space|enospc|storage|quota|inode|\bvolume|\bfull\b",
        ("disk_over_budget",),
        ("clean_dir",),
        ("process_stats", "tail_logs"),
        "capacity",
        "disk_over_budget",
        "a declared data folder is over its budget; cleaning it frees the space",
        "disk-space",
        "Space runs out where data accumulates unchecked: spool, cache, upload and temporary folders, "
        "old exports and dumps. Writes then fail with ENOSPC while reads still work.",
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
        "log-volume",
        "A log file with no rotation grows with every request, faster when the process logs a repeated "
        "error; rotation keeps a few generations and frees the rest without a restart.",
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
        "memory-use",
        "Resident memory that only grows marks a leak (caches without bounds, handles never released); "
        "a restart returns it for a while, and the interval between restarts measures the leak.",
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
        "config-drift",
        "A process reads its config files when it starts, so a bad edit shows at the next restart; the "
        "last known good copy and a diff against it tell the edit from the cause.",
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
        "upstream-dependencies",
        "A component fails with what it depends on: the dependency that is down is healed first, and "
        "its dependents recover with it without being touched.",
    ),
    _out_of_reach(
        "certificates",
        r"certificat|\bcerts?\b|\btls\b|\bssl\b|x\.?509|handshake|\bpem\b|\bacme\b",
        "tls-certificates",
        "a TLS certificate",
        "A certificate stops working at its notAfter date, when its chain lacks an intermediate, or when "
        "its names do not cover the host a client asked for; clients then fail the TLS handshake. It is "
        "renewed by issuing a new one (ACME, an internal CA, a vendor) and installing it where TLS "
        "terminates, often a load balancer outside the estate; restarting a process renews nothing.",
    ),
    _out_of_reach(
        "dns",
        r"\bdns\b|\bresolv|nameserver|\bcname\b|nxdomain|\bdomain name",
        "dns-records",
        "a DNS record",
        "Names resolve through records kept at a DNS provider or zone file, cached by resolvers for "
        "their TTL; a wrong or missing record shows as NXDOMAIN or a stale address in every client.",
    ),
    _out_of_reach(
        "credentials",
        r"credential|password|passwd|secret|api[- ]?keys?\b|\btokens?\b|oauth|keytab|\bsaml\b",
        "credentials",
        "a credential",
        "Credentials (passwords, API keys, tokens, keytabs) expire or are revoked at the issuer; calls "
        "made with them fail with 401 or 403 until a person or a secret manager issues new ones.",
    ),
    _out_of_reach(
        "directory",
        r"\bldap|active directory|\bsso\b|group sync|identity provider|\bidp\b",
        "directory-sync",
        "a directory or identity provider",
        "Users and groups come from a directory (LDAP, Active Directory, an identity provider) through "
        "a sync or a login flow; a wrong membership is fixed in the directory or the sync's mapping.",
    ),
    _out_of_reach(
        "data",
        r"\bcorrupt|\bduplicat|\boutdated\b|stale (?:data|entries|records|pages)|\bdeleted\b"
        r"|wrong (?:data|prices?|totals?|records?|results?)|\bsitemap",
        "data-integrity",
        "the data it serves",
        "Wrong data (stale, duplicated, deleted yet still listed) comes from the job or query that "
        "produces it, not from the process serving it; the producer's last run and its input say which.",
    ),
    _out_of_reach(
        "clock",
        r"clock skew|\bntp\b|time drift|clock drift",
        "clock-sync",
        "the host clock",
        "A host clock that drifts breaks token lifetimes, TLS validity checks and ordering by time; the "
        "time daemon's sources and offset say how far and since when.",
    ),
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
        "latency",
        "Late answers come from inside the process (stuck workers, an exhausted pool, a backlog) or from "
        "what it waits on; `slow_response` with a healthy dependency points inside.",
        consequence=True,
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
        "availability",
        "A process that exits leaves its reason in its last log lines; one that exits again right after "
        "a start is a crash loop, which a restart does not fix.",
        consequence=True,
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
        "errors",
        "Errors that start at once and repeat point to a poisoned process state a restart clears; errors "
        "that follow a change point to the change.",
        consequence=True,
    ),
)
OBSERVE_ONLY = Symptom(
    "observe",
    "",
    (),
    (),
    ("probe", "process_stats", "tail_logs"),
    "triage-lead",
    None,
    "no known cause yet",
    "",
    "",
)


def gap_text(gap: Gap) -> str:
    return "\n".join([gap.text, *gap.evidence])


def text_symptoms(gap: Gap) -> list[Symptom]:
    """The symptoms the gap's text and evidence name, in table order."""
    text = gap_text(gap)
    return [s for s in SYMPTOMS if re.search(s.pattern, text, re.I)]


def implied_facts(gap: Gap) -> list[str]:
    """The fact each symptom named in the gap's words shows first: the dry run's facts with no estate.

    Consequences a named subject explains imply nothing, and a subject out of reach has no fact.
    """
    return list(dict.fromkeys(s.needs or s.facts[0] for s in explained(text_symptoms(gap), ()) if s.facts))


def explained(found: Sequence[Symptom], observed: Sequence[str]) -> list[Symptom]:
    """Subjects first; consequences only when no subject explains them.

    A consequence an observed fact shows stays beside a subject the catalogue can treat (the process
    really is down), but not beside one out of its reach: the subject is the cause, and acting on
    the consequence would only hide it.
    """
    subjects = [s for s in found if not s.consequence]
    if not subjects:
        return list(found)
    if any(not s.remedy for s in subjects):
        return subjects
    shown = [s for s in found if s.consequence and set(s.facts[:1]) & set(observed)]
    return [*subjects, *shown]


def symptoms_of(gap: Gap, fact_names: Sequence[str]) -> list[Symptom]:
    """Symptoms shown by abnormal facts first, then those named in the gap's words; see `explained`."""
    found = [s for name in fact_names if name not in HEALTHY_FACTS for s in SYMPTOMS if name in s.facts[:1]]
    found += [s for name in fact_names for s in SYMPTOMS if name in s.facts]
    return explained(list(dict.fromkeys([*found, *text_symptoms(gap)])), fact_names)
