"""`agentheal status` from the CLI and `GET /status`, `/metrics` and `/report` from the real server
(uvicorn on loopback), over a real event store with recorded heals."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
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


# -- availability from a running watch --


def _probe_rows(events: EventStore) -> list[dict[str, Any]]:
    from agentheal.metrics.records import PROBES

    return events.query(PROBES.select().order_by(PROBES.c.id))


def test_probe_answers_are_counted_in_batches_one_row_a_component(
    settings: Settings, tiny_estate_file: Path
) -> None:
    """A real monitor on the real estate: five rounds are one row (5 answers), not five."""
    from agentheal.detect.config import DetectConfig
    from agentheal.detect.monitor import Monitor
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import load_estate
    from agentheal.metrics.watching import ProbeTally

    backend = LocalBackend.from_settings(load_estate(tiny_estate_file), settings)
    backend.up()
    events = EventStore(settings.events_url)
    monitor = Monitor(backend, DetectConfig())
    tally = ProbeTally(events, batch_s=3600, keep=timedelta(days=90))
    for i in range(5):
        monitor.round(["web"], now=1000.0 + i)
        tally.observe(monitor)
    tally.observe(monitor)  # nothing new sampled: nothing counted
    assert _probe_rows(events) == []  # the batch is not over yet
    tally.flush()
    rows = _probe_rows(events)
    assert [(r["component"], r["answers"], r["passed"]) for r in rows] == [("web", 5, 5)]
    # batches older than the retention are deleted at the next flush that prunes
    tally.keep = timedelta(seconds=0)
    tally._pruned = float("-inf")
    tally.flush()
    assert _probe_rows(events) == []


@pytest.mark.slow
def test_a_running_watch_gives_each_component_its_availability(
    tiny_estate_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`agentheal watch` (a real process, detect only) on the real estate: web answers, then its
    process is killed; after the watch stops, status shows web's availability from what it saw."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
    env |= {"AGENTHEAL_HOME": str(tmp_path / "home"), "AGENTHEAL_CONFIG": str(tmp_path / "none.toml"),
            "AGENTHEAL_PROBE_BATCH_S": "0.5", "AGENTHEAL_PREVENT_EVERY_ROUNDS": "0"}  # fmt: skip
    for k, v in env.items():
        if k.startswith("AGENTHEAL_"):
            monkeypatch.setenv(k, v)
    cli = [sys.executable, "-m", "agentheal"]
    assert subprocess.run([*cli, "estate", "up", str(tiny_estate_file)], env=env, timeout=60).returncode == 0
    watch = subprocess.Popen([*cli, "watch", "--estate", str(tiny_estate_file), "--no-heal", "--plain",
                              "--interval", "0.2"], env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        events = EventStore(Settings().events_url)

        def wait_for(what: str, test: Any) -> list[dict[str, Any]]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = _probe_rows(events)
                if test(rows):
                    return rows
                assert watch.poll() is None, f"watch exited {watch.returncode}"
                time.sleep(0.2)
            raise AssertionError(f"{what} not recorded in 60 s: {_probe_rows(events)}")

        wait_for("a passing answer", lambda rows: any(r["passed"] for r in rows))
        status = subprocess.run([*cli, "estate", "status", str(tiny_estate_file), "--json"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        pid = next(c["pid"] for c in json.loads(status.stdout)["components"] if c["name"] == "web")
        os.kill(pid, signal.SIGKILL)
        wait_for("a failing answer", lambda rows: any(r["answers"] > r["passed"] for r in rows))
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(60) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    rows = _probe_rows(events)
    answers, passed = sum(r["answers"] for r in rows), sum(r["passed"] for r in rows)
    assert {r["component"] for r in rows} == {"web"} and 0 < passed < answers
    got = {f["name"]: f for f in _status(capsys)["figures"]}
    web = got["availability:web"]
    assert (web["value"], web["n"], web["no_data"]) == (pytest.approx(passed / answers), answers, False)
