"""The prevent graph on a real estate folder and a real event store: a disk-filling trend is acted
on before its breach and the follow-up says whether it was avoided; a trend that flattens by
itself is recorded as a false prediction; a breach nobody predicted is a miss."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.detect.config import DetectConfig
from agentheal.detect.predict import Sample
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import load_estate
from agentheal.events import EventStore
from agentheal.graphs.prevent import PreventJob, prevent_round
from agentheal.metrics import Window, compute
from agentheal.metrics.records import PREDICTIONS

MB = 1024 * 1024


def _estate(tmp_path: Path) -> Path:
    root = tmp_path / "estate"
    for folder in ("www", "data", "cache", "spool"):
        (root / folder).mkdir(parents=True)
    (root / "estate.yaml").write_text(
        """name: disks
components:
  web:
    command: [python3, -m, http.server, "0", --bind, 127.0.0.1]
    workdir: www
    data:
      - {path: data, budget_mb: 1}
      - {path: cache, budget_mb: 1}
      - {path: spool, budget_mb: 1}
"""
    )
    return root / "estate.yaml"


def _fill(folder: Path, mb: float) -> None:
    for old in folder.iterdir():
        old.unlink()
    (folder / "blob.bin").write_bytes(b"x" * int(mb * MB))


def _series(folder: str, t0: float, values: list[float], step: float = 10.0) -> list[Sample]:
    return [
        Sample(series=f"web:data:{folder}", component="web", at=t0 + i * step, value=v, limit=1.0,
               what=f"data folder {folder}", unit="MB")
        for i, v in enumerate(values)
    ]  # fmt: skip


def test_a_filling_disk_is_cleaned_before_the_breach_and_a_flat_trend_is_a_false_prediction(
    settings: Settings, tmp_path: Path
) -> None:
    estate = load_estate(_estate(tmp_path))
    backend = LocalBackend(estate, settings.estates_dir / estate.name)
    events = EventStore(settings.events_url)
    now = time.time()
    # data: 0.1 MB more every 10 s, 0.6 MB now: over its 1 MB budget in about 40 s
    _fill(estate.path("data"), 0.6)
    # cache: rising slowly (over the budget in about 10 minutes), then it stops growing by itself
    _fill(estate.path("cache"), 0.35)
    samples = {
        "web:data:data": _series("data", now - 50, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        "web:data:cache": _series("cache", now - 50, [0.30, 0.31, 0.32, 0.33, 0.34, 0.35]),
    }
    job = PreventJob(events=events, config=DetectConfig(), samples=samples, backend=backend, lead_s=120)
    first = prevent_round(job, now)

    assert sorted(p["series"] for p in first["predicted"]) == ["web:data:cache", "web:data:data"]
    assert [a["step"]["action"] for a in first["applied"]] == ["clean_dir"]
    assert first["applied"][0]["step"]["args"] == {"path": "data"} and first["applied"][0]["outcome"] == "ok"
    assert list(estate.path("data").iterdir()) == []  # cleaned for real, ahead of the breach
    assert (estate.path("cache") / "blob.bin").exists()  # due in ten minutes: watched, not acted on
    assert first["followed"] == []  # nothing is due yet

    # ten minutes on: data stayed small; cache flattened at 0.4 MB and never crossed its budget
    later = now + 700
    samples["web:data:data"] += _series("data", now + 10, [0.0, 0.0, 0.01])
    samples["web:data:cache"] += _series("cache", now + 10, [0.4] * 60)
    _fill(estate.path("cache"), 0.4)
    job = PreventJob(events=events, config=DetectConfig(), samples=samples, backend=backend, lead_s=120)
    second = prevent_round(job, later)
    outcomes = {f["series"]: f["outcome"] for f in second["followed"]}
    assert outcomes == {"web:data:data": "avoided", "web:data:cache": "false"}
    assert second["predicted"] == [] and second["applied"] == []

    rows = {r["series"]: r for r in events.query(PREDICTIONS.select())}
    assert (
        rows["web:data:data"]["acted"] is True
        and rows["web:data:data"]["measure"]["step"]["action"] == "clean_dir"
    )
    assert rows["web:data:cache"]["acted"] is False
    assert rows["web:data:data"]["expected_at"].timestamp() == pytest.approx(now + 40, abs=2)

    # spool fills up with no warning (two samples: no trend to fit): a breach nobody predicted
    _fill(estate.path("spool"), 1.5)
    samples["web:data:spool"] = _series("spool", later - 10, [0.2, 1.5])
    third = prevent_round(
        PreventJob(events=events, config=DetectConfig(), samples=samples, backend=backend), later + 1
    )
    assert [(f["series"], f["outcome"]) for f in third["followed"]] == [("web:data:spool", "missed")]
    again = prevent_round(
        PreventJob(events=events, config=DetectConfig(), samples=samples, backend=backend), later + 2
    )
    assert again["followed"] == []  # one miss per breach

    # the follow-ups ran at (simulated) later times: a window that reaches them
    span = Window(datetime.fromtimestamp(now - 3600, UTC), datetime.fromtimestamp(later + 60, UTC))
    figures = {f.name: f for f in compute(events, span)}
    assert (figures["prevention_effectiveness"].value, figures["prevention_effectiveness"].n) == (1.0, 1)
    assert (figures["breach_rate_not_acted_on"].value, figures["breach_rate_not_acted_on"].n) == (0.0, 1)
    assert (figures["prediction_precision"].value, figures["prediction_precision"].n) == (0.5, 2)
    assert (figures["prediction_recall"].value, figures["prediction_recall"].n) == (0.5, 2)


def test_a_predicted_breach_the_policy_does_not_allow_is_not_acted_on(
    settings: Settings, tmp_path: Path
) -> None:
    from agentheal.policy import Policy, Rule

    estate = load_estate(_estate(tmp_path))
    _fill(estate.path("data"), 0.6)
    events = EventStore(settings.events_url)
    now = time.time()
    job = PreventJob(events=events, config=DetectConfig(), backend=LocalBackend(estate, tmp_path / "state"),
                     samples={"web:data:data": _series("data", now - 50, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])},
                     policy=Policy(rules=[Rule(components=["*"], allow=["restart"])]))  # fmt: skip
    done = prevent_round(job, now)
    assert done["applied"] == [] and (estate.path("data") / "blob.bin").exists()
    assert any("not acted on" in n and "clean_dir" in n for n in done["notes"]), done["notes"]


def test_prevent_from_the_cli_with_no_trend_history(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prevent", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predicted"] == [] and out["followed"] == []


def test_a_maintenance_action_the_evolve_graph_scheduled_runs_when_due(
    settings: Settings, tmp_path: Path
) -> None:
    from agentheal.graphs.evolve_changes import yaml_list_with

    root = tmp_path / "estate"
    (root / "www").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "logs" / "web.log").write_text("line\n" * 1000)
    (root / "estate.yaml").write_text(
        "name: logs\ncomponents:\n  web:\n    command: [python3, -m, http.server, '0']\n    workdir: www\n"
        "    logs: [logs/web.log]\n"
    )
    estate = load_estate(root / "estate.yaml")
    schedule = settings.home_dir / "evolution" / "schedule.yaml"
    schedule.parent.mkdir(parents=True)
    entry = {"component": "web", "action": "rotate_logs", "args": {"path": "logs/web.log"}, "every_s": 600.0,
             "why": "the web log filled the disk 4 times"}  # fmt: skip
    schedule.write_bytes(yaml_list_with(schedule, "schedule", entry))
    events = EventStore(settings.events_url)

    def round_at(at: float) -> list[dict[str, object]]:
        job = PreventJob(events=events, config=DetectConfig(), samples={}, home=settings.home_dir,
                         backend=LocalBackend(estate, tmp_path / "state"))  # fmt: skip
        return list(prevent_round(job, at)["applied"])

    now = time.time()
    (ran,) = round_at(now)
    assert (ran["scheduled"] is not None, ran["step"]["action"], ran["outcome"]) == (
        True,
        "rotate_logs",
        "ok",
    )
    assert (root / "logs" / "web.log.1").read_text().count("line") == 1000
    assert (root / "logs" / "web.log").read_text() == ""
    assert round_at(now + 60) == []  # ran a minute ago: not due
    assert [a["step"]["action"] for a in round_at(now + 601)] == ["rotate_logs"]


@pytest.mark.slow
def test_a_running_watch_prevents_a_filling_disk_and_follows_it_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentheal watch` (a real process) with the prevent graph every round: a data folder filling
    towards its budget is predicted, cleaned before the breach and followed up as avoided, with no
    `agentheal prevent` run. Detection's own predicted gap is held back (a long minimum span), so
    the measure is the prevent graph's."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from conftest import stop_processes_under

    estate_file = _estate(tmp_path)
    data = estate_file.parent / "data"
    _fill(data, 0.2)
    detect = tmp_path / "detect.yaml"
    detect.write_text("horizon_s: 600\ntrend_min_samples: 6\ntrend_min_span_s: 3600\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    env |= {"AGENTHEAL_HOME": str(tmp_path / "home"), "AGENTHEAL_CONFIG": str(tmp_path / "none.toml"),
            "AGENTHEAL_PREVENT_EVERY_ROUNDS": "1"}  # fmt: skip
    for k, v in env.items():
        if k.startswith("AGENTHEAL_"):
            monkeypatch.setenv(k, v)
    cli = [sys.executable, "-m", "agentheal"]
    stop = threading.Event()

    def fill() -> None:  # 0.05 MB a second: over the 1 MB budget in 16 s unless cleaned
        blob = data / "blob.bin"
        while not stop.wait(0.1) and blob.exists():
            with blob.open("ab") as out:
                out.write(b"x" * (MB // 200))

    try:
        assert subprocess.run([*cli, "estate", "up", str(estate_file)], env=env, timeout=60).returncode == 0
        args = [
            "watch",
            "--estate",
            str(estate_file),
            "--plain",
            "--interval",
            "0.25",
            "--config",
            str(detect),
        ]
        log = tmp_path / "watch.log"
        with log.open("w") as sink:  # a file, not a pipe nobody reads until the end
            watch = subprocess.Popen([*cli, *args], env=env, stdout=sink, stderr=subprocess.STDOUT)
        writer = threading.Thread(target=fill, daemon=True)
        writer.start()
        events = EventStore(Settings().events_url)
        deadline = time.monotonic() + 90
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = [r for r in events.query(PREDICTIONS.select()) if r["series"] == "web:data:data"]
            if rows and rows[0]["outcome"] != "pending":
                break
            assert watch.poll() is None, f"watch exited {watch.returncode}"
            time.sleep(0.3)
        stop.set()
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(60) == 0
        out = log.read_text()
    finally:
        stop.set()
        stop_processes_under(estate_file.parent)
    assert len(rows) == 1, (rows, out)
    row = rows[0]
    assert row["outcome"] == "avoided" and row["acted"] is True, (row, out)
    assert row["measure"]["step"]["action"] == "clean_dir" and row["measure"]["outcome"] == "ok"  # type: ignore[index]
    assert "prevent: clean_dir on web ok" in out and "prevent: follow-up of web:data:data: avoided" in out
    got = {f.name: f for f in compute(events)}
    assert (got["prevention_effectiveness"].value, got["prevention_effectiveness"].n) == (1.0, 1)


def test_a_prediction_the_heal_graph_answered_in_time_counts_as_acted_on(
    settings: Settings, tmp_path: Path
) -> None:
    """In watch, a breach detection raised as a predicted gap is the heal graph's to answer; the
    prevent graph's prediction of it counts as acted on once that heal healed, before the breach."""
    from agentheal.metrics.watching import credit_heals
    from agentheal.models import Gap, GapKind, RunStatus

    events = EventStore(settings.events_url)
    now = time.time()
    estate = load_estate(_estate(tmp_path))
    _fill(estate.path("data"), 0.6)
    samples = {"web:data:data": _series("data", now - 50, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])}
    job = PreventJob(events=events, config=DetectConfig(), samples=samples)  # no estate: no measure
    made = prevent_round(job, now)["predicted"]
    assert [p["series"] for p in made] == ["web:data:data"]
    text = events.query(PREDICTIONS.select())[0]["text"]

    def heal(run_id: str, status: RunStatus, gap_text: str) -> None:
        gap = Gap(text=gap_text, component="web", kind=GapKind.predicted)
        events.start_run(run_id, gap)
        events.finish_run(run_id, status, persona="capacity", source="playbook", reason=None, result={})

    heal("e" * 32, RunStatus.escalated, text)  # escalated: nothing done
    heal("f" * 32, RunStatus.healed, "web answers 502")  # another gap of web
    assert credit_heals(events) == [] and events.query(PREDICTIONS.select())[0]["acted"] is False
    heal("a" * 32, RunStatus.healed, text)
    assert len(credit_heals(events)) == 1
    row = events.query(PREDICTIONS.select())[0]
    assert row["acted"] is True and row["measure"]["heal_run"] == "a" * 32
    assert credit_heals(events) == []  # once
