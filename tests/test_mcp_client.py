"""Other MCP servers as read-only observations for the diagnosis: a tiny real MCP server (the SDK's)
offers one allowed and one disallowed tool; the diagnosis loop calls the allowed one and never the
other, its output redacted, and the story records both."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.models import DiagnosisReply, Step
from fake_llm import content_reply, sent_bodies, tool_call, tool_reply
from test_heal_llm import _heal, _plan_reply, _route, estate, fake_endpoint

pytestmark = pytest.mark.slow
__all__ = ["estate"]  # the fixture, shared with the LLM heal tests

SERVER = """\
import sys
from pathlib import Path
from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

calls = Path(sys.argv[1])
server = FastMCP("metrics")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def query_metrics(metric: str) -> str:
    \"\"\"The last five minutes of a metric on the web tier.\"\"\"
    with calls.open("a") as fh:
        fh.write(f"query_metrics {metric}\\n")
    return f"{metric}: p99 4.2 s, 37 requests stuck in worker 3 (db password=hunter2)"


@server.tool()
def drop_caches() -> str:
    \"\"\"Drops every cache of the web tier.\"\"\"
    with calls.open("a") as fh:
        fh.write("drop_caches\\n")
    return "dropped"


server.run("stdio")
"""


def _servers_file(tmp_path: Path, calls: Path, command: list[str]) -> Path:
    config = tmp_path / "mcp.yaml"
    config.write_text(
        json.dumps(
            {"servers": {"metrics": {"command": command, "allow": ["query_metrics"], "timeout_s": 10}}}
        )
    )
    return config


def test_diagnosis_calls_the_allowed_mcp_tool_and_never_the_other(
    capsys: pytest.CaptureFixture[str], estate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, calls = tmp_path / "metrics_server.py", tmp_path / "calls.log"
    script.write_text(SERVER)
    monkeypatch.setenv(
        "AGENTHEAL_MCP_SERVERS_FILE",
        str(_servers_file(tmp_path, calls, [sys.executable, str(script), str(calls)])),
    )
    diagnosis = [
        tool_reply(
            tool_call("mcp__metrics__query_metrics", {"metric": "latency"}),
            tool_call("mcp__metrics__drop_caches", {}),  # not offered: the loop refuses it
        ),
        content_reply(
            DiagnosisReply(hypothesis="worker 3 of web hangs", root_component="web", facts=["stuck"])
        ),
    ]
    with fake_endpoint() as router:
        route = _route(router, [*diagnosis, _plan_reply(Step(action="restart", component="web"))])
        code, result = _heal(capsys, estate)
    assert code == 0 and result["status"] == "healed", result["reason"]

    assert calls.read_text().splitlines() == ["query_metrics latency"]  # drop_caches never ran
    bodies = sent_bodies(route)
    offered = {t["function"]["name"] for t in bodies[0]["tools"]}
    assert "mcp__metrics__query_metrics" in offered and "mcp__metrics__drop_caches" not in offered
    assert "probe" in offered  # the estate's own observations stay
    answers = [m["content"] for m in bodies[1]["messages"] if m["role"] == "tool"]
    assert answers[0].startswith("latency: p99 4.2 s") and "hunter2" not in answers[0]
    assert "unknown tool 'mcp__metrics__drop_caches'" in answers[1]

    assert main(["runs", "show", result["run_id"], "--json"]) == 0
    story = json.loads(capsys.readouterr().out)
    mcp = [e for e in story["timeline"] if e["node"] == "mcp"]
    assert "offered query_metrics; not allowed, never called: drop_caches" in mcp[0]["detail"]
    assert mcp[1]["detail"].startswith('metrics.query_metrics({"metric": "latency"}): ok')
    assert "hunter2" not in json.dumps(story)


def test_a_server_that_does_not_start_is_recorded_and_the_diagnosis_goes_on(
    capsys: pytest.CaptureFixture[str], estate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = [sys.executable, "-c", "import sys; sys.exit(3)"]
    monkeypatch.setenv("AGENTHEAL_MCP_SERVERS_FILE", str(_servers_file(tmp_path, tmp_path / "c.log", broken)))
    diagnosis = [
        tool_reply(tool_call("process_stats", {"component": "web"})),
        content_reply(DiagnosisReply(hypothesis="web hangs", root_component="web", facts=["stuck"])),
    ]
    with fake_endpoint() as router:
        route = _route(router, [*diagnosis, _plan_reply(Step(action="restart", component="web"))])
        code, result = _heal(capsys, estate)
    assert code == 0 and result["status"] == "healed", result["reason"]
    assert not any(t["function"]["name"].startswith("mcp__") for t in sent_bodies(route)[0]["tools"])
    assert main(["runs", "show", result["run_id"], "--json"]) == 0
    timeline = json.loads(capsys.readouterr().out)["timeline"]
    assert any(e["node"] == "mcp" and e["detail"].startswith("metrics: not used") for e in timeline)


def test_a_server_over_streamable_http_offers_only_its_allowed_tools(
    settings: Settings, tmp_path: Path
) -> None:
    """The URL transport, against a real MCP server on loopback (agentheal's own /mcp, with a token)."""
    from agentheal.api.app import create_app
    from agentheal.api.tokens import TokenStore
    from agentheal.protocols.mcp_client import ObservationToolsets
    from test_api_core import served

    token = TokenStore(settings.home_dir).add("diagnosis", "viewer")
    said: list[tuple[str, dict[str, Any]]] = []
    with served(create_app(settings)) as base:
        spec = {"url": f"{base}/mcp", "headers": {"Authorization": f"Bearer {token}"},
                "allow": ["list_runs", "approve_run"], "timeout_s": 20}  # fmt: skip
        config = tmp_path / "mcp.yaml"
        config.write_text(json.dumps({"servers": {"ah": spec}}))
        configured = settings.model_copy(update={"mcp_servers_file": config})
        with ObservationToolsets(configured, lambda text, data: said.append((text, data))) as tools:
            offered = {s["function"]["name"] for s in tools.schemas}
            answer = tools.call("mcp__ah__list_runs", {"limit": 3})
    # approve_run is allowed by the file but marked destructive by the server: never offered
    assert offered == {"mcp__ah__list_runs"}
    assert json.loads(answer) == {"runs": [], "next_cursor": None}
    opened = said[0][1]
    assert opened["offered"] == ["list_runs"] and "approve_run (marked destructive)" in opened["not_allowed"]
    assert said[1][0].startswith('ah.list_runs({"limit": 3}): ok')
