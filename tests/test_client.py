"""agentheal.client and the CLI's `--server`, against the real app under uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.cli import main
from agentheal.client import Client, ServerError, ServerUnreachable
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from conftest import free_port
from test_api_core import _backend, _kill_web, _web_url, served

pytestmark = pytest.mark.slow


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_file: Path) -> Iterator[tuple[Path, LocalBackend]]:
    backend = _backend(settings, tiny_estate_file)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_file, backend
    backend.down()


def test_the_client_heals_follows_and_lists_a_run(
    settings: Settings, estate_up: tuple[Path, LocalBackend]
) -> None:
    estate_file, backend = estate_up
    token = TokenStore(settings.home_dir).add("ops", "operator")
    with served(create_app(settings, estate_path=estate_file)) as base, Client(base, token=token) as api:
        _kill_web(backend, _web_url(estate_file))
        submitted = api.heal({"text": "web is down: connection refused", "component": "web"}, wait=False)
        assert submitted["status"] == "running"
        events = list(api.events(submitted["run_id"]))
        nodes = [e["node"] for e in events if e["event"] == "node"]
        assert nodes and nodes[0] == "triage" and "validate" in nodes, events
        assert events[-1] == {"event": "end", "id": None, "run_id": submitted["run_id"], "status": "healed"}

        shown = api.run(submitted["run_id"][:10])
        assert shown["status"] == "healed" and [a["action"] for a in shown["actions"]] == ["restart"]
        page = api.runs(status="healed", component="web")
        assert [r["run_id"] for r in page["runs"]] == [submitted["run_id"]]

        with pytest.raises(ServerError) as unknown:
            api.heal({"text": "x", "component": "ghost"})
        assert unknown.value.status == 422 and "component" in unknown.value.message
        assert "ghost" in unknown.value.message
        with pytest.raises(ServerError) as missing:
            api.run("0000000000")
        assert missing.value.status == 404
    with Client(base, token=token) as gone, pytest.raises(ServerUnreachable, match="cannot reach"):
        gone.run(submitted["run_id"])


def test_a_wrong_token_and_a_low_role_are_named(settings: Settings, tiny_estate_file: Path) -> None:
    viewer = TokenStore(settings.home_dir).add("vic", "viewer")
    with served(create_app(settings, estate_path=tiny_estate_file)) as base:
        with Client(base, token="not-a-token") as api, pytest.raises(ServerError) as wrong:
            api.runs()
        assert wrong.value.status == 401
        with Client(base, token=viewer) as api, pytest.raises(ServerError) as low:
            api.heal({"text": "web down", "component": "web"})
        assert low.value.status == 403


def test_the_cli_heals_and_approves_through_a_server(
    settings: Settings,
    estate_up: tuple[Path, LocalBackend],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    monkeypatch.setenv("AGENTHEAL_TOKEN", TokenStore(settings.home_dir).add("ops", "operator"))
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, _web_url(estate_file))
        code = main(["heal", "--gap", "web is down", "--component", "web", "--server", base, "--json"])
        waiting = json.loads(capsys.readouterr().out)
        assert code == 1 and waiting["status"] == "awaiting_approval" and waiting["actions"] == []

        assert main(["runs", "--server", base, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [r["run_id"] for r in listed] == [waiting["run_id"]]

        code = main(["approve", waiting["run_id"][:12], "--server", base, "--by", "alice", "--json"])
        done = json.loads(capsys.readouterr().out)
        assert code == 0 and done["status"] == "healed", done
        assert main(["runs", "show", waiting["run_id"], "--server", base, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["row"]["status"] == "healed"  # as runs show --json

        # memory through the server answers as the local command does
        assert main(["memory", "search", "web is down", "--server", base, "--json", "--k", "1"]) == 0
        (hit,) = json.loads(capsys.readouterr().out)
        assert hit["outcome"] == "healed" and "restart" in hit["resolution"]

        # the server's own estate is used: a local --estate with --server is a usage error
        assert main(["heal", "--gap", "x", "--server", base, "--estate", str(estate_file)]) == 2
        assert "--estate" in capsys.readouterr().err
    assert main(["runs", "--server", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach the agentheal server" in capsys.readouterr().err
