"""Prediction: a folder filled at a steady rate is forecast before it breaches its budget; latency shifts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agentheal.config import Settings
from agentheal.detect import DetectConfig, Detector, Sample, TrendBook, forecast
from agentheal.estate import LocalBackend, load_estate
from conftest import free_port, stop_processes_under

BUDGET_MB = 3.0
RATE = 900 * 1024  # bytes per second


@pytest.fixture
def filling_estate(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "estate"
    (root / "data").mkdir(parents=True)
    port = free_port()
    estate = root / "estate.yaml"
    estate.write_text(
        f"""name: filling
components:
  db:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    probes:
      - http: http://127.0.0.1:{port}/
    data:
      - path: data
        budget_mb: {BUDGET_MB}
"""
    )
    yield estate
    stop_processes_under(root)


class Writer(threading.Thread):
    """Fills a file at a steady rate: it always catches up with rate x elapsed time."""

    def __init__(self, path: Path, rate: float) -> None:
        super().__init__(daemon=True)
        self.path, self.rate = path, rate
        self.stop = threading.Event()
        self.started_at = 0.0

    def run(self) -> None:
        written = 0
        self.started_at = time.time()
        with self.path.open("wb", buffering=0) as f:
            while not self.stop.is_set():
                due = int(self.rate * (time.time() - self.started_at))
                if due > written:
                    f.write(b"x" * (due - written))
                    written = due
                self.stop.wait(0.01)


@pytest.mark.slow
def test_a_filling_folder_is_predicted_before_its_budget_is_breached(
    filling_estate: Path, settings: Settings
) -> None:
    backend = LocalBackend.from_settings(load_estate(filling_estate), settings)
    assert all(r.outcome == "ok" for r in backend.up())
    config = DetectConfig(trend_min_samples=8, trend_min_span_s=0.5, horizon_s=600)
    detector = Detector(settings, config, backend)
    writer = Writer(filling_estate.parent / "data" / "segment.bin", RATE)
    writer.start()
    predicted = None
    try:
        deadline = time.time() + 3.0
        while predicted is None and time.time() < deadline:
            detector.round(all_components=True)
            predicted = next((t for t in detector.book.tracked() if t.gap.kind.value == "predicted"), None)
            time.sleep(0.12)
        assert predicted is not None, "no forecast within 3 s of steady filling"
        predicted_at = time.time()
        budget = BUDGET_MB * 1024 * 1024
        folder = filling_estate.parent / "data"
        while sum(p.stat().st_size for p in folder.iterdir()) <= budget:
            time.sleep(0.005)
        breached_at = time.time()
    finally:
        writer.stop.set()
        writer.join()
    assert predicted.gap.component == "db" and predicted.gap.source == "predict"
    assert predicted.gap.text == f"db data folder data will exceed its {BUDGET_MB:g} MB limit"
    assert predicted_at < breached_at, "the forecast came after the breach"
    # "within 25 %": of the time between the forecast and the real breach
    expected_at = datetime.fromisoformat(predicted.details["expected_at"]).timestamp()
    lead = breached_at - predicted_at
    assert abs(expected_at - breached_at) <= 0.25 * lead, (expected_at, breached_at, lead)
    assert predicted.details["confidence"] >= config.trend_min_confidence
    assert any("confidence" in e and "expected to cross 3 MB" in e for e in predicted.gap.evidence)


def test_forecast_is_robust_to_outliers_and_ignores_flat_or_falling_series() -> None:
    rng = random.Random(7)
    times = [1000.0 + 10 * i for i in range(30)]
    values = [50 + 2.0 * (t - 1000) / 10 + rng.gauss(0, 0.5) for t in times]  # 0.2 per second
    values[5] += 40  # two wild samples do not bend a Theil–Sen line
    values[17] -= 35
    now = times[-1]
    found = forecast(times, values, limit=200, now=now)
    assert found is not None
    truth = 1000 + (200 - 50) / 0.2
    assert abs(found.expected_at - truth) < 0.05 * (truth - now)
    assert found.confidence > 0.8
    assert forecast(times, [50 + rng.gauss(0, 0.5) for _ in times], limit=200, now=now) is None
    assert forecast(times, [200 - v for v in values], limit=300, now=now) is None


def test_a_trend_needs_a_time_span_as_well_as_a_count_of_samples() -> None:
    book = TrendBook(DetectConfig(trend_min_samples=6, trend_min_span_s=5.0, horizon_s=600))

    def fill(start: float, step: float, n: int) -> list[str]:
        for i in range(n):
            at = start + i * step
            book.add(Sample(series="db:data", component="db", at=at, value=10 + 2.0 * (at - start),
                            limit=200, what="data folder", unit="MB", kind="level"))  # fmt: skip
        return [str(s.data.get("problem")) for s in book.signals(start + (n - 1) * step)]

    assert fill(1000.0, 0.1, 10) == []  # ten samples in a second: a burst, not a trend
    assert fill(1001.0, 1.0, 6) == ["predicted_breach"]  # the same rate over six seconds


def test_a_latency_shift_is_found_by_change_point_detection_and_recovers() -> None:
    rng = random.Random(3)
    book = TrendBook(DetectConfig(latency_min_samples=20))
    at = 0.0

    def feed(level: float, n: int) -> list[str]:
        nonlocal at
        problems = []
        for _ in range(n):
            at += 5
            value = rng.gauss(level, level * 0.08)
            book.add(Sample(series="web:latency", component="web", at=at, value=value, what="probe latency",
                            unit="ms", kind="latency"))  # fmt: skip
            problems += [str(s.data.get("problem") or "ok") for s in book.signals(at)]
        return problems

    assert feed(20, 30) == []
    slow = feed(80, 12)
    assert slow.count("latency_degraded") == 1 and "ok" not in slow
    assert feed(20, 6) == ["ok"]
