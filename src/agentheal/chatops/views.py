"""The bot's messages, built from what the services answer (a run's heal JSON, a page of runs)."""

from __future__ import annotations

from typing import Any

from agentheal.chatops.messages import Button, Message, Tone, fact_value
from agentheal.chatops.parser import USAGE

__all__ = [
    "answered",
    "approval_request",
    "ended",
    "escalation",
    "help_message",
    "plan_risk",
    "run_list",
    "show",
    "started",
    "step",
    "why",
]

_TONES: dict[str, Tone] = {
    "healed": "good",
    "dry_run": "good",
    "running": "info",
    "awaiting_approval": "warning",
    "awaiting_remote": "info",
    "rejected": "warning",
    "escalated": "bad",
    "failed": "bad",
}
_MARKS = {
    "healed": "✅",
    "dry_run": "📝",
    "running": "⏳",
    "awaiting_approval": "✋",
    "awaiting_remote": "📡",
    "rejected": "🚫",
    "escalated": "🆘",
    "failed": "❌",
}
_RISKS = ("none", "low", "medium", "high")


def short(run_id: str | None) -> str:
    return (run_id or "?")[:12]


def help_message(problem: str = "", topic: str = "") -> Message:
    """What the bot understands; `problem` says first what was wrong with the message."""
    wanted = [USAGE[topic]] if topic in USAGE else list(USAGE.values())
    lines = [f"{problem}"] if problem else []
    lines += [f"`{u}`" for u in wanted]
    return Message(
        text=problem or "agentheal commands",
        title="agentheal: what I understand",
        lines=lines,
        footer="Viewers may ask; operators may also heal, approve, reject and mute.",
    )


def started(run_id: str, component: str, text: str, who: str, joined: bool) -> Message:
    """The head of a run's thread, posted when the gap is taken (updated in place when it ends)."""
    verb = "joined the open run" if joined else "healing"
    return Message(
        text=f"{_MARKS['running']} {verb} {component}: {fact_value(text, 120)}",
        title=f"{_MARKS['running']} Healing `{component}`",
        lines=[fact_value(text, 500)],
        facts=[("run", short(run_id)), ("status", "running"), ("asked by", who)],
        footer="Its steps follow in this thread.",
    )


def step(node: str, detail: str) -> Message:
    """One step of a run, as a reply in its thread."""
    line = f"*{node}*  {fact_value(detail, 400)}"
    return Message(text=f"{node}: {fact_value(detail, 200)}", lines=[line])


def plan_risk(plan: dict[str, Any] | None) -> str:
    """The highest risk of a plan's steps in the action catalogue (`none` without steps)."""
    from agentheal.estate.actions import CATALOGUE

    risks = [
        CATALOGUE[s["action"]].risk.value
        for s in (plan or {}).get("steps", [])
        if s.get("action") in CATALOGUE
    ]
    return max(risks, key=_RISKS.index) if risks else "none"


def _steps(plan: dict[str, Any] | None) -> list[str]:
    steps = (plan or {}).get("steps", [])
    return [
        f"{i}. `{s.get('action')}` on `{s.get('component')}`" + (f" — {s['why']}" if s.get("why") else "")
        for i, s in enumerate(steps, 1)
    ]


def approval_request(result: dict[str, Any], reasons: list[str]) -> Message:
    """An approval request: the plan, its risk and why a person must decide, with the buttons."""
    run_id = str(result.get("run_id"))
    plan = result.get("plan") or {}
    why_needed = reasons or [str(result.get("reason") or "the policy asks a person")]
    hypothesis = plan.get("hypothesis") or (result.get("diagnosis") or {}).get("hypothesis") or "-"
    lines = [f"*Hypothesis:* {fact_value(hypothesis, 400)}"]
    lines += ["*Plan:*", *(_steps(plan) or ["(no steps)"])]
    lines += ["*Why approval is needed:*", *[f"• {fact_value(r, 300)}" for r in why_needed]]
    return Message(
        text=f"{_MARKS['awaiting_approval']} run {short(run_id)} on {result.get('component')} needs approval",
        title=f"{_MARKS['awaiting_approval']} Approval needed: `{result.get('component')}`",
        lines=lines,
        facts=[
            ("run", short(run_id)),
            ("risk", plan_risk(plan)),
            ("plan from", str(plan.get("source", "none"))),
            ("persona", str(result.get("persona") or "-")),
        ],
        buttons=[
            Button("Approve", "approve", run_id, "primary"),
            Button("Reject", "reject", run_id, "danger"),
        ],
        footer="Only operators may approve or reject.",
        tone="warning",
    )


def answered(request: Message, approved: bool, who: str, note: str, outcome: str | None = None) -> Message:
    """The approval request once answered: its buttons gone, who decided, and (later) the outcome."""
    verb = "Approved" if approved else "Rejected"
    lines = [*request.lines, f"*{verb} by {who}*" + (f": {fact_value(note, 300)}" if note else "")]
    if outcome:
        lines.append(f"Run ended: *{outcome}*")
    title = request.title.replace("Approval needed", verb)
    tone: Tone = _TONES.get(outcome or "", "info") if outcome else ("good" if approved else "warning")
    return Message(text=f"{verb} by {who}", title=title, lines=lines, facts=request.facts, tone=tone)


def ended(result: dict[str, Any], head: Message) -> Message:
    """The head of a run's thread, updated in place at its end."""
    status, run = str(result.get("status")), short(result.get("run_id"))
    mark = _MARKS.get(status, "•")
    component = result.get("component") or "-"
    facts = [(k, v) for k, v in head.facts if k not in ("status",)]
    facts.insert(1, ("status", status))
    actions = [f"`{a.get('action')}` {a.get('outcome')}" for a in result.get("actions", [])]
    if actions:
        facts.append(("actions", ", ".join(actions)))
    lines = head.lines[:1]
    if result.get("reason"):
        lines.append(f"*Reason:* {fact_value(result['reason'], 400)}")
    validation = result.get("validation") or {}
    if validation.get("detail"):
        lines.append(f"*Validation:* {fact_value(validation['detail'], 300)}")
    return Message(
        text=f"{mark} {component}: {status}",
        title=f"{mark} `{component}`: {status}",
        lines=lines,
        facts=facts,
        footer=f"`show {run}`, `why {run}` for the whole story.",
        tone=_TONES.get(status, "info"),
    )


def escalation(result: dict[str, Any], tried: list[str]) -> Message:
    """A run a person must take over: the reason, and what was tried."""
    run_id = short(result.get("run_id"))
    lines = [f"*Reason:* {fact_value(result.get('reason') or 'not given', 500)}", "*What was tried:*"]
    lines += [f"• {t}" for t in tried] or ["• nothing ran"]
    hypothesis = (result.get("diagnosis") or {}).get("hypothesis")
    if hypothesis:
        lines.append(f"*Diagnosis:* {fact_value(hypothesis, 300)}")
    return Message(
        text=f"{_MARKS['escalated']} run {run_id} on {result.get('component')} needs a person",
        title=f"{_MARKS['escalated']} Escalated: `{result.get('component')}`",
        lines=lines,
        facts=[("run", run_id), ("status", str(result.get("status")))],
        tone="bad",
    )


def run_list(rows: list[Any], component: str | None) -> Message:
    """A page of runs, newest first."""
    where = f" of `{component}`" if component else ""
    if not rows:
        return Message(text=f"no runs{where} yet", lines=[f"No runs{where} recorded yet."])
    lines = [
        f"{_MARKS.get(r.status.value, '•')} `{short(r.run_id)}` {r.component or '-'} "
        f"*{r.status.value}* {r.started_at:%Y-%m-%d %H:%M}"
        for r in rows
    ]
    return Message(text=f"{len(rows)} run(s){where}", title=f"Latest runs{where}", lines=lines)


def show(result: dict[str, Any]) -> Message:
    """One run: its status, plan and what ran."""
    status = str(result.get("status"))
    facts = [
        ("run", str(result.get("run_id"))),
        ("status", status),
        ("component", str(result.get("component") or "-")),
        ("persona", str(result.get("persona") or "-")),
        ("plan from", str(result.get("source"))),
    ]
    lines = [f"*Reason:* {fact_value(result['reason'], 400)}"] if result.get("reason") else []
    lines += [
        f"• `{a.get('action')}` on `{a.get('component')}`: {a.get('outcome')}"
        for a in result.get("actions", [])
    ]
    return Message(
        text=f"run {short(result.get('run_id'))}: {status}",
        title=f"{_MARKS.get(status, '•')} Run `{short(result.get('run_id'))}`",
        lines=lines or ["No action ran."],
        facts=facts,
        tone=_TONES.get(status, "info"),
    )


def why(result: dict[str, Any]) -> Message:
    """A run's diagnosis, evidence and plan in a few lines."""
    diagnosis = result.get("diagnosis") or {}
    plan = result.get("plan") or {}
    lines = [f"*Diagnosis:* {fact_value(diagnosis.get('hypothesis') or 'none recorded', 400)}"]
    facts = diagnosis.get("facts") or []
    if facts:
        lines.append("*Facts:* " + ", ".join(f"`{f}`" for f in facts[:8]))
    evidence = diagnosis.get("evidence") or []
    lines += ["*Evidence:*", *[f"> {fact_value(e, 200)}" for e in evidence[:3]]] if evidence else []
    lines += ["*Plan:*", *(_steps(plan) or ["(none)"])]
    if plan:
        lines.append(f"risk {plan_risk(plan)}, from {plan.get('source', 'none')}")
    return Message(
        text=f"why run {short(result.get('run_id'))}",
        title=f"Why run `{short(result.get('run_id'))}` ({result.get('status')})",
        lines=lines,
    )
