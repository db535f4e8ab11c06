"""A component's files: config snapshots (last known good), log rotation, folder cleaning, log tails.

Every function here acts only on paths the estate file declares for the component; the checks
that a requested path is one of those live in `actions.validate_step`, and `clean_dir` checks
again at run time because a symlink may have changed since.
"""

from __future__ import annotations

import difflib
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

from agentheal.estate.model import Estate
from agentheal.redaction import redact

CONFIG_READ_LIMIT = 8192
WHOLE_FILE_BYTES = 65536  # a file up to this size is redacted whole for any window of it
REDACT_CONTEXT = 16384  # bytes redacted around a window of a larger file (see redacted_window)
_TAIL_BYTES_PER_LINE = 400


def snapshot_path(state_dir: Path, component: str, config: str) -> Path:
    """Where the last known good copy of a config file is kept (one flat folder per component)."""
    return state_dir / "configs" / component / quote(config, safe="")


def snapshot_configs(
    estate: Estate, state_dir: Path, component: str, only_missing: bool = False
) -> list[str]:
    """Copy the component's existing config files to the state folder as last known good.

    Args:
        estate: The estate.
        state_dir: The backend's state folder.
        component: The component.
        only_missing: Copy only configs that have no snapshot yet.

    Returns:
        The config paths (as declared) that were copied; a missing file keeps its older snapshot.
    """
    copied = []
    for config in estate.component(component).configs:
        source = estate.path(config)
        if only_missing and has_snapshot(state_dir, component, config):
            continue
        if source.is_file():
            target = snapshot_path(state_dir, component, config)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied.append(config)
    return copied


def has_snapshot(state_dir: Path, component: str, config: str) -> bool:
    return snapshot_path(state_dir, component, config).is_file()


def config_diff(
    estate: Estate, state_dir: Path, component: str, config: str, max_lines: int = 12
) -> list[str] | None:
    """How a config differs from its snapshot: None when it matches or there is no snapshot."""
    snapshot = snapshot_path(state_dir, component, config)
    current = estate.path(config)
    if not snapshot.is_file() or not current.is_file():
        return None
    old, new = snapshot.read_bytes(), current.read_bytes()
    if old == new:
        return None
    diff = difflib.unified_diff(
        old.decode("utf-8", "replace").splitlines(),
        new.decode("utf-8", "replace").splitlines(),
        fromfile=f"{config} (last known good)",
        tofile=f"{config} (now)",
        lineterm="",
        n=1,
    )
    lines = list(diff)
    return lines[:max_lines] + (
        [f"... {len(lines) - max_lines} more diff lines"] if len(lines) > max_lines else []
    )


def restore_config(
    estate: Estate, state_dir: Path, component: str, config: str, dry_run: bool
) -> tuple[bool, str]:
    """Copy the last known good snapshot back; the replaced file is kept as `<file>.bad`.

    Returns:
        (ok, what was done or would be done).
    """
    snapshot = snapshot_path(state_dir, component, config)
    current = estate.path(config)
    if not snapshot.is_file():
        return (
            False,
            f"{config}: no last known good copy (snapshots are taken at `estate up` and after a heal)",
        )
    if current.is_file() and current.read_bytes() == snapshot.read_bytes():
        return True, f"{config}: already matches the last known good copy"
    keep = f", keeping the current file as {config}.bad" if current.exists() else ""
    if dry_run:
        return True, f"would restore {config} from the last known good copy{keep}"
    current.parent.mkdir(parents=True, exist_ok=True)
    if current.exists():
        shutil.copy2(current, current.with_name(current.name + ".bad"))
    shutil.copy2(snapshot, current)
    return True, f"restored {config} from the last known good copy{keep}"


def rotate_log(path: Path, keep: int, dry_run: bool) -> str:
    """Rotate with copytruncate semantics: `log` -> `log.1` -> ... -> `log.<keep>`, then empty `log`.

    The running process keeps its descriptor; it appends (O_APPEND), so after the truncate it
    writes from the start of the emptied file.
    """
    if not path.is_file():
        return f"{path.name}: no log file yet, nothing to rotate"
    size = path.stat().st_size
    if dry_run:
        return f"would rotate {path.name} ({_size(size)}) to {path.name}.1, keeping {keep} generations"
    generation = keep + 1
    while (old := path.with_name(f"{path.name}.{generation}")).exists():
        old.unlink()
        generation += 1
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    shutil.copy2(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as f:
        f.truncate(0)
    return f"rotated {path.name} ({_size(size)}) to {path.name}.1, keeping {keep} generations"


def clean_dir(folder: Path, older_than_s: float, protected: set[Path], dry_run: bool) -> tuple[int, int, str]:
    """Delete files under `folder` older than `older_than_s`, never following a symlink out of it.

    Args:
        folder: The folder, already checked to lie inside a declared data or log folder.
        older_than_s: Only files last modified longer ago than this; 0 means all files.
        protected: Files never deleted (current log files, config files).
        dry_run: Count what would go, delete nothing.

    Returns:
        (files, bytes, detail) deleted or, in a dry run, that would be deleted.
    """
    if not folder.is_dir():
        return 0, 0, f"{folder} is not a folder"
    cutoff = time.time() - older_than_s
    files = freed = 0
    for top, dirs, names in os.walk(folder, followlinks=False):
        for name in names + [d for d in dirs if (Path(top) / d).is_symlink()]:
            entry = Path(top) / name
            if entry in protected or entry.resolve() in protected:
                continue
            st = entry.lstat()  # a symlink's own age and size; its target is never touched
            if older_than_s and st.st_mtime > cutoff:
                continue
            files += 1
            freed += st.st_size
            if not dry_run:
                entry.unlink()
    verb = "would delete" if dry_run else "deleted"
    age = f" older than {older_than_s:g} s" if older_than_s else ""
    return (
        files,
        freed,
        f"{verb} {files} files{age} in {folder}, {_size(freed)} {'to free' if dry_run else 'freed'}",
    )


def folder_size(folder: Path) -> int:
    """Bytes of the files under a folder, symlinks not followed."""
    total = 0
    for top, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            try:
                total += (Path(top) / name).lstat().st_size
            except OSError:
                continue  # deleted while we walked
    return total


def redacted_window(path: Path, begin: int, end: int, context: int = REDACT_CONTEXT) -> str:
    """Bytes `begin`..`end` of a file as text, redacted before the window was taken.

    The window is redacted together with `context` bytes on each side, widened to whole lines
    (a file up to `WHOLE_FILE_BYTES` is redacted whole), and only then cut out: a PEM body whose
    BEGIN or END line lies outside the window, or a line the window cuts in two, is still seen
    whole by the rules. 16 KB holds any single PEM block (an RSA-8192 key is ~6.5 KB) or key
    file; beyond that the rules that need no context (long base64 runs, secret values) stand on
    their own. Redaction keeps lines, so the window is found again by line and column.

    Args:
        path: The file.
        begin: The window's first byte (clamped to the file).
        end: The byte after the window's last (clamped to the file).
        context: Bytes read around the window for redaction only.

    Returns:
        The redacted text of the window; empty when the file cannot be read.
    """
    try:
        size = path.stat().st_size
        begin, end = max(0, min(begin, size)), max(0, min(end, size))
        end = max(begin, end)
        if size <= WHOLE_FILE_BYTES:
            start, stop = 0, size
        else:
            start, stop = max(0, begin - context), min(size, end + context)
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(stop - start)
    except OSError:
        return ""
    stop = start + len(data)  # the file may have shrunk since stat
    if start > 0 and (newline := data.find(b"\n", 0, max(begin - start, 0))) >= 0:
        data, start = data[newline + 1 :], start + newline + 1  # from a whole line on
    if stop < size and (newline := data.rfind(b"\n", max(end - start, 0))) >= 0:
        data = data[: newline + 1]
    raw_lines = data.split(b"\n")
    lines = redact(data.decode("utf-8", "replace")).split("\n")
    first, first_col = _line_and_column(data, min(max(begin - start, 0), len(data)))
    last, last_col = _line_and_column(data, min(max(end - start, 0), len(data)))
    if len(lines) != len(raw_lines):  # cannot happen (redact keeps lines); never show unredacted
        return redact(data[max(begin - start, 0) : max(end - start, 0)].decode("utf-8", "replace"))
    if first == last:
        return _chars(lines[first], raw_lines[first], first_col, last_col)
    head = _chars(lines[first], raw_lines[first], first_col, None)
    tail = _chars(lines[last], raw_lines[last], 0, last_col)
    return "\n".join([head, *lines[first + 1 : last], tail])


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset)
    return line, offset - (data.rfind(b"\n", 0, offset) + 1)


def _chars(redacted: str, raw: bytes, begin: int, end: int | None) -> str:
    """Byte columns of a raw line, applied to its redacted line (a redacted line is clean, so any
    slice of it is too; columns are exact when the line held nothing to redact)."""
    left = len(raw[:begin].decode("utf-8", "replace"))
    right = len(redacted) if end is None else len(raw[:end].decode("utf-8", "replace"))
    return redacted[min(left, len(redacted)) : min(right, len(redacted))]


def tail_lines(path: Path, lines: int, start_offset: int = 0) -> list[str]:
    """The last `lines` lines of a file, redacted, reading at most what they need from its end
    (plus the context `redacted_window` redacts them with).

    Args:
        path: The file.
        lines: How many lines.
        start_offset: Ignore bytes before this offset (e.g. written before the current start);
            ignored when the file is now shorter (it was rotated).
    """
    try:
        size = path.stat().st_size
    except OSError:
        return []
    begin = start_offset if start_offset <= size else 0
    begin = max(begin, size - lines * _TAIL_BYTES_PER_LINE)
    text = redacted_window(path, begin, size).splitlines()
    if begin > 0 and begin != start_offset and text:
        text = text[1:]  # the first line was cut in the middle
    return text[-lines:]


def read_limited(path: Path, limit: int = CONFIG_READ_LIMIT, offset: int = 0) -> str:
    """A text file's content from `offset`, at most `limit` bytes, redacted, with a note when cut."""
    size = path.stat().st_size
    text = redacted_window(path, offset, offset + limit)
    notes = []
    if offset > 0:
        notes.append(f"from byte {offset}")
    if offset + limit < size:
        notes.append(f"cut at byte {offset + limit}")
    return text + (f"\n... ({', '.join(notes)} of {size})" if notes else "")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
