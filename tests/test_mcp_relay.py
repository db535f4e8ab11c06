"""`agentheal mcp --server URL`: the stdio server relays every request to a running server's /mcp
with the token, so nothing local is opened (no second chromadb writer beside `agentheal serve`) and
the token's role decides, not the local user's."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.cli import main
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.events import EventStore
from conftest import free_port, served
from test_api_core import _answers, _kill_web, _web_url, estate_up
from test_mcp_server import TOOLS, _structured, _text

pytestmark = pytest.mark.slow
__all__ = ["estate_up"]  # the fixture, shared with the API tests


async def _over_stdio(env: dict[str, str], args: list[str], work: Any) -> Any:
    params = StdioServerParameters(command=sys.executable, args=["-m", "agentheal", "mcp", *args], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


def test_mcp_with_a_server_relays_to_it_with_the_token_and_opens_nothing_here(
    settings: Settings, estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    estate_file, backend = estate_up
    store = TokenStore(settings.home_dir)
    ops, vic = store.add("ops", "operator"), store.add("vic", "viewer")
    url = _web_url(estate_file)
    here = tmp_path / "relay-home"  # the relay's own home: nothing may be made there
    env = {**os.environ, "AGENTHEAL_HOME": str(here)}
    with served(create_app(settings, estate_path=estate_file)) as base:
        _kill_web(backend, url)

        async def as_viewer(session: ClientSession) -> tuple[set[str], list[str], Any]:
            tools = (await session.list_tools()).tools
            schema = next(t for t in tools if t.name == "search_memory").inputSchema
            refused = await session.call_tool("heal_gap", {"text": "web is down", "component": "web"})
            return {t.name for t in tools}, list(schema["properties"]), refused

        names, params, refused = anyio.run(_over_stdio, env, ["--server", base, "--token", vic], as_viewer)
        assert names >= TOOLS and params[0] == "query"
        # over stdio the local user would be an operator; through a server the token's role counts
        assert refused.isError and "vic has role viewer; heal_gap needs operator" in _text(refused)
        assert not _answers(url)

        async def as_operator(session: ClientSession) -> tuple[dict[str, Any], str, dict[str, Any]]:
            gap = {"text": "web is down: connection refused", "component": "web"}
            healed = _structured(await session.call_tool("heal_gap", gap))
            story_uri = f"agentheal://runs/{healed['run_id']}/story"
            listed = {str(r.uri) for r in (await session.list_resources()).resources}
            assert story_uri in listed and "agentheal://estate" in listed
            story = await session.read_resource(story_uri)
            found = _structured(await session.call_tool("search_memory", {"query": "web connection refused"}))
            return healed, story.contents[0].text, found  # type: ignore[union-attr]

        healed, story, found = anyio.run(
            _over_stdio, env | {"AGENTHEAL_SERVER": base, "AGENTHEAL_TOKEN": ops}, [], as_operator
        )
        assert healed["status"] == "healed" and healed["result"]["actions"] == ["restart web: ok"], healed
        assert story.startswith(f"run {healed['run_id']}  healed") and _answers(url)
        assert found["matches"] and "web" in found["matches"][0]["gap"]
    assert not here.exists()
    trail = EventStore(settings.events_url).audit_rows()
    forbidden = [(r.actor, r.door, r.target) for r in trail if r.action == "forbidden"]
    assert ("vic", "mcp", "tool heal_gap") in forbidden
    (gap,) = [r for r in trail if r.action == "gap"]
    assert (gap.actor, gap.door, gap.target) == ("ops", "mcp", "web")


def test_mcp_with_a_server_it_cannot_use_is_a_usage_error_naming_why(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    assert main(["mcp", "--server", nobody]) == 2
    assert f"cannot reach the agentheal server at {nobody}/mcp" in capsys.readouterr().err
    TokenStore(settings.home_dir).add("ops", "operator")
    with served(create_app(settings)) as base:
        assert main(["mcp", "--server", base, "--token", "not-a-token"]) == 2
        assert f"the agentheal server at {base}/mcp answered 401" in capsys.readouterr().err
        assert main(["mcp", "--server", f"{base}/mcp/", "--token", "not-a-token"]) == 2  # its endpoint, too
        assert f"the agentheal server at {base}/mcp answered 401" in capsys.readouterr().err
        assert main(["mcp", "--server", base, "--estate", str(tmp_path / "estate.yaml")]) == 2
        assert "--estate and --policy are the server's own" in capsys.readouterr().err


@contextmanager
def _serving_on(port: int, settings: Settings) -> Iterator[str]:
    """An insecure-local server on `port` (the same port again after a restart)."""
    with served(create_app(settings, insecure_local=True), port) as base:
        yield base


def test_the_relay_outlives_a_server_restart(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AGENTHEAL_HOME": str(tmp_path / "relay-home")}
    first = _serving_on(port, settings)
    base = first.__enter__()

    async def across_a_restart(session: ClientSession) -> tuple[Any, Any, Any]:
        before = await session.call_tool("list_runs", {})
        await anyio.to_thread.run_sync(first.__exit__, None, None, None)
        down = await session.call_tool("list_runs", {})
        with _serving_on(port, settings):
            after = await session.call_tool("list_runs", {})
        return before, down, after

    before, down, after = anyio.run(_over_stdio, env, ["--server", base], across_a_restart)
    assert _structured(before) == {"runs": [], "next_cursor": None}
    assert down.isError and f"cannot reach the agentheal server at {base}/mcp" in _text(down)
    assert _structured(after) == {"runs": [], "next_cursor": None}
