"""`agentheal demo`: a small estate of real processes, broken and healed three times.

The first heal uses the availability persona's playbook, the second the plan memory
remembered, the third replays it as a playbook, all with no LLM. Everything runs under a
temporary home folder and every process it starts is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_API = """\
import http.server, sys, urllib.request
UPSTREAM = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            urllib.request.urlopen(UPSTREAM, timeout=1).read()
            self.send_response(200)
        except Exception as exc:
            print("ERROR upstream unreachable:", exc, flush=True)
            self.send_response(503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_demo_estate(folder: Path) -> Path:
    """A `web` static server and an `api` that depends on it, on free loopback ports."""
    web, api = _free_port(), _free_port()
    (folder / "www").mkdir(parents=True)
    (folder / "conf").mkdir()
    (folder / "www" / "index.html").write_text("<h1>shop</h1>\n")
    (folder / "conf" / "web.conf").write_text("greeting = hello\n")
    (folder / "api.py").write_text(_API)
    estate = folder / "estate.yaml"
    estate.write_text(
        f"""name: demo
components:
  web:
    command: [python3, -m, http.server, "{web}", --bind, 127.0.0.1]
    workdir: www
    probes:
      - http: http://127.0.0.1:{web}/
        expect_status: 200
    logs: [logs/web.log]
    configs: [conf/web.conf]
    description: static front end
  api:
    command: [python3, api.py, "{api}", "http://127.0.0.1:{web}/"]
    probes:
      - http: http://127.0.0.1:{api}/
        expect_status: 200
        latency_budget_ms: 1500
    logs: [logs/api.log]
    depends_on: [web]
    description: API in front of web
"""
    )
    return estate


def run_demo(keep: bool = False) -> int:
    """Run the demo; 0 when every fault was healed and validated."""
    from rich.console import Console
    from rich.markup import escape

    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import load_estate
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer
    from agentheal.models import Gap

    console = Console(highlight=False)
    folder = Path(tempfile.mkdtemp(prefix="agentheal-demo-"))
    settings = Settings(home=folder / "home", llm_base_url=None)
    estate_file = write_demo_estate(folder / "estate")
    estate = load_estate(estate_file)
    backend = LocalBackend(estate, settings.estates_dir / estate.name)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    outcomes: list[dict[str, Any]] = []
    try:
        console.rule("[bold]agentheal demo[/]: a small estate of real processes, no LLM")
        console.print(f"home {settings.home_dir}\nestate {estate_file}")
        for started_one in backend.up():
            console.print(
                f"  up {started_one.component}: {started_one.outcome} {started_one.detail}", markup=False
            )

        def show(node: str, detail: str, data: dict[str, Any]) -> None:
            console.print(f"  [cyan]{node:>9}[/]  {escape(detail)}", soft_wrap=True)

        ctx = HealContext(settings=settings, estate_path=estate_file, progress=show)
        for round_no in (1, 2, 3):
            console.rule(f"fault {round_no}/3: web killed with SIGKILL")
            started = time.monotonic()
            pid = backend.health("web").pid
            if pid:
                os.kill(pid, signal.SIGKILL)
            detected = _wait_unhealthy(backend, "web")
            console.print(f"  detected: web unhealthy after {time.monotonic() - started:.2f} s ({detected})")
            gap = Gap(text="web is down: connection refused", component="web", evidence=[detected])
            with Healer(ctx) as healer:
                result = healer.heal(gap)
            took = time.monotonic() - started
            outcomes.append({**result, "seconds": took})
            console.print(
                f"  [bold]{result['status']}[/] in {took:.2f} s — persona {result['persona']}, "
                f"plan from {result['source']}, LLM calls {result['llm']['calls']}"
            )
        console.rule("what was measured")
        for i, r in enumerate(outcomes, 1):
            console.print(
                f"  heal {i}: {r['status']:<9} {r['seconds']:5.2f} s  source {r['source']:<9} "
                f"actions {len(r['actions'])}  LLM calls {r['llm']['calls']}  run {r['run_id'][:12]}"
            )
        console.print("  `AGENTHEAL_HOME=... agentheal runs show RUN` tells each run's whole story.")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the estate[/]")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for stopped in backend.down():
            console.print(f"  down {stopped.component}: {stopped.outcome}", markup=False)
        if keep:
            console.print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    healed = len(outcomes) == 3 and all(r["status"] == "healed" for r in outcomes)
    return 0 if healed else 1


def _wait_unhealthy(backend: Any, component: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = backend.health(component)
        if not health.healthy:
            return str(health.detail)
        time.sleep(0.1)
    return "still healthy"


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(run_demo())
