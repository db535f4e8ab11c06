"""agentheal's MCP server, driven by the official SDK's own client: over stdio from a second process
(`agentheal mcp`), and over streamable HTTP at /mcp on the API server behind its tokens and roles."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.events import EventStore
from test_api_core import _answers, _kill_web, _web_url, served

pytestmark = pytest.mark.slow

TOOLS = {"heal_gap", "run_status", "list_runs", "search_memory", "estate_status", "approve_run",
         "reject_run", "explain_run"}  # fmt: skip


def _structured(result: Any) -> dict[str, Any]:
    assert not result.isError, result.content
    data = result.structuredContent
    if data is None:  # a tool without an output schema: its JSON is the text
        data = json.loads(result.content[0].text)
    return dict(data)


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_stdio_server_heals_a_killed_process_and_serves_its_story(
    settings: Settings, estate_up: tuple[Path, LocalBackend]
) -> None:
    estate_file, backend = estate_up
    url = _web_url(estate_file)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentheal", "mcp", "--estate", str(estate_file)],
        env=dict(os.environ),
    )

    async def drive() -> tuple[str, str, str, dict[str, Any]]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) >= TOOLS
            assert next(iter(tools["search_memory"].inputSchema["properties"])) == "query"
            for name in TOOLS:  # written for a model: what it does, when to use it, what not for
                described = (tools[name].description or "").lower()
                assert (
                    len(described) > 150
                    and "use it" in described
                    and re.search(r"\b(not|never)\b", described)
                )
            assert "local user" in (tools["approve_run"].description or "")

            status = _structured(await session.call_tool("estate_status", {}))
            assert status["name"] == "tiny" and status["healthy"] is True

            _kill_web(backend, url)
            healed = _structured(
                await session.call_tool(
                    "heal_gap", {"text": "web is down: connection refused", "component": "web"}
                )
            )
            run_id = healed["run_id"]
            assert healed["status"] == "healed", healed
            assert healed["result"]["actions"] == ["restart web: ok"]

            listed = _structured(await session.call_tool("list_runs", {"status": "healed"}))
            assert [r["run_id"] for r in listed["runs"]] == [run_id]
            shown = _structured(await session.call_tool("run_status", {"run_id": run_id[:10]}))
            assert shown["status"] == "healed" and shown["run_id"] == run_id

            story = await session.read_resource(f"agentheal://runs/{run_id}/story")
            explained = _text(await session.call_tool("explain_run", {"run_id": run_id}))
            resources = {str(r.uri) for r in (await session.list_resources()).resources}
            assert f"agentheal://runs/{run_id}/story" in resources and "agentheal://estate" in resources
            persona = next(u for u in resources if u.startswith("agentheal://personas/"))
            persona_text = (await session.read_resource(persona)).contents[0].text  # type: ignore[union-attr]
            assert persona_text.startswith("---")
            estate_text = (await session.read_resource("agentheal://estate")).contents[0].text  # type: ignore[union-attr]
            assert estate_text == estate_file.read_text()

            missing = await session.call_tool("run_status", {"run_id": "feedbeef"})
            assert missing.isError and "no run" in _text(missing)
            unknown = await session.call_tool("heal_gap", {"text": "x", "component": "ghost"})
            assert unknown.isError and "ghost" in _text(unknown)
            return run_id, story.contents[0].text, explained, shown  # type: ignore[union-attr]

    run_id, story, explained, _shown = anyio.run(drive)
    assert _answers(url)
    assert story.startswith(f"run {run_id}  healed") and "restart web: ok" in story
    assert explained == story
    (row,) = [r for r in EventStore(settings.events_url).audit_rows() if r.action == "gap"]
    assert (row.door, row.target) == ("mcp", "web")


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_file: Path) -> Any:
    from test_api_core import _backend

    backend = _backend(settings, tiny_estate_file)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_file, backend
    backend.down()


async def _http_session(base: str, token: str | None, work: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(90)) as client,
        streamable_http_client(f"{base}/mcp", http_client=client) as (read, write, _session_id),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await work(session)


def test_http_mcp_needs_a_token_and_an_operator_to_approve(
    settings: Settings, estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    store = TokenStore(settings.home_dir)
    ops, vic = store.add("ops", "operator"), store.add("vic", "viewer")
    url = _web_url(estate_file)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        assert httpx.post(f"{base}/mcp", json=init).status_code == 401
        _kill_web(backend, url)

        async def as_viewer_heal(session: ClientSession) -> Any:
            return await session.call_tool("heal_gap", {"text": "web down", "component": "web"})

        refused_heal = anyio.run(_http_session, base, vic, as_viewer_heal)
        assert refused_heal.isError and "vic has role viewer; heal_gap needs operator" in _text(refused_heal)

        async def heal(session: ClientSession) -> dict[str, Any]:
            return _structured(await session.call_tool("heal_gap", {"text": "web down", "component": "web"}))

        waiting = anyio.run(_http_session, base, ops, heal)
        run_id = waiting["run_id"]
        assert waiting["status"] == "awaiting_approval" and waiting["result"]["plan"] == ["restart web"]

        async def as_viewer(session: ClientSession) -> tuple[Any, dict[str, Any]]:
            refused = await session.call_tool("approve_run", {"run_id": run_id})
            return refused, _structured(await session.call_tool("run_status", {"run_id": run_id}))

        refused, status = anyio.run(_http_session, base, vic, as_viewer)
        assert refused.isError and "vic has role viewer; approve_run needs operator" in _text(refused)
        assert status["status"] == "awaiting_approval" and not _answers(url)

        async def approve(session: ClientSession) -> dict[str, Any]:
            return _structured(await session.call_tool("approve_run", {"run_id": run_id, "note": "off-peak"}))

        done = anyio.run(_http_session, base, ops, approve)
        assert done["status"] == "healed" and _answers(url)
    trail = EventStore(settings.events_url).audit_rows()
    forbidden = [(r.actor, r.door, r.target) for r in trail if r.action == "forbidden"]
    assert ("vic", "mcp", "tool approve_run") in forbidden and ("vic", "mcp", "tool heal_gap") in forbidden
    approved = next(r for r in trail if r.action == "approve")
    assert (approved.actor, approved.door, approved.data) == ("ops", "mcp", {"by": "ops", "note": "off-peak"})
