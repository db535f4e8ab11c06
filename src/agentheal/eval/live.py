"""What the demo shows while it runs, and the table it ends with.

`DemoView` is re-rendered by rich's `Live` a few times a second from the demo's state: component
health as detection last sampled it, the fault being healed, the gap detection opened, and each
heal run's story node by node (persona, plan, actions, validation). Without a terminal the demo
prints the same events as lines instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult

    from agentheal.eval.observer import NodeSeen, Observer
    from agentheal.eval.results import ScenarioResult

_NODE_STYLE = {
    "route": "magenta",
    "plan": "cyan",
    "execute": "yellow",
    "validate": "green",
    "learn": "green",
    "escalate": "bold red",
    "factory": "magenta",
}
_SHOWN_NODES = {"triage", "route", "handoff", "factory", "diagnose", "plan", "guard", "execute", "rollback",
                "validate", "learn", "escalate", "join", "resume"}  # fmt: skip


def node_line(seen: NodeSeen, component: str | None) -> str:
    """A node transition as one line: `[api 3f2a9c1b] route: availability (0.88)`."""
    detail = " ".join(seen.detail.split())
    return f"[{component or '?'} {seen.run_id[:8]}] {seen.node}: {detail[:160]}"


@dataclass
class DemoView:
    """The live screen of `agentheal demo`."""

    observer: Observer
    total: int
    title: str = "agentheal demo"
    began: float = field(default_factory=time.time)
    current: str = "starting the estate"
    events: list[str] = field(default_factory=list)
    results: list[ScenarioResult] = field(default_factory=list)
    since: float = 0.0

    def note(self, line: str) -> None:
        self.events.append(f"{time.time() - self.began:6.1f}s {line}")

    def _run_lines(self) -> list[tuple[str, str]]:
        components = {r.run_id: r.component for r in self.observer.events.runs(limit=50)}
        out = []
        for seen in [n for n in list(self.observer.nodes) if n.at >= self.since][-14:]:
            if seen.node in _SHOWN_NODES:
                out.append((node_line(seen, components.get(seen.run_id)), _NODE_STYLE.get(seen.node, "")))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        height = options.height or console.height
        head = Text(
            f"{self.title} · {len(self.results)}/{self.total} done · {self.current} · "
            f"{time.time() - self.began:.0f} s",
            style="bold",
            no_wrap=True,
            overflow="ellipsis",
        )
        done = Text(no_wrap=True, overflow="ellipsis")
        for r in self.results:
            done.append(f"{r.name} ", style="")
            done.append("healed " if r.healed else "NOT healed ", style="green" if r.healed else "bold red")
            done.append(f"{r.time_to_heal_s or 0:.1f} s · " if r.healed else "· ")
        comps = Table(box=None, show_header=False, pad_edge=False)
        running = set(self.observer.heals_running())
        for name, h in self.observer.health().items():
            mark = Text("ok", style="green") if h.healthy else Text("DOWN", style="bold red")
            heal = Text("healing", style="yellow") if name in running else Text("")
            comps.add_row(
                name, mark, heal, Text(" ".join(h.detail.split()), no_wrap=True, overflow="ellipsis")
            )
        gaps = Table(box=None, show_header=False, pad_edge=False)
        for t in self.observer.open_gaps()[:3]:
            follows = " (follows its root)" if t.gap.root else ""
            text = Text(t.gap.text + follows, no_wrap=True, overflow="ellipsis")
            gaps.add_row(t.gap.component or "-", Text(t.gap.severity.value), text)
        # what is left of the screen goes to the story, one row per line
        room = max(3, height - 2 - (comps.row_count + 2) - (max(gaps.row_count, 1) + 2) - 2 - 1)
        lines = [(line, "dim") for line in self.events[-3:]] + self._run_lines()
        story = Text(no_wrap=True, overflow="ellipsis")
        for line, style in lines[-room:]:
            story.append(line + "\n", style=style)
        story.rstrip()
        yield Group(
            head,
            done,
            Panel(comps, title="components", title_align="left"),
            Panel(
                gaps if gaps.row_count else Text("none", style="dim"), title="open gaps", title_align="left"
            ),
            Panel(story, title="the heal, node by node", title_align="left"),
        )


def results_table(results: list[ScenarioResult], title: str = "what was measured") -> RenderableType:
    """One row per fault: detected (and how fast), healed (and how fast), persona, actions, LLM calls."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", pad_edge=False)
    for col in ("fault", "on", "detected", "healed", "persona", "actions", "wrong", "LLM calls"):
        t.add_column(col, overflow="fold")
    for r in results:
        f = r.faults[0] if r.faults else None
        detected = f"yes, {_secs(r.time_to_detect_s)}" if r.detected else "NO"
        healed = Text(
            f"yes, {_secs(r.time_to_heal_s)}" if r.healed else "NO", style="green" if r.healed else "bold red"
        )
        t.add_row(
            f.fault if f else r.name, f.component if f else "-", detected, healed,
            (f.persona if f else None) or "-", ", ".join(f.actions if f else r.actions) or "-",
            str(r.wrong_actions), str(r.llm_calls),
        )  # fmt: skip
    return t


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
