"""agentheal as an MCP server: its tools and resources for an LLM agent (official `mcp` SDK).

The same server answers over stdio (`agentheal mcp`, for a desktop or coding agent on this host)
and over streamable HTTP at `/mcp` on `agentheal serve` (see `mcp_http`). Every tool calls the
application services, never another door. Who calls decides what a tool may do: over stdio the
local user is an operator; over HTTP the API token's role counts, as on the API's own routes
(viewer reads; operator heals, approves and rejects).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ResourceError, ToolError
from mcp.types import Resource as MCPResource

from agentheal import __version__
from agentheal.api.tokens import Caller, Role
from agentheal.services import audit

if TYPE_CHECKING:
    from mcp.server.session import ServerSession

    from agentheal.config import Settings
    from agentheal.graphs.context import HealContext
    from agentheal.services.heal import HealPool

    ToolContext = Context[ServerSession, Any, Any]
else:  # FastMCP finds a tool's context parameter by its annotation being the class itself
    ToolContext = Context

__all__ = ["INSTRUCTIONS", "McpDoor", "ToolContext", "build_server", "local_operator", "run_stdio"]

MAX_WAIT_S = 300.0
INSTRUCTIONS = """agentheal keeps a software estate healthy: it heals gaps (something broken now) with
typed, policy-checked actions, proves each fix, and remembers what worked. Use search_memory and
explain_run to learn from past heals; estate_status to see what is broken; heal_gap to have
agentheal fix something (it chooses and checks the actions itself: you describe the problem, you
never pass commands); run_status / list_runs to follow runs; approve_run / reject_run only when a
person with the authority to decide has told you to."""

CallerOf = Callable[[ToolContext | None], Caller]


@dataclass
class McpDoor:
    """What the MCP tools act through: the heal context, a heal pool, and who the caller is."""

    settings: Settings
    ctx: HealContext
    pool: HealPool
    estate_path: Path | None
    caller_of: CallerOf
    transport: str = "stdio"
    _warm: threading.Lock = field(default_factory=threading.Lock)
    _warmed: bool = False

    def warm(self) -> None:
        """Open the heal context's parts once (chromadb, the embedding, the estate) before a tool uses
        them: they are not safe to open from two threads at once."""
        with self._warm:
            if not self._warmed:
                self.pool.warm()
                self._warmed = True

    def caller(self, context: ToolContext | None, tool: str, needs: Role) -> Caller:
        """The caller, refused (and audited) unless its role allows `needs`."""
        caller = self.caller_of(context)
        if not caller.role.allows(needs):
            reason = f"{caller.name} has role {caller.role.value}; {tool} needs {needs.value} or above"
            audit.record(self.ctx.events, caller.name, "forbidden", door="mcp", role=caller.role.value,
                         target=f"tool {tool}", outcome="refused", detail=reason)  # fmt: skip
            raise ToolError(f"refused: {reason}")
        return caller


def local_operator(_context: ToolContext | None = None) -> Caller:
    """Over stdio the server runs as the local user, who could run `agentheal approve` anyway."""
    return Caller(name=audit.local_actor(), role=Role.operator)


async def _run(door: McpDoor, fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking service call in a worker thread, once the heal context is open."""
    await anyio.to_thread.run_sync(door.warm)
    return await anyio.to_thread.run_sync(fn, *args)


async def _wait(future: Future[dict[str, Any]], wait_s: float) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), min(wait_s, MAX_WAIT_S))
    except TimeoutError:
        return None
    except Exception as exc:  # the heal or answer failed to run: the tool says why
        raise ToolError(str(exc)) from None


def build_server(door: McpDoor, **transport: Any) -> FastMCP[Any]:
    """The MCP server of one process, its tools and resources bound to `door`.

    `transport` holds FastMCP's settings of the HTTP transport (JSON answers, statelessness, Host
    checks): in the 1.x SDK they are given when the server is made.
    """
    server = _Server("agentheal", instructions=INSTRUCTIONS, log_level="WARNING", **transport)
    # FastMCP takes no version of its own and would report the SDK's as the server's
    server._mcp_server.version = __version__
    server.door = door
    from agentheal.protocols import mcp_tools

    mcp_tools.register(server, door)
    _resources(server, door)
    return server


class _Server(FastMCP[Any]):
    """Lists each run's story and each persona file as a resource, beside the templates."""

    door: McpDoor

    async def list_resources(self) -> list[MCPResource]:
        listed = await super().list_resources()
        door = self.door

        def concrete() -> list[MCPResource]:
            from agentheal.services.documents import persona_files
            from agentheal.services.runs import list_runs

            found = [
                MCPResource(
                    uri=f"agentheal://personas/{name}",
                    name=f"persona {name}",
                    description=f"The persona file of {name} ({path.name}).",
                    mimeType="text/markdown",
                )
                for name, path in persona_files(door.settings).items()
            ]
            for row in list_runs(door.ctx.events, limit=50).runs:
                found.append(
                    MCPResource(
                        uri=f"agentheal://runs/{row.run_id}/story",
                        name=f"run {row.run_id[:12]} story",
                        description=f"{row.status.value}: {row.gap_text[:120]}",
                        mimeType="text/plain",
                    )
                )
            return found

        return listed + list(await anyio.to_thread.run_sync(concrete))


def _resources(server: FastMCP[Any], door: McpDoor) -> None:
    from agentheal.events import RunLookupError
    from agentheal.services import documents

    @server.resource(
        "agentheal://runs/{run_id}/story",
        name="run story",
        description="A heal run's whole story as text: the gap, timeline, evidence, diagnosis, plan, "
        "actions, validation and LLM use. The run id may be a unique prefix (4+ characters).",
        mime_type="text/plain",
    )
    async def story(run_id: str) -> str:
        try:
            return str(await anyio.to_thread.run_sync(documents.story_text, door.ctx.events, run_id))
        except (documents.DocumentNotFound, RunLookupError) as exc:
            raise ResourceError(str(exc)) from None

    @server.resource(
        "agentheal://personas/{name}",
        name="persona file",
        description="A specialist persona's file: YAML front matter (what gaps it takes, the actions it "
        "may use, its playbooks) and its Markdown body.",
        mime_type="text/markdown",
    )
    async def persona(name: str) -> str:
        try:
            return str(await anyio.to_thread.run_sync(documents.persona_text, door.settings, name))
        except documents.DocumentNotFound as exc:
            raise ResourceError(str(exc)) from None

    if door.estate_path is not None:

        @server.resource(
            "agentheal://estate",
            name="estate file",
            description="The estate file this server heals: its components, probes, logs, configs "
            "and dependencies.",
            mime_type="application/yaml",
        )
        def estate() -> str:
            try:
                return documents.estate_text(door.estate_path)
            except documents.DocumentNotFound as exc:
                raise ResourceError(str(exc)) from None


def run_stdio(settings: Settings, estate_path: Path | None, policy_path: Path | None = None) -> None:
    """Serve MCP over this process's standard input and output until the client goes away."""
    from agentheal.graphs.context import HealContext
    from agentheal.protocols.a2a_wait import RemotePoller
    from agentheal.services.heal import HealPool

    ctx = HealContext(settings=settings, estate_path=estate_path, policy_path=policy_path)
    pool = HealPool(ctx)
    door = McpDoor(settings, ctx, pool, estate_path, local_operator, transport="stdio")
    server = build_server(door)
    # opened while the client initializes and lists tools, so the first search does not pay for it
    threading.Thread(target=door.warm, name="warm", daemon=True).start()
    # a run whose plan is asked of a remote agent waits with no worker; this resumes it when it answers
    poller = RemotePoller(pool).start()
    try:
        server.run("stdio")
    finally:
        poller.stop()
        pool.close()
        ctx.events.close()
