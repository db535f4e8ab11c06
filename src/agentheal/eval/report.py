"""The eval's report: Markdown for people (`--markdown`), and a rich table on the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentheal.eval.results import STAGES

if TYPE_CHECKING:
    from rich.console import RenderableType

_STAGE_WORDS = {
    "detected": "detected",
    "routed": "routed to the right persona",
    "root_cause": "root cause named",
    "fixed": "fixed",
    "validated": "validated",
}


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _rate(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "no scenarios"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict[str, Any], title: str = "agentheal eval report") -> str:
    """The whole report: the suite's figures, the stages, a line per scenario, then each one's story."""
    s, scenarios, run = doc["suite"], doc["scenarios"], doc.get("run", {})
    faults = s["fault_scenarios"]
    lines = [
        f"# {title}",
        "",
        f"Run {run.get('started', '?')}, {s['mode']}"
        + (f" (LLM at {run['llm']})" if run.get("llm") else " (no LLM)")
        + f", {s['scenarios']} scenarios in {s['duration_s']:.0f} s. Every figure was measured in this run.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| detection rate (fault scenarios) | {_rate(s['detected'], faults)} |",
        f"| heal rate (fault scenarios) | {_rate(s['healed'], faults)} |",
        f"| median time to detect | {_s(s['median_time_to_detect_s'])} |",
        f"| median time to heal (injection to validated fix) | {_s(s['median_time_to_heal_s'])} |",
        f"| p95 time to heal (nearest rank) | {_s(s['p95_time_to_heal_s'])} |",
        f"| wrong actions (all scenarios) | {s['wrong_actions']} |",
        f"| controls with no remediation | {_rate(s['controls_clean'], s['control_scenarios'])} |",
        f"| false alarms in controls (gaps opened) | {s['false_alarms']} |",
        f"| LLM calls / tokens | {s['llm_calls']} / {s['llm_tokens']} |",
        "",
        "Stages of the fault scenarios (a scenario passes a stage when every one of its faults does):",
        "",
        "| stage | passed |",
        "|---|---|",
    ]
    lines += [f"| {_STAGE_WORDS[k]} | {_rate(s['stages'].get(k, 0), faults)} |" for k in STAGES]
    lines += [
        "",
        "## Scenarios",
        "",
        "| scenario | kind | detected | time to detect | healed | time to heal | wrong | actions | LLM calls "
        "| reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in scenarios:
        healed = (
            ("clean" if r["healed"] else "ACTED")
            if r["kind"] == "control"
            else ("yes" if r["healed"] else "NO")
        )
        detected = (
            ("false alarm" if r["detected"] else "no")
            if r["kind"] == "control"
            else ("yes" if r["detected"] else "NO")
        )
        lines.append(
            f"| {r['name']} | {r['kind']} | {detected} | {_s(r['time_to_detect_s'])} | {healed} | "
            f"{_s(r['time_to_heal_s'])} | {r['wrong_actions']} | {_cell(', '.join(r['actions'])) or '—'} | "
            f"{r['llm_calls']} | {_cell(r['reason']) or '—'} |"
        )
    not_healed = [r for r in scenarios if not r["healed"]]
    if not_healed:
        lines += ["", "Not healed, and why:", ""]
        lines += [f"- **{r['name']}**: {_cell(r['reason'])}" for r in not_healed]
    for r in scenarios:
        lines += ["", f"### {r['name']}", "", r.get("description", ""), ""]
        for f in r.get("faults", []):
            first = next((k for k in STAGES if not f["stages"][k]), None)
            lines.append(
                f"- fault `{f['fault']}` on `{f['component']}` at {_s(f['injected_s'])}: "
                + ("; ".join(f["did"]) or "not injected")
            )
            lines.append(
                f"  - detected {_s(f['time_to_detect_s'])} ({_cell(f['gap']) or 'no gap'}); persona "
                f"{f['persona'] or '—'} (expected {', '.join(f['expected_personas']) or '—'}); diagnosis on "
                f"{f['diagnosis_component'] or '—'}; actions {', '.join(f['actions']) or '—'}; "
                + (
                    "healed in " + _s(f["time_to_heal_s"])
                    if f["healed"]
                    else f"not healed: {_cell(f['reason'])}"
                )
                + (f"; first stage missed: {_STAGE_WORDS[first]}" if first else "")
            )
        for line in r.get("operator", []):
            lines.append(f"- {line}")
        if r.get("load"):
            lines.append(f"- {r['load']}")
        for g in r.get("gaps", []):
            lines.append(f"- gap at {_cell(g.strip())}")
        for run_ in r.get("runs", []):
            lines.append(
                f"- run `{run_['run_id'][:12]}` on {run_['component']}: **{run_['status']}**, persona "
                f"{run_['persona'] or '—'}, plan from {run_['source'] or '—'}, remediations "
                f"{', '.join(run_['remediations']) or 'none'}"
                + (f"; {_cell(run_['reason'])}" if run_["reason"] else "")
            )
        for w in r.get("wrong", []):
            lines.append(f"- wrong action: {_cell(w)}")
    return "\n".join(lines) + "\n"


def table(doc: dict[str, Any]) -> RenderableType:
    """The scenarios and the suite's figures, for the terminal."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(title="eval", title_justify="left", pad_edge=False)
    for col in ("scenario", "detected", "detect", "healed", "heal", "wrong", "actions", "LLM", "reason"):
        t.add_column(col, overflow="fold", max_width=48 if col in ("reason", "actions") else None)
    for r in doc["scenarios"]:
        control = r["kind"] == "control"
        ok = r["healed"]
        healed = Text(
            ("clean" if ok else "ACTED") if control else ("yes" if ok else "NO"),
            style="green" if ok else "bold red",
        )
        detected = ("alarm" if r["detected"] else "-") if control else ("yes" if r["detected"] else "NO")
        t.add_row(
            r["name"], detected,
            _s(r["time_to_detect_s"]), healed, _s(r["time_to_heal_s"]), str(r["wrong_actions"]),
            ", ".join(r["actions"]) or "-", str(r["llm_calls"]), r["reason"] or "",
        )  # fmt: skip
    s = doc["suite"]
    faults = s["fault_scenarios"]
    summary = Text(
        f"detection {_rate(s['detected'], faults)}  heal {_rate(s['healed'], faults)}  "
        f"median time to heal {_s(s['median_time_to_heal_s'])}  p95 {_s(s['p95_time_to_heal_s'])}  "
        f"wrong actions {s['wrong_actions']}  "
        f"controls clean {_rate(s['controls_clean'], s['control_scenarios'])}  "
        f"LLM calls {s['llm_calls']}  ({s['mode']}, {s['duration_s']:.0f} s)",
        style="bold",
    )
    return Group(t, summary)
