"""A throwaway PostgreSQL for the storage tests: `initdb` in a temporary folder (as the `postgres`
user when the tests run as root: initdb refuses root), started on a free loopback port without
fsync, stopped at the end of the session; each test gets a database of its own.

`AGENTHEAL_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/DB` uses a server already running
instead (each test's database is made there). Without either, the PostgreSQL half of the storage
tests is skipped with a message naming what is missing, or fails with it under
`AGENTHEAL_TEST_POSTGRES_REQUIRED=1` (CI: the tests must not pass by being skipped).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from agentheal.config import Settings
from conftest import free_port

# Read at import: the `settings` fixture clears AGENTHEAL_* before a test's fixtures ask for the server.
GIVEN_URL = os.environ.get("AGENTHEAL_TEST_POSTGRES_URL")
REQUIRED = os.environ.get("AGENTHEAL_TEST_POSTGRES_REQUIRED", "") not in ("", "0")


class Missing(Exception):
    """What this host lacks to run a PostgreSQL server for the tests."""


class Cluster:
    """A PostgreSQL server: one started here (`bindir`, `folder`) or one given by its URL."""

    def __init__(self, admin_url: str, bindir: Path | None = None, folder: Path | None = None) -> None:
        self.admin_url = admin_url
        self.bindir = bindir
        self.folder = folder
        self.template: str | None = None

    def new_database(self, upgraded: bool = False) -> str:
        """A new database, empty or (`upgraded`) at agentheal's schema; its URL."""
        import psycopg

        name = f"agentheal_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self._template()}"' if upgraded else ""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self._url(name)

    def _url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def _template(self) -> str:
        """A database `agentheal db upgrade` made, once a session: copying it is faster than upgrading."""
        if self.template is None:
            import sqlalchemy as sa

            from agentheal.storage import schema
            from agentheal.storage.checkpoints import setup_checkpoints
            from agentheal.storage.urls import sqlalchemy_url

            url = self.new_database()
            engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
            schema.upgrade(engine)
            engine.dispose()
            setup_checkpoints(url)
            self.template = url.rsplit("/", 1)[1]
        return self.template

    def stop(self) -> None:
        if self.bindir is None or self.folder is None:
            return
        _as_postgres(
            [str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"]
        )
        shutil.rmtree(self.folder, ignore_errors=True)


_PREFIX = "agentheal-pg-"
_OWNER = "owner.pid"  # the pid of the process that started the server, beside its data folder


def reap(bindir: Path) -> list[Path]:
    """Stop and remove the servers earlier test sessions started and left running when they were
    killed (their `stop` never ran): those whose starting process is gone. Returns their folders."""
    reaped = []
    for folder in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            pid = int((folder / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or one starting right now
        if _alive(pid):
            continue
        if (folder / "data" / "postmaster.pid").exists():
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"])
        shutil.rmtree(folder, ignore_errors=True)
        reaped.append(folder)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _root() -> bool:
    return os.geteuid() == 0


def _as_postgres(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if _root():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(found):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    raise Missing(
        "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    )


def start() -> Cluster:
    """The server for this session: the one named by AGENTHEAL_TEST_POSTGRES_URL, else a new one.

    Raises:
        Missing: no server binaries, or (as root) no `postgres` user or `runuser` to run initdb as.
    """
    if GIVEN_URL:
        return Cluster(GIVEN_URL)
    bindir = _bindir()
    if _root():
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Missing("running as root and there is no `postgres` user to run initdb as") from None
        if shutil.which("runuser") is None:
            raise Missing("running as root and there is no `runuser` to run initdb as postgres")
    reap(bindir)
    folder = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (folder / _OWNER).write_text(f"{os.getpid()}\n")  # (before the chown: the folder is still ours)
    if _root():
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "data", free_port()
    made = _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N"])
    if made.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {made.stderr[-500:]}")
    # no fsync: the data is thrown away with the folder; sockets in the folder, not /var/run
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    # -l: the server's output to a file, not to pg_ctl's stdout (a pipe that would stay open)
    log = str(data / "server.log")
    started = _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, "-w", "start"])
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {started.stdout[-300:]} {started.stderr[-300:]}")
    return Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", bindir, folder)


_shared: Cluster | Missing | None = None


def shared(config: pytest.Config) -> Cluster:
    """The session's server, started by the first test module that asks (stopped at the end of the
    session); Missing again for every asker when it cannot be.
    """
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


# -- fixtures: test modules import them by name --


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture(request: pytest.FixtureRequest) -> Cluster:
    """The session's PostgreSQL server; the test is skipped, naming what is missing, without one."""
    try:
        return shared(request.config)
    except Missing as exc:
        if REQUIRED:
            pytest.fail(f"PostgreSQL tests required (AGENTHEAL_TEST_POSTGRES_REQUIRED) but: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


def _home(request: pytest.FixtureRequest, settings: Settings, upgraded: bool) -> Settings:
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres").new_database(upgraded=upgraded)
    request.getfixturevalue("monkeypatch").setenv("AGENTHEAL_DATABASE_URL", url)
    return Settings(home=settings.home, database_url=url)


@pytest.fixture(params=["sqlite", "postgres"], name="home")
def home_fixture(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A home on one backend, the PostgreSQL one in a new, empty database (the environment names it
    too, for the CLI)."""
    return _home(request, settings, upgraded=False)


@pytest.fixture(params=["sqlite", "postgres"], name="ready_home")
def ready_home_fixture(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A home on one backend, the PostgreSQL one in a new database at agentheal's schema (as
    `agentheal db upgrade` leaves it); the environment names it too, for the CLI."""
    return _home(request, settings, upgraded=True)
