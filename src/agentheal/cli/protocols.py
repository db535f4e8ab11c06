"""The commands of the open-protocol doors: `agentheal mcp` (an MCP server over stdio) and
`agentheal agents add-remote URL` (a remote persona from an A2A Agent Card)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentheal.cli._common import ServerOpt, TokenOpt, _fail, _load_estate, _settings, app
from agentheal.cli.agents import agents_app


@app.command()
def mcp(
    estate: Annotated[
        Path | None, typer.Option(help="The estate file to heal and show.", envvar="AGENTHEAL_ESTATE")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Serve agentheal's tools and resources over MCP on standard input and output (for a desktop or
    coding agent on this host). You, the local user, act as an operator: the agent may heal, approve
    and reject. Over HTTP, `agentheal serve` answers the same at /mcp behind its tokens. With
    --server, nothing here is opened (a second process must not write the stores a running server
    has open): every request goes to that server's /mcp with --token, whose role decides."""
    if server is not None:
        if estate is not None or policy is not None:
            _fail("--estate and --policy are the server's own (set when it started); drop them with --server")
        from mcp.shared.exceptions import McpError

        from agentheal.protocols.mcp_relay import run_relay

        try:
            run_relay(server, token)
        except McpError as exc:  # unreachable, or the token refused, before serving began
            _fail(str(exc))
        return
    settings = _settings()
    if estate is not None:
        _load_estate(estate)  # a broken estate file is a usage error before the server starts
    if policy is not None or settings.policy_file is not None:
        from agentheal.policy import PolicyError, load_policy

        try:
            load_policy(policy or settings.policy_file, settings)
        except PolicyError as exc:
            _fail(str(exc))
    from agentheal.protocols.mcp_server import run_stdio

    run_stdio(settings, estate.resolve() if estate else None, policy)


@agents_app.command("add-remote")
def agents_add_remote(
    url: Annotated[
        str, typer.Argument(help="The agent's base URL (its card is at /.well-known/agent-card.json).")
    ],
    name: Annotated[str | None, typer.Option(help="The persona's name (default: from the card).")] = None,
    kinds: Annotated[str, typer.Option(help="Gap kinds it takes, comma-separated.")] = "incident",
    components: Annotated[str, typer.Option(help="Component globs it takes, comma-separated.")] = "*",
    actions: Annotated[
        str | None,
        typer.Option(help="Catalogue actions its plans may use, comma-separated (default: everyday ones)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a run waits for its plan.")] = 120.0,
    token_env: Annotated[
        str | None, typer.Option(help="An environment variable holding a bearer token for the agent.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a persona file of that name.")] = False,
) -> None:
    """Read a remote agent's A2A Agent Card, check it, and write the persona file that routes gaps to
    it: the gap and its redacted findings go to the agent, and its plan passes the guard like any other."""
    from pydantic import ValidationError

    from agentheal.events import EventStore
    from agentheal.personas import write_persona
    from agentheal.protocols.a2a_remote import RemoteCardError, fetch_card, persona_from_card
    from agentheal.services import audit

    settings = _settings()
    try:
        card = fetch_card(url)
    except RemoteCardError as exc:
        _fail(str(exc))

    def split(text: str | None) -> list[str] | None:
        return [p.strip() for p in text.split(",") if p.strip()] if text else None

    try:
        persona = persona_from_card(
            card, url, name=name, kinds=split(kinds), components=split(components), actions=split(actions),
            timeout_s=timeout, token_env=token_env,
        )  # fmt: skip
    except ValidationError as exc:
        _fail("the persona would not be valid: " + "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))  # fmt: skip
    folder = settings.generated_personas_dir
    if (folder / f"{persona.name}.md").exists() and not force:
        where = folder / f"{persona.name}.md"
        _fail(f"a persona {persona.name!r} exists already ({where}): --name another, or --force")
    path = write_persona(persona, folder)
    audit.record(EventStore(settings.events_url), audit.local_actor(), "agent_change", door="cli",
                 target=persona.name, detail=f"remote agent {card.name} at {url}")  # fmt: skip
    typer.echo(f"added {persona.name}: remote agent {card.name!r} at {url} -> {path}")
