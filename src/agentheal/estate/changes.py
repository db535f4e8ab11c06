"""Releases, feature flags, lock files and worker counts: the state behind `rollback_release`,
`set_flag`, `remove_stale_lock` and `scale`, and behind the facts `bad_release`, `flag_changed`,
`stale_lock` and `queue_stalled`.

The last known good release and flags are kept in the backend's state folder next to the config
snapshots, taken at the same moments (when the estate comes up healthy, after a validated heal).
Every change agentheal makes here is appended to `history/<component>.jsonl` with the value
before and after, so it can be undone and audited.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict

from agentheal.estate.model import Component, Estate, EstateError

FlagValue = bool | int | float | str | None
_LOCK_TOLERANCE_S = 1.0


def _natural(name: str) -> list[Any]:
    # v2 < v10: digits compare as numbers.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def record_change(state_dir: Path, component: str, change: dict[str, Any]) -> None:
    """Append one change (action, before, after) to the component's history."""
    path = state_dir / "history" / f"{component}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"at": time.time(), **change}, default=str) + "\n")


def history(state_dir: Path, component: str) -> list[dict[str, Any]]:
    """The changes agentheal made to the component, oldest first."""
    path = state_dir / "history" / f"{component}.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash mid-write
    return out


# -- releases -------------------------------------------------------------------------------------


def _releases(estate: Estate, component: str) -> tuple[Component, Path, Path]:
    comp = estate.component(component)
    if comp.releases is None:
        raise EstateError(f"{component} declares no releases in the estate file")
    link = estate.root / comp.releases.current  # not resolved: it is the link itself
    return comp, estate.path(comp.releases.dir), link


def release_names(estate: Estate, component: str) -> list[str]:
    """The release folders of the component, oldest first (v2 before v10)."""
    _comp, folder, _link = _releases(estate, component)
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir()), key=_natural)


def current_release(estate: Estate, component: str) -> str | None:
    """The release folder `current` points to, or None when it is not a link into the releases folder."""
    _comp, folder, link = _releases(estate, component)
    if not link.is_symlink():
        return None
    target = link.resolve()
    return target.name if target.parent == folder and target.is_dir() else None


def switched_at(estate: Estate, component: str) -> float | None:
    """When the `current` link was last switched (its own modification time)."""
    _comp, _folder, link = _releases(estate, component)
    try:
        return link.lstat().st_mtime
    except FileNotFoundError:
        return None


def _good_release_file(state_dir: Path, component: str) -> Path:
    return state_dir / "releases" / f"{component}.good"


def last_good_release(state_dir: Path, component: str) -> str | None:
    try:
        return _good_release_file(state_dir, component).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def snapshot_release(estate: Estate, state_dir: Path, component: str, only_missing: bool = False) -> None:
    """Keep the current release as last known good (components without releases: nothing)."""
    if estate.component(component).releases is None:
        return
    if only_missing and last_good_release(state_dir, component) is not None:
        return
    current = current_release(estate, component)
    if current is not None:
        path = _good_release_file(state_dir, component)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(current + "\n", encoding="utf-8")


def rollback_target(
    estate: Estate, state_dir: Path, component: str, to: str | None
) -> tuple[str | None, str]:
    """The release to switch to, and why; (None, reason) when there is none.

    Without `to`: the last known good release when it differs from the current one, else the
    release before the current one in version order.
    """
    names = release_names(estate, component)
    current = current_release(estate, component)
    if to is not None:
        if to not in names:
            return None, f"no release {to!r} (releases: {', '.join(names) or 'none'})"
        if to == current:
            return None, f"{to} is already the current release"
        return to, f"{to}, as asked"
    good = last_good_release(state_dir, component)
    if good is not None and good != current and good in names:
        return good, f"{good}, the last known good release"
    if current in names:
        index = names.index(current)
        if index > 0:
            return names[index - 1], f"{names[index - 1]}, the release before {current}"
    return (
        None,
        f"no release to roll back to from {current or 'an unknown release'} (releases: {', '.join(names)})",
    )


def switch_release(estate: Estate, component: str, target: str) -> str:
    """Point `current` at another release atomically (a new link renamed over the old one)."""
    _comp, folder, link = _releases(estate, component)
    before = current_release(estate, component)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(folder / target, link.parent))
    os.replace(tmp, link)
    return before or "(none)"


# -- feature flags ----------------------------------------------------------------------------------


def read_flags(path: Path) -> dict[str, Any]:
    """A flags file: a JSON object. Raises ValueError naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: flags file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON flags file: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a flags file must hold a JSON object, not {type(data).__name__}")
    return data


def _good_flags_file(state_dir: Path, component: str) -> Path:
    return state_dir / "flags" / f"{component}.good.json"


def last_good_flags(state_dir: Path, component: str) -> dict[str, Any] | None:
    try:
        return read_flags(_good_flags_file(state_dir, component))
    except ValueError:
        return None


def snapshot_flags(estate: Estate, state_dir: Path, component: str, only_missing: bool = False) -> None:
    """Keep the current flags as last known good (a missing or broken file keeps the older copy)."""
    comp = estate.component(component)
    if comp.flags is None or (only_missing and last_good_flags(state_dir, component) is not None):
        return
    try:
        flags = read_flags(estate.path(comp.flags))
    except ValueError:
        return
    path = _good_flags_file(state_dir, component)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(flags, indent=2) + "\n", encoding="utf-8")


def flag_changes(estate: Estate, state_dir: Path, component: str) -> list[tuple[str, Any, Any]]:
    """(flag, now, last known good) for each flag whose value differs from the last known good copy."""
    comp = estate.component(component)
    good = last_good_flags(state_dir, component)
    if comp.flags is None or good is None:
        return []
    try:
        now = read_flags(estate.path(comp.flags))
    except ValueError:
        return []
    missing = object()
    return [
        (name, now.get(name), good.get(name))
        for name in sorted(set(now) | set(good))
        if now.get(name, missing) != good.get(name, missing)
    ]


def same_kind(old: Any, new: Any) -> bool:
    """A flag keeps its JSON type: a boolean stays a boolean, a number a number, text text."""
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int | float):
        return isinstance(new, int | float)
    return type(old) is type(new)


def write_flag(path: Path, name: str, value: FlagValue) -> Any:
    """Set one flag in the file (written whole, then renamed over it) and return its old value."""
    flags = read_flags(path)
    old = flags.get(name)
    flags[name] = value
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(flags, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return old


# -- lock files -------------------------------------------------------------------------------------


class LockState(BaseModel):
    """What a lock file says and whether its owner still lives."""

    model_config = ConfigDict(extra="forbid")

    path: str
    verdict: Literal["absent", "held", "stale", "unknown"]
    pid: int | None = None
    detail: str


def inspect_lock(estate: Estate, lock: str) -> LockState:
    """Stale when the pid it names is not running, or now belongs to a process younger than the lock.

    A lock naming no pid cannot be proven stale, so it is `unknown` and never removed.
    """
    path = estate.path(lock)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        written = path.stat().st_mtime
    except FileNotFoundError:
        return LockState(path=lock, verdict="absent", detail=f"{lock}: no lock file")
    except OSError as exc:
        return LockState(path=lock, verdict="unknown", detail=f"{lock}: unreadable: {exc}")
    first = text.split()[0] if text.split() else ""
    if not first.isdigit():
        return LockState(
            path=lock,
            verdict="unknown",
            detail=f"{lock} names no pid ({text.strip()[:40]!r}); cannot prove it stale",
        )
    pid = int(first)
    age = time.time() - written
    try:
        proc = psutil.Process(pid)
        started, status, name = proc.create_time(), proc.status(), proc.name()
    except psutil.NoSuchProcess:
        return LockState(
            path=lock,
            verdict="stale",
            pid=pid,
            detail=f"{lock} names pid {pid}, which is not running ({age:.0f} s old)",
        )
    except psutil.AccessDenied:
        return LockState(path=lock, verdict="held", pid=pid, detail=f"{lock}: pid {pid} runs (access denied)")
    if status == psutil.STATUS_ZOMBIE:
        return LockState(
            path=lock, verdict="stale", pid=pid, detail=f"{lock} names pid {pid}, which has exited"
        )
    if started > written + _LOCK_TOLERANCE_S:
        return LockState(
            path=lock,
            verdict="stale",
            pid=pid,
            detail=f"{lock} names pid {pid}, now {name}, started {started - written:.0f} s after the lock "
            "was written: the pid was reused",
        )
    return LockState(path=lock, verdict="held", pid=pid, detail=f"{lock} is held by pid {pid} ({name})")


# -- worker processes and queues ------------------------------------------------------------------


def replicas(estate: Estate, state_dir: Path, component: str) -> int | None:
    """The worker processes the component runs (None when it declares no scale)."""
    scale = estate.component(component).scale
    if scale is None:
        return None
    try:
        stored = int((state_dir / "scale" / f"{component}.replicas").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return scale.initial
    return min(max(stored, scale.min), scale.max)


def set_replicas(state_dir: Path, component: str, count: int) -> None:
    path = state_dir / "scale" / f"{component}.replicas"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{count}\n", encoding="utf-8")


def queue_backlog(estate: Estate, component: str) -> tuple[int, float] | None:
    """(items waiting, age of the oldest in seconds) in the component's queue folder, or None."""
    queue = estate.component(component).queue
    if queue is None:
        return None
    folder = estate.path(queue.path)
    now, count, oldest = time.time(), 0, 0.0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0, 0.0
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue  # hidden files are items still being written
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # consumed while we looked
        count += 1
        oldest = max(oldest, age)
    return count, oldest
