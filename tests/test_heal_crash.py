"""A heal whose process is killed mid-run loses nothing and is resumed from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentheal.events import EventStore
from conftest import free_port

pytestmark = pytest.mark.slow

SLOW_SERVER = """\
import http.server, sys, time
time.sleep(float(sys.argv[2]))  # a slow start: the heal is still inside `execute` while it waits
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def _estate(tmp_path: Path) -> Path:
    root = tmp_path / "estate"
    root.mkdir()
    (root / "slow.py").write_text(SLOW_SERVER)
    port = free_port()
    estate = root / "estate.yaml"
    estate.write_text(
        f"""name: crashy
components:
  web:
    command: [python3, slow.py, "{port}", "2.5"]
    probes:
      - http: http://127.0.0.1:{port}/
        expect_status: 200
    logs: [logs/web.log]
    start_timeout_s: 20
"""
    )
    return estate


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentheal", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_heal_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    estate = _estate(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
    env["AGENTHEAL_HOME"] = str(tmp_path / "home")
    up = _cli("estate", "up", str(estate), env=env)
    assert up.wait(60) == 0
    try:
        status = _cli("estate", "status", str(estate), "--json", env=env)
        out, _ = status.communicate(timeout=60)
        pid = json.loads(out)["components"][0]["pid"]
        os.kill(pid, signal.SIGKILL)

        heal_args = ("heal", "--gap", "web is down", "--component", "web", "--estate", str(estate), "--json")
        first = _cli(*heal_args, env=env)
        assert first.stderr is not None
        for line in first.stderr:  # live progress, node by node
            if "execute" in line or line.strip().startswith("guard"):
                break
        time.sleep(0.5)  # inside the restart, waiting for the slow start
        first.kill()
        first.wait(10)

        store = EventStore(f"sqlite:///{tmp_path / 'home' / 'events.sqlite'}")
        (row,) = store.runs()
        assert row.status == "running"
        recorded = [e.node for e in store.run(row.run_id).timeline]  # type: ignore[union-attr]
        assert recorded[:3] == ["triage", "recall", "route"]  # what was recorded before the kill is there

        second = _cli(*heal_args, env=env)
        out, err = second.communicate(timeout=120)
        result = json.loads(out)
        assert second.returncode == 0, err
        assert result["run_id"] == row.run_id and result["status"] == "healed"
        detail = store.run(row.run_id)
        assert detail is not None
        assert "resume" in [e.node for e in detail.timeline]
    finally:
        _cli("estate", "down", str(estate), env=env).wait(60)
