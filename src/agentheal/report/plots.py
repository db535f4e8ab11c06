"""The report's plots: matplotlib figures written as SVG text, to inline in the HTML page.

No pyplot (no global state, no display): each plot is its own `Figure` on the SVG backend. Text is
drawn as paths, so the page needs no font; a plot with nothing to show says so in its frame.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from agentheal.report.data import Series

_COLOURS = {"healed": "#2e7d32", "kept": "#2e7d32", "avoided": "#2e7d32", "breached": "#c62828",
            "reverted": "#c62828", "escalated": "#ef6c00", "failed": "#c62828", "rejected": "#6d4c41",
            "false": "#9e9e9e", "missed": "#6a1b9a"}  # fmt: skip
_XML_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.S)


def _figure(height: float = 3.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, height), dpi=96, layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig: Any, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Title": title})
    svg = _XML_PROLOGUE.sub("", buf.getvalue(), count=1)  # inline: no XML declaration or DOCTYPE
    return svg.replace("<svg ", f'<svg role="img" aria-label="{title}" class="plot" ', 1)


def _no_data(ax: Any, what: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", fontsize=11, color="#555555")


def _stacked(ax: Any, groups: dict[str, dict[str, int]], order: list[str]) -> None:
    """Horizontal bars, one per group, stacked by outcome in `order`."""
    names = list(groups)
    left = [0] * len(names)
    for outcome in order + sorted({o for g in groups.values() for o in g} - set(order)):
        counts = [groups[n].get(outcome, 0) for n in names]
        if any(counts):
            ax.barh(names, counts, left=left, label=outcome, color=_COLOURS.get(outcome))
            left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlabel("count")
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()


def heal_times(s: Series) -> str:
    fig, ax = _figure()
    ax.set_title("Time to heal, by day (healed runs)")
    if not s.heal_by_day:
        _no_data(ax, "no healed run in this window")
    else:
        days = [d for d, *_ in s.heal_by_day]
        ax.plot(days, [m for _, m, _, _ in s.heal_by_day], marker="o", label="median")
        ax.plot(days, [x for _, _, x, _ in s.heal_by_day], marker=".", linestyle="--", label="longest")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _svg(fig, "Time to heal by day")


def resolution_by_week(s: Series) -> str:
    fig, ax = _figure()
    ax.set_title("Gap resolution rate, by week (healed with no approval / runs ended)")
    if not s.rate_by_week:
        _no_data(ax, "no run ended in this window")
    else:
        weeks = [w for w, _, _ in s.rate_by_week]
        bars = ax.bar(weeks, [r for _, r, _ in s.rate_by_week], color="#1565c0")
        ax.bar_label(bars, labels=[f"n={n}" for _, _, n in s.rate_by_week], fontsize=7)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("fraction")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    return _svg(fig, "Resolution rate by week")


def recurrences(s: Series) -> str:
    fig, ax = _figure(3.5)
    ax.set_title("Recurrences by fingerprint (reported again after a heal)")
    if not s.recurrences:
        _no_data(ax, "no gap came back after a heal")
    else:
        ax.barh([label for label, _ in s.recurrences], [n for _, n in s.recurrences], color="#ef6c00")
        ax.invert_yaxis()
        ax.set_xlabel("reports")
        ax.tick_params(axis="y", labelsize=7)
    return _svg(fig, "Recurrences by fingerprint")


def agents(s: Series) -> str:
    fig, ax = _figure()
    ax.set_title("Agent records (runs that ended, by the persona in charge)")
    if not s.agents:
        _no_data(ax, "no run ended with a persona in charge")
    else:
        _stacked(ax, s.agents, ["healed", "escalated", "failed", "rejected"])
    return _svg(fig, "Agent records")


def predictions(s: Series) -> str:
    fig, ax = _figure(2.5)
    ax.set_title("Predictions against outcomes (followed up)")
    if not s.predictions:
        _no_data(ax, "no prediction followed up")
    else:
        _stacked(ax, s.predictions, ["avoided", "breached", "false", "missed"])
    return _svg(fig, "Predictions against outcomes")


def evolutions(s: Series) -> str:
    fig, ax = _figure(2.5)
    ax.set_title("Evolutions kept and reverted, by kind")
    if not s.evolutions:
        _no_data(ax, "no evolution decided")
    else:
        _stacked(ax, s.evolutions, ["kept", "reverted"])
    return _svg(fig, "Evolutions kept and reverted")


PLOTS: list[tuple[str, Callable[[Series], str]]] = [
    ("time-to-heal", heal_times),
    ("resolution-by-week", resolution_by_week),
    ("recurrences", recurrences),
    ("agents", agents),
    ("predictions", predictions),
    ("evolutions", evolutions),
]
