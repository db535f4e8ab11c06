"""The ops routes of `agentheal serve`, against the real server (uvicorn on a loopback port, real
SQLite, real chromadb, a real estate): memory, agents, estate, faults, alerts and feedback,
readiness, metrics, and the limits on bodies and rates. `ApiServer` is shared with the fuzz test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.api.tokens import TokenStore
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.models import Gap
from conftest import free_port, stop_processes_under, tiny_estate

pytestmark = pytest.mark.slow

# Token name -> role; `limited` is a second viewer, so a test can spend its rate on its own.
ROLES = {"viewer": "viewer", "operator": "operator", "admin": "admin", "limited": "viewer"}


class ApiServer:
    """`agentheal serve` in its own process on a free loopback port, with one token per role."""

    def __init__(self, root: Path, estate: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.home = root / "home"
        self.estate = estate
        self.tokens = {name: TokenStore(self.home).add(f"test-{name}", role) for name, role in ROLES.items()}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keep = {
            k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"
        }
        self.env = {**keep, "AGENTHEAL_HOME": str(self.home), "AGENTHEAL_CONFIG": str(root / "none.toml"),
                    **(env or {})}  # fmt: skip
        self.log = root / f"serve-{self.port}.log"
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--estate", str(estate), *flags]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentheal", *args], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"agentheal serve exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"agentheal serve did not answer /healthz in 90 s: {self.log.read_text()[-2000:]}")

    def client(self, name: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)

    def events(self) -> EventStore:
        return EventStore(Settings(home=self.home).events_url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def estate_up(server: ApiServer) -> None:
    done = subprocess.run([sys.executable, "-m", "agentheal", "estate", "up", str(server.estate)],
                          env=server.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """No faults allowed; small body limits so a 413 is cheap to provoke."""
    root = tmp_path_factory.mktemp("ops")
    estate = tiny_estate(root)
    srv = ApiServer(
        root,
        estate,
        env={
            "AGENTHEAL_API_MAX_BODY_BYTES": "65536",
            "AGENTHEAL_API_MAX_IMPORT_BYTES": "262144",
            "AGENTHEAL_API_CORS_ORIGINS": "https://ops.example",
        },
    )
    estate_up(srv)
    yield srv
    srv.stop()
    stop_processes_under(estate.parent)


@pytest.fixture(scope="module")
def drills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Faults allowed; a tight rate limit (per token, so each test uses its own client)."""
    root = tmp_path_factory.mktemp("drills")
    estate = tiny_estate(root)
    srv = ApiServer(
        root,
        estate,
        "--allow-faults",
        env={"AGENTHEAL_API_RATE_PER_S": "2", "AGENTHEAL_API_RATE_BURST": "40"},
    )
    estate_up(srv)
    yield srv
    srv.stop()
    stop_processes_under(estate.parent)


HISTORY = [
    {"gap": "disk full on the database host", "resolution": "clean_dir(db): old WAL segments removed",
     "outcome": "healed", "component": "db"},
    {"gap": "web answers 502 after deploy", "resolution": "rollback_release(web)", "outcome": "healed",
     "component": "web"},
    {"gap": "queue consumers stuck on a poison message", "resolution": "restart(worker)",
     "outcome": "failed"},
]  # fmt: skip


def _detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


# ---------------------------------------------------------------- who may do what


def test_no_token_is_refused_on_every_ops_route_and_roles_are_held(server: ApiServer) -> None:
    anonymous, viewer, operator = server.client(None), server.client("viewer"), server.client("operator")
    reads = ["/memory/search?q=disk", "/agents", "/agents/availability", "/estate", "/readyz", "/metrics"]
    for path in reads:
        assert anonymous.get(path).status_code == 401, path
        assert viewer.get(path).status_code == 200, path
    writes = {"/memory": {"records": HISTORY}, "/faults": {"fault": "process_killed", "component": "web"},
              "/alerts/alertmanager": {"version": "4", "status": "firing", "alerts": []},
              "/feedback": {"text": "web is slow"}}  # fmt: skip
    for path, body in writes.items():
        assert anonymous.post(path, json=body).status_code == 401, path
        refused = viewer.post(path, json=body)
        assert refused.status_code == 403 and "needs" in _detail(refused), path
    for path in ("/memory", "/faults"):
        refused = operator.post(path, json=writes[path])
        assert refused.status_code == 403 and "admin" in _detail(refused), path
    assert anonymous.get("/healthz").status_code == 200


# ---------------------------------------------------------------- memory


def test_memory_import_then_search_best_first_and_bad_records_named(server: ApiServer) -> None:
    admin, viewer = server.client("admin"), server.client("viewer")
    imported = admin.post("/memory", json={"records": HISTORY})
    assert imported.status_code == 200, imported.text
    assert imported.json()["imported"] == 3 and imported.json()["total"] >= 3
    again = admin.post("/memory", json={"records": HISTORY[:1]}).json()
    assert again["imported"] == 0 and again["errors"] == ["records.0: skipped, already in memory"]
    hits = viewer.get("/memory/search", params={"q": "no space left on the database disk", "k": 2}).json()
    assert len(hits) == 2 and hits[0]["gap"] == "disk full on the database host"
    assert hits[0]["similarity"] >= hits[1]["similarity"]
    bad = admin.post("/memory", json={"records": [{"gap": "x", "resolution": "y", "outcome": "maybe"}]})
    assert bad.status_code == 422 and "outcome" in bad.text
    epoch = admin.post("/memory", json={"records": [{**HISTORY[2], "gap": "new", "occurred_at": 12345}]})
    assert epoch.status_code == 422 and "occurred_at" in epoch.text and "ISO 8601" in epoch.text
    blank = viewer.get("/memory/search", params={"q": "   "})
    assert blank.status_code == 400 and "empty" in _detail(blank)
    assert viewer.get("/memory/search", params={"q": "disk", "k": 0}).status_code == 422
    audit = [r for r in server.events().audit_rows(50) if r.action == "memory_import"]
    assert audit and audit[-1].actor == "test-admin" and audit[-1].data["imported"] == 3


# ---------------------------------------------------------------- agents and estate


def test_agents_list_and_show_with_records_from_the_event_store(server: ApiServer) -> None:
    viewer = server.client("viewer")
    listed = viewer.get("/agents").json()
    names = {a["name"] for a in listed["agents"]}
    assert {"availability", "capacity", "triage-lead"} <= names and listed["errors"] == []
    shown = viewer.get("/agents/availability").json()
    assert shown["name"] == "availability" and "restart" in shown["actions"] and shown["runs"] >= 0
    ghost = viewer.get("/agents/ghost")
    assert ghost.status_code == 404 and "ghost" in _detail(ghost) and "availability" in _detail(ghost)


def test_estate_is_probed_now(server: ApiServer) -> None:
    view = server.client("viewer").get("/estate").json()
    assert view["name"] == "tiny" and view["healthy"] is True
    (web,) = view["components"]
    assert web["name"] == "web" and web["running"] and web["probes"][0]["ok"] and web["depends_on"] == []


def test_faults_are_off_unless_the_server_allows_them(server: ApiServer) -> None:
    refused = server.client("admin").post("/faults", json={"fault": "process_killed", "component": "web"})
    assert refused.status_code == 403 and "--allow-faults" in _detail(refused)
    assert server.client("viewer").get("/estate").json()["healthy"] is True


# ---------------------------------------------------------------- operations


def test_readyz_names_every_part(server: ApiServer) -> None:
    ready = server.client("viewer").get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"events", "checkpointer", "memory", "estate"}


def test_readyz_is_503_naming_what_is_not_reachable(server: ApiServer) -> None:
    checkpoints = server.home / "checkpoints.sqlite"
    aside = server.home / "checkpoints.sqlite.aside"
    if checkpoints.exists():
        checkpoints.rename(aside)
    checkpoints.mkdir()  # a folder where the checkpoint database should be: it cannot be opened
    try:
        answer = server.client("viewer").get("/readyz")
    finally:
        checkpoints.rmdir()
        if aside.exists():
            aside.rename(checkpoints)
    assert answer.status_code == 503
    body = answer.json()
    assert body["ready"] is False and body["checks"]["events"] == "ok" and body["checks"]["memory"] == "ok"
    assert "checkpointer" in body["detail"] and "not reachable" in body["checks"]["checkpointer"]
    assert server.client("viewer").get("/readyz").status_code == 200


def test_metrics_are_the_event_store_figures(server: ApiServer) -> None:
    # What another process records (a CLI heal, a second server) is counted at the next scrape.
    store = server.events()
    run_id = uuid.uuid4().hex
    store.start_run(run_id, Gap(text="web answers slowly", component="web"))
    store.llm_call(run_id, "m", "diagnose", 120, 30, 0.2, True)
    store.llm_call(run_id, "m", "plan", 80, 20, 0.1, True)
    store.llm_call(run_id, "m", "plan", 0, 0, 0.1, True, usage_known=False)
    store.llm_call(run_id, "m", "plan", 0, 0, 5.0, False, error="timeout")
    text = server.client("viewer").get("/metrics").text
    runs = store.runs(limit=10_000)
    for status in ("running", "healed", "awaiting_approval"):
        n = sum(1 for r in runs if r.status.value == status)
        assert f'agentheal_runs{{status="{status}"}} {float(n)}' in text, status
    healed = sum(1 for r in runs if r.status.value == "healed")
    assert f"agentheal_time_to_heal_seconds_count {float(healed)}" in text
    waiting = sum(1 for r in runs if r.status.value == "awaiting_approval")
    assert f"agentheal_approvals_waiting {float(waiting)}" in text
    assert (
        'agentheal_llm_calls_total{ok="true"} 3.0' in text
        and 'agentheal_llm_calls_total{ok="false"} 1.0' in text
    )
    assert 'agentheal_llm_tokens_total{type="prompt"} 200.0' in text
    assert 'agentheal_llm_tokens_total{type="completion"} 50.0' in text
    assert "agentheal_llm_calls_unknown_usage_total 1.0" in text
    store.record_gap(Gap(text="disk fills up by tomorrow", component="web", kind="predicted"))
    text = server.client("viewer").get("/metrics").text
    kinds = Counter(g.kind.value for g in store.gaps(limit=100_000))
    assert kinds["predicted"] >= 1
    for kind, n in kinds.items():
        assert f'agentheal_gaps_total{{kind="{kind}"}} {float(n)}' in text, kind
    assert "agentheal_heal_pool_jobs" in text and "agentheal_time_to_heal_seconds_bucket" in text
    assert all(line.startswith(("#", "agentheal_")) for line in text.splitlines() if line)
    store.close()


# ---------------------------------------------------------------- limits


def test_oversized_bodies_get_413_naming_the_limit_and_change_nothing(server: ApiServer) -> None:
    admin = server.client("admin")
    before = len(server.events().audit_rows(1000))
    big = {"text": "x" * 70_000}
    refused = admin.post("/feedback", json=big)
    assert refused.status_code == 413 and "65536" in _detail(refused)

    def stream() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"text": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}'

    streamed = admin.post("/feedback", content=stream(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "65536" in _detail(streamed)
    records = [{**HISTORY[0], "gap": f"disk full {i} " + "z" * 300} for i in range(1000)]
    assert admin.post("/memory", json={"records": records}).status_code == 413
    assert len(server.events().audit_rows(1000)) == before


def test_a_token_past_its_rate_gets_429_with_retry_after(drills: ApiServer) -> None:
    viewer = drills.client("limited")
    codes = [viewer.get("/agents/availability").status_code for _ in range(45)]
    assert codes[0] == 200 and codes[-1] == 429, codes
    limited = viewer.get("/agents/availability")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in _detail(limited)
    assert drills.client("admin").get("/agents/availability").status_code == 200  # its own bucket
    assert httpx.get(f"{drills.url}/healthz", trust_env=False).status_code == 200


def test_cors_answers_only_the_configured_origins(server: ApiServer, drills: ApiServer) -> None:
    preflight = {"Origin": "https://ops.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    allowed = httpx.options(f"{server.url}/estate", headers=preflight, trust_env=False)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
    other = httpx.options(f"{server.url}/estate", headers={**preflight, "Origin": "https://evil.example"},
                          trust_env=False)  # fmt: skip
    assert "access-control-allow-origin" not in other.headers
    read = server.client("viewer").get("/agents", headers={"Origin": "https://ops.example"})
    assert read.headers["access-control-allow-origin"] == "https://ops.example"
    off = drills.client("viewer").get("/agents", headers={"Origin": "https://ops.example"})
    assert "access-control-allow-origin" not in off.headers  # not configured: CORS is off


# ---------------------------------------------------------------- alerts, feedback, faults


def _wait_run(client: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/runs/{run_id}")
        if answer.status_code == 200 and answer.json()["status"] not in ("running",):
            return dict(answer.json())
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def _firing(status: str = "firing") -> dict[str, Any]:
    alert = {"status": status, "labels": {"alertname": "WebDown", "component": "web", "severity": "critical"},
             "annotations": {"summary": "web answers nothing"}, "startsAt": "2026-03-01T10:00:00Z",
             "fingerprint": "f00d"}  # fmt: skip
    return {"version": "4", "status": status, "alerts": [alert], "receiver": "agentheal"}


def test_an_injected_fault_is_healed_from_an_alertmanager_webhook(drills: ApiServer) -> None:
    admin, operator, watcher = drills.client("admin"), drills.client("operator"), drills.client("viewer")
    injected = admin.post("/faults", json={"fault": "process_killed", "component": "web"})
    assert injected.status_code == 201, injected.text
    assert injected.json()["fault"] == "process_killed"
    assert watcher.get("/estate").json()["healthy"] is False
    taken = operator.post("/alerts/alertmanager", json=_firing())
    assert taken.status_code == 200, taken.text
    (gap,) = taken.json()["gaps"]
    assert gap["component"] == "web" and gap["status"] == "healing" and gap["run_id"]
    run = _wait_run(watcher, gap["run_id"])
    assert run["status"] == "healed", run
    assert watcher.get("/estate").json()["healthy"] is True
    resolved = operator.post("/alerts/alertmanager", json=_firing("resolved")).json()
    assert [g["status"] for g in resolved["gaps"]] == ["closed"]
    actions = {
        r.action for r in drills.events().audit_rows(100) if r.actor in ("test-admin", "test-operator")
    }
    assert {"fault", "alert", "gap"} <= actions
    healed = [r for r in drills.events().runs(limit=10_000) if r.status.value == "healed" and r.finished_at]
    took = [(r.finished_at - r.started_at).total_seconds() for r in healed if r.finished_at]
    metrics = watcher.get("/metrics").text
    assert took and f"agentheal_time_to_heal_seconds_count {float(len(took))}" in metrics
    for bound in ("0.5", "1.0", "10.0", "60.0"):
        under = sum(1 for t in took if t <= float(bound))
        assert f'agentheal_time_to_heal_seconds_bucket{{le="{bound}"}} {float(under)}' in metrics, bound
    summed = re.search(r"^agentheal_time_to_heal_seconds_sum (\S+)$", metrics, re.M)
    assert summed is not None and abs(float(summed.group(1)) - sum(took)) < 0.01


def test_bad_webhooks_and_feedback_are_named_and_change_nothing(drills: ApiServer) -> None:
    operator = drills.client("operator")
    store = drills.events()
    before = (len(store.runs(limit=10_000)), len(store.gaps(limit=10_000)))
    nameless = {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {}}]}
    missing = operator.post("/alerts/alertmanager", json=nameless)
    assert missing.status_code == 400 and "alerts.0.labels.alertname" in _detail(missing)
    assert (
        operator.post(
            "/alerts/alertmanager", content=b"{broken", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    unknown = operator.post("/feedback", json={"text": "it is slow", "component": "ghost"})
    assert unknown.status_code == 400 and "ghost" in _detail(unknown) and "web" in _detail(unknown)
    assert operator.post("/feedback", json={"text": ""}).status_code == 422
    numeric = _firing()
    numeric["alerts"][0]["startsAt"] = 1700000000
    refused = operator.post("/alerts/alertmanager", json=numeric)
    assert refused.status_code == 422 and "startsAt" in refused.text and "ISO 8601" in refused.text
    assert (len(store.runs(limit=10_000)), len(store.gaps(limit=10_000))) == before


def test_feedback_naming_a_component_opens_a_gap_on_it(drills: ApiServer) -> None:
    answer = drills.client("operator").post("/feedback", json={"text": "the web page looks empty to me"})
    assert answer.status_code == 200, answer.text
    (gap,) = answer.json()["gaps"]
    assert gap["component"] == "web" and gap["text"].startswith("user reports:")
    assert gap["status"] in ("healing", "not_healed")
    if gap["run_id"]:
        _wait_run(drills.client("viewer"), gap["run_id"])


def test_with_watch_feedback_joins_the_detection_loop_and_is_healed(tmp_path: Path) -> None:
    estate = tiny_estate(tmp_path)
    srv = ApiServer(tmp_path, estate, "--watch", "--watch-interval", "0.5")
    try:
        estate_up(srv)
        operator, viewer = srv.client("operator"), srv.client("viewer")
        answer = operator.post("/feedback", json={"text": "web shows a blank page to every visitor"})
        assert answer.status_code == 200, answer.text
        (gap,) = answer.json()["gaps"]
        assert gap["status"] == "queued" and gap["component"] == "web" and gap["run_id"] is None
        deadline = time.monotonic() + 90
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not runs:
            listed = viewer.get("/runs", params={"component": "web"}).json()["runs"]
            runs = [r for r in listed if r["gap_text"] == gap["text"] and r["status"] != "running"]
            time.sleep(0.5)
        assert runs, "the watch loop never healed the gap the feedback opened"
    finally:
        srv.stop()
        stop_processes_under(estate.parent)
