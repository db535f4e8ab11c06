"""A running copy of the shopfront sample estate for a test module, with its own agentheal home.

Starting it costs about a second; a module shares one copy and the tests in it leave it healthy.
At the end every process of the copy is stopped (`estate down`, then anything still running
in its folder, so a failed test cannot leak processes into the next).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import Estate, load_estate
from agentheal.eval import materialize
from conftest import stop_processes_under


@dataclass
class Shopfront:
    estate_file: Path
    settings: Settings
    estate: Estate
    backend: LocalBackend

    @property
    def root(self) -> Path:
        return self.estate_file.parent

    def url(self, component: str, path: str = "") -> str:
        probe = self.estate.component(component).probes[0].http
        assert probe is not None
        return probe.removesuffix("/health") + path


def processes_under(root: Path) -> list[str]:
    """Live processes whose working folder lies under `root` (the estate's processes run there)."""
    root = root.resolve()
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cwd = Path(proc.cwd())
            if (cwd == root or root in cwd.parents) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except (psutil.Error, OSError):
            continue
    return found


@contextlib.contextmanager
def running_shopfront(folder: Path) -> Iterator[Shopfront]:
    """Materialize shopfront under `folder`, start it with a fresh home, and stop it at the end."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AGENTHEAL_") or name == "OPENAI_API_KEY":
                mp.delenv(name)
        mp.setenv("AGENTHEAL_CONFIG", str(folder / "no-agentheal.toml"))
        mp.setenv("AGENTHEAL_HOME", str(folder / "home"))
        estate_file = materialize("shopfront", folder / "shopfront")
        settings = Settings(home=folder / "home")
        estate = load_estate(estate_file)
        backend = LocalBackend.from_settings(estate, settings)
        shop = Shopfront(estate_file, settings, estate, backend)
        try:
            results = backend.up()
            assert all(r.outcome == "ok" for r in results), [r.detail for r in results]
            yield shop
        finally:
            backend.down()
            stop_processes_under(estate_file.parent)
