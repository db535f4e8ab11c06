"""Other MCP servers' tools as read-only observations for the diagnosis tool loop.

`settings.mcp_servers_file` names the servers (a command run over stdio, or a streamable-HTTP URL)
and, per server, the tools the diagnosis may call: nothing is allowed unless listed, and a tool the
server itself marks destructive is never offered. An MCP tool is never an action: actions stay the
typed catalogue, checked by policy; these only add evidence. Each call has a time-out, its output
is redacted and cut to the tool budget like every observation, and every call (and every tool left
out) is recorded in the run's story.

    servers:
      metrics:
        command: [python3, metrics_server.py]   # or  url: https://host/mcp  (with headers)
        allow: [query_range, top_talkers]
        timeout_s: 10
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentheal.redaction import cut, redact

if TYPE_CHECKING:
    from agentheal.config import Settings

__all__ = ["McpConfigError", "McpServerSpec", "ObservationToolsets", "load_servers"]

Say = Callable[[str, dict[str, Any]], None]  # a line for the run's story, and its data
_NAME = re.compile(r"^[A-Za-z0-9-]{1,24}$")


class McpConfigError(ValueError):
    """The MCP servers file cannot be used; the message names the file and the field."""


class McpServerSpec(BaseModel):
    """One external MCP server and what of it the diagnosis may use."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(default=None, min_length=1, description="Run over stdio.")
    url: str | None = Field(default=None, pattern=r"^https?://", description="A streamable-HTTP endpoint.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with each HTTP request.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the command.")
    allow: list[str] = Field(
        default_factory=list, description="Tools the diagnosis may call; none by default."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per call.")
    start_timeout_s: float = Field(default=20.0, gt=0, le=300, description="To start and list the tools.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (streamable HTTP)")
        return self


class McpServersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    servers: dict[str, McpServerSpec] = Field(default_factory=dict)


def load_servers(path: Path) -> dict[str, McpServerSpec]:
    """The servers of an MCP servers file.

    Raises:
        McpConfigError: unreadable, not YAML, or a field is wrong (named with the file).
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = McpServersFile.model_validate(data)
    except OSError as exc:
        raise McpConfigError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise McpConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise McpConfigError(f"{path}: {problems}") from None
    for name in parsed.servers:
        if not _NAME.match(name):
            raise McpConfigError(f"{path}: servers.{name}: a name of 1-24 letters, digits or dashes")
    return parsed.servers


@contextlib.asynccontextmanager
async def _session(spec: McpServerSpec, errlog: Any) -> AsyncIterator[Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    if spec.command is not None:
        params = StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=spec.env or None)
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as s:
            yield s
        return
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    assert spec.url is not None
    async with (
        httpx.AsyncClient(headers=spec.headers, timeout=httpx.Timeout(spec.timeout_s + 5)) as http,
        streamable_http_client(spec.url, http_client=http) as (read, write, _session_id),
        ClientSession(read, write) as s,
    ):
        yield s


class ObservationToolsets:
    """The allowed tools of the configured servers, open for one diagnosis (a context manager).

    `schemas` are OpenAI function tools named `mcp__SERVER__TOOL`; `call` runs one and answers text.
    A server that does not start is recorded and left out; the diagnosis goes on without it.
    """

    def __init__(self, settings: Settings, say: Say) -> None:
        self.settings = settings
        self.say = say
        self.schemas: list[dict[str, Any]] = []
        self._tools: dict[
            str, tuple[str, str, Any, McpServerSpec]
        ] = {}  # name -> server, tool, session, spec
        self._stack = contextlib.ExitStack()
        self._portal: Any = None

    def __enter__(self) -> ObservationToolsets:
        path = self.settings.mcp_servers_file
        if path is None:
            return self
        try:
            servers = load_servers(path)
        except McpConfigError as exc:  # the diagnosis goes on with the estate's own observations
            self.say(f"MCP servers not used: {exc}", {"ok": False})
            return self
        if not servers:
            return self
        from anyio.from_thread import start_blocking_portal

        self._portal = self._stack.enter_context(start_blocking_portal())
        logs = self.settings.home_dir / "logs"
        logs.mkdir(exist_ok=True)
        for server, spec in servers.items():
            try:
                self._open(server, spec, logs / f"mcp-{server}.log")
            except Exception as exc:  # one broken server must not stop the diagnosis
                self.say(f"{server}: not used: {type(exc).__name__}: {redact(str(exc))[:300]}",
                         {"server": server, "ok": False})  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, server: str, spec: McpServerSpec, log: Path) -> None:
        import anyio

        errlog = self._stack.enter_context(log.open("a", encoding="utf-8"))
        session = self._stack.enter_context(self._portal.wrap_async_context_manager(_session(spec, errlog)))

        async def start() -> Any:
            with anyio.fail_after(spec.start_timeout_s):
                await session.initialize()
                return (await session.list_tools()).tools

        tools = self._portal.call(start)
        offered, left = [], []
        for tool in tools:
            destructive = tool.annotations is not None and tool.annotations.destructiveHint is True
            if tool.name not in spec.allow or destructive:
                left.append(
                    tool.name + (" (marked destructive)" if destructive and tool.name in spec.allow else "")
                )
                continue
            name = f"mcp__{server}__{tool.name}"[:64]
            description = f"[read-only observation from MCP server {server}] {tool.description or tool.name}"
            params = dict(tool.inputSchema or {}) or {"type": "object", "properties": {}}
            self.schemas.append(
                {
                    "type": "function",
                    "function": {"name": name, "description": description[:1024], "parameters": params},
                }
            )
            self._tools[name] = (server, tool.name, session, spec)
            offered.append(tool.name)
        missing = sorted(set(spec.allow) - {t.name for t in tools})
        detail = (
            f"{server}: offered {', '.join(offered) or 'none'}; "
            f"not allowed, never called: {', '.join(left) or 'none'}"
        )
        if missing:
            detail += f"; allowed but the server has none of: {', '.join(missing)}"
        self.say(detail, {"server": server, "offered": offered, "not_allowed": left, "missing": missing})

    def owns(self, name: str) -> bool:
        """Whether `name` is one of these tools."""
        return name in self._tools

    def call(self, name: str, args: dict[str, Any]) -> str:
        """Run one allowed tool with a time-out; its text, redacted and cut to the tool budget.

        Raises:
            KeyError: not one of these tools (the tool loop never offers one that is not).
        """
        import anyio

        server, tool, session, spec = self._tools[name]

        async def run() -> Any:
            with anyio.fail_after(spec.timeout_s):
                return await session.call_tool(tool, args)

        started, ok = time.monotonic(), False
        try:
            result = self._portal.call(run)
            text, ok = _text_of(result), not result.isError
            if not ok:
                text = f"error: {server}.{tool} answered an error: {text}"
        except TimeoutError:
            text = f"error: {server}.{tool} did not answer within {spec.timeout_s:g} s"
        except Exception as exc:  # the model hears of a failed observation; the run goes on
            text = f"error: {server}.{tool} failed: {type(exc).__name__}: {exc}"
        # Redact before cutting: a cut through a secret could leave a half no pattern matches.
        text = cut(redact(text), self.settings.llm_tool_output_chars)
        took = time.monotonic() - started
        shown_args = redact(json.dumps(args, sort_keys=True, default=str))[:300]
        self.say(
            f"{server}.{tool}({shown_args}): {'ok' if ok else 'failed'}, {len(text)} chars in {took:.2f} s",
            {"server": server, "tool": tool, "args": shown_args, "ok": ok, "duration_s": round(took, 3),
             "output": text[:500]},
        )  # fmt: skip
        return text


def _text_of(result: Any) -> str:
    parts = [getattr(c, "text", None) or f"[{getattr(c, 'type', 'content')} content]" for c in result.content]
    if not any(getattr(c, "text", None) for c in result.content) and result.structuredContent is not None:
        parts = [json.dumps(result.structuredContent, default=str)]
    return "\n".join(parts)
