"""Processes of the local backend: start in their own session, find again from pid files, stop by group.

A component's process may be started by one agentheal process (`estate up`) and probed, stopped or
restarted by another (a later `heal`). So everything a later process needs is kept in a small JSON
record under the state folder: the pid, its create time (a reused pid is not our process), the
start time and the size of the log at start (so "recent log lines" means lines since that start).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentheal.estate.model import Component, Estate, EstateError

# Popen objects of the children this Python process started: kept so they are reaped (no zombie
# lingers as "running") and not garbage-collected while the child still runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXITS: dict[int, int] = {}  # exit codes of the children reaped here, by pid

_CREATE_TIME_TOLERANCE_S = 0.05
STOP_GRACE_S = 5.0


class ProcRecord(BaseModel):
    """What the state folder remembers of a component's process."""

    model_config = ConfigDict(extra="ignore")

    pid: int | None = None
    create_time: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    log_offset: int = 0
    command: list[str] = Field(default_factory=list)
    starts: list[float] = Field(default_factory=list, description="Recent start times, newest last.")
    last_exit: int | None = None


def record_path(state_dir: Path, component: str) -> Path:
    return state_dir / "proc" / f"{component}.json"


def read_record(state_dir: Path, component: str) -> ProcRecord:
    """The component's process record; an empty one when there is none (or it is unreadable)."""
    path = record_path(state_dir, component)
    try:
        return ProcRecord.model_validate_json(path.read_bytes())
    except (FileNotFoundError, ValidationError, ValueError):
        return ProcRecord()


def write_record(state_dir: Path, component: str, record: ProcRecord) -> None:
    path = record_path(state_dir, component)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader in another process never sees half a record


def _reap(pid: int) -> int | None:
    """Collect the exit status of our own dead child, so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        code = child.poll()
        if code is not None:
            _CHILDREN.pop(pid, None)
            _EXITS[pid] = code
        return code
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None  # not our child: its parent (or init) reaps it
    if done != pid:
        return None
    _EXITS[pid] = os.waitstatus_to_exitcode(status)
    return _EXITS[pid]


def find_process(record: ProcRecord) -> psutil.Process | None:
    """The live process the record names, or None when it is gone, a zombie, or a reused pid."""
    if record.pid is None:
        return None
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        if (
            record.create_time is not None
            and abs(proc.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE_S
        ):
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def _group_members(record: ProcRecord) -> list[psutil.Process]:
    """Processes still in the component's process group (the leader may be gone)."""
    if record.pid is None:
        return []
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            # Later than our start: a group id reused by an unrelated, older process is not ours.
            same = os.getpgid(proc.pid) == record.pid and proc.create_time() >= (record.create_time or 0) - 1
            if same and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def resolve_command(component: Component, estate: Estate) -> list[str]:
    """The argv to run: a path with a slash resolves against the estate root, a bare name against PATH."""
    first, *rest = component.command
    if first in ("python3", "python"):
        return [first, *rest]  # on PATH; kept as written so the estate runs the interpreter it names
    if "/" in first:
        path = estate.path(first)
        if not path.exists():
            raise EstateError(f"command not found: {path}")
        return [str(path), *rest]
    path_var = {**os.environ, **component.env}.get("PATH", os.defpath)
    found = shutil.which(first, path=path_var)
    if found is None:
        raise EstateError(f"command not found on PATH: {first}")
    return [found, *rest]


def start_process(
    estate: Estate, name: str, state_dir: Path, extra_env: dict[str, str] | None = None
) -> ProcRecord:
    """Start a component's process in its own session, output appended to its first log file.

    `extra_env` is added to the component's environment (e.g. AGENTHEAL_REPLICAS for `scale`).

    Raises:
        EstateError: The command or working folder does not exist.
    """
    component = estate.component(name)
    argv = resolve_command(component, estate)
    cwd = estate.path(component.workdir)
    if not cwd.is_dir():
        raise EstateError(f"{name}: workdir {cwd} does not exist")
    for log in component.logs:
        estate.path(log).parent.mkdir(parents=True, exist_ok=True)
    log_offset = 0
    out: int | BinaryIO = subprocess.DEVNULL
    log_file: BinaryIO | None = None
    if component.logs:
        log_path = estate.path(component.logs[0])
        log_file = log_path.open("ab")
        log_offset = log_file.tell()
        out = log_file
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **component.env, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        raise EstateError(f"{name}: cannot start {argv[0]}: {e}") from None
    finally:
        if log_file is not None:
            log_file.close()  # the child holds its own copy of the descriptor
    _CHILDREN[child.pid] = child
    _EXITS.pop(child.pid, None)  # a reused pid: the old exit code belongs to another process
    try:
        create_time = psutil.Process(child.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = None  # died at once; the record still says when it was started
    previous = read_record(state_dir, name)
    now = time.time()
    record = ProcRecord(
        pid=child.pid,
        create_time=create_time,
        started_at=now,
        log_offset=log_offset,
        command=argv,
        starts=[*previous.starts, now][-10:],
    )
    write_record(state_dir, name, record)
    return record


def exit_code(record: ProcRecord) -> int | None:
    """The exit code of the recorded process when this Python process reaped it (negative: a signal)."""
    if record.pid is not None and record.pid in _EXITS:
        return _EXITS[record.pid]
    return record.last_exit


def stop_process(state_dir: Path, name: str, grace_s: float = STOP_GRACE_S) -> str:
    """Stop a component's process group: SIGTERM, wait up to `grace_s`, then SIGKILL.

    Returns:
        What was done, as text.
    """
    record = read_record(state_dir, name)
    leader = find_process(record)
    members = _group_members(record)
    if leader is None and not members:
        detail = "not running"
    else:
        pid = record.pid or 0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (find_process(record) is not None or _group_members(record)):
            time.sleep(0.05)
        if find_process(record) is not None or _group_members(record):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and find_process(record) is not None:
                time.sleep(0.05)
            detail = f"stopped pid {pid} (SIGKILL after {grace_s:g} s)"
        else:
            detail = f"stopped pid {pid} (SIGTERM)"
    code = _reap(record.pid) if record.pid is not None else None
    record.last_exit = code if code is not None else exit_code(record)
    record.pid, record.create_time, record.stopped_at = None, None, time.time()
    write_record(state_dir, name, record)
    return detail
