"""The commands around healing: estates, memory, runs, diagrams, personas, the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentheal.cli._common import (
    EXIT_NOT_HEALED,
    EXIT_OK,
    ServerOpt,
    TokenOpt,
    _audit,
    _client,
    _fail,
    _load_estate,
    _print_json,
    _remote,
    _settings,
    app,
    estate_app,
    graphs_app,
    memory_app,
    personas_app,
    runs_app,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON on standard output.")]


# ---------------------------------------------------------------- estate


def _backend(path: Path) -> Any:
    from agentheal.estate.local import LocalBackend

    estate = _load_estate(path)
    return LocalBackend(estate, _settings().estates_dir / estate.name)


def _print_actions(results: list[Any], as_json: bool) -> int:
    if as_json:
        _print_json([r.model_dump(mode="json") for r in results])
    else:
        for r in results:
            typer.echo(f"{r.action:>8} {r.component}: {r.outcome} {r.detail}".rstrip())
    return EXIT_OK if all(r.outcome in ("ok", "dry_run", "skipped") for r in results) else EXIT_NOT_HEALED


@estate_app.command("up")
def estate_up(file: Path, as_json: JsonFlag = False) -> None:
    """Start every component in dependency order and wait for its probes."""
    raise typer.Exit(_print_actions(_backend(file).up(), as_json))


@estate_app.command("down")
def estate_down(file: Path, as_json: JsonFlag = False) -> None:
    """Stop every component (process groups), dependents first."""
    raise typer.Exit(_print_actions(_backend(file).down(), as_json))


@estate_app.command("status")
def estate_status(file: Path, as_json: JsonFlag = False) -> None:
    """Health of every component; exit 1 when any is unhealthy."""
    from agentheal.services.estate import health as estate_health

    health = estate_health(_backend(file))
    if as_json:
        _print_json({"components": [h.model_dump(mode="json") for h in health]})
    else:
        for h in health:
            mark = "healthy" if h.healthy else "UNHEALTHY"
            typer.echo(f"{h.name:<16} {mark:<10} pid {h.pid or '-':<8} {h.detail}")
    raise typer.Exit(EXIT_OK if all(h.healthy for h in health) else EXIT_NOT_HEALED)


# ---------------------------------------------------------------- memory


@memory_app.command("import")
def memory_import(file: Path) -> None:
    """Import past resolutions from JSON Lines: {"gap", "resolution", "outcome", "component"?, ...}."""
    from agentheal.memory import Memory, MemoryImportError
    from agentheal.services.memory import import_file

    if not file.is_file():
        _fail(f"{file}: no such file")
    settings = _settings()
    try:
        report = import_file(Memory(settings), file)
    except MemoryImportError as exc:
        _fail(str(exc))
    _audit(settings, "memory_import", str(file), f"imported {report.imported}, skipped {report.skipped}",
           imported=report.imported, skipped=report.skipped)  # fmt: skip
    for problem in report.errors:
        typer.echo(f"skipped: {problem}", err=True)
    typer.echo(f"imported {report.imported} resolution(s), skipped {report.skipped}")
    raise typer.Exit(EXIT_OK if report.imported else EXIT_NOT_HEALED)


@memory_app.command("search")
def memory_search(
    text: str,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="How many matches.")] = 5,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="hybrid: meaning and words; dense: meaning; lexical: words, identifiers kept whole "
            "(BM25). Default: the memory_search_mode setting, hybrid.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Past resolutions that best match TEXT, best first."""
    from agentheal.services.memory import MemoryMatch, search

    if not text.strip():
        _fail("the search text is empty")
    if mode is not None and mode not in ("hybrid", "dense", "lexical"):
        _fail(f"--mode must be hybrid, dense or lexical (got {mode!r})")
    if server is not None:  # a warm server answers in milliseconds; this process would load the model
        with _client(server, token) as api:
            found = _remote(lambda: api.search_memory(text, k, **({"mode": mode} if mode else {})))
        hits = [MemoryMatch.model_validate(h) for h in found]
    else:
        from agentheal.memory import Memory

        hits = search(Memory(_settings()), text, k=k, mode=mode)
    if as_json:
        _print_json([h.model_dump(mode="json") for h in hits])
        return
    if not hits:
        typer.echo("memory is empty: heal something, or `agentheal memory import FILE`")
    for h in hits:
        typer.echo(f"{h.similarity:5.2f}  {h.outcome:<7} {h.gap}\n       → {h.resolution}")


# ---------------------------------------------------------------- runs


@runs_app.callback(invoke_without_command=True)
def runs_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 30,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    component: Annotated[str | None, typer.Option(help="Only runs about this component.")] = None,
    persona: Annotated[str | None, typer.Option(help="Only runs of this persona.")] = None,
    as_json: JsonFlag = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Recent heal runs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from agentheal.events import EventStore
    from agentheal.services.runs import MAX_PAGE, RunPage, RunQueryError, list_runs

    def page_of(cursor: str | None, size: int) -> RunPage:
        if api is None:
            return list_runs(
                EventStore(_settings().events_url),
                limit=size,
                status=status,
                component=component,
                persona=persona,
                cursor=cursor,
            )
        found = _remote(
            lambda: api.runs(status=status, component=component, persona=persona, limit=size, cursor=cursor)
        )
        return RunPage.model_validate(found)

    api = _client(server, token) if server is not None else None
    rows: list[Any] = []
    cursor = None
    try:
        while len(rows) < limit:
            page = page_of(cursor, min(limit - len(rows), MAX_PAGE))
            rows += page.runs
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    except RunQueryError as exc:
        _fail(str(exc))
    finally:
        if api is not None:
            api.close()
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        typer.echo("no runs recorded yet")
    for r in rows:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(
            f"{r.run_id[:12]}  {r.status:<17} {started}  {r.component or '-':<12} "
            f"{r.persona or '-':<14} {r.source or '-':<8} {r.gap_text[:60]}"
        )


@runs_app.command("show")
def runs_show(run: str, as_json: JsonFlag = False, server: ServerOpt = None, token: TokenOpt = None) -> None:
    """The whole story of a run: timeline, evidence, diagnosis, plan, actions, validation, LLM use."""
    from agentheal.events import EventStore, RunDetail
    from agentheal.services.runs import run_detail

    detail: RunDetail | None
    if server is not None:
        with _client(server, token) as api:
            shown = _remote(lambda: api.run(run))
        detail = RunDetail.model_validate(shown["story"])
    else:
        try:
            detail = run_detail(EventStore(_settings().events_url), run)
        except LookupError as exc:
            _fail(str(exc))
    if detail is None:
        _fail(f"no run {run!r}; `agentheal runs` lists them")
    if as_json:
        _print_json(detail.model_dump(mode="json"))
        return
    from agentheal.story import render_story

    typer.echo(render_story(detail))


# ---------------------------------------------------------------- graphs, personas


@graphs_app.command("export")
def graphs_export(
    out: Annotated[Path, typer.Option(help="Folder for the diagrams.")] = Path("graphs"),
) -> None:
    """Write a Mermaid diagram of each compiled graph."""
    from agentheal.graphs.diagrams import export_diagrams

    for path in export_diagrams(out):
        typer.echo(f"wrote {path}")


@personas_app.command("list")
def personas_list(as_json: JsonFlag = False) -> None:
    """The personas that load, and the files that do not."""
    from agentheal.personas import Registry

    registry = Registry.load(_settings())
    if as_json:
        _print_json(
            {
                "personas": [
                    {
                        "name": p.name,
                        "title": p.title,
                        "role": p.role,
                        "origin": p.origin,
                        "actions": p.actions,
                    }
                    for p in registry.all()
                ],
                "errors": [str(e) for e in registry.errors],
            }
        )
        return
    for p in registry.all():
        typer.echo(f"{p.name:<16} {p.role:<10} {p.title}")
    for e in registry.errors:
        typer.echo(f"broken: {e}", err=True)


# ---------------------------------------------------------------- demo


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo's temporary home folder.")] = False,
    faults: Annotated[
        str | None,
        typer.Option(
            help="Only these faults, in this order: a,b (or a:component); see `agentheal fault list`."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="The Markdown report's path (JSON beside it).")] = None,
) -> None:
    """Start the shopfront estate, break it ten ways, detect and heal each live, report what was measured."""
    from agentheal.demo import run_demo

    raise typer.Exit(run_demo(keep=keep, faults=faults, report=report))
