"""`agentheal status`, `report`, `prevent`, `evolve` and `evolutions`: the figures, and the graphs
that use them to get better."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import EXIT_OK, _fail, _print_json, _settings, app

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


@app.command()
def prevent(
    estate: Annotated[
        Path | None,
        typer.Option(
            help="The estate to act on (without one: predict and follow up only).", envvar="AGENTHEAL_ESTATE"
        ),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file instead of the settings' one.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Design and check measures; change nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """One round of the prevent graph over the trend history `watch` keeps: predicted breaches,
    preventive measures checked by policy and applied (and the maintenance actions `evolve`
    scheduled that are due), follow-ups of predictions that fell due."""
    import time

    from agentheal.cli._common import _load_estate
    from agentheal.detect.config import DetectConfig
    from agentheal.graphs.prevent import PreventJob, load_samples, prevent_round

    settings = _settings()
    config = DetectConfig()
    samples, problem = load_samples(settings.home_dir / "detect" / "trends.json", config)
    backend = None
    loaded_policy = None
    if estate is not None:
        from agentheal.estate.local import LocalBackend
        from agentheal.policy import PolicyError, load_policy

        backend = LocalBackend.from_settings(_load_estate(estate), settings)
        try:
            loaded_policy = load_policy(policy, settings)
        except PolicyError as exc:
            _fail(str(exc))
    job = PreventJob(events=_events(), config=config, samples=samples, backend=backend, policy=loaded_policy,
                     home=settings.home_dir)  # fmt: skip
    if problem:
        job.notes.append(problem)
    done = prevent_round(job, time.time(), dry_run=dry_run)
    if as_json:
        _print_json(done)
        raise typer.Exit(EXIT_OK)
    typer.echo(f"{len(samples)} series; {len(done['predicted'])} predicted, {len(done['applied'])} measures "
               f"applied, {len(done['followed'])} followed up")  # fmt: skip
    for p in done["predicted"]:
        typer.echo(
            f"predicted  {p['series']}: in {p['expected_in_s']:.0f} s, confidence {p['confidence']:.2f}"
        )
    for a in done["applied"]:
        typer.echo(
            f"measure    prediction {a['prediction']}: {a['step']['action']} {a['outcome']} {a['detail']}"
        )
    for f in done["followed"]:
        typer.echo(f"follow-up  {f['series']}: {f['outcome']}")
    for note in done["notes"]:
        typer.echo(f"note       {note}")
    raise typer.Exit(EXIT_OK)


evolutions_app = typer.Typer(
    help="Evolutions: changes the evolve graph made, kept or reverted.", no_args_is_help=True
)
app.add_typer(evolutions_app, name="evolutions")


@app.command()
def evolve(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Propose and record; change nothing.")] = False,
    estate: Annotated[
        Path | None,
        typer.Option(
            help="The estate the history was recorded on: evolutions are validated by replaying it on "
            "copies of it on free ports; without one they go on a 24-hour trial.",
            envvar="AGENTHEAL_ESTATE",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The detection config watch runs with: an added check halves its "
            "probe interval (default 5 s).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One round of the evolve graph: judge evolutions whose trial is over, then propose and apply new
    ones for recurring, escalation and failing-action patterns, each a versioned change validated by
    replaying the history it concerns (kept, or reverted byte for byte)."""
    from agentheal.cli._common import _load_estate
    from agentheal.cli.detect import _config
    from agentheal.evolve.proposals import ProposalError
    from agentheal.evolve.replay import ReplayError
    from agentheal.graphs.evolve import EvolveJob, evolve_round
    from agentheal.graphs.evolve_changes import ChangeError
    from agentheal.models import utcnow

    if estate is not None:
        _load_estate(estate)  # a broken or missing estate file is a usage error, before anything changes
    detect = _config(config)  # a broken config too
    settings = _settings()
    job = EvolveJob(events=_events(), home=settings.home_dir, now=utcnow(), dry_run=dry_run,
                    estate_file=estate.resolve() if estate else None,
                    policy_file=settings.policy_file, probe_interval_s=detect.interval_s)  # fmt: skip
    try:
        done = evolve_round(job)
    except (ChangeError, ProposalError, ReplayError) as exc:
        _fail(str(exc))
    if as_json:
        _print_json(done)
        raise typer.Exit(EXIT_OK)
    typer.echo(f"{len(done['patterns'])} patterns, {len(done['applied'])} evolutions applied, "
               f"{len(done['validated'])} validated by replay, {len(done['decided'])} decided")  # fmt: skip
    for d in done["decided"]:
        typer.echo(f"{d['status']:<9} {d['id']} {d['kind']}: {d['reason']}")
    for a in done["applied"]:
        typer.echo(f"{a['status']:<9} {a['id']} {a['kind']}: {a['target']}")
    for d in done["validated"]:
        typer.echo(f"{d['status']:<9} {d['id']} {d['kind']}: {d['reason']}")
    for note in done["notes"]:
        typer.echo(f"note      {note}")
    raise typer.Exit(EXIT_OK)


def _evolution(evolution_id: str) -> dict[str, Any]:
    from agentheal.metrics.records import evolutions

    found = next((r for r in evolutions(_events(), limit=100_000) if r["id"] == evolution_id), None)
    if found is None:
        _fail(f"no evolution {evolution_id!r}; `agentheal evolutions list` shows them")
    return found


@evolutions_app.command("list")
def evolutions_list(as_json: JsonFlag = False) -> None:
    """Evolutions, newest first: id, kind, status, target, why."""
    from agentheal.metrics.records import evolutions

    rows = evolutions(_events(), limit=1000)
    if as_json:
        _print_json([{k: r[k] for k in ("id", "kind", "status", "target", "fingerprint", "created_at",
                                         "decided_at", "reason")} for r in rows])  # fmt: skip
        raise typer.Exit(EXIT_OK)
    if not rows:
        typer.echo("no evolutions yet (`agentheal evolve` proposes them)")
    for r in rows:
        typer.echo(f"{r['id']}  {r['status']:<9} {r['kind']:<16} {r['target']}  {r['reason']}")
    raise typer.Exit(EXIT_OK)


@evolutions_app.command("show")
def evolutions_show(
    evolution_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """One evolution with its proposal, its change and the figures it was judged on."""
    row = _evolution(evolution_id)
    if as_json:
        _print_json(row)
        raise typer.Exit(EXIT_OK)
    import json

    typer.echo(json.dumps(row, indent=2, default=str))
    raise typer.Exit(EXIT_OK)


@evolutions_app.command("revert")
def evolutions_revert(evolution_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Put the file an evolution changed back to its previous version, byte for byte."""
    from agentheal.graphs.evolve import revert
    from agentheal.graphs.evolve_changes import ChangeError
    from agentheal.models import utcnow

    try:
        done = revert(_events(), _settings().home_dir, evolution_id, utcnow())
    except (LookupError, ChangeError) as exc:
        _fail(str(exc))
    typer.echo(f"{evolution_id}: {done['reverted']} ({done['target']})")
    raise typer.Exit(EXIT_OK)
