"""An operator's word that a signal is noise: muted log templates and gap fingerprints.

`agentheal feedback mute TEMPLATE|FINGERPRINT [--for DURATION]` (and the chat-ops `mute`
command, through `agentheal.services.feedback`) writes here; detection reads it. A fingerprint
is the 16 hex digits every gap carries: its gap no longer opens, whatever detected it. Anything
else is a log template, or a part of one (`cache: miss for key`): an error template that holds
it scores 0 and opens no gap. A mute ends at its time, or with `unmute`.

The mutes live in one JSON file under the home folder (`detect/mutes.json`), written whole and
atomically; a detector re-reads it when its modification time changes, so a running watch or
server takes a mute at its next round.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


class MuteError(ValueError):
    """A mute that cannot be made as asked (an empty target, a bad duration); the message says why."""


class Mute(BaseModel):
    """One muted template or fingerprint."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="A gap fingerprint (16 hex digits) or a log template, or part of one.")
    kind: str = Field(description="fingerprint or template", pattern="^(fingerprint|template)$")
    since: float = Field(description="When it was muted (epoch seconds).")
    until: float | None = Field(default=None, description="When the mute ends (epoch seconds); None: never.")
    by: str | None = Field(default=None, description="Who muted it (a user, a chat handle), when known.")

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


def mutes_file(home: Path) -> Path:
    """Where the mutes of a home folder are kept."""
    return home / "detect" / "mutes.json"


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `2h`, `1d`, `1w` (a bare number is seconds).

    Raises:
        MuteError: Not a positive duration.
    """
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise MuteError(f"duration {text!r}: give a positive number with s, m, h, d or w, e.g. 2h")
    return float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]


def kind_of(target: str) -> str:
    """`fingerprint` for 16 hex digits, else `template`."""
    return "fingerprint" if _FINGERPRINT.match(target) else "template"


class MuteBook:
    """The mutes of one home folder, re-read when the file changes."""

    def __init__(self, home: Path) -> None:
        self.path = mutes_file(home)
        self._stamp: tuple[int, int] | None = None
        self.mutes: list[Mute] = []
        self.problem: str | None = None  # a damaged file, reported once by the caller
        self.refresh()

    def refresh(self) -> None:
        """Read the file again if it changed since the last read."""
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self.mutes = None, []
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.mutes = [Mute.model_validate(m) for m in raw.get("mutes", [])]
            self.problem = None
        except (OSError, ValueError, AttributeError, ValidationError) as exc:
            self.mutes = []
            self.problem = f"{self.path}: mutes not read ({exc}); nothing is muted until it is fixed"

    def active(self, now: float | None = None) -> list[Mute]:
        now = time.time() if now is None else now
        return [m for m in self.mutes if m.active(now)]

    def template_muted(self, template: str, now: float | None = None) -> Mute | None:
        """The mute that covers this template, if any."""
        return next((m for m in self.active(now) if m.kind == "template" and m.target in template), None)

    def fingerprint_muted(self, fingerprint: str, now: float | None = None) -> Mute | None:
        return next(
            (m for m in self.active(now) if m.kind == "fingerprint" and m.target == fingerprint), None
        )

    def save(self, mutes: list[Mute]) -> None:
        """Write the mutes whole, atomically (a reader sees the old file or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".mutes.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"mutes": [m.model_dump(mode="json") for m in mutes]}, fh, indent=2)
        os.replace(tmp, self.path)
        self.mutes, self._stamp = list(mutes), None
