"""Logs: follow files across rotation and truncation, mine templates with drain3, score error templates.

`LogTail` yields complete lines with their 1-based numbers in the file they came from. `LogMiner`
runs every line through drain3's `TemplateMiner` (state persisted under the home folder, so
template ids stay stable across restarts) and scores the error templates among them
(`detect.scoring`): rarity in this log's history, level, a burst against the template's own base
rate, newness. A template scoring at least `log_score_threshold` becomes a signal (`new error
template` or `error spike`); a steady routine error is known noise, and an operator's mute
(`detect.mutes`) silences a template or a fingerprint. The evidence names each flagged line with
its number, and the score with its parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agentheal.detect import scoring
from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import problem
from agentheal.detect.mutes import MuteBook
from agentheal.models import Severity, Signal, fingerprint_of

ERROR_LINE = re.compile(
    r"\b(?:ERROR|FATAL|CRITICAL|SEVERE|PANIC|EMERG)\b|Traceback|Exception\b|Error\b"
    r"|\blevel=(?:error|fatal|critical)\b|\b(?:error|fatal|panic)\b",
)
_ERROR_WORDS = ("err", "fatal", "critical", "severe", "panic", "emerg", "traceback", "exception")


def is_error_line(text: str) -> bool:
    """Does the line report an error (a level, an exception, a traceback)?"""
    low = text.lower()
    # Substring tests in C first: most lines have none of these words, and the regex is 10x slower.
    if not any(word in low for word in _ERROR_WORDS):
        return False
    return ERROR_LINE.search(text) is not None


_TIMESTAMP = re.compile(
    r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*"
)
_START, _END = r"((?<=[^A-Za-z0-9])|^)", r"((?=[^A-Za-z0-9])|$)"
_MASKS = [
    (_START + r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})" + _END, "ID"),
    (_START + r"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(:\d+)?)" + _END, "IP"),
    (_START + r"(0x[a-fA-F0-9]+)" + _END, "HEX"),
    (_START + r"([-+]?\d+(\.\d+)?)" + _END, "*"),  # numbers: one template from the first line on
]
_EVIDENCE_LINES = 10
_NUMBERS_SHOWN = 200
_CHUNK = 1 << 20
_HEAD = 64


class LogReadError(Exception):
    """A log file that cannot be read (missing, no permission, a folder)."""


class LogTail:
    """Follows one file: new complete lines since the last read, across rotation and truncation.

    Rotation by rename (the path gets a new inode) drains the old file first, then reads the new
    one from its start; truncation in place (copytruncate) restarts at 0. Line numbers count in
    the file they were read from, from 1.
    """

    def __init__(
        self, path: Path, offset: int = 0, line_no: int = 0, inode: int | None = None, head: str = ""
    ) -> None:
        self.path = path
        self.offset = offset
        self.line_no = line_no
        self.inode = inode
        self.head = bytes.fromhex(head)  # the file's first bytes, to notice a truncate-and-refill
        self._fh: Any = None

    def state(self) -> dict[str, Any]:
        return {"offset": self.offset, "line_no": self.line_no, "inode": self.inode, "head": self.head.hex()}

    def _replaced(self) -> bool:
        """The file was truncated and written again past our offset: its first bytes changed."""
        if not self.head or self.offset == 0:
            return False
        try:
            with open(self.path, "rb") as fh:
                return fh.read(len(self.head)) != self.head
        except OSError:
            return False  # the read that follows reports it

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def read(self, max_lines: int | None = None, final: bool = False) -> list[tuple[int, str]]:
        """New complete lines as (number, text); `final` also returns a last line with no newline yet.

        Raises:
            LogReadError: The file is missing, unreadable, or not a file.
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self.close()
            raise LogReadError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if not os.path.isfile(self.path):
            raise LogReadError(f"{self.path}: not a regular file")
        lines: list[tuple[int, str]] = []
        if self.inode is not None and st.st_ino != self.inode:
            if self._fh is not None:  # rotated away: what the old file still had comes first
                lines += self._drain(self._fh, max_lines, final=True)
            self.close()
            self.offset, self.line_no = 0, 0
        elif st.st_size < self.offset or self._replaced():
            self.close()  # truncated in place
            self.head = b""
            self.offset, self.line_no = 0, 0
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115  (kept open to drain it after a rotation)
            except OSError as exc:
                raise LogReadError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            self.inode = os.fstat(self._fh.fileno()).st_ino
        if len(self.head) < _HEAD and self.offset < _HEAD:
            self._fh.seek(0)
            self.head = self._fh.read(_HEAD)
        return lines + self._drain(self._fh, None if max_lines is None else max_lines - len(lines), final)

    def _drain(self, fh: Any, max_lines: int | None, final: bool) -> list[tuple[int, str]]:
        fh.seek(self.offset)
        out: list[tuple[int, str]] = []
        pending = b""
        while max_lines is None or len(out) < max_lines:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            data = pending + chunk
            end = data.rfind(b"\n")
            if end < 0:
                pending = data  # a line longer than a chunk: read on
                continue
            body, pending = data[: end + 1], data[end + 1 :]
            room = None if max_lines is None else max_lines - len(out)
            if room is not None and body.count(b"\n") > room:
                for raw in body.split(b"\n")[:room]:
                    self.offset += len(raw) + 1
                    self.line_no += 1
                    out.append((self.line_no, raw.decode("utf-8", "replace").rstrip("\r")))
                return out
            self.offset += len(body)
            for text in body.decode("utf-8", "replace").split("\n")[:-1]:
                self.line_no += 1
                out.append((self.line_no, text.rstrip("\r")))
        if final and pending and (max_lines is None or len(out) < max_lines):
            # The last line has no newline yet; a one-shot read takes it as it is.
            self.offset += len(pending)
            self.line_no += 1
            out.append((self.line_no, pending.decode("utf-8", "replace").rstrip("\r")))
        return out


def count_lines_before(path: Path, offset: int) -> int:
    """Newlines in the first `offset` bytes: the line number a read from `offset` continues from."""
    total = 0
    with open(path, "rb") as fh:
        left = offset
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                break
            total += chunk.count(b"\n")
            left -= len(chunk)
    return total


def _parse_time(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace(",", ".").replace(" ", "T", 1)).timestamp()
    except ValueError:
        return None


# Times not at the start of a line, or not in ISO form: HPC and syslog formats. Rates and bursts
# need each error line's own time; "now" for all of them would make one window of a whole file.
_DOTTED = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})[-T ](\d{2})[.:](\d{2})[.:](\d{2})(?:[.,](\d{1,6}))?")
_SYSLOG = re.compile(
    r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})\b"
)
_EPOCH = re.compile(r"(?<![\d.])(1\d{9})(?:\.\d+)?(?![\d.])")
_MONTHS = {m: i for i, m in enumerate(re.findall("...", "JanFebMarAprMayJunJulAugSepOctNovDec"), start=1)}


def line_time(text: str, now: float) -> float | None:
    """The time a line carries near its start, in another form than a leading ISO timestamp."""
    head = text[:160]
    m = _DOTTED.search(head)
    try:
        if m is not None:
            y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
            frac = float("0." + m.group(7)) if m.group(7) else 0.0
            return datetime(y, mo, d, h, mi, sec).timestamp() + frac
        m = _SYSLOG.search(head)
        if m is not None:
            year = datetime.fromtimestamp(now).year  # syslog leaves the year out
            mo, d, h, mi, sec = _MONTHS[m.group(1)], *(int(g) for g in m.groups()[1:])
            return datetime(year, mo, d, h, mi, sec).timestamp()
    except ValueError:
        return None
    m = _EPOCH.search(head)
    return float(m.group(1)) if m is not None else None


@dataclass
class _ErrorTemplate:
    template: str
    fingerprint: str | None = None
    lines: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_EVIDENCE_LINES))
    buckets: dict[int, int] = field(default_factory=dict)  # window index -> lines
    fresh: dict[int, list[int]] = field(default_factory=dict)  # window -> numbers of the new lines
    level: tuple[str, float] = ("error word", 0.0)  # the most severe of the new lines

    def take(self, number: int, text: str, bucket: int) -> None:
        self.lines.append((number, text))
        self.buckets[bucket] = self.buckets.get(bucket, 0) + 1
        numbers = self.fresh.setdefault(bucket, [])
        if len(numbers) < _NUMBERS_SHOWN:
            numbers.append(number)
        if self.level[1] < 1.0:
            level = scoring.level_part(text)
            if level[1] > self.level[1]:
                self.level = level

    def reset(self) -> None:
        self.lines.clear()
        self.fresh = {}
        self.level = ("error word", 0.0)


def new_template_miner(state_file: Path | None = None) -> Any:
    """A drain3 TemplateMiner with agentheal's masks, loaded from `state_file` when it exists."""
    from drain3 import TemplateMiner  # type: ignore[import-untyped]
    from drain3.file_persistence import FilePersistence  # type: ignore[import-untyped]
    from drain3.masking import MaskingInstruction  # type: ignore[import-untyped]
    from drain3.template_miner_config import TemplateMinerConfig  # type: ignore[import-untyped]

    config = TemplateMinerConfig()
    config.masking_instructions = [MaskingInstruction(p, m) for p, m in _MASKS]
    config.snapshot_interval_minutes = 10_000  # agentheal saves explicitly, not on every new template
    handler = FilePersistence(str(state_file)) if state_file is not None and state_file.exists() else None
    miner = TemplateMiner(handler, config)
    miner.persistence_handler = None  # loaded; saving is `LogMiner.save`, so mining never writes per line
    return miner


class LogMiner:
    """Templates of one log stream, and which of its error templates are new or spiking."""

    def __init__(
        self,
        name: str,
        component: str | None,
        config: DetectConfig,
        state_dir: Path | None = None,
        mutes: MuteBook | None = None,
    ) -> None:
        self.name = name
        self.component = component
        self.config = config
        self.state_dir = state_dir
        self._drain_file = state_dir / "drain3.bin" if state_dir is not None else None
        self.miner = new_template_miner(self._drain_file)
        self.known_errors: set[int] = set()
        self.reported: dict[int, str] = {}  # cluster id -> fingerprint of its gap
        self.errors: dict[int, _ErrorTemplate] = {}
        self.lines_seen = 0
        self.first_window: int | None = None  # the log's first window: its base rates span from there
        self.mutes = mutes
        self.tail_state: dict[str, Any] = {}
        if state_dir is not None:
            self._load_meta(state_dir / "meta.json")

    def _load_meta(self, path: Path) -> None:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            self.known_errors = {int(c) for c in meta.get("known_errors", [])}
            self.reported = {int(k): str(v) for k, v in meta.get("reported", {}).items()}
            self.tail_state = dict(meta.get("tail", {}))
            first = meta.get("first_window")
            self.first_window = int(first) if first is not None else None
            for cid, saved in meta.get("errors", {}).items():
                buckets = {int(b): int(n) for b, n in saved["buckets"].items()}
                self.errors[int(cid)] = _ErrorTemplate(template=str(saved["template"]), buckets=buckets)
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            self.known_errors, self.reported, self.tail_state, self.errors = set(), {}, {}, {}

    def save(self, tail_state: dict[str, Any] | None = None) -> None:
        """Persist the drain3 state and what is known about error templates (and the tail's place)."""
        if self.state_dir is None or self._drain_file is None:
            return
        from drain3.file_persistence import FilePersistence

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.miner.persistence_handler = FilePersistence(str(self._drain_file))
        try:
            self.miner.save_state("agentheal")
        finally:
            self.miner.persistence_handler = None
        if tail_state is not None:
            self.tail_state = tail_state
        meta = {
            "known_errors": sorted(self.known_errors),
            "reported": {str(k): v for k, v in self.reported.items()},
            "tail": self.tail_state,
            "first_window": self.first_window,
            # the rate history of error templates: the baseline a spike is measured against
            "errors": {
                str(cid): {"template": e.template, "buckets": {str(b): n for b, n in e.buckets.items()}}
                for cid, e in self.errors.items()
            },
        }
        (self.state_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    def feed(
        self, lines: list[tuple[int, str]], now: float | None = None, learn: bool = False
    ) -> list[Signal]:
        """Mine lines; return signals for the error templates among them that score as anomalies.

        Args:
            lines: (line number, text) pairs.
            now: Arrival time for lines without a timestamp of their own (epoch seconds).
            learn: Only learn: the templates become known and no signal is returned (a backlog).
        """
        now = time.time() if now is None else now
        window = self.config.log_spike_window_s
        add = self.miner.add_log_message
        touched: dict[int, _ErrorTemplate] = {}
        stamp_match = _TIMESTAMP.match
        is_error = is_error_line
        if self.first_window is None and lines:
            first = stamp_match(lines[0][1])
            at = _parse_time(first.group(1)) if first is not None else line_time(lines[0][1], now)
            self.first_window = int((at if at is not None else now) // window)
        for number, text in lines:
            if not text:
                continue
            m = stamp_match(text)
            # The leading timestamp is no part of the template: mining it would only add a wildcard.
            result = add(text[m.end() :] if m is not None else text)
            if not is_error(text):
                continue
            parsed = _parse_time(m.group(1)) if m is not None else line_time(text, now)
            at = parsed if parsed is not None else now
            cid = result["cluster_id"]
            err = self.errors.get(cid)
            if err is None:
                err = self.errors[cid] = _ErrorTemplate(template=result["template_mined"])
            err.template = result["template_mined"]
            err.take(number, text, int(at // window))
            touched[cid] = err
        self.lines_seen += len(lines)
        if learn:
            self.known_errors.update(touched)
            for err in touched.values():
                err.reset()
            return []
        return self._signals(touched, now)

    def _signals(self, touched: dict[int, _ErrorTemplate], now: float) -> list[Signal]:
        out = []
        total = sum(c.size for c in self.miner.drain.clusters) if touched else 0
        keep = int(3600 // self.config.log_spike_window_s) + 1
        for cid, err in touched.items():
            signal = self._scored(cid, err, total)
            if signal is not None:
                out.append(signal)
            self.known_errors.add(cid)
            err.reset()
            # Old windows are the baseline; keep an hour's worth of them.
            newest = max(err.buckets)
            err.buckets = {b: n for b, n in err.buckets.items() if b > newest - keep}
        return out

    def _scored(self, cid: int, err: _ErrorTemplate, total: int) -> Signal | None:
        """The signal of a template's new lines when they score as an anomaly (None: noise or muted)."""
        if self.mutes is not None and self.mutes.template_muted(err.template) is not None:
            return None
        fingerprint = self.reported.get(cid)
        if fingerprint is not None and self.mutes is not None and self.mutes.fingerprint_muted(fingerprint):
            return None
        new = cid not in self.known_errors
        cluster = self.miner.drain.id_to_cluster.get(cid)
        count = cluster.size if cluster is not None else sum(err.buckets.values())
        first = self.first_window if self.first_window is not None else min(err.buckets)
        burst = scoring.burst_part(err.buckets, set(err.fresh), first, self.config)
        if burst.steady:
            return None  # routine: it recurs at its usual rate, so it is no news
        parts = scoring.parts(err.level[1], scoring.rarity_part(count, total), burst.part, new)
        score = scoring.combine(parts)
        if score < self.config.log_score_threshold:
            return None
        # The lines of its bursting windows are flagged; with no base rate to burst against, all of them.
        floor = self.config.log_spike_factor * burst.base
        numbers = sorted(n for b, nums in err.fresh.items() if len(nums) > floor for n in nums)
        numbers = numbers or sorted(n for nums in err.fresh.values() for n in nums)
        note = scoring.explain(score, parts, err.level[0], burst)
        if new:
            return self._signal(cid, err, "new_error_template", f"new error template in {self.name}",
                                numbers, score, note)  # fmt: skip
        window = f"{burst.peak} lines in the busiest {self.config.log_spike_window_s:g} s"
        return self._signal(cid, err, "error_spike", f"error spike in {self.name}", numbers, score,
                            f"{window}; {note}")  # fmt: skip

    def _signal(
        self, cid: int, err: _ErrorTemplate, cls: str, head: str, numbers: list[int], score: float, note: str
    ) -> Signal:
        text = f"{head}: {err.template}"
        fingerprint = self.reported.get(cid)
        if fingerprint is None:
            # The template may grow wildcards later; the gap keeps the fingerprint of its first report.
            fingerprint = self.reported[cid] = fingerprint_of("incident", self.component, text)
        shown = numbers[:_NUMBERS_SHOWN]
        more = "" if len(numbers) <= _NUMBERS_SHOWN else f" (first {_NUMBERS_SHOWN})"
        evidence = [f"{self.name} lines {', '.join(str(n) for n in shown)}{more}: template {err.template!r}"]
        evidence.append(note)
        flagged = set(shown)
        evidence += [f"{self.name} line {n}: {line[:300]}" for n, line in err.lines if n in flagged]
        ttl = max(600.0, 10 * self.config.log_spike_window_s)
        return problem(
            "logs", self.component, text, cls, channel=f"template:{self.name}:{cid}",
            severity=Severity.medium, evidence=evidence, ttl_s=ttl, fingerprint=fingerprint,
            details={"lines": shown, "log": self.name, "score": score},
        )  # fmt: skip


def state_dir_for(home: Path, path: Path) -> Path:
    """Where the miner state of one log file lives under the home folder."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return home / "detect" / "logs" / f"{path.name}-{digest}"
