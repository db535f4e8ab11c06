"""The checks the evolve graph added to detection: `home/evolution/checks.yaml`.

A fingerprint healed again and again by an action no schedule can run ahead of time (a restart, a
rollback) gets an `add_check` evolution: its component is probed more often than the detection
config says, so the next time it breaks it is caught sooner (the time to detect of its gaps is
how the evolution is judged). The file is a versioned change under the home folder, written by
`agentheal evolve` and put back byte for byte by `agentheal evolutions revert`; a running watch
re-reads it when its modification time changes, as it does the operator's mutes.

    checks:
      - component: inventory
        check: probes       # the component's own probes, the only kind of check so far
        every_s: 2.5        # its probe interval from now on (the shorter of this and the config's)
        why: "'inventory is down: process not running' healed 4 times in 7 days"
        after: restart      # the action that healed it each time (for the reader)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EvolvedCheck(BaseModel):
    """One added check: a component probed every `every_s` seconds."""

    model_config = ConfigDict(extra="forbid")

    component: str = Field(min_length=1)
    check: Literal["probes"] = "probes"
    every_s: float = Field(gt=0, le=86_400, description="The component's probe interval from now on.")
    why: str = ""
    after: str | None = Field(default=None, description="The action that healed the pattern.")


class Checks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[EvolvedCheck] = Field(default_factory=list)


def checks_file(home: Path) -> Path:
    """Where the evolved checks of a home folder are kept."""
    return home / "evolution" / "checks.yaml"


class CheckBook:
    """The evolved checks of one home folder, re-read when the file changes."""

    def __init__(self, home: Path, components: set[str] | None = None) -> None:
        self.path = checks_file(home)
        self.components = components  # the estate's, to name a check on a component it lacks
        self._stamp: tuple[int, int] | None = None
        self.checks: list[EvolvedCheck] = []
        self.problem: str | None = None  # a damaged file or an unknown component, reported once
        self.refresh()

    def refresh(self) -> bool:
        """Read the file again if it changed since the last read; whether the checks changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            changed = bool(self.checks)
            self._stamp, self.checks = None, []
            return changed
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        import yaml

        before = self.checks
        try:
            raw = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
            self.checks = Checks.model_validate(raw).checks
        except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
            self.checks = []
            self.problem = f"{self.path}: evolved checks not read ({exc}); the config's intervals apply"
            return bool(before)
        named = {c.component for c in self.checks}
        unknown = sorted(named - self.components) if self.components is not None else []
        if unknown:
            self.problem = f"{self.path}: checks on components the estate does not have, ignored: {unknown}"
        return self.checks != before

    def intervals(self) -> dict[str, float]:
        """Component -> the shortest probe interval its checks ask for."""
        out: dict[str, float] = {}
        for c in self.checks:
            if self.components is None or c.component in self.components:
                out[c.component] = min(c.every_s, out.get(c.component, c.every_s))
        return out
