"""Diagnosis facts: what is true of a component now, by name, each with the evidence behind it.

The names form a fixed vocabulary that persona playbooks match on (see DESIGN.md and the spec):
process_down, process_running, probe_failed, probes_ok, slow_response, config_changed,
config_missing, log_errors, logs_large, disk_over_budget, memory_high, dependency_down, crash_loop,
and for what an estate file may declare beyond that: bad_release (releases), flag_changed (flags),
stale_lock (locks), queue_stalled (queue).

Facts about a file, a folder or a flag start their detail with its path or name, so a persona
playbook can pass it on as an argument ("{disk_over_budget.path}", "{flag_changed.path}").
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

import psutil
from pydantic import BaseModel, ConfigDict

from agentheal.estate import changes, files
from agentheal.estate.process import exit_code, find_process, read_record

if TYPE_CHECKING:
    from agentheal.estate.local import LocalBackend

FACT_NAMES = (
    "process_down",
    "process_running",
    "probe_failed",
    "probes_ok",
    "slow_response",
    "config_changed",
    "config_missing",
    "log_errors",
    "logs_large",
    "disk_over_budget",
    "memory_high",
    "dependency_down",
    "crash_loop",
    "bad_release",
    "flag_changed",
    "stale_lock",
    "queue_stalled",
)

ERROR_MARKERS = re.compile(r"ERROR|FATAL|Traceback|panic|Exception")
CRASH_WINDOW_S = 10.0
# A release switched longer ago than this ran long enough that a new failure is not its fault.
RELEASE_WINDOW_S = 3600.0
_LOG_SCAN_LINES = 200


class Fact(BaseModel):
    """One finding. For dependency_down, `component` is the dependency that is down."""

    model_config = ConfigDict(extra="forbid")

    name: str
    component: str
    detail: str

    def line(self) -> str:
        return f"{self.name} ({self.component}): {self.detail}"


def _mb(n: float) -> float:
    return n / (1024 * 1024)


def _tree_rss(proc: psutil.Process) -> int:
    """Resident memory of the process and its descendants (a server's workers count too)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def log_errors(backend: LocalBackend, component: str) -> list[str]:
    """Error lines written to the component's logs since its last start (the last 200 lines at most)."""
    comp = backend.estate.component(component)
    record = read_record(backend.state_dir, component)
    found = []
    for i, log in enumerate(comp.logs):
        # Only the first log receives the process output, so only its offset marks "since start".
        offset = record.log_offset if i == 0 else 0
        for line in files.tail_lines(backend.estate.path(log), _LOG_SCAN_LINES, offset):
            if ERROR_MARKERS.search(line):
                found.append(f"{log}: {line.strip()[:300]}")
    return found


def compute_facts(backend: LocalBackend, component: str) -> list[Fact]:
    """Every fact that holds for the component now, in vocabulary order."""
    estate = backend.estate
    comp = estate.component(component)
    record = read_record(backend.state_dir, component)
    proc = find_process(record)
    out: list[Fact] = []

    def fact(name: str, detail: str, about: str = component) -> None:
        out.append(Fact(name=name, component=about, detail=detail))

    now = time.time()
    if proc is None:
        if record.pid is None and record.started_at is None:
            fact("process_down", "never started by agentheal (no pid file)")
        elif record.pid is None:
            fact("process_down", "stopped (no process recorded since the last stop)")
        else:
            code = exit_code(record)
            how = f" with exit code {code}" if code is not None else ""
            fact(
                "process_down",
                f"pid {record.pid} is gone{how} (started {now - (record.started_at or now):.0f} s ago)",
            )
    else:
        fact("process_running", f"pid {proc.pid}, up {now - proc.create_time():.0f} s")

    health = backend.health(component)
    failed = [p for p in health.probes if not p.ok]
    if failed:
        fact("probe_failed", "; ".join(p.line() for p in failed))
    elif health.probes:
        fact("probes_ok", "; ".join(p.line() for p in health.probes))
    slow = [p for p in health.probes if p.slow]
    if slow:
        fact("slow_response", "; ".join(p.line() for p in slow))

    for config in comp.configs:
        if not estate.path(config).is_file():
            fact("config_missing", f"{config} does not exist ({estate.path(config)})")
            continue
        diff = files.config_diff(estate, backend.state_dir, component, config)
        if diff is not None:
            fact("config_changed", f"{config} differs from its last known good copy:\n" + "\n".join(diff))

    errors = log_errors(backend, component)
    if errors:
        fact(
            "log_errors",
            f"{len(errors)} error lines since the last start; latest: " + " | ".join(errors[-3:]),
        )

    if comp.log_budget_mb is not None:
        for log in comp.logs:
            path = estate.path(log)
            size = _mb(path.stat().st_size) if path.is_file() else 0.0
            if size > comp.log_budget_mb:
                fact("logs_large", f"{log} is {size:.1f} MB, over its {comp.log_budget_mb:g} MB budget")
    for data in comp.data_dirs:
        folder = estate.path(data.path)
        if data.budget_mb is not None and folder.is_dir():
            size = _mb(files.folder_size(folder))
            if size > data.budget_mb:
                fact(
                    "disk_over_budget",
                    f"{data.path} holds {size:.1f} MB, over its {data.budget_mb:g} MB budget",
                )
    if proc is not None and comp.memory_budget_mb is not None:
        try:
            rss = _mb(_tree_rss(proc))
        except psutil.Error:
            rss = 0.0
        if rss > comp.memory_budget_mb:
            fact(
                "memory_high",
                f"pid {proc.pid} (with children) uses {rss:.1f} MB, "
                f"over its {comp.memory_budget_mb:g} MB budget",
            )

    for dep in comp.depends_on:
        dep_health = backend.health(dep)
        if not dep_health.healthy:
            fact(
                "dependency_down",
                f"{component} depends on {dep}, which is unhealthy: {dep_health.detail}",
                about=dep,
            )

    if proc is None and _crashed_recently(backend, component, errors, now):
        started = record.started_at or now
        recent = sum(1 for t in record.starts if now - t < 600)
        fact(
            "crash_loop",
            f"started {now - started:.0f} s ago and dead again ({recent} starts in the last 600 s); "
            + (errors[-1] if errors else f"exit code {exit_code(record)}"),
        )
    # When agentheal started it (wall clock); psutil's create_time can be off by up to a second.
    proc_started = record.started_at if proc is not None else None
    out += _declared_facts(backend, component, {f.name for f in out}, now, proc_started)
    return out


def _declared_facts(
    backend: LocalBackend, component: str, found: set[str], now: float, started: float | None
) -> list[Fact]:
    """Facts about what the estate file declares beyond processes and files: releases, flags, locks, queue.

    One side effect: a release served healthy by a process started after the release was switched
    in is proven, so it becomes the last known good release. Otherwise a good deploy followed,
    within the hour, by an unrelated failure would read as a bad release and be rolled back.
    """
    estate, state_dir = backend.estate, backend.state_dir
    comp = estate.component(component)
    out: list[Fact] = []
    symptoms = found & {"probe_failed", "process_down", "crash_loop", "log_errors"}
    if comp.releases is not None and {"probes_ok", "process_running"} <= found:
        switched = changes.switched_at(estate, component)
        if started is not None and switched is not None and started > switched:
            changes.snapshot_release(estate, state_dir, component)
    if comp.releases is not None and symptoms:
        current = changes.current_release(estate, component)
        good = changes.last_good_release(state_dir, component)
        switched = changes.switched_at(estate, component)
        if (
            current
            and good
            and current != good
            and switched is not None
            and now - switched < RELEASE_WINDOW_S
        ):
            out.append(
                Fact(
                    name="bad_release",
                    component=component,
                    detail=f"{current} is the current release ({comp.releases.current}, switched "
                    f"{now - switched:.0f} s ago) and {component} fails since "
                    f"({', '.join(sorted(symptoms))}); the last known good release is {good}",
                )
            )
    for name, value, good_value in changes.flag_changes(estate, state_dir, component):
        out.append(
            Fact(
                name="flag_changed",
                component=component,
                detail=f"{name} is {json.dumps(value)} in {comp.flags}, {json.dumps(good_value)} in the "
                "last known good flags",
            )
        )
    for lock in comp.locks:
        state = changes.inspect_lock(estate, lock)
        if state.verdict == "stale":
            out.append(Fact(name="stale_lock", component=component, detail=state.detail))
    backlog = changes.queue_backlog(estate, component)
    if backlog is not None and comp.queue is not None:
        count, oldest = backlog
        if count and oldest > comp.queue.stall_after_s:
            out.append(
                Fact(
                    name="queue_stalled",
                    component=component,
                    detail=f"{comp.queue.path} holds {count} items waiting, the oldest for {oldest:.0f} s "
                    f"(stalled after {comp.queue.stall_after_s:g} s)",
                )
            )
    return out


def _crashed_recently(backend: LocalBackend, component: str, errors: list[str], now: float) -> bool:
    """Dead within CRASH_WINDOW_S of its last start, with evidence of a crash (not a stop or a kill).

    A process stopped by agentheal, or killed by a signal from outside, is down but is not crash
    looping: restarting it is the right cure, so it must not read as a crash loop.
    """
    record = read_record(backend.state_dir, component)
    if record.pid is None or record.started_at is None:
        return False
    code = exit_code(record)
    if code is not None and code < 0:
        return False  # killed by a signal
    crashed = (code is not None and code > 0) or bool(errors)
    if not crashed:
        return False
    comp = backend.estate.component(component)
    last_write = record.started_at
    if comp.logs and errors:
        try:
            last_write = backend.estate.path(comp.logs[0]).stat().st_mtime
        except OSError:
            last_write = record.started_at
    # The log's last write approximates the moment of death, so a crash noticed late still counts.
    return now - record.started_at < CRASH_WINDOW_S or last_write - record.started_at < CRASH_WINDOW_S
