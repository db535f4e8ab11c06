"""Patterns from a real event store: recurring fingerprints, clusters of similar gaps, weak components."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agentheal.detect import DetectConfig, rank_components, scan_history
from agentheal.estate import load_estate
from agentheal.events import EventStore
from agentheal.models import Gap, RunStatus, utcnow


def _store(tmp_path: Path) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / 'events.sqlite'}")


def _report(events: EventStore, text: str, component: str, minutes_ago: float) -> Gap:
    gap = Gap(text=text, component=component, created_at=utcnow() - timedelta(minutes=minutes_ago))
    events.record_gap(gap)
    return gap


def test_one_fingerprint_often_in_the_window_recurs(tmp_path: Path, tiny_estate_api_file: Path) -> None:
    events = _store(tmp_path)
    estate = load_estate(tiny_estate_api_file)
    for minutes in (5, 65, 125):
        gap = _report(events, "web is down: process not running", "web", minutes)
    _report(events, "web is down: process not running", "web", 60 * 30)  # outside the 24 h window
    _report(events, "api is unhealthy: its probes fail", "api", 10)
    signals = scan_history(events, estate, DetectConfig(recurring_count=3))
    recurring = [s for s in signals if s.data["kind"] == "recurring"]
    assert [(s.component, s.text) for s in recurring] == [
        ("web", "recurring: web is down: process not running")
    ]
    assert recurring[0].data["details"]["members"] == [gap.fingerprint]
    assert recurring[0].data["evidence"][0].startswith("3 reports in the last 24 h")
    # two reports are not a pattern yet
    assert scan_history(events, estate, DetectConfig(recurring_count=4)) == []


def test_a_cluster_of_similar_gaps_recurs(tmp_path: Path, tiny_estate_api_file: Path) -> None:
    events = _store(tmp_path)
    estate = load_estate(tiny_estate_api_file)
    _report(events, "new error template in logs/api.log: upstream timeout talking to web", "api", 3)
    _report(events, "new error template in logs/api.log: upstream timeout talking to web cache", "api", 2)
    _report(events, "new error template in logs/api.log: upstream timeout talking to web backend", "api", 1)
    _report(events, "certificate expired for the payment gateway", "api", 1)
    [signal] = scan_history(events, estate, DetectConfig(recurring_count=3, recurring_similarity=0.6))
    assert signal.data["kind"] == "recurring" and signal.component == "api"
    assert len(signal.data["details"]["members"]) == 3


def test_weak_components_are_ranked_and_become_weakness_gaps(
    tmp_path: Path, tiny_estate_api_file: Path
) -> None:
    events = _store(tmp_path)
    estate = load_estate(tiny_estate_api_file)
    for i in range(6):
        gap = _report(events, f"web is down: process not running ({i})", "web", 30 * i + 1)
        run_id = f"run{i:04d}"
        events.start_run(run_id, gap)
        status = RunStatus.escalated if i % 2 else RunStatus.healed
        events.finish_run(run_id, status, persona=None, source="none", reason=None, result={})
    _report(events, "api is unhealthy: its probes fail", "api", 5)
    config = DetectConfig(weakness_threshold=0.6)
    ranking = rank_components(events.gaps(), events.runs(), estate, config)
    assert [w.component for w in ranking] == ["web", "api"]
    web = ranking[0]
    assert (web.failures, web.heals, web.heals_failed, web.dependents) == (6, 6, 3, 1)
    assert web.score >= 0.6 > ranking[1].score
    weakness = [s for s in scan_history(events, estate, config) if s.data["kind"] == "weakness"]
    assert [s.text for s in weakness] == ["weak component web: fails often"]
    assert "6 incident(s)" in weakness[0].data["evidence"][1]
