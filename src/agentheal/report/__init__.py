"""`agentheal report`: one self-contained HTML page of the effectiveness figures, the engines and
six plots (inline SVG from matplotlib). It references nothing outside itself: no script, no
stylesheet, no image, no font, so it opens the same with no network.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from agentheal.models import utcnow

if TYPE_CHECKING:
    from agentheal.events import EventStore
    from agentheal.metrics import Figure

__all__ = ["build_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem}
td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} .nodata{color:#888}
figure{margin:1.5rem 0} svg.plot{max-width:100%;height:auto}
"""


def _value(f: Figure) -> str:
    if f.value is None:
        return '<span class="nodata">no data</span>'
    if f.unit == "fraction":
        return f"{f.value * 100:.1f} %"
    return html.escape(f"{f.value:.3g} {f.unit}")


def build_report(events: EventStore, days: float | None = None) -> str:
    """The report over the last `days` days (30 by default), as one HTML document.

    Raises:
        ValueError: a window of days that is not above 0 or longer than ten years.
    """
    from agentheal.report.data import series
    from agentheal.report.plots import PLOTS
    from agentheal.services.status import status_over, window_of

    window = window_of(days)
    view = status_over(events, window)
    data = series(events, window)
    since, until = (t.isoformat(timespec="seconds") for t in (window.since, window.until))
    rows = "\n".join(
        f"<tr><td>{html.escape(f.name)}</td><td class=num>{_value(f)}</td><td class=num>{f.n}</td></tr>"
        for f in view.figures
    )
    engines = "\n".join(
        f"<tr><td>{e.name}</td><td>{e.state}</td>"
        f"<td>{e.last_activity.isoformat(timespec='seconds') if e.last_activity else '-'}</td>"
        f"<td>{html.escape(e.detail)}</td></tr>"
        for e in view.engines
    )
    plots = "\n".join(f'<figure id="{name}">{draw(data)}</figure>' for name, draw in PLOTS)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentheal report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>agentheal: effectiveness report</h1>
<p>Window {html.escape(since)} to {html.escape(until)}; written {utcnow().isoformat(timespec="seconds")}.
Every figure is computed from recorded events; n is how many it rests on, and a figure with
nothing to count says "no data".</p>
<h2>Figures</h2>
<table><thead><tr><th>figure</th><th>value</th><th>n</th></tr></thead><tbody>
{rows}
</tbody></table>
<h2>Engines</h2>
<table><thead><tr><th>engine</th><th>state</th><th>last activity</th><th>what</th></tr></thead><tbody>
{engines}
</tbody></table>
<h2>Plots</h2>
{plots}
</body>
</html>
"""
