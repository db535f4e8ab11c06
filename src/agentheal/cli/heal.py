"""`agentheal heal`, `approve`, `reject`, `runs resume`: one gap healed here or through a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import (
    ServerOpt,
    TokenOpt,
    _client,
    _context,
    _fail,
    _read_gap,
    _remote,
    _show_result,
    app,
    runs_app,
)


@app.command()
def heal(
    gap: Annotated[str | None, typer.Option("--gap", help="What is wrong, in words.")] = None,
    gap_file: Annotated[str | None, typer.Option(help="A JSON gap file, or - for standard input.")] = None,
    component: Annotated[str | None, typer.Option(help="The component the gap is about.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="incident, recurring, weakness, predicted, capability.")
    ] = None,
    severity: Annotated[str | None, typer.Option(help="low, medium, high, critical.")] = None,
    estate: Annotated[Path | None, typer.Option(help="The estate file.", envvar="AGENTHEAL_ESTATE")] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and check policy; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on standard output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress on standard error.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Heal one gap: triage, recall, route, diagnose, plan, guard, execute, validate, learn."""
    from agentheal.graphs.runner import HealError
    from agentheal.services import audit
    from agentheal.services.heal import heal_now

    the_gap = _read_gap(gap, gap_file, component, kind, severity)
    if server is not None:
        if estate is not None or policy is not None:
            _fail("--estate and --policy are the server's own (set when it started); drop them with --server")
        body = the_gap.model_dump(mode="json", include={"text", "component", "kind", "severity", "evidence"})
        with _client(server, token) as api:
            result = _remote(lambda: api.heal(body, dry_run=dry_run))
        if result.get("status") == "running":
            _fail(f"run {result['run_id']} is still going on the server; `agentheal runs show` follows it")
        raise typer.Exit(_show_result(result, as_json))
    ctx = _context(estate, policy, quiet)
    try:
        result = heal_now(ctx, the_gap, dry_run=dry_run, actor=audit.local_actor(), door="cli")
    except HealError as exc:
        _fail(str(exc))
    raise typer.Exit(_show_result(result, as_json))


def _answer(
    run: str,
    approved: bool,
    by: str | None,
    note: str,
    estate: Path | None,
    as_json: bool,
    server: str | None = None,
    token: str | None = None,
) -> None:
    from agentheal.graphs.runner import Healer, HealError
    from agentheal.services import audit
    from agentheal.services.heal import answer_run

    if server is not None:
        with _client(server, token) as api:
            verb = api.approve if approved else api.reject
            result = _remote(lambda: verb(run, by=by, note=note))
        raise typer.Exit(_show_result(result, as_json))
    ctx = _context(None, None, as_json)
    detail = ctx.events.run(run)
    if detail is None:
        _fail(f"no run {run!r}; `agentheal runs` lists them")
    estate_path = estate or _estate_of(ctx, detail.row.run_id)
    ctx = _context(estate_path, None, as_json)
    actor = audit.local_actor()
    try:
        with Healer(ctx) as healer:
            result = answer_run(
                healer, detail.row.run_id, approved, by=by or actor, note=note, actor=actor, door="cli"
            )
            result = healer.wait_remote(result)  # a retry's plan may come from a remote agent again
    except HealError as exc:
        _fail(str(exc))
    raise typer.Exit(_show_result(result, as_json))


def _estate_of(ctx: Any, run_id: str) -> Path | None:
    from agentheal.graphs.runner import Healer

    with Healer(ctx) as healer:
        values = healer.graph.get_state({"configurable": {"thread_id": run_id}}).values
    path = values.get("estate_path") if values else None
    return Path(path) if path else None


@app.command()
def approve(
    run: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    by: Annotated[str | None, typer.Option(help="Who approves (default: your user name).")] = None,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    estate: Annotated[
        Path | None, typer.Option(help="Estate file, if it moved since the run started.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Approve a run waiting for approval; it carries on from its checkpoint."""
    _answer(run, True, by, note, estate, as_json, server, token)


@app.command()
def reject(
    run: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    by: Annotated[str | None, typer.Option(help="Who rejects (default: your user name).")] = None,
    note: Annotated[str, typer.Option(help="Why.")] = "",
    estate: Annotated[
        Path | None, typer.Option(help="Estate file, if it moved since the run started.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Reject a run waiting for approval; nothing of its plan runs."""
    _answer(run, False, by, note, estate, as_json, server, token)


@runs_app.command("resume")
def runs_resume(
    run: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="Ask the agent until it answers or its deadline, or once."),
    ] = True,
    estate: Annotated[
        Path | None, typer.Option(help="Estate file, if it moved since the run started.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress on standard error.")] = False,
) -> None:
    """Resume a run awaiting a remote persona's agent: its answer (or, past its deadline, a time-out)
    carries the run on from its checkpoint. With --no-wait the agent is asked once."""
    from agentheal.graphs.runner import Healer, HealError

    ctx = _context(None, None, True)
    detail = ctx.events.run(run)
    if detail is None:
        _fail(f"no run {run!r}; `agentheal runs` lists them")
    run_id = detail.row.run_id
    ctx = _context(estate or _estate_of(ctx, run_id), None, quiet or as_json)
    try:
        with Healer(ctx) as healer:
            result = healer.resume_remote(run_id) or healer.result(run_id)  # asked once
            if wait:
                result = healer.wait_remote(result)
    except HealError as exc:
        _fail(str(exc))
    raise typer.Exit(_show_result(result, as_json))
