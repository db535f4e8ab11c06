"""What people see: a table of gaps (`agentheal detect`) and the compact live view of `agentheal watch`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from agentheal.detect.gaps import TrackedGap

_COLOUR = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


def gaps_table(tracked: list[TrackedGap], title: str = "gaps") -> RenderableType:
    """The open gaps as a rich table: kind, component, severity, text, root and latest evidence."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", expand=False, show_lines=False, pad_edge=False)
    for col in ("kind", "component", "severity", "gap", "root", "evidence"):
        table.add_column(col, overflow="fold", max_width=60 if col in ("gap", "evidence") else None)
    for t in tracked:
        g = t.gap
        evidence = next((e for e in reversed(g.evidence) if not e.startswith("impact: ")), "")
        table.add_row(
            g.kind.value,
            g.component or "-",
            Text(g.severity.value, style=_COLOUR.get(g.severity.value, "")),
            Text(g.text),
            Text(f"-> {g.root[:8]}" if g.root else ""),
            Text(evidence[:200]),
        )
    return table


def live_view(
    tracked: list[TrackedGap],
    health: dict[str, Any],
    heals: list[dict[str, Any]],
    counters: dict[str, Any],
    reports: list[str],
) -> RenderableType:
    """The watch screen: components, open gaps, heals running and recent, counters, last reports."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(
        "agentheal watch  "
        + "  ".join(f"{k} {v}" for k, v in counters.items())
        + f"  {datetime.now().strftime('%H:%M:%S')}",
        style="bold",
    )
    comps = Table(box=None, show_header=False, pad_edge=False)
    for name, h in health.items():
        mark = Text("ok", style="green") if h.healthy else Text("DOWN", style="bold red")
        comps.add_row(name, mark, Text(h.detail[:90]))
    heal_table = Table(title="heals", title_justify="left", box=None, pad_edge=False)
    for col in ("component", "status", "run", "gap"):
        heal_table.add_column(col, overflow="fold")
    for h in heals[-8:]:
        status = h.get("status", "running")
        style = {"healed": "green", "running": "yellow"}.get(status, "red")
        heal_table.add_row(h["component"] or "-", Text(status, style=style), (h.get("run_id") or "")[:12],
                           Text(h["text"][:70]))  # fmt: skip
    parts: list[RenderableType] = [head, comps, gaps_table(tracked, title=f"open gaps ({len(tracked)})")]
    if heals:
        parts.append(heal_table)
    if reports:
        parts.append(Text("\n".join(f"! {r[:150]}" for r in reports[-3:]), style="dim"))
    return Group(*parts)
