"""Time to heal a killed process, fault to validated fix, as a ratio to a bare restart-on-exit loop.

Both sides run the same real process (`python3 -m http.server` on loopback) and count from the
SIGKILL until the process answers HTTP again. The baseline is a supervisor that waits on the
child and starts it again the moment it exits. Ours notices the death from the component's health
(as the watch loop's probe does), then runs the whole heal graph: triage, recall, routing,
diagnosis, a plan (persona playbook, then memory, then a replayed playbook), the policy guard,
the restart, validation, and learning into the event store and memory.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPEAT = 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_answers(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered")
        time.sleep(0.01)


def _bare(folder: Path) -> list[float]:
    """A restart-on-exit loop: wait() on the child, start it again, time until it answers."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"]  # the same command as ours
    times = []
    child = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_answers(url)
        for _ in range(REPEAT):
            started = time.perf_counter()
            child.kill()
            child.wait()
            child = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_answers(url)
            times.append(time.perf_counter() - started)
    finally:
        child.kill()
        child.wait()
    return times


def _ours(folder: Path) -> tuple[list[float], list[str]]:
    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import load_estate
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer
    from agentheal.models import Gap

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    (folder / "www").mkdir()
    estate_file = folder / "estate.yaml"
    estate_file.write_text(
        f"""name: bench
components:
  web:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    workdir: www
    probes:
      - http: {url}
        expect_status: 200
    logs: [logs/web.log]
"""
    )
    policy = folder / "policy.yaml"
    policy.write_text("rate_limits: []\n")  # repeated restarts are what this bench does
    settings = Settings(home=folder / "home", llm_base_url=None)
    estate = load_estate(estate_file)
    backend = LocalBackend(estate, settings.estates_dir / estate.name)
    ctx = HealContext(settings=settings, estate_path=estate_file, policy_path=policy)
    backend.up()
    times, sources = [], []
    try:
        with Healer(ctx) as healer:
            for _ in range(REPEAT + 1):
                pid = backend.health("web").pid
                assert pid, "web is not running"
                started = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                while backend.health("web").running:
                    time.sleep(0.01)
                result = healer.heal(Gap(text="web is down: process not running", component="web"))
                if result["status"] != "healed" or not _answers(url):
                    raise RuntimeError(f"heal did not heal: {result['status']} {result.get('reason')}")
                times.append(time.perf_counter() - started)
                sources.append(result["source"])
    finally:
        backend.down()
    return times[1:], sources[1:]  # the first heal also loads chromadb and the embedding model


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        bare = statistics.median(_bare(Path(a)))
        times, sources = _ours(Path(b))
    ours = statistics.median(times)
    ratio = ours / bare
    replays = sum(s == "playbook" for s in sources)
    return [
        {
            "name": "time_to_heal_killed_process",
            "value": round(ours, 3),
            "unit": "s",
            "baseline": round(bare, 3),
            "ratio": round(ratio, 2),
            "goal": f"within 3x of a bare restart-on-exit loop (median of {REPEAT}, {replays} replays)",
            "met": ratio <= 3,
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
