"""A run's whole story as text: what was wrong, what was found, what was done, what it proved."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agentheal.redaction import redact

if TYPE_CHECKING:
    from agentheal.events import RunDetail


def _section(title: str) -> str:
    return f"\n── {title} " + "─" * max(4, 60 - len(title))


def render_story(detail: RunDetail) -> str:
    """The timeline, evidence, diagnosis, plan, actions, validation and LLM use of one run."""
    row, totals = detail.row, detail.totals
    result: dict[str, Any] = detail.result or {}
    lines = [
        f"run {row.run_id}  {row.status.value if hasattr(row.status, 'value') else row.status}",
        f"gap       {row.gap_text}",
        f"component {row.component or '-'}   fingerprint {row.fingerprint}",
        f"persona   {row.persona or '-'}   plan from {row.source or '-'}",
        f"started   {row.started_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f"   took {totals.duration_s:.2f} s" if totals.duration_s is not None else "   (still open)"),
    ]
    if row.reason:
        lines.append(f"reason    {row.reason}")
    if detail.gap is not None and detail.gap.evidence:
        lines.append(_section("evidence given with the gap"))
        lines += [f"  {e}" for e in detail.gap.evidence]
    lines.append(_section("timeline"))
    start = row.started_at
    for event in detail.timeline:
        offset = (event.at - start).total_seconds()
        lines.append(f"  +{offset:7.3f}s  {event.node:<9} {event.detail}")
    diagnosis = result.get("diagnosis") or {}
    if diagnosis:
        lines.append(_section("diagnosis"))
        lines.append(f"  hypothesis: {diagnosis.get('hypothesis', '')}")
        lines.append(f"  findings:   {', '.join(diagnosis.get('facts', [])) or '-'}")
        for item in diagnosis.get("evidence", []):
            first, *rest = str(item).splitlines() or [""]
            lines.append(f"  • {first}")
            lines += [f"      {line}" for line in rest[:12]]
    plan = result.get("plan") or {}
    if plan:
        lines.append(_section(f"plan ({plan.get('source')})"))
        for i, step in enumerate(plan.get("steps", []), 1):
            args = f" {json.dumps(step.get('args'))}" if step.get("args") else ""
            lines.append(f"  {i}. {step['action']} {step['component']}{args}  {step.get('why', '')}".rstrip())
        for step in plan.get("rollback", []):
            lines.append(f"  rollback: {step['action']} {step['component']}")
    lines.append(_section("actions"))
    if not detail.actions:
        lines.append("  none ran")
    for a in detail.actions:
        dry = " (dry run)" if a.result.dry_run else ""
        lines.append(
            f"  {a.at:%H:%M:%S} {a.step.action} {a.step.component}: {a.result.outcome}{dry} "
            f"in {a.result.duration_s:.2f} s  {a.result.detail}".rstrip()
        )
    validation = result.get("validation")
    if validation:
        lines.append(_section("validation"))
        lines.append(f"  {'ok' if validation.get('ok') else 'NOT OK'}: {validation.get('detail', '')}")
    lines.append(_section("LLM"))
    usage = totals.llm
    unknown = f" (unknown for {usage.unknown_usage_calls})" if usage.unknown_usage_calls else ""
    lines.append(
        f"  {usage.calls} call(s), {usage.prompt_tokens} prompt + {usage.completion_tokens} "
        f"completion tokens{unknown}, {totals.llm_duration_s:.2f} s"
    )
    for call in detail.llm_calls:
        mark = "ok" if call.ok else f"FAILED: {call.error}" if call.error else "FAILED"
        tokens = "tokens unknown"
        if call.usage_known:
            tokens = f"{call.prompt_tokens}+{call.completion_tokens} tokens"
        lines.append(
            f"  {call.at:%H:%M:%S} {call.purpose:<10} {call.model} {tokens} {call.duration_s:.2f} s {mark}"
        )
    # The store keeps redacted text; a run recorded before redaction covered it is cleaned here.
    return redact("\n".join(lines))
