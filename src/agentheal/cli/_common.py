"""What every command module of the CLI shares: the Typer apps, exit codes, usage errors, settings,
JSON output, reading a gap, the heal context, and talking to a server (`--server`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from agentheal import __version__

app = typer.Typer(
    name="agentheal",
    help="Keeps software systems healthy: detect gaps, heal them with typed, policy-checked actions, learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
estate_app = typer.Typer(help="Start, stop and inspect an estate of real processes.", no_args_is_help=True)
memory_app = typer.Typer(help="Resolution memory: import incident history, search it.", no_args_is_help=True)
runs_app = typer.Typer(help="Heal runs recorded in the event store.", invoke_without_command=True)
graphs_app = typer.Typer(help="Diagrams of the compiled graphs.", no_args_is_help=True)
personas_app = typer.Typer(help="The specialist personas.", no_args_is_help=True)
app.add_typer(estate_app, name="estate")
app.add_typer(memory_app, name="memory")
app.add_typer(runs_app, name="runs")
app.add_typer(graphs_app, name="graphs")
app.add_typer(personas_app, name="personas")

EXIT_OK, EXIT_NOT_HEALED, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """Bad input from the user: printed as `error: …`, exit 2."""


def _fail(message: str) -> NoReturn:
    raise UsageProblem(message)


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")


def _settings() -> Any:
    from pydantic import ValidationError

    from agentheal.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        _fail("settings: " + _pydantic_problems(exc))


def _audit(settings: Any, action: str, target: str | None, detail: str, **data: Any) -> None:
    """Record a change made from this command line in the audit trail, as the local user."""
    from agentheal.events import EventStore
    from agentheal.services import audit

    audit.record(
        EventStore(settings.events_url), audit.local_actor(), action, door="cli", target=target,
        detail=detail, data=data or None,
    )  # fmt: skip


def _pydantic_problems(exc: Any) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _load_estate(path: Path) -> Any:
    from agentheal.estate.model import EstateError, load_estate

    try:
        return load_estate(path)
    except EstateError as exc:
        _fail(str(exc))


# ---------------------------------------------------------------- heal, approve, reject


def _read_gap(
    text: str | None, gap_file: str | None, component: str | None, kind: str | None, severity: str | None
) -> Any:
    from agentheal.services.heal import GapProblem, parse_gap

    if (text is None) == (gap_file is None):
        _fail("give the gap as --gap TEXT or --gap-file FILE (or - for standard input), not both or neither")
    data: dict[str, Any]
    if gap_file is not None:
        where = "standard input" if gap_file == "-" else gap_file
        try:
            raw = sys.stdin.read() if gap_file == "-" else Path(gap_file).read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"gap file {where}: {exc.strerror or exc}")
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as exc:
            _fail(f"gap file {where}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        if not isinstance(loaded, dict):
            _fail(f'gap file {where}: expected a JSON object like {{"text": "...", "component": "..."}}')
        data = loaded
    else:
        data = {"text": text}
    for key, value in (("component", component), ("kind", kind), ("severity", severity)):
        if value is not None:
            data[key] = value
    try:
        return parse_gap(data)
    except GapProblem as exc:
        _fail(str(exc))


def _progress_printer(quiet: bool) -> Any:
    if quiet:
        return None
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)

    def show(run_id: str | None, node: str, detail: str, data: dict[str, Any]) -> None:
        console.print(f"[bold cyan]{node:>9}[/]  {escape(detail)}", soft_wrap=True)

    return show


def _show_result(result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _print_json(result)
    else:
        from rich.console import Console

        console = Console(highlight=False)
        colour = {
            "healed": "green",
            "dry_run": "yellow",
            "awaiting_approval": "yellow",
            "awaiting_remote": "yellow",
        }.get(result["status"], "red")
        console.print(f"[bold {colour}]{result['status']}[/]  run {result['run_id']}")
        if result.get("reason"):
            console.print(f"  reason: {result['reason']}", markup=False)
        if result["status"] == "awaiting_approval":
            console.print(
                f"  approve: agentheal approve {result['run_id'][:12]}   reject: agentheal reject …"
            )
        llm = result["llm"]
        console.print(
            f"  persona {result.get('persona')}, plan from {result['source']}, "
            f"{len(result['actions'])} action(s), LLM calls {llm['calls']} "
            f"({llm['prompt_tokens']}+{llm['completion_tokens']} tokens)",
            markup=False,
        )
    return EXIT_OK if result["status"] in ("healed", "dry_run") else EXIT_NOT_HEALED


def _context(estate: Path | None, policy: Path | None, quiet: bool) -> Any:
    from agentheal.graphs.context import HealContext

    settings = _settings()
    if estate is not None:
        _load_estate(estate)  # a broken or missing estate file is a usage error, before any run starts
    if policy is not None or settings.policy_file is not None:
        from agentheal.policy import PolicyError, load_policy

        try:
            load_policy(policy or settings.policy_file, settings)
        except PolicyError as exc:
            _fail(str(exc))
    return HealContext(
        settings=settings,
        estate_path=estate.resolve() if estate else None,
        policy_path=policy,
        progress=_progress_printer(quiet),
    )


ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="AGENTHEAL_SERVER",
        help="Talk to a running `agentheal serve` at this URL instead of opening the stores here.",
    ),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="AGENTHEAL_TOKEN", help="The bearer token for --server.")
]


def _client(server: str, token: str | None) -> Any:
    from agentheal.client import Client

    return Client(server, token=token)


def _remote(call: Any) -> Any:
    """Run a call to the server; a refusal or an unreachable server is a usage error with its words."""
    from agentheal.client import ClientError

    try:
        return call()
    except ClientError as exc:
        _fail(str(exc))


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        sys.stdout.write(f"agentheal {__version__}\n")
        raise typer.Exit(0)
