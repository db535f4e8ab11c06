"""`agentheal watch` as a user runs it: heals a killed root component, leaves its dependent to follow,
resumes a run whose process died, and exits 0 on SIGTERM. Real processes, real stores."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentheal.events import EventStore
from conftest import free_port

pytestmark = pytest.mark.slow


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    env["AGENTHEAL_HOME"] = str(tmp_path / "home")
    env["AGENTHEAL_CONFIG"] = str(tmp_path / "no-agentheal.toml")
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentheal", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Lines:
    """The output lines of a process, read in a thread, so a test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self._queue.put(line) for line in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen in {timeout:g} s; output:\n{''.join(self.seen)}")


def _pid(estate: Path, component: str, env: dict[str, str]) -> int:
    out, _ = _cli("estate", "status", str(estate), "--json", env=env).communicate(timeout=60)
    return int(next(c["pid"] for c in json.loads(out)["components"] if c["name"] == component))


def _stop(watch: subprocess.Popen[str]) -> None:
    if watch.poll() is None:
        watch.kill()
        watch.wait(10)


def test_watch_heals_the_root_and_stops_cleanly_on_sigterm(
    tiny_estate_api_file: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    estate = str(tiny_estate_api_file)
    assert _cli("estate", "up", estate, env=env).wait(60) == 0
    watch = _cli("watch", "--estate", estate, "--interval", "0.5", "--plain", env=env)
    try:
        lines = Lines(watch)
        lines.wait_for("watching tiny: 2 component(s)")
        os.kill(_pid(tiny_estate_api_file, "web", env), signal.SIGKILL)
        lines.wait_for("gap opened: incident web critical: web is down: process not running")
        lines.wait_for("heal healed: web")
        lines.wait_for("gap closed: api")  # api recovered with web; it was never healed on its own
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(60) == 0
        lines.wait_for("SIGTERM: stopping; 0 running heal(s) finish first")
        lines.wait_for("stopped after")
    finally:
        _stop(watch)
    store = EventStore(f"sqlite:///{tmp_path / 'home' / 'events.sqlite'}")
    runs = store.runs()
    assert [r.component for r in runs] == ["web"], [(r.component, r.gap_text) for r in runs]
    assert runs[0].status.value == "healed"
    out, _ = _cli("estate", "status", estate, "--json", env=env).communicate(timeout=60)
    assert all(c["healthy"] for c in json.loads(out)["components"])
    assert not any("heal started: api" in line for line in lines.seen)


SLOW_SERVER = """\
import http.server, pathlib, sys, time
delay = sys.argv[2]
time.sleep(float(delay) if delay[0].isdigit() else float(pathlib.Path(delay).read_text()))
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def test_watch_resumes_a_run_whose_process_died(tmp_path: Path) -> None:
    from conftest import stop_processes_under

    root = tmp_path / "estate"
    root.mkdir()
    (root / "slow.py").write_text(SLOW_SERVER)
    estate = root / "estate.yaml"
    port = free_port()
    estate.write_text(
        f"""name: crashy
components:
  web:
    command: [python3, slow.py, "{port}", "2.5"]
    probes:
      - http: http://127.0.0.1:{port}/
    logs: [logs/web.log]
    start_timeout_s: 20
"""
    )
    env = _env(tmp_path)
    watch = None
    try:
        assert _cli("estate", "up", str(estate), env=env).wait(60) == 0
        os.kill(_pid(estate, "web", env), signal.SIGKILL)
        heal = _cli("heal", "--gap", "web is down: process not running", "--component", "web",
                    "--estate", str(estate), env=env)  # fmt: skip
        assert heal.stderr is not None
        for line in heal.stderr:
            if "execute" in line or line.strip().startswith("guard"):
                break
        time.sleep(0.5)  # inside the restart, waiting for the slow start
        heal.kill()
        heal.wait(10)
        store = EventStore(f"sqlite:///{tmp_path / 'home' / 'events.sqlite'}")
        [row] = store.runs()
        assert row.status.value == "running"

        watch = _cli("watch", "--estate", str(estate), "--interval", "0.5", "--plain", env=env)
        lines = Lines(watch)
        lines.wait_for(f"heal resumed (run {row.run_id[:12]})")
        lines.wait_for("heal healed: web")
        watch.send_signal(signal.SIGINT)  # Ctrl-C stops as cleanly as SIGTERM
        assert watch.wait(60) == 0
        detail = store.run(row.run_id)
        assert detail is not None and detail.row.status.value == "healed"
        assert "resume" in [e.node for e in detail.timeline]
        assert len(store.runs()) == 1  # resumed, not started again
    finally:
        if watch is not None:
            _stop(watch)
        _cli("estate", "down", str(estate), env=env).wait(60)
        stop_processes_under(root)


def test_a_second_sigterm_stops_watch_at_once_and_keeps_the_running_heal_open(tmp_path: Path) -> None:
    from conftest import stop_processes_under

    root = tmp_path / "estate"
    root.mkdir()
    (root / "slow.py").write_text(SLOW_SERVER)
    (root / "delay").write_text("0")
    estate = root / "estate.yaml"
    port = free_port()
    estate.write_text(
        f"""name: stuck
components:
  web:
    command: [python3, slow.py, "{port}", delay]
    probes:
      - http: http://127.0.0.1:{port}/
    start_timeout_s: 120
"""
    )
    env = _env(tmp_path)
    watch = None
    try:
        assert _cli("estate", "up", str(estate), env=env).wait(60) == 0
        (root / "delay").write_text("600")  # its restart never answers while the test runs
        watch = _cli("watch", "--estate", str(estate), "--interval", "0.5", "--plain", env=env)
        lines = Lines(watch)
        lines.wait_for("watching stuck: 1 component(s)")
        os.kill(_pid(estate, "web", env), signal.SIGKILL)
        lines.wait_for("heal started: web")
        store = EventStore(f"sqlite:///{tmp_path / 'home' / 'events.sqlite'}")
        deadline = time.monotonic() + 60
        while not store.runs() and time.monotonic() < deadline:  # the heal's thread started its run
            time.sleep(0.1)
        watch.send_signal(signal.SIGTERM)
        lines.wait_for("SIGTERM: stopping; 1 running heal(s) finish first")
        watch.send_signal(signal.SIGTERM)
        lines.wait_for("stopping now; open heal runs resume from their checkpoints at the next start")
        assert watch.wait(30) == 0
        assert not any("stopped after" in line for line in lines.seen)
        [row] = store.runs()
        assert row.status.value == "running"  # open, for the next start to resume
    finally:
        if watch is not None:
            _stop(watch)
        stop_processes_under(root)
