"""`agentheal status`, `report`, `prevent`, `evolve` and `evolutions`: the figures, and the graphs
that use them to get better."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli import EXIT_OK, _fail, _print_json, _settings, app

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]
DaysOpt = Annotated[float | None, typer.Option("--days", help="The window: the last DAYS days (default 30).")]


def _events() -> Any:
    from agentheal.events import EventStore, EventStoreError

    try:
        return EventStore(_settings().events_url)
    except EventStoreError as exc:
        _fail(str(exc))


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "fraction":
        return f"{value * 100:.1f} %"
    return f"{value:.3g} {unit}"


@app.command()
def status(as_json: JsonFlag = False, days: DaysOpt = None) -> None:
    """The effectiveness figures from recorded events, and what each engine last did and when."""
    from agentheal.services.status import status as compute_status

    try:
        view = compute_status(_events(), days)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(view.model_dump(mode="json"))
        raise typer.Exit(EXIT_OK)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    main = view.figures[0].window
    figures = Table(
        title=f"Effectiveness from recorded events, {main.replace('/', ' to ')}", title_justify="left"
    )
    for col, justify in (("figure", "left"), ("value", "right"), ("n", "right"), ("note", "left")):
        figures.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in view.figures:
        note = "" if f.window == main else "this window against the one before"
        figures.add_row(f.name, _shown(f.value, f.unit), str(f.n), note)
    console.print(figures)
    engines = Table(title="Engines (from what each last did)", title_justify="left")
    for col in ("engine", "state", "last activity", "what"):
        engines.add_column(col)
    for e in view.engines:
        when = e.last_activity.isoformat(timespec="seconds") if e.last_activity else "-"
        engines.add_row(e.name, e.state, when, e.detail)
    console.print(engines)
    raise typer.Exit(EXIT_OK)


@app.command()
def report(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the HTML here (default: standard output).")
    ] = None,
    days: DaysOpt = None,
) -> None:
    """One self-contained HTML report with plots (inline SVG; it loads nothing from the network)."""
    from agentheal.report import build_report

    try:
        html = build_report(_events(), days)
    except ValueError as exc:
        _fail(str(exc))
    if out is None:
        sys.stdout.write(html)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        typer.echo(f"wrote {out} ({len(html.encode())} bytes)")
    raise typer.Exit(EXIT_OK)
