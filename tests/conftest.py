"""Shared fixtures: isolated settings, and a tiny estate of real processes on free loopback ports.

`tiny_estate_file` is the contract estate (one `web` component, `python3 -m http.server`);
`tiny_estate_api_file` adds `api`, which depends on `web` and answers 200 only while web does.
Whatever a test starts from such an estate is stopped at teardown, however the test ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agentheal.config import Settings

_API_SCRIPT = """\
import http.server, sys, urllib.request

PORT, WEB = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            urllib.request.urlopen(WEB, timeout=1).read()
            self.send_response(200)
        except Exception as e:
            print(f"upstream web failed: {e}", file=sys.stderr, flush=True)
            self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""


# The real-LLM-server tier runs only under `make test-llm` (it needs llama.cpp and a model file).
collect_ignore = [] if os.environ.get("AGENTHEAL_TIER") == "llm-server" else ["llm_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(app: Any, port: int | None = None) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread on a loopback port (a free one unless given); its base URL."""
    import threading

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def tiny_estate(tmp_path: Path, api: bool = False) -> Path:
    """Write the contract's tiny estate under `tmp_path/estate` and return the estate file.

    Args:
        tmp_path: The test's temporary folder.
        api: Also add an `api` component that depends on `web`.
    """
    root = tmp_path / "estate"
    (root / "www").mkdir(parents=True)
    (root / "conf").mkdir()
    (root / "www" / "index.html").write_text("<h1>ok</h1>\n")
    (root / "conf" / "web.conf").write_text("greeting = hello\n")
    port = free_port()
    text = f"""name: tiny
components:
  web:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    workdir: www
    probes:
      - http: http://127.0.0.1:{port}/
        expect_status: 200
    logs: [logs/web.log]
    configs: [conf/web.conf]
    depends_on: []
"""
    if api:
        api_port = free_port()
        (root / "api.py").write_text(_API_SCRIPT)
        text += f"""  api:
    command: [python3, api.py, "{api_port}", "http://127.0.0.1:{port}/"]
    probes:
      - http: http://127.0.0.1:{api_port}/
        expect_status: 200
    logs: [logs/api.log]
    depends_on: [web]
"""
    estate = root / "estate.yaml"
    estate.write_text(text)
    return estate


def stop_processes_under(root: Path) -> None:
    """Kill every process group whose member runs in, or names, a folder under `root`."""
    root = root.resolve()
    groups: set[int] = set()
    own = os.getpgid(0)
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            cwd = Path(proc.cwd())
            ours = cwd == root or root in cwd.parents or any(str(root) in arg for arg in proc.cmdline())
            if ours:
                groups.add(os.getpgid(proc.pid))
        except (psutil.Error, OSError):
            continue
    for group in groups - {own}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while groups - {own} and time.monotonic() < deadline:
        alive = []
        for group in groups - {own}:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-group, os.WNOHANG)  # reap our own children among them
            try:
                os.killpg(group, 0)
                alive.append(group)
            except (ProcessLookupError, PermissionError):
                continue
        if not alive or all(_only_zombies(g) for g in alive):
            break
        time.sleep(0.05)


def _only_zombies(group: int) -> bool:
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


@pytest.fixture
def tiny_estate_file(tmp_path: Path) -> Iterator[Path]:
    """The contract's one-component estate (`web`); its processes are stopped at teardown."""
    path = tiny_estate(tmp_path)
    yield path
    stop_processes_under(path.parent)


@pytest.fixture
def tiny_estate_api_file(tmp_path: Path) -> Iterator[Path]:
    """`web` plus `api` (depends on web); their processes are stopped at teardown."""
    path = tiny_estate(tmp_path, api=True)
    yield path
    stop_processes_under(path.parent)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with their home in tmp_path and nothing from the environment or an agentheal.toml."""
    for name in list(os.environ):
        if name.startswith("AGENTHEAL_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTHEAL_CONFIG", str(tmp_path / "no-agentheal.toml"))
    monkeypatch.setenv("AGENTHEAL_HOME", str(tmp_path / "home"))
    return Settings(home=tmp_path / "home")
