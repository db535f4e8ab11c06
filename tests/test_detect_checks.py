"""Checks the evolve graph adds to detection (`home/evolution/checks.yaml`) are read by a running
detector, and a problem's time to detect counts from its first failing sample, so probing a component
more often shows in the figure the check is judged on."""

from __future__ import annotations

import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from agentheal.config import Settings
from agentheal.detect import DetectConfig, Detector, KofN
from agentheal.detect.checks import CheckBook, checks_file
from agentheal.detect.monitor import Monitor
from agentheal.estate import LocalBackend, load_estate

T0 = 1_800_000_000.0


def _write(settings: Settings, checks: object) -> Path:
    path = checks_file(settings.home_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(checks), encoding="utf-8")
    return path


def test_k_of_n_names_the_first_failing_sample_of_its_window() -> None:
    kofn = KofN(2, 3)
    assert kofn.observe("a", False, T0) is None
    assert kofn.observe("a", True, T0 + 5) is None
    assert kofn.first_failing("a") == T0 + 5
    assert kofn.observe("a", True, T0 + 10) == "open"
    assert kofn.first_failing("a") == T0 + 5  # not the confirming sample
    assert kofn.first_failing("b") is None


def test_an_evolved_check_makes_its_component_due_sooner(tiny_estate_file: Path, settings: Settings) -> None:
    backend = LocalBackend.from_settings(load_estate(tiny_estate_file), settings)
    detector = Detector(settings, DetectConfig(interval_s=60, jitter=0), backend)
    monitor = detector.monitor
    assert monitor is not None
    detector.round(now=T0)
    assert monitor.sampled_at["web"] == T0
    detector.round(now=T0 + 3)
    assert monitor.sampled_at["web"] == T0  # the config's 60 s interval: not due yet

    _write(settings, {"checks": [{"component": "web", "check": "probes", "every_s": 2.0, "why": "recurs",
                                  "after": "restart"}]})  # fmt: skip
    detector.round(now=T0 + 4)  # read at this round: due 2 s after its last sample, so sampled now
    assert monitor.sampled_at["web"] == T0 + 4
    assert monitor.interval("web") == 2.0
    detector.round(now=T0 + 6.5)
    assert monitor.sampled_at["web"] == T0 + 6.5

    checks_file(settings.home_dir).unlink()  # reverted: the config's interval again
    detector.round(now=T0 + 9)
    assert monitor.interval("web") == 60.0
    detector.round(now=T0 + 12)
    assert monitor.sampled_at["web"] == T0 + 9
    assert detector.take_reports() == []


def test_a_damaged_or_foreign_checks_file_is_named_and_the_config_applies(
    tiny_estate_file: Path, settings: Settings
) -> None:
    path = _write(settings, {"checks": [{"component": "web", "every_s": -1}]})
    book = CheckBook(settings.home_dir, {"web"})
    assert book.intervals() == {}
    assert book.problem is not None and str(path) in book.problem and "every_s" in book.problem

    _write(settings, {"checks": [{"component": "db", "every_s": 1.0}, {"component": "web", "every_s": 3.0},
                                 {"component": "web", "every_s": 2.0}]})  # fmt: skip
    assert book.refresh() is True
    assert book.intervals() == {"web": 2.0}  # the shortest; db is not in the estate
    assert book.problem is not None and "['db']" in book.problem

    backend = LocalBackend.from_settings(load_estate(tiny_estate_file), settings)
    path.write_text("checks: [unclosed\n", encoding="utf-8")
    detector = Detector(settings, DetectConfig(interval_s=60, jitter=0), backend)
    detector.round(now=T0)
    reports = detector.take_reports()
    assert any("evolved checks not read" in r for r in reports), reports
    assert detector.monitor is not None and detector.monitor.interval("web") == 60.0


@pytest.mark.slow
def test_time_to_detect_counts_from_the_first_failing_sample(
    tiny_estate_file: Path, settings: Settings
) -> None:
    backend = LocalBackend.from_settings(load_estate(tiny_estate_file), settings)
    assert all(r.outcome == "ok" for r in backend.up())
    pid = backend.health("web").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not backend.health("web").running:
            break
        threading.Event().wait(0.1)
    monitor = Monitor(backend, DetectConfig(interval_s=5, jitter=0))
    assert monitor.round(["web"], now=T0)[0] == []  # one failing sample is no incident yet
    signals, _ = monitor.round(["web"], now=T0 + 5)
    (down,) = [s for s in signals if s.data.get("problem") == "process_down"]
    assert down.at == datetime.fromtimestamp(T0, UTC)  # the gap's created_at: when it was first seen failing


@pytest.mark.slow
def test_a_watch_probes_a_checked_component_sooner_and_its_time_to_detect_shows_it(
    tiny_estate_file: Path, tmp_path: Path, settings: Settings
) -> None:
    """A real `agentheal watch` with an 8 s probe interval and an evolved check of 0.5 s on `web`: a
    killed web is confirmed (k = 2 of 3) about half a second after its first failing sample, where the
    config's interval alone would take about eight; the gap in the event store carries that lag."""
    import subprocess
    import sys

    from agentheal.events import EventStore
    from test_detect_watch import Lines, _env, _pid, _stop

    env = _env(tmp_path)
    env["AGENTHEAL_HOME"] = str(settings.home_dir)
    _write(settings, {"checks": [{"component": "web", "every_s": 0.5, "why": "web dies again and again"}]})
    estate = str(tiny_estate_file)
    up = subprocess.run([sys.executable, "-m", "agentheal", "estate", "up", estate], env=env, timeout=60)
    assert up.returncode == 0
    args = ["watch", "--estate", estate, "--interval", "8", "--no-heal", "--plain"]
    watch = subprocess.Popen([sys.executable, "-m", "agentheal", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = Lines(watch)
        lines.wait_for("watching tiny")
        os.kill(_pid(tiny_estate_file, "web", env), signal.SIGKILL)
        lines.wait_for("gap opened: incident web", timeout=30)
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(60) == 0
    finally:
        _stop(watch)
    import sqlalchemy as sa

    from agentheal.event_schema import GAPS

    store = EventStore(settings.events_url)
    (gap,) = store.query(sa.select(GAPS.c.created_at, GAPS.c.recorded_at).where(GAPS.c.component == "web"))
    lag = (gap["recorded_at"] - gap["created_at"]).total_seconds()
    assert 0.4 <= lag < 4.0, lag  # the config's 8 s (± 10 % jitter) would give at least 7.2 s
