"""The local backend's change actions: `rollback_release`, `set_flag` and `remove_stale_lock`.

Each takes the validated arguments, changes nothing in a dry run, and returns its outcome and
a detail that says what changed and how to undo it. Every real change is recorded in the
component's history (see `changes.record_change`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from agentheal.estate import changes
from agentheal.estate.model import Estate

Outcome = Literal["ok", "failed", "skipped", "dry_run"]


def rollback_release(
    estate: Estate, state_dir: Path, component: str, to: str | None, dry_run: bool
) -> tuple[Outcome, str]:
    """Switch the component's `current` link to an earlier release."""
    comp = estate.component(component)
    assert comp.releases is not None  # validate_step refuses components without releases
    current = changes.current_release(estate, component)
    if current is None:
        return "failed", (
            f"{comp.releases.current} is not a link to a folder in {comp.releases.dir}; "
            "cannot tell which release runs"
        )
    target, why = changes.rollback_target(estate, state_dir, component, to)
    if target is None:
        return "failed", why
    if dry_run:
        return "dry_run", f"would switch {comp.releases.current} from {current} to {why}"
    before = changes.switch_release(estate, component, target)
    changes.record_change(state_dir, component, {"action": "rollback_release", "from": before, "to": target})
    return "ok", (
        f"switched {comp.releases.current} from {before} to {why}; restart {component} to run it "
        f"(undo: rollback_release to={before})"
    )


def set_flag(
    estate: Estate, state_dir: Path, component: str, args: dict[str, Any], dry_run: bool
) -> tuple[Outcome, str]:
    """Set one flag to a value, or back to its last known good value."""
    flags_file = estate.component(component).flags
    assert flags_file is not None  # validate_step refuses components without flags
    path, name = estate.path(flags_file), args["name"]
    try:
        flags = changes.read_flags(path)
    except ValueError as e:
        return "failed", str(e)
    if name not in flags:
        return "failed", f"{name!r} is not a flag in {flags_file}"
    value = args["value"]
    if args["last_good"]:
        good = changes.last_good_flags(state_dir, component)
        if good is None or name not in good:
            return (
                "failed",
                f"{name}: no last known good value (flags are kept at `estate up` and after a heal)",
            )
        value = good[name]
    old = flags[name]
    if not changes.same_kind(old, value):
        return "failed", (
            f"{name} is {json.dumps(old)} ({type(old).__name__}); refusing to set it to {json.dumps(value)} "
            f"({type(value).__name__})"
        )
    if old == value and type(old) is type(value):
        return "ok", f"{name} is already {json.dumps(value)} in {flags_file}"
    change = f"{name}: {json.dumps(old)} -> {json.dumps(value)} in {flags_file}"
    if dry_run:
        return "dry_run", f"would set {change}"
    changes.write_flag(path, name, value)
    changes.record_change(
        state_dir, component, {"action": "set_flag", "flag": name, "before": old, "after": value}
    )
    return "ok", f"set {change} (previous value recorded; undo: set_flag name={name} value={json.dumps(old)})"


def remove_stale_locks(
    estate: Estate, state_dir: Path, component: str, path: str | None, dry_run: bool
) -> tuple[Outcome, str]:
    """Remove the lock files (one, or all the component declares) whose owner is gone."""
    locks = [path] if path is not None else estate.component(component).locks
    states = [changes.inspect_lock(estate, lock) for lock in locks]
    refused = [s for s in states if s.verdict in ("held", "unknown")]
    stale = [s for s in states if s.verdict == "stale"]
    details = [s.detail for s in refused]
    if refused and path is not None:
        return "failed", f"not removed: {details[0]}"
    for state in stale:
        if dry_run:
            details.append(f"would remove {state.path}: {state.detail}")
            continue
        lock = estate.path(state.path)
        # The removed lock is kept in the state folder, so what it said stays on record.
        kept = state_dir / "locks" / f"{component}-{lock.name}.removed"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lock, kept)
        lock.unlink(missing_ok=True)
        changes.record_change(
            state_dir, component, {"action": "remove_stale_lock", "path": state.path, "pid": state.pid}
        )
        details.append(f"removed {state.path}: {state.detail}")
    if not stale:
        details.append("no stale lock to remove")
    outcome: Outcome = "failed" if refused and not stale else ("dry_run" if dry_run else "ok")
    return outcome, "; ".join(details)
