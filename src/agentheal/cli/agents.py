"""`agentheal agents …`: the personas with their records, and the factory that makes new ones."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import (
    EXIT_NOT_HEALED,
    EXIT_OK,
    _audit,
    _context,
    _fail,
    _print_json,
    _read_gap,
    _settings,
    app,
)

agents_app = typer.Typer(
    help="The agents: personas with their records from the event store; the factory that makes new ones.",
    no_args_is_help=True,
)
app.add_typer(agents_app, name="agents")

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]


def _registry_and_events() -> tuple[Any, Any, Any]:
    from agentheal.events import EventStore
    from agentheal.personas import Registry

    settings = _settings()
    registry = Registry.load(settings)
    for error in registry.errors:
        typer.echo(f"broken: {error}", err=True)
    return settings, registry, EventStore(settings.events_url)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _remote(registry: Any, name: str) -> dict[str, Any] | None:
    """A remote persona's agent: its A2A URL, time-out and token variable (None: a local persona)."""
    try:
        remote = registry.get(name).remote
    except LookupError:  # retired personas have records but may not load
        return None
    return None if remote is None else remote.model_dump()


@agents_app.command("list")
def agents_list(as_json: JsonFlag = False) -> None:
    """Every persona with its record: origin, version, status, runs, heals, success rate; a remote
    one (another agent over A2A) with its URL."""
    from agentheal.services.agents import list_agents

    settings, registry, events = _registry_and_events()
    recs = list_agents(registry, events, settings).agents
    if as_json:
        _print_json([r.brief() for r in recs])  # a contract: these keys, no more (`agents show` has the URL)
        return
    typer.echo(
        f"{'name':<32} {'origin':<9} {'ver':>3} {'status':<8} {'runs':>5} {'heals':>5} {'success':>7}  where"
    )
    for r in recs:
        remote = _remote(registry, r.name)
        typer.echo(
            f"{r.name:<32} {r.origin:<9} {r.version:>3} {r.status:<8} {r.runs:>5} {r.heals:>5} "
            f"{_pct(r.success_rate):>7}  {remote['a2a'] if remote else 'local'}"
        )


@agents_app.command("show")
def agents_show(name: str, as_json: JsonFlag = False) -> None:
    """One persona: its record, provenance, versions and retirement."""
    from agentheal.agents import AgentRecord
    from agentheal.services.agents import UnknownAgent, show_agent

    settings, registry, events = _registry_and_events()
    try:
        detail = show_agent(name, registry, events, settings)
    except UnknownAgent:
        _fail(f"no persona named {name!r}; `agentheal agents list` shows them")
    rec = AgentRecord.model_validate(detail.model_dump(include=set(AgentRecord.model_fields)))
    stored = [v.model_dump() for v in detail.versions]
    remote = _remote(registry, rec.name)
    if as_json:
        _print_json({**rec.model_dump(mode="json"), "versions": stored, "remote": remote})
        return
    typer.echo(f"{rec.name}: {rec.title} ({rec.origin}, v{rec.version}, {rec.status})")
    if remote is not None:
        token = f"a bearer token from ${remote['token_env']}" if remote["token_env"] else "no token"
        typer.echo(
            f"  remote agent over A2A at {remote['a2a']}; waits {remote['timeout_s']:g} s for a plan; {token}"
        )
    finished = rec.heals + rec.escalations + rec.failures + rec.rejected
    if rec.runs == 0 or rec.window is None:
        typer.echo("  no runs recorded for it yet")
    else:
        typer.echo(
            f"  {rec.runs} run(s) from {rec.window[0]:%Y-%m-%d %H:%M} to {rec.window[1]:%Y-%m-%d %H:%M} UTC: "
            f"{rec.heals} healed, {rec.escalations} escalated, {rec.failures} failed, {rec.rejected} rejected"
        )
        median = "-" if rec.median_heal_s is None else f"{rec.median_heal_s:.1f} s"
        typer.echo(
            f"  success rate {_pct(rec.success_rate)} of {finished} finished; median time to heal {median}"
        )
        if rec.last_used is not None:
            typer.echo(f"  last used {rec.last_used:%Y-%m-%d %H:%M:%S} UTC")
    prov = rec.provenance or {}
    if prov.get("source") == "agents add-remote":
        typer.echo(
            f"  added {prov.get('at')} from the Agent Card of {prov.get('card')} v{prov.get('version')}"
        )
    elif prov:
        typer.echo(
            f"  made {prov.get('created_at')} by the factory ({prov.get('model')}) for: {prov.get('gap')}"
        )
    if rec.retirement:
        typer.echo(
            f"  retired {rec.retirement.get('at')} by {rec.retirement.get('by')}: {rec.retirement.get('why')}"
        )
    for v in stored:
        typer.echo(f"  v{v['version']}: {v['path']}")


@agents_app.command("create")
def agents_create(
    for_gap: Annotated[
        str | None, typer.Option("--for-gap", help="The gap no persona fits, in words.")
    ] = None,
    gap_file: Annotated[str | None, typer.Option(help="A JSON gap file, or - for standard input.")] = None,
    component: Annotated[str | None, typer.Option(help="The component the gap is about.")] = None,
    kind: Annotated[str | None, typer.Option(help="incident, recurring, weakness, predicted.")] = None,
    estate: Annotated[
        Path | None, typer.Option(help="An estate file: facts come from its component.")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    replace: Annotated[
        str | None, typer.Option(help="Make a new version of this generated persona (the old one is kept).")
    ] = None,
    as_json: JsonFlag = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on standard error.")] = False,
) -> None:
    """Design, check and register a new specialist for a gap; exit 1 when it is not registered."""
    from agentheal.graphs.factory import create_for_gap

    if for_gap is None and gap_file is None:
        _fail("give the gap as --for-gap TEXT or --gap-file FILE (or - for standard input)")
    gap = _read_gap(for_gap, gap_file, component, kind, None)
    ctx = _context(estate, policy, quiet or as_json)
    facts: list[Any] = []
    if ctx.backend is not None and gap.component is not None:
        if gap.component not in ctx.estate.components:
            known = ", ".join(sorted(ctx.estate.components))
            _fail(f"unknown component {gap.component!r}: the estate has {known}")
        facts = list(ctx.backend.facts(gap.component))
    result = create_for_gap(ctx, gap, facts, None, replace=replace, trigger="cli")
    if result.registered:
        _audit(ctx.settings, "agent_change", result.name, f"created v{result.version} for: {gap.text[:120]}")
    if as_json:
        _print_json(
            {
                "registered": result.registered,
                "name": result.name,
                "path": result.path,
                "reasons": result.reasons,
                **result.model_dump(mode="json", exclude={"registered", "name", "path", "reasons"}),
            }
        )
    else:
        verdict = "registered" if result.registered else "NOT registered"
        typer.echo(
            f"{verdict}: {result.name} v{result.version} ({result.source}) {result.path or ''}".rstrip()
        )
        for reason in result.reasons:
            typer.echo(f"  reason: {reason}")
        for note in result.notes:
            typer.echo(f"  note: {note}")
        if result.closest:
            near = result.closest
            typer.echo(f"  closest existing persona: {near['name']} (cosine {near['cosine']:.2f})")
    raise typer.Exit(EXIT_OK if result.registered else EXIT_NOT_HEALED)


@agents_app.command("diff")
def agents_diff(
    name: str,
    old: Annotated[
        int | None, typer.Option("--from", help="Older version (default: the one before --to).")
    ] = None,
    new: Annotated[int | None, typer.Option("--to", help="Newer version (default: the current one).")] = None,
) -> None:
    """A unified diff between two stored versions of a generated persona."""
    import difflib

    from agentheal.factory.store import versions

    stored = dict(versions(_settings(), name))
    if len(stored) < 2:
        _fail(
            f"{name} has {len(stored)} stored version(s); a diff needs two (`agents create --replace {name}`)"
        )
    to = new if new is not None else max(stored)
    before = old if old is not None else max((v for v in stored if v < to), default=None)
    for wanted in (before, to):
        if wanted not in stored:
            _fail(f"{name} has no version {wanted}; stored: {', '.join(f'v{v}' for v in sorted(stored))}")
    assert before is not None
    a, b = stored[before], stored[to]
    lines = difflib.unified_diff(
        a.read_text(encoding="utf-8").splitlines(keepends=True),
        b.read_text(encoding="utf-8").splitlines(keepends=True),
        fromfile=f"{name} v{before} ({a})",
        tofile=f"{name} v{to} ({b})",
    )
    typer.echo("".join(lines), nl=False)


@agents_app.command("retire")
def agents_retire(
    name: str,
    why: Annotated[str, typer.Option("--why", help="Why it is retired; kept with the record.")],
    by: Annotated[str | None, typer.Option(help="Who retires it (default: your user name).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Retire a persona: kept on disk and listed, never routed to again."""
    from agentheal.agents import AgentError, retire

    settings, registry, _ = _registry_and_events()
    try:
        record = retire(settings, registry, name, why, by or getpass.getuser())
    except AgentError as exc:
        _fail(str(exc))
    _audit(settings, "agent_change", name, f"retired: {why}")
    if as_json:
        _print_json({"name": name, "status": "retired", **record})
    else:
        typer.echo(f"retired {name}: {record['why']}")


@agents_app.command("review")
def agents_review(
    min_runs: Annotated[int, typer.Option(min=1, help="Finished runs before an agent is judged.")] = 5,
    below: Annotated[float, typer.Option(min=0.0, max=1.0, help="Retire below this success rate.")] = 0.5,
    as_json: JsonFlag = False,
) -> None:
    """Retire every specialist whose success rate is below the bar after enough runs."""
    from agentheal.agents import retire_underperformers

    settings, registry, events = _registry_and_events()
    done = retire_underperformers(settings, registry, events, min_runs=min_runs, below=below)
    for retired, why in done:
        _audit(settings, "agent_change", retired, f"retired by review: {why}")
    if as_json:
        _print_json([{"name": n, "why": w} for n, w in done])
        return
    if not done:
        typer.echo(f"no active specialist is below {below:.0%} after {min_runs} finished runs")
    for n, w in done:
        typer.echo(f"retired {n}: {w}")


@agents_app.command("propose")
def agents_propose(
    window: Annotated[float, typer.Option(min=1.0, help="Look back this many seconds.")] = 86400.0,
    min_count: Annotated[
        int, typer.Option(min=1, help="Unhealed runs of one group that make a proposal.")
    ] = 3,
    create: Annotated[bool, typer.Option("--create", help="Run the factory on each proposal.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Proposals for new specialists where escalations and failed heals pile up."""
    from agentheal.factory.patterns import propose
    from agentheal.graphs.factory import create_for_gap

    ctx = _context(None, None, True)
    proposals = propose(ctx.events, ctx.registry, window_s=window, min_count=min_count)
    out = []
    for p in proposals:
        entry: dict[str, Any] = p.model_dump(mode="json")
        if create:
            result = create_for_gap(ctx, p.gap, [], None, trigger="pattern")
            if result.registered:
                _audit(ctx.settings, "agent_change", result.name, f"created for pattern {p.key}")
            entry["factory"] = {
                "registered": result.registered,
                "name": result.name,
                "reasons": result.reasons,
            }
        out.append(entry)
    if as_json:
        _print_json(out)
        return
    if not out:
        typer.echo(f"no group of {min_count}+ escalated or failed runs in the last {window:g} s")
    for entry in out:
        typer.echo(f"{entry['key']}: {entry['count']} unhealed runs; gap: {entry['gap']['text'][:80]}")
        if "factory" in entry:
            f = entry["factory"]
            typer.echo(f"  factory: {'registered' if f['registered'] else 'not registered'} {f['name']}")
            for reason in f["reasons"]:
                typer.echo(f"    reason: {reason}")
