"""Read-only observations of a component, as text for a diagnosing agent (the caller cuts it).

Every observation comes back redacted. Files are read through `files.redacted_window`: the
source is redacted (whole, or the window with context around it) before the window is cut
out, so no window -- a tail, a head, a byte range, a line cut in two -- can hold a secret
that redacting the window alone would miss. Config files read here also add their
secret-looking values to the registry `redact` removes everywhere.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec

import psutil

from agentheal.estate import changes, files
from agentheal.estate.process import find_process, read_record
from agentheal.redaction import redact, register_config_secrets

if TYPE_CHECKING:
    from agentheal.estate.local import LocalBackend

P = ParamSpec("P")
_SECRET_SCAN_BYTES = 1 << 20  # config files are small; a huge one is scanned for secrets this far


def _redacted(
    observe: Callable[Concatenate[LocalBackend, P], str],
) -> Callable[Concatenate[LocalBackend, P], str]:
    """The observation's text, redacted, with the estate's secret values registered first."""

    @functools.wraps(observe)
    def wrapper(backend: LocalBackend, /, *args: P.args, **kwargs: P.kwargs) -> str:
        backend.estate.register_secrets()
        return redact(observe(backend, *args, **kwargs))

    return wrapper


@_redacted
def probe(backend: LocalBackend, component: str) -> str:
    health = backend.health(component)
    if not health.probes:
        return f"{component} declares no probes; process: {health.detail}"
    return "\n".join(p.line() for p in health.probes)


@_redacted
def tail_logs(
    backend: LocalBackend,
    component: str,
    lines: int = 50,
    path: str | None = None,
    offset: int | None = None,
    max_bytes: int | None = None,
) -> str:
    """The last `lines` lines of each log, or `lines` lines forward from byte `offset`; at most
    `max_bytes` bytes, which may cut a line in two."""
    comp = backend.estate.component(component)
    logs = [path] if path is not None else comp.logs
    if not logs:
        return f"{component} declares no log files"
    parts = []
    for log in logs:
        file = backend.estate.path(log)
        if not file.is_file():
            parts.append(f"== {log}: no such file yet")
            continue
        size = file.stat().st_size
        if offset is None and max_bytes is None:
            window = files.tail_lines(file, lines)
            parts.append(f"== {log} (last {len(window)} lines of {size} bytes)")
        else:
            begin = offset if offset is not None else max(0, size - (max_bytes or 0))
            stop = size if max_bytes is None else min(size, begin + max_bytes)
            stop = min(stop, begin + lines * 4096)  # a window is a few lines, not the whole file
            window = files.redacted_window(file, begin, stop).split("\n")
            window = window[:lines] if offset is not None else window[-lines:]
            parts.append(f"== {log} (bytes {begin}..{stop} of {size}, {len(window)} lines)")
        parts.extend(window)
    return "\n".join(parts)


@_redacted
def process_stats(backend: LocalBackend, component: str) -> str:
    record = read_record(backend.state_dir, component)
    proc = find_process(record)
    if proc is None:
        return f"{component}: no running process ({backend.health(component).detail})"
    try:
        with proc.oneshot():
            mem = proc.memory_info().rss / (1024 * 1024)
            children = proc.children(recursive=True)
            try:
                open_files: int | str = len(proc.open_files())
            except psutil.AccessDenied:
                open_files = "unknown (access denied)"
            rows = [
                f"pid: {proc.pid}",
                f"status: {proc.status()}",
                f"command: {' '.join(proc.cmdline())}",
                f"rss: {mem:.1f} MB",
                f"threads: {proc.num_threads()}",
                f"open files: {open_files}",
                f"children: {len(children)}",
                f"uptime: {time.time() - proc.create_time():.0f} s",
            ]
        # cpu_percent needs two samples; 0.1 s keeps an observation quick.
        rows.insert(4, f"cpu: {proc.cpu_percent(interval=0.1):.1f} %")
    except psutil.NoSuchProcess:
        return f"{component}: pid {proc.pid} exited while being observed"
    return "\n".join(rows)


@_redacted
def read_config(
    backend: LocalBackend, component: str, path: str | None = None, offset: int = 0, max_bytes: int = 8192
) -> str:
    comp = backend.estate.component(component)
    configs = [path] if path is not None else comp.configs
    if not configs:
        return f"{component} declares no config files"
    parts = []
    for config in configs:
        file = backend.estate.path(config)
        if not file.is_file():
            parts.append(f"== {config}: missing")
            continue
        parts.append(f"== {config}")
        with file.open("rb") as f:
            register_config_secrets(f.read(_SECRET_SCAN_BYTES).decode("utf-8", "replace"))
        parts.append(files.read_limited(file, max_bytes, offset))
    return "\n".join(parts)


@_redacted
def dependencies(backend: LocalBackend, component: str) -> str:
    comp = backend.estate.component(component)
    if not comp.depends_on:
        dependents = backend.estate.dependents(component)
        return f"{component} depends on nothing" + (
            f"; depended on by {', '.join(dependents)}" if dependents else ""
        )
    rows = []
    for dep in comp.depends_on:
        h = backend.health(dep)
        rows.append(f"{dep}: {'healthy' if h.healthy else 'UNHEALTHY'}: {h.detail}")
    return "\n".join(rows)


@_redacted
def releases(backend: LocalBackend, component: str) -> str:
    estate, state_dir = backend.estate, backend.state_dir
    comp = estate.component(component)
    assert comp.releases is not None  # validate_step refuses components without releases
    names = changes.release_names(estate, component)
    current = changes.current_release(estate, component)
    switched = changes.switched_at(estate, component)
    rows = [
        f"releases in {comp.releases.dir}: {', '.join(names) or 'none'}",
        f"current: {current or 'unknown'} ({comp.releases.current}"
        + (f", switched {time.time() - switched:.0f} s ago)" if switched is not None else ")"),
        f"last known good: {changes.last_good_release(state_dir, component) or 'none recorded'}",
    ]
    done = [h for h in changes.history(state_dir, component) if h.get("action") == "rollback_release"]
    rows += [f"rolled back {h.get('from')} -> {h.get('to')} at {time.ctime(h['at'])}" for h in done[-5:]]
    return "\n".join(rows)


@_redacted
def read_flags(backend: LocalBackend, component: str) -> str:
    estate = backend.estate
    flags_file = estate.component(component).flags
    assert flags_file is not None  # validate_step refuses components without flags
    try:
        flags = changes.read_flags(estate.path(flags_file))
    except ValueError as e:
        return str(e)
    rows = [f"== {flags_file}"] + [f"{name} = {json.dumps(value)}" for name, value in sorted(flags.items())]
    changed = changes.flag_changes(estate, backend.state_dir, component)
    rows += [
        f"changed: {name} is {json.dumps(now)}, last known good {json.dumps(good)}"
        for name, now, good in changed
    ]
    return "\n".join(rows)
