"""`agentheal status` from the CLI and `GET /status`, `/metrics` and `/report` from the real server
(uvicorn on loopback), over a real event store with recorded heals."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.models import Gap, RunStatus
from conftest import stop_processes_under, tiny_estate
from test_api_ops import ApiServer

CONTRACT = ["gap_resolution_rate", "time_to_detect_median_s", "time_to_heal_median_s", "time_to_heal_p95_s",
            "resolution_quality", "recurrence_reduction", "prevention_effectiveness", "prediction_precision",
            "prediction_recall", "evolution_success_rate"]  # fmt: skip
ENGINES = ["detection", "healing", "factory", "evolution", "prevention"]


def _status(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", "--json", *args]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def _heal(
    events: EventStore, run_id: str, text: str, status: RunStatus, persona: str = "availability"
) -> None:
    gap = Gap(text=text, component="web")
    events.record_gap(gap)
    events.start_run(run_id, gap)
    events.node(run_id, "triage", "severity medium")
    events.finish_run(run_id, status, persona=persona, source="persona", reason=None, result={})


def test_an_empty_home_says_no_data_for_every_figure(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _status(capsys)
    assert set(data) == {"figures", "engines"}
    names = [f["name"] for f in data["figures"]]
    assert set(CONTRACT) <= set(names)
    for f in data["figures"]:
        assert set(f) == {"name", "value", "unit", "n", "window", "no_data"}
        assert f["no_data"] is True and f["value"] is None and f["n"] == 0, f
    assert [(e["name"], e["state"], e["last_activity"]) for e in data["engines"]] == [
        (name, "never", None) for name in ENGINES
    ]


def test_recorded_heals_are_counted_and_shown_in_the_table(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    events = EventStore(settings.events_url)
    _heal(events, "a" * 32, "web is down", RunStatus.healed)
    _heal(events, "b" * 32, "web answers 500", RunStatus.escalated)
    data = _status(capsys)
    got = {f["name"]: f for f in data["figures"]}
    assert (got["gap_resolution_rate"]["value"], got["gap_resolution_rate"]["n"]) == (0.5, 2)
    assert got["time_to_heal_median_s"]["n"] == 1 and got["time_to_heal_median_s"]["value"] >= 0
    assert (
        got["agent_resolution_rate:availability"]["value"],
        got["agent_resolution_rate:availability"]["n"],
    ) == (0.5, 2)
    assert got["evolution_success_rate"]["no_data"] is True
    engines = {e["name"]: e["state"] for e in data["engines"]}
    assert engines["healing"] == "active" and engines["evolution"] == "never"

    capsys.readouterr()
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"gap_resolution_rate\s+│\s+50\.0 %\s+│\s+2", table), table
    assert re.search(r"evolution_success_rate\s+│\s+no data\s+│\s+0", table), table
    assert main(["status", "--days", "0"]) == 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("status")
    estate = tiny_estate(root)
    srv = ApiServer(root, estate)
    yield srv
    srv.stop()
    stop_processes_under(estate.parent)


@pytest.mark.slow
def test_the_server_answers_the_same_figures_and_exports_them(
    server: ApiServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = server.events()
    _heal(events, "c" * 32, "web is down", RunStatus.healed)
    monkeypatch.setenv("AGENTHEAL_HOME", str(server.home))
    monkeypatch.setenv("AGENTHEAL_CONFIG", str(server.home.parent / "none.toml"))
    cli = _status(capsys)
    viewer = server.client("viewer")
    assert server.client(None).get("/status").status_code == 401
    answer = viewer.get("/status")
    assert answer.status_code == 200, answer.text
    api = answer.json()

    def same(d: dict[str, Any]) -> Any:  # the window ends "now": a second apart between the two reads
        return [{k: v for k, v in f.items() if k != "window"} for f in d["figures"]], [
            (e["name"], e["state"]) for e in d["engines"]
        ]

    assert same(api) == same(cli)
    rate = next(f for f in api["figures"] if f["name"] == "gap_resolution_rate")
    assert (rate["value"], rate["n"]) == (1.0, 1)
    assert viewer.get("/status", params={"days": -1}).status_code == 422

    metrics = viewer.get("/metrics").text
    assert 'agentheal_effectiveness{figure="gap_resolution_rate"} 1.0' in metrics
    assert 'agentheal_effectiveness_n{figure="gap_resolution_rate"} 1.0' in metrics
    assert 'agentheal_effectiveness{figure="evolution_success_rate"}' not in metrics  # no data: no value
    assert 'agentheal_effectiveness_n{figure="evolution_success_rate"} 0.0' in metrics

    page = viewer.get("/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<svg") == 6 and "gap_resolution_rate" in page.text


def test_status_answers_quickly_enough_to_read_the_help(settings: Settings, tmp_path: Path) -> None:
    # `agentheal status` imports nothing heavy at `--help` time: the command module is light.
    import subprocess
    import sys

    heavy = "('matplotlib', 'langgraph', 'chromadb', 'sqlalchemy')"
    code = f"import sys, agentheal.cli.status; print([m for m in sys.modules if m.split('.')[0] in {heavy}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
