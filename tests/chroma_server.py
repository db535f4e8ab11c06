"""A throwaway Chroma server for the memory tests: `chroma run` (the CLI that ships with the chromadb
package) on a free loopback port with its data in a temporary folder, started by the first test that
asks and stopped, its folder removed, at the end of the session. Each test gets it with no memory
collection in it.

`AGENTHEAL_TEST_CHROMA_URL=http://HOST:PORT` uses a server already running instead. Without either,
the tests that need it are skipped with a message naming what is missing, or fail with it under
`AGENTHEAL_TEST_POSTGRES_REQUIRED=1` (CI: the scale-out tests must not pass by being skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.config import Settings
from conftest import free_port

GIVEN_URL = os.environ.get("AGENTHEAL_TEST_CHROMA_URL")
REQUIRED = os.environ.get("AGENTHEAL_TEST_POSTGRES_REQUIRED", "") not in ("", "0")
START_TIMEOUT_S = 60.0  # the server answers after some seconds, more on a busy host


class Missing(Exception):
    """What this host lacks to run a Chroma server for the tests."""


class ChromaServer:
    """A Chroma server: one started here (`process`, `folder`) or one given by its URL."""

    def __init__(
        self, url: str, process: subprocess.Popen[bytes] | None = None, folder: Path | None = None
    ) -> None:
        self.url = url
        self.process = process
        self.folder = folder

    def empty(self) -> None:
        """Drop every collection: the next test starts with none."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        client = chromadb.HttpClient(
            host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False)
        )
        for collection in client.list_collections():
            client.delete_collection(collection.name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _chroma() -> str:
    found = Path(sys.executable).with_name("chroma")
    if found.is_file():
        return str(found)
    on_path = shutil.which("chroma")
    if on_path is None:
        raise Missing("no `chroma` command beside this Python or on PATH (pip install chromadb)")
    return on_path


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start() -> ChromaServer:
    """The server for this session: the one named by AGENTHEAL_TEST_CHROMA_URL, else a new one.

    Raises:
        Missing: no `chroma` command.
        RuntimeError: it did not start (its last output is in the message).
    """
    if GIVEN_URL:
        return ChromaServer(GIVEN_URL.rstrip("/"))
    command = _chroma()
    folder = Path(tempfile.mkdtemp(prefix="agentheal-chroma-"))
    port = free_port()
    log = (folder / "server.log").open("wb")
    # Its own session: the test run's Ctrl-C does not reach it before the cleanup stops it.
    process = subprocess.Popen(
        [command, "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            tail = (folder / "server.log").read_text(errors="replace")[-500:]
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"`chroma run` did not answer on {url} (exit {process.returncode}): {tail}")
        time.sleep(0.1)
    return ChromaServer(url, process, folder)


_shared: ChromaServer | Missing | None = None


def shared(config: pytest.Config) -> ChromaServer:
    """The session's server, started by the first test that asks (stopped at the end of the session);
    Missing again for every asker when it cannot be."""
    global _shared
    if _shared is None:
        try:
            _shared = start()
        except Missing as exc:
            _shared = exc
        else:
            config.add_cleanup(_shared.stop)
    if isinstance(_shared, Missing):
        raise _shared
    return _shared


@pytest.fixture(name="chroma")
def chroma_fixture(request: pytest.FixtureRequest) -> Iterator[ChromaServer]:
    """The session's Chroma server with no collection; the test is skipped, naming what is missing,
    without one."""
    try:
        server = shared(request.config)
    except Missing as exc:
        if REQUIRED:
            pytest.fail(f"Chroma server tests required (AGENTHEAL_TEST_POSTGRES_REQUIRED) but: {exc}")
        pytest.skip(f"Chroma server tests skipped: {exc}")
    server.empty()
    yield server
    server.empty()


def scaleout(
    settings: Settings, postgres: Any, chroma: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """`settings` moved onto the scale-out setup: a new PostgreSQL database at agentheal's schema
    (`postgres`: a pg_cluster.Cluster) for the records, this Chroma server for the vectors; the
    environment names both, for the CLI and other processes."""
    url = postgres.new_database(upgraded=True)
    monkeypatch.setenv("AGENTHEAL_DATABASE_URL", url)
    monkeypatch.setenv("AGENTHEAL_MEMORY_URL", chroma.url)
    return Settings(home=settings.home, database_url=url, memory_url=chroma.url)


@pytest.fixture(params=["embedded", "scaleout"], name="memory_home")
def memory_home_fixture(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A home whose memory is embedded (the default), or on PostgreSQL and the Chroma server."""
    if request.param == "embedded":
        return settings
    return scaleout(
        settings,
        request.getfixturevalue("postgres"),
        request.getfixturevalue("chroma"),
        request.getfixturevalue("monkeypatch"),
    )
