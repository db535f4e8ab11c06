"""A running estate for the demo and the eval: a copy on free ports, a home of its own, and a sure stop.

`EstateSession` copies a sample estate (or an estate file's folder) into a working folder, gives it
an agentheal home there (event store, memory, checkpoints, the estate's pid records), writes the
policy the session heals under, and starts the estate. `stop()` stops it with the backend, then
kills every process group still running from the working folder, so nothing is left behind
however the session ended (a failed heal, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import Estate

# The demo and the eval break and heal the same components several times within minutes: the
# built-in limit of 3 restarts per component in 10 minutes is meant for production, not for drills.
DRILL_POLICY = """\
# Written by agentheal's demo/eval for this session only: the built-in policy, with a restart
# limit that fits a drill which breaks the same component several times in a few minutes.
max_auto_risk: medium
rate_limits:
  - action: restart
    max: 10
    window_s: 600
"""
_RUNTIME = ("logs", "data", "queue", "__pycache__", "*.pyc", "*.bad", ".*.tmp")


class SessionError(Exception):
    """The estate of a session could not be prepared or started."""


def processes_under(folder: Path) -> list[psutil.Process]:
    """Live processes (not zombies) whose working folder lies under `folder`, or whose command names it."""
    root = folder.resolve()
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            cwd = Path(proc.cwd())
            ours = cwd == root or root in cwd.parents or any(str(root) in arg for arg in proc.cmdline())
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_under(folder: Path, timeout_s: float = 5.0) -> list[str]:
    """SIGKILL the process groups of every process running from `folder`; what was killed."""
    own = os.getpgid(0)
    killed: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        procs = processes_under(folder)
        if not procs or time.monotonic() >= deadline:
            return killed
        for proc in procs:
            with contextlib.suppress(psutil.Error, OSError):
                killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                group = os.getpgid(proc.pid)
                if group != own:
                    os.killpg(group, signal.SIGKILL)
                else:
                    proc.kill()
        for proc in procs:
            with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                proc.wait(timeout=0.5)  # reaps our own children, so no zombie stays behind
        time.sleep(0.05)


def prepare_estate(estate: str, dest: Path, base: Path | None = None, name: str | None = None) -> Path:
    """Copy a sample estate (by name) or an estate file's folder to `dest`; the copy's estate file.

    A sample estate gets free ports (`materialize`); an estate file of your own is copied as it is
    (its ports must be free), without its runtime folders (logs, data, queue).

    Raises:
        SessionError: Unknown sample estate, missing file, or an invalid copy.
    """
    from agentheal.estate.model import EstateError, load_estate
    from agentheal.eval.estates import materialize, sample_estates

    try:
        if "/" not in estate and not estate.endswith((".yaml", ".yml")):
            if estate not in sample_estates():
                known = ", ".join(sample_estates()) or "none"
                raise SessionError(f"no sample estate {estate!r} (known: {known})")
            return materialize(estate, dest, estate_name=name)
        source = (base or Path.cwd()) / estate
        if not source.is_file():
            raise SessionError(f"{source}: estate file not found")
        shutil.copytree(
            source.parent, dest, symlinks=True, ignore=shutil.ignore_patterns(*_RUNTIME), dirs_exist_ok=True
        )
        copy = dest / source.name
        load_estate(copy)
        return copy
    except EstateError as exc:
        raise SessionError(str(exc)) from None


class EstateSession:
    """A copy of an estate, started under its own home; use as a context manager."""

    def __init__(
        self,
        folder: Path,
        estate: str = "shopfront",
        base: Path | None = None,
        llm_url: str | None = None,
        policy: str | None = DRILL_POLICY,
    ) -> None:
        """Prepare (not start) a session.

        Args:
            folder: An empty or missing working folder; everything of the session lives in it.
            estate: A sample estate name, or an estate file (relative to `base`).
            base: The folder an estate file is relative to (the scenario file's folder).
            llm_url: An OpenAI-compatible endpoint; None heals offline.
            policy: The policy file's text, written into the home; None: the built-in policy.
        """
        from agentheal.config import Settings
        from agentheal.estate.local import LocalBackend
        from agentheal.estate.model import load_estate

        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.estate_file = prepare_estate(estate, self.folder / "estate", base)
        home = self.folder / "home"
        self.policy_file: Path | None = None
        if policy is not None:
            home.mkdir(parents=True, exist_ok=True)
            self.policy_file = home / "policy.yaml"
            self.policy_file.write_text(policy, encoding="utf-8")
        # Given values beat AGENTHEAL_* variables: the session's home, LLM and policy are its own.
        self.settings: Settings = Settings(
            home=home, llm_base_url=llm_url, policy_file=self.policy_file, dry_run=False
        )
        self.estate: Estate = load_estate(self.estate_file)
        self.backend: LocalBackend = LocalBackend.from_settings(self.estate, self.settings)
        self.started = False

    def __enter__(self) -> EstateSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait for its probes.

        Raises:
            SessionError: A component did not come up (its detail says why).
        """
        self.started = True
        results = self.backend.up()
        failed = [f"{r.component}: {r.outcome}: {r.detail}" for r in results if r.outcome != "ok"]
        if failed:
            raise SessionError(f"estate {self.estate.name} did not come up: " + "; ".join(failed))

    def healthy(self) -> bool:
        """Is every component running and passing its probes?"""
        return all(h.healthy for h in self.backend.status())

    def stop(self) -> list[str]:
        """Stop the estate, then kill whatever still runs from the working folder; what had to be killed."""
        if not self.started:
            return []
        with contextlib.suppress(Exception):  # a broken record must not keep processes alive
            self.backend.down()
        return kill_under(self.folder)
