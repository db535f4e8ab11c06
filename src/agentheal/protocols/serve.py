"""The protocol doors on `agentheal serve`: MCP at `/mcp` (streamable HTTP) and A2A (the Agent Card
at `/.well-known/agent-card.json`, tasks at `/a2a`).

`install(app)` is called by `create_app` after the API's authentication is added, so `/mcp` and
`/a2a` sit behind the same bearer tokens (a request without a valid one is answered 401 before it
reaches them) and each tool or task checks the caller's role. The Agent Card alone is public: it is
how another agent learns which auth to send, so it must be readable without any.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.routing import Route

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentheal.api.state import ServerState
    from agentheal.api.tokens import Caller
    from agentheal.protocols.mcp_server import ToolContext

__all__ = ["A2A_PATH", "MCP_PATH", "install"]

MCP_PATH = "/mcp"
A2A_PATH = "/a2a"


def _http_caller(context: ToolContext | None) -> Caller:
    """The API token's caller, put in the request's state by the API's authentication."""
    request = context.request_context.request if context is not None else None
    caller = getattr(getattr(request, "state", None), "caller", None)
    if caller is None:  # authentication is missing: never act for nobody
        from mcp.server.fastmcp.exceptions import ToolError

        raise ToolError("no caller: the server's authentication is not installed")
    return caller  # type: ignore[no-any-return]


def install(app: FastAPI) -> None:
    """Add the MCP and A2A doors to the API app (whose `app.state.agentheal` is set)."""
    state: ServerState = app.state.agentheal
    session_manager = _install_mcp(app, state)
    from agentheal.protocols.a2a_server import install as install_a2a

    install_a2a(app, state)
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        async with original(the_app) as inner, session_manager.run():
            yield inner

    app.router.lifespan_context = lifespan


def _install_mcp(app: FastAPI, state: ServerState) -> Any:
    from mcp.server.fastmcp.server import StreamableHTTPASGIApp
    from mcp.server.transport_security import TransportSecuritySettings

    from agentheal.protocols.mcp_server import McpDoor, build_server

    door = McpDoor(state.settings, state.ctx, state.pool, state.estate_path, _http_caller, transport="http")
    # With tokens, a page in a browser cannot call /mcp (it cannot send the token), so the Host check
    # against DNS rebinding is only needed for an --insecure-local server, which answers anyone local.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=state.insecure_local,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    # Stateless, JSON answers: each call stands alone (a heal's answer is one response), so nothing
    # is held between requests and a server restart breaks no client session.
    server = build_server(door, json_response=True, stateless_http=True, transport_security=security)
    server.streamable_http_app()  # makes the session manager; its own Starlette app is not used
    manager = server.session_manager
    app.router.routes.append(Route(MCP_PATH, endpoint=StreamableHTTPASGIApp(manager)))
    return manager
