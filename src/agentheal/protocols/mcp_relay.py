"""`agentheal mcp --server URL`: a running `agentheal serve`'s MCP tools, offered over stdio.

chromadb's PersistentClient allows one writer process per folder, so `agentheal mcp` beside
`agentheal serve` on the same home must not open the stores. With a server configured it opens
nothing local: each request of the stdio client (list or call tools, list or read resources) is
relayed to the server's `/mcp` (streamable HTTP) with the bearer token, and the server's answer
comes back as it is. The tools, their descriptions and their answers are therefore the server's,
and the token's role decides what a tool may do (a viewer's token cannot heal or approve, whoever
runs the command), with the token's name in the audit trail.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server
from mcp.types import (
    BlobResourceContents,
    CallToolResult,
    Resource,
    ResourceTemplate,
    TextResourceContents,
    Tool,
)

from agentheal.protocols.mcp_server import MAX_WAIT_S

if TYPE_CHECKING:
    from pydantic import AnyUrl

__all__ = ["mcp_url", "relay_server", "run_relay"]

_CONNECT_S = 10.0


def mcp_url(server: str) -> str:
    """The MCP endpoint of the agentheal server at `server` (its base URL, or already its /mcp)."""
    from agentheal.protocols.serve import MCP_PATH

    base = server.rstrip("/")
    return base if base.endswith(MCP_PATH) else base + MCP_PATH


def relay_server(remote: ClientSession, version: str, instructions: str | None) -> Server[Any, Any]:
    """A server whose every tool and resource request is answered by `remote`'s."""
    server: Server[Any, Any] = Server("agentheal", version=version, instructions=instructions)

    @server.list_tools()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_tools() -> list[Tool]:
        return list((await remote.list_tools()).tools)

    # The server checks the arguments against its own schemas; checking them here as well would
    # only answer the same errors in other words.
    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> CallToolResult:
        return await remote.call_tool(name, arguments)

    @server.list_resources()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_resources() -> list[Resource]:
        return list((await remote.list_resources()).resources)

    @server.list_resource_templates()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_resource_templates() -> list[ResourceTemplate]:
        return list((await remote.list_resource_templates()).resourceTemplates)

    @server.read_resource()  # type: ignore[untyped-decorator,no-untyped-call]
    async def read_resource(uri: AnyUrl) -> Iterable[ReadResourceContents]:
        found = await remote.read_resource(uri)
        contents = []
        for item in found.contents:
            if isinstance(item, TextResourceContents):
                contents.append(ReadResourceContents(item.text, item.mimeType))
            elif isinstance(item, BlobResourceContents):
                contents.append(ReadResourceContents(base64.b64decode(item.blob), item.mimeType))
        return contents

    return server


async def _relay(url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # A heal or an approval answers when the run ends, up to the tools' longest wait.
    timeout = httpx.Timeout(MAX_WAIT_S + 30, connect=_CONNECT_S)
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write, _session_id),
        ClientSession(read, write) as remote,
    ):
        with anyio.fail_after(_CONNECT_S + 5):
            hello = await remote.initialize()
        server = relay_server(remote, hello.serverInfo.version, hello.instructions)
        async with stdio_server() as (stdin, stdout):
            await server.run(stdin, stdout, server.create_initialization_options())


def run_relay(server: str, token: str | None) -> None:
    """Serve over this process's stdio what the agentheal server at `server` serves at /mcp."""
    anyio.run(_relay, mcp_url(server), token)
