"""The HTTP API's core, served by real uvicorn on a loopback port: gaps healed and followed live,
approvals from a second client, tokens and roles, and a server killed mid-heal that resumes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import load_estate
from agentheal.events import EventStore
from conftest import free_port, served

pytestmark = pytest.mark.slow


def _backend(settings: Settings, estate_file: Path) -> LocalBackend:
    estate = load_estate(estate_file)
    return LocalBackend(estate, settings.estates_dir / estate.name)


def _web_url(estate_file: Path) -> str:
    return str(load_estate(estate_file).components["web"].probes[0].http)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_web(backend: LocalBackend, url: str) -> None:
    (web,) = [h for h in backend.status() if h.name == "web"]
    assert web.pid, web
    os.kill(web.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _answers(url)


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_file: Path) -> Iterator[tuple[Path, LocalBackend]]:
    backend = _backend(settings, tiny_estate_file)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_file, backend
    backend.down()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _events(
    base: str, token: str, run_id: str, last_id: str | None = None
) -> list[tuple[str, dict[str, Any], str]]:
    """A run's server-sent events until `end`: (event, data, id)."""
    headers = _bearer(token) | ({"Last-Event-ID": last_id} if last_id else {})
    found: list[tuple[str, dict[str, Any], str]] = []
    event, ident = "message", ""
    with httpx.stream("GET", f"{base}/runs/{run_id}/events", headers=headers, timeout=60) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                ident = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((event, json.loads(line.split(":", 1)[1]), ident))
                if event == "end":
                    break
                event, ident = "message", ""
    return found


def test_gap_over_http_heals_a_killed_process_followed_live(
    settings: Settings, estate_up: tuple[Path, LocalBackend]
) -> None:
    estate_file, backend = estate_up
    token = TokenStore(settings.home_dir).add("ops", "operator")
    url = _web_url(estate_file)
    with served(create_app(settings, estate_path=estate_file)) as base:
        _kill_web(backend, url)
        posted = httpx.post(
            f"{base}/gaps", json={"text": "web is down: connection refused", "component": "web"},
            headers=_bearer(token),
        )  # fmt: skip
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["run_id"]

        stream = _events(base, token, run_id)
        nodes = [data["node"] for event, data, _ in stream if event == "node"]
        assert nodes[:3] == ["triage", "recall", "route"] and "execute" in nodes and "validate" in nodes
        assert stream[-1][:2] == ("end", {"run_id": run_id, "status": "healed"})
        assert _answers(url)

        # resumed after the third step: only what came after it
        ids = [int(i) for event, _, i in stream if event == "node"]
        again = _events(base, token, run_id, last_id=str(ids[2]))
        assert [int(i) for event, _, i in again if event == "node"] == ids[3:]

        shown = httpx.get(f"{base}/runs/{run_id[:10]}", headers=_bearer(token)).json()
        assert shown["status"] == "healed" and shown["run_id"] == run_id
        assert [a["action"] for a in shown["actions"]] == ["restart"]
        assert [e["node"] for e in shown["story"]["timeline"]] == nodes

        page = httpx.get(
            f"{base}/runs", params={"status": "healed", "component": "web"}, headers=_bearer(token)
        )
        assert [r["run_id"] for r in page.json()["runs"]] == [run_id]
        assert httpx.get(f"{base}/runs", params={"status": "nope"}, headers=_bearer(token)).status_code == 422
        unknown = httpx.post(f"{base}/gaps", json={"text": "x", "component": "ghost"}, headers=_bearer(token))
        assert unknown.status_code == 422 and "ghost" in unknown.text
    (row,) = [r for r in EventStore(settings.events_url).audit_rows() if r.action == "gap"]
    assert (row.actor, row.role, row.door, row.target) == ("ops", "operator", "api", "web")


def test_approval_gated_run_is_approved_from_a_second_client(
    settings: Settings, estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    store = TokenStore(settings.home_dir)
    alice, bob, vic = store.add("alice", "operator"), store.add("bob", "operator"), store.add("vic", "viewer")
    url = _web_url(estate_file)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        gap = {"text": "web down", "component": "web"}
        waiting = httpx.post(f"{base}/gaps?wait=true", json=gap, headers=_bearer(alice), timeout=60)
        assert waiting.status_code == 200, waiting.text
        run_id = waiting.json()["run_id"]
        assert waiting.json()["status"] == "awaiting_approval" and waiting.json()["actions"] == []

        joined = httpx.post(f"{base}/gaps", json=gap, headers=_bearer(alice))
        assert joined.json()["run_id"] == run_id and joined.json()["joined"] is True

        refused = httpx.post(f"{base}/runs/{run_id}/approve", json={}, headers=_bearer(vic))
        assert refused.status_code == 403 and "operator" in refused.json()["detail"]
        shown = httpx.get(f"{base}/runs/{run_id}", headers=_bearer(vic)).json()
        assert shown["status"] == "awaiting_approval" and not _answers(url)
        assert [s["action"] for s in shown["plan"]["steps"]] == ["restart"]  # what the approver approves
        assert (
            shown["reason"]
            == waiting.json()["reason"]
            == "awaiting approval: restart(web): restarts need a person here"
        )

        with httpx.Client(base_url=base, headers=_bearer(bob), timeout=60) as second:
            done = second.post(f"/runs/{run_id}/approve", json={"note": "ok, off-peak"})
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "healed" and _answers(url)
            again = second.post(f"/runs/{run_id}/reject", json={})
            assert again.status_code == 409 and "not awaiting approval" in again.json()["detail"]
            assert second.post("/runs/feedbeefcafe/approve", json={}).status_code == 404
    trail = EventStore(settings.events_url).audit_rows()
    approve = next(r for r in trail if r.action == "approve")
    assert (approve.actor, approve.target, approve.data) == (
        "bob",
        run_id,
        {"by": "bob", "note": "ok, off-peak"},
    )
    forbidden = next(r for r in trail if r.action == "forbidden")
    assert (forbidden.actor, forbidden.outcome) == ("vic", "refused")


def test_no_token_is_refused_everywhere_but_healthz(settings: Settings) -> None:
    store = TokenStore(settings.home_dir)
    viewer = store.add("vic", "viewer")
    with served(create_app(settings)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        for method, path in [
            ("GET", "/runs"), ("GET", "/runs/abcd1234"), ("GET", "/runs/abcd1234/events"), ("POST", "/gaps"),
            ("POST", "/runs/abcd1234/approve"), ("POST", "/runs/abcd1234/reject"), ("GET", "/openapi.json"),
            ("GET", "/docs"), ("GET", "/no/such/path"),
        ]:  # fmt: skip
            for headers in ({}, _bearer("ahk_000000000000_wrong"), {"Authorization": viewer}):
                answer = httpx.request(method, base + path, headers=headers, json={"text": "x"})
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{base}/runs", headers=_bearer(viewer)).status_code == 200
        assert "/gaps" in httpx.get(f"{base}/openapi.json", headers=_bearer(viewer)).json()["paths"]
        assert httpx.post(f"{base}/gaps", json={"text": "x"}, headers=_bearer(viewer)).status_code == 403
        store.revoke("vic")
        assert httpx.get(f"{base}/runs", headers=_bearer(viewer)).status_code == 401
    stored = (settings.home_dir / "tokens.json").read_text()
    assert viewer not in stored and viewer.split("_", 2)[2] not in stored  # the secret may hold "_" itself


SLOW_SERVER = """\
import http.server, sys, time
time.sleep(float(sys.argv[2]))  # a slow start: the heal is still inside `execute` while it waits
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def _serve(env: dict[str, str], estate: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--estate", str(estate)]
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agentheal", *args], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while not _answers(f"http://127.0.0.1:{port}/healthz"):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc


def test_server_killed_mid_heal_resumes_the_run_at_restart(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "estate"
    root.mkdir()
    (root / "slow.py").write_text(SLOW_SERVER)
    web_port = free_port()
    estate = root / "estate.yaml"
    estate.write_text(
        f"""name: crashy
components:
  web:
    command: [python3, slow.py, "{web_port}", "2.5"]
    probes:
      - http: http://127.0.0.1:{web_port}/
        expect_status: 200
    logs: [logs/web.log]
    start_timeout_s: 20
"""
    )
    backend = _backend(settings, estate)
    assert all(r.outcome == "ok" for r in backend.up())
    token = TokenStore(settings.home_dir).add("ops", "operator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
    env |= {"AGENTHEAL_HOME": str(settings.home_dir), "AGENTHEAL_CONFIG": str(tmp_path / "none.toml")}
    first = second = None
    try:
        _kill_web(backend, f"http://127.0.0.1:{web_port}/")
        port = free_port()
        first = _serve(env, estate, port, tmp_path / "serve.log")
        base = f"http://127.0.0.1:{port}"
        posted = httpx.post(
            f"{base}/gaps", json={"text": "web is down", "component": "web"}, headers=_bearer(token)
        )
        run_id = posted.json()["run_id"]
        with httpx.stream(
            "GET", f"{base}/runs/{run_id}/events", headers=_bearer(token), timeout=60
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("node") == "guard":
                    break
        time.sleep(0.5)  # inside the restart, waiting for the slow start
        first.kill()
        first.wait(10)
        row = EventStore(settings.events_url).run(run_id)
        assert row is not None and row.row.status == "running"

        port = free_port()
        second = _serve(env, estate, port, tmp_path / "serve.log")
        deadline, status = time.monotonic() + 60, "running"
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = httpx.get(f"http://127.0.0.1:{port}/runs/{run_id}", headers=_bearer(token)).json()[
                "status"
            ]
        assert status == "healed", (tmp_path / "serve.log").read_text()
        detail = EventStore(settings.events_url).run(run_id)
        assert detail is not None and "resume" in [e.node for e in detail.timeline]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        backend.down()


def test_serve_watch_detects_and_heals_in_the_same_process(
    settings: Settings, estate_up: tuple[Path, LocalBackend]
) -> None:
    from agentheal.detect.config import DetectConfig

    estate_file, backend = estate_up
    token = TokenStore(settings.home_dir).add("eyes", "viewer")
    url = _web_url(estate_file)
    app = create_app(settings, estate_path=estate_file, watch=True, watch_config=DetectConfig(interval_s=0.3))
    with served(app) as base:
        _kill_web(backend, url)
        deadline, healed = time.monotonic() + 30, []
        while not healed and time.monotonic() < deadline:
            time.sleep(0.2)
            page = httpx.get(f"{base}/runs", params={"status": "healed"}, headers=_bearer(token)).json()
            healed = page["runs"]
        assert [r["component"] for r in healed] == ["web"] and _answers(url)
    # its heal went through the server's pool (one heal per component for both doors), and is audited
    gaps = [r for r in EventStore(settings.events_url).audit_rows() if r.action == "gap"]
    assert [(r.actor, r.door, r.target) for r in gaps] == [("watch", "watch", "web")]
