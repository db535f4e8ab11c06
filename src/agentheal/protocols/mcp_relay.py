"""`agentheal mcp --server URL`: a running `agentheal serve`'s MCP tools, offered over stdio.

chromadb's PersistentClient allows one writer process per folder, so `agentheal mcp` beside
`agentheal serve` on the same home must not open the stores. With a server configured it opens
nothing local: each request of the stdio client (list or call tools, list or read resources) is
relayed to the server's `/mcp` with the bearer token, and the server's answer comes back as it is.
The tools, their descriptions and their answers are therefore the server's, and the token's role
decides what a tool may do (a viewer's token cannot heal or approve, whoever runs the command),
with the token's name in the audit trail.

`/mcp` is stateless with JSON answers, so each relayed request is one POST of its own. The relay
keeps no MCP session with the server: a server that is down answers that request with an error
naming it, and once it is back the next request works (a session of the SDK's client would have
died with the first failed connection and taken this process with it).
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import McpError

from agentheal.protocols.mcp_server import MAX_WAIT_S

if TYPE_CHECKING:
    from pydantic import AnyUrl

__all__ = ["RemoteMcp", "mcp_url", "relay_server", "run_relay"]

_CONNECT_S = 10.0


def mcp_url(server: str) -> str:
    """The MCP endpoint of the agentheal server at `server` (its base URL, or already its /mcp)."""
    from agentheal.protocols.serve import MCP_PATH

    base = server.rstrip("/")
    return base if base.endswith(MCP_PATH) else base + MCP_PATH


class RemoteMcp:
    """The MCP endpoint of an agentheal server, one JSON-RPC request per POST.

    Every failure is an `McpError` whose message names the server and the reason.
    """

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": types.LATEST_PROTOCOL_VERSION,
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # A heal or an approval answers when the run ends, up to the tools' longest wait.
        timeout = httpx.Timeout(MAX_WAIT_S + 30, connect=_CONNECT_S)
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The result of one request.

        Raises:
            McpError: the server cannot be reached, refused the request or answered an error.
        """
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            body["params"] = params
        try:
            response = await self._http.post(self.url, json=body)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise _error(f"cannot reach the agentheal server at {self.url}: {reason}") from None
        if response.status_code >= 400:
            status = response.status_code
            raise _error(f"the agentheal server at {self.url} answered {status}: {_said(response)}")
        try:
            answer = response.json()
        except ValueError:
            raise _error(f"the agentheal server at {self.url} answered {method} with no JSON") from None
        if not isinstance(answer, dict):
            raise _error(f"the agentheal server at {self.url} answered {method} with {type(answer).__name__}")
        if isinstance(answer.get("error"), dict):
            raise McpError(types.ErrorData.model_validate(answer["error"]))
        result = answer.get("result")
        if not isinstance(result, dict):
            raise _error(f"the agentheal server at {self.url} answered {method} with no result")
        return result


def _error(message: str) -> McpError:
    return McpError(types.ErrorData(code=types.INTERNAL_ERROR, message=message))


def _said(response: httpx.Response) -> str:
    try:
        detail = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(detail, dict):
        detail = detail.get("detail") or detail.get("error") or detail
    return str(detail)[:300]


def relay_server(remote: RemoteMcp, hello: types.InitializeResult) -> Server[Any, Any]:
    """A server whose every tool and resource request is answered by `remote`."""
    server: Server[Any, Any] = Server(
        hello.serverInfo.name, version=hello.serverInfo.version, instructions=hello.instructions
    )

    @server.list_tools()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_tools() -> list[types.Tool]:
        return types.ListToolsResult.model_validate(await remote.request("tools/list")).tools

    # The server checks the arguments against its own schemas; checking them here as well would
    # only answer the same errors in other words.
    @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        found = await remote.request("tools/call", {"name": name, "arguments": arguments})
        return types.CallToolResult.model_validate(found)

    @server.list_resources()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_resources() -> list[types.Resource]:
        return types.ListResourcesResult.model_validate(await remote.request("resources/list")).resources

    @server.list_resource_templates()  # type: ignore[untyped-decorator,no-untyped-call]
    async def list_resource_templates() -> list[types.ResourceTemplate]:
        found = await remote.request("resources/templates/list")
        return types.ListResourceTemplatesResult.model_validate(found).resourceTemplates

    @server.read_resource()  # type: ignore[untyped-decorator,no-untyped-call]
    async def read_resource(uri: AnyUrl) -> Iterable[ReadResourceContents]:
        read = await remote.request("resources/read", {"uri": str(uri)})
        found = types.ReadResourceResult.model_validate(read)
        contents = []
        for item in found.contents:
            if isinstance(item, types.TextResourceContents):
                contents.append(ReadResourceContents(item.text, item.mimeType))
            elif isinstance(item, types.BlobResourceContents):
                contents.append(ReadResourceContents(base64.b64decode(item.blob), item.mimeType))
        return contents

    return server


async def _relay(url: str, token: str | None) -> None:
    remote = RemoteMcp(url, token)
    try:
        # who the server is and how it describes itself to a model, told to the agent as its own
        hello = types.InitializeResult.model_validate(
            await remote.request(
                "initialize",
                types.InitializeRequestParams(
                    protocolVersion=types.LATEST_PROTOCOL_VERSION,
                    capabilities=types.ClientCapabilities(),
                    clientInfo=types.Implementation(name="agentheal-mcp-relay", version=_version()),
                ).model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        )
        server = relay_server(remote, hello)
        async with stdio_server() as (stdin, stdout):
            await server.run(stdin, stdout, server.create_initialization_options())
    finally:
        await remote.aclose()


def _version() -> str:
    from agentheal import __version__

    return __version__


def run_relay(server: str, token: str | None) -> None:
    """Serve over this process's stdio what the agentheal server at `server` serves at /mcp.

    Raises:
        McpError: the server could not be reached or refused the token before serving began.
    """
    anyio.run(_relay, mcp_url(server), token)
