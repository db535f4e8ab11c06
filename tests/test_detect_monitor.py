"""Monitoring on real processes: a killed process, a dependency failure with one root gap, no flapping,
folders over budget, and Prometheus endpoints (one answering, one unreachable)."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentheal.config import Settings
from agentheal.detect import DetectConfig, Detector, KofN, MetricRule, MetricsEndpoint
from agentheal.estate import LocalBackend, load_estate
from agentheal.models import Step
from conftest import free_port

pytestmark = pytest.mark.slow

FAST = DetectConfig(once_spacing_s=0.1)


def _up(estate_file: Path, settings: Settings) -> LocalBackend:
    backend = LocalBackend.from_settings(load_estate(estate_file), settings)
    results = backend.up()
    assert all(r.outcome == "ok" for r in results), results
    return backend


def _kill(backend: LocalBackend, component: str) -> None:
    pid = backend.health(component).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not backend.health(component).running:
            return
        threading.Event().wait(0.1)
    raise AssertionError(f"{component} still running after SIGKILL")


def test_k_of_n_opens_after_k_failures_and_closes_after_k_passes() -> None:
    kofn = KofN(2, 3)
    assert kofn.observe("a", True) is None  # one slow answer is no incident
    assert kofn.observe("a", False) is None
    assert kofn.observe("a", False) is None
    assert kofn.observe("a", True) is None
    assert kofn.observe("a", True) == "open"
    assert kofn.observe("a", False) is None  # one good answer does not close it
    assert kofn.observe("a", False) == "recover"


def test_healthy_estate_opens_no_gap(tiny_estate_api_file: Path, settings: Settings) -> None:
    backend = _up(tiny_estate_api_file, settings)
    assert Detector(settings, FAST, backend).once() == []


def test_killed_process_is_detected_with_evidence(tiny_estate_file: Path, settings: Settings) -> None:
    backend = _up(tiny_estate_file, settings)
    _kill(backend, "web")
    [tracked] = Detector(settings, FAST, backend).once()
    gap = tracked.gap
    assert (gap.component, gap.kind.value, gap.source, tracked.problem) == (
        "web",
        "incident",
        "monitor",
        "process_down",
    )
    assert gap.root is None
    assert any("ConnectError" in e or "refused" in e for e in gap.evidence), gap.evidence
    assert any(e.startswith("process_down (web)") for e in gap.evidence), gap.evidence


def test_dependency_failure_makes_one_root_gap(tiny_estate_api_file: Path, settings: Settings) -> None:
    backend = _up(tiny_estate_api_file, settings)
    _kill(backend, "web")
    tracked = Detector(settings, FAST, backend).once()
    roots = [t.gap for t in tracked if t.gap.root is None]
    assert [g.component for g in roots] == ["web"], [t.as_json() for t in tracked]
    api = [t.gap for t in tracked if t.gap.component == "api"]
    assert api, "api answers 503 while web is down: it has a gap, tied to web's"
    assert all(g.root == roots[0].fingerprint for g in api)
    # severity weighs the dependents: web has one, so its gap is raised above the base `high`
    assert roots[0].severity.value == "critical"
    assert any(e.startswith("impact: 1 component(s) depend on web") for e in roots[0].evidence)


def test_a_component_that_recovers_within_the_threshold_opens_no_gap(
    tiny_estate_file: Path, settings: Settings
) -> None:
    backend = _up(tiny_estate_file, settings)
    detector = Detector(settings, DetectConfig(k=2, n=3), backend)
    _kill(backend, "web")
    detector.round(all_components=True)  # one failing sample
    assert backend.execute(Step(action="start", component="web")).outcome == "ok"
    for _ in range(4):
        detector.round(all_components=True)
    opened, closed = detector.book.drain_changes()
    assert opened == [] and closed == [] and detector.gaps() == []
    # the same outage that lasts k samples does open a gap
    _kill(backend, "web")
    detector.round(all_components=True)
    detector.round(all_components=True)
    assert [g.component for g in detector.gaps()] == ["web"]


def _estate_with_data(tmp_path: Path, budget_mb: float) -> Path:
    root = tmp_path / "estate"
    (root / "data").mkdir(parents=True)
    port = free_port()
    estate = root / "estate.yaml"
    estate.write_text(
        f"""name: store
components:
  db:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    probes:
      - http: http://127.0.0.1:{port}/
    data:
      - path: data
        budget_mb: {budget_mb}
"""
    )
    return estate


@pytest.fixture
def data_estate(tmp_path: Path) -> Iterator[Path]:
    from conftest import stop_processes_under

    path = _estate_with_data(tmp_path, budget_mb=1)
    yield path
    stop_processes_under(path.parent)


def test_a_folder_over_its_budget_is_detected(data_estate: Path, settings: Settings) -> None:
    backend = _up(data_estate, settings)
    (data_estate.parent / "data" / "blob").write_bytes(b"x" * (1024 * 1024 + 4096))
    [tracked] = Detector(settings, FAST, backend).once()
    assert tracked.problem == "disk_over_budget" and tracked.gap.component == "db"
    assert "data holds 1.00 MB of its 1 MB budget" in tracked.gap.evidence[0]


class _Metrics(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[str]:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    Gauge("queue_depth", "Jobs waiting", ["queue"], registry=registry).labels(queue="mail").set(250)
    handler = type("H", (_Metrics,), {"body": generate_latest(registry)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_metrics_over_their_limit_open_a_gap_and_unreachable_endpoints_are_skipped(
    tiny_estate_file: Path, settings: Settings, metrics_server: str
) -> None:
    backend = _up(tiny_estate_file, settings)
    rule = MetricRule(metric="queue_depth", labels={"queue": "mail"}, max=100, what="mail queue")
    config = FAST.model_copy(
        update={
            "metrics": {
                "web": MetricsEndpoint(url=metrics_server, rules=[rule]),
                "ghost": MetricsEndpoint(url=f"http://127.0.0.1:{free_port()}/metrics", rules=[rule]),
            }
        }
    )
    detector = Detector(settings, config, backend)
    [tracked] = detector.once()
    assert tracked.gap.text == "web mail queue is above its limit"
    assert "queue_depth{'queue': 'mail'} = 250, above 100" in tracked.gap.evidence[0]
    reports = detector.take_reports()
    assert any("metrics of ghost skipped" in r and "unreachable" in r for r in reports), reports
