"""Mutes asked for from chat (`mute <fingerprint> <duration>`): a fingerprint and until when.

Kept in `chat-mutes.json` under the home folder, one writer at a time (a lock file): chat-ops
records the mute; whatever turns signals into gaps may read it with `muted`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agentheal.models import utcnow

__all__ = ["active_mutes", "mute", "muted"]

_FILE = "chat-mutes.json"


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[Path]:
    with (home / (_FILE + ".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield home / _FILE
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a mutes file ({exc}); move it aside to start afresh") from None
    return data if isinstance(data, dict) else {}


def mute(home: Path, fingerprint: str, duration: timedelta, *, by: str) -> datetime:
    """Mute `fingerprint` for `duration` from now; returns until when. Expired mutes are dropped."""
    now = utcnow()
    until = now + duration
    with _locked(home) as path:
        data = {k: v for k, v in _read(path).items() if datetime.fromisoformat(v["until"]) > now}
        data[fingerprint] = {"until": until.isoformat(), "by": by, "at": now.isoformat()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    return until


def active_mutes(home: Path) -> dict[str, datetime]:
    """The fingerprints muted now, with until when."""
    now = utcnow()
    with _locked(home) as path:
        found = {k: datetime.fromisoformat(v["until"]) for k, v in _read(path).items()}
    return {k: v for k, v in found.items() if v > now}


def muted(home: Path, fingerprint: str) -> bool:
    """Whether `fingerprint` is muted now."""
    return fingerprint in active_mutes(home)
