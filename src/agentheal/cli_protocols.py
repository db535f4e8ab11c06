"""The commands of the open-protocol doors: `agentheal mcp` (an MCP server over stdio)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentheal.cli import _fail, _load_estate, _settings, app


@app.command()
def mcp(
    estate: Annotated[
        Path | None, typer.Option(help="The estate file to heal and show.", envvar="AGENTHEAL_ESTATE")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
) -> None:
    """Serve agentheal's tools and resources over MCP on standard input and output (for a desktop or
    coding agent on this host). You, the local user, act as an operator: the agent may heal, approve
    and reject. Over HTTP, `agentheal serve` answers the same at /mcp behind its tokens."""
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
