"""The detector: one session of monitoring, log mining, metrics, alerts, trends and patterns into gaps.

`Detector.once()` decides within one call (n samples spaced `once_spacing_s` apart, so the k-of-n
rule holds inside a single invocation); `Detector.round()` is one step of the continuous loop that
`agentheal watch` drives. Signals from other threads (the alert and feedback listener) go through
`push`, a thread-safe queue drained at the next round.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentheal.detect.alerts import alert_signals, feedback_signal, parse_webhook
from agentheal.detect.checks import CheckBook
from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import GapBook, TrackedGap
from agentheal.detect.logs import LogMiner, LogReadError, LogTail, count_lines_before, state_dir_for
from agentheal.detect.mutes import MuteBook
from agentheal.detect.predict import Sample, TrendBook
from agentheal.models import Gap, Signal

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.events import EventStore


@dataclass
class LogStream:
    """One followed log file: where it is read from and its template miner."""

    path: Path
    name: str
    component: str | None
    tail: LogTail
    miner: LogMiner
    learn: bool = False


class Detector:
    """Turns everything observed about an estate (and any log files) into open gaps."""

    def __init__(
        self,
        settings: Settings,
        config: DetectConfig | None = None,
        backend: LocalBackend | None = None,
        logs: list[Path] | None = None,
        persist: bool = False,
        events: EventStore | None = None,
    ) -> None:
        """Set up the detectors.

        Args:
            settings: Where the home folder is (log miner state, trend history).
            config: Thresholds and endpoints; the defaults when None.
            backend: The estate's backend; None to mine logs only.
            logs: Log files to mine besides the components' own.
            persist: Keep miner state, tail positions and trend samples under the home folder
                (the continuous loop); a one-shot detection reads them but writes nothing.
            events: The event store to read history from (recurring gaps, weak components).
        """
        from agentheal.detect.metrics import MetricsWatcher
        from agentheal.detect.monitor import Monitor

        self.settings = settings
        self.config = config or DetectConfig()
        self.backend = backend
        self.estate = backend.estate if backend is not None else None
        self.persist = persist
        self.events = events
        self.book = GapBook(self.estate)
        self.monitor = Monitor(backend, self.config) if backend is not None else None
        self.metrics = MetricsWatcher(self.config, self.monitor.kofn if self.monitor else None)
        self.trends = TrendBook(self.config)
        self.reports: list[str] = []
        self.paused: set[str] = set()
        self.rounds = 0
        self.signals_seen = 0
        self._inbox: queue.SimpleQueue[Signal] = queue.SimpleQueue()
        self.mutes = MuteBook(settings.home_dir)  # an operator's `feedback mute`, re-read each round
        # the evolve graph's added checks (faster probes of a component whose fault recurs), re-read too
        self.checks = CheckBook(settings.home_dir, set(self.estate.components) if self.estate else None)
        if self.monitor is not None:
            self.monitor.evolved = self.checks.intervals()
        self._trend_file = settings.home_dir / "detect" / "trends.json"
        problem = self.trends.load(self._trend_file)
        if problem:
            self.reports.append(problem)
        self.streams: list[LogStream] = []
        if self.estate is not None:
            for name in self.estate.order():
                for i, log in enumerate(self.estate.components[name].logs):
                    self._add_stream(self.estate.path(log), log, name, since_start=i == 0)
        for path in logs or []:
            self._add_stream(Path(path).expanduser().resolve(), str(path), None, since_start=False)

    def _add_stream(self, path: Path, name: str, component: str | None, since_start: bool) -> None:
        state_dir = state_dir_for(self.settings.home_dir, path)
        miner = LogMiner(name, component, self.config, state_dir, mutes=self.mutes)
        saved = miner.tail_state
        tail = LogTail(path)
        # A loop starting with no saved place learns the backlog first: old errors are history, not news.
        learn = self.persist
        try:
            inode = path.stat().st_ino
        except OSError:
            inode = None
        if saved and saved.get("inode") == inode and inode is not None:
            tail = LogTail(
                path, int(saved["offset"]), int(saved["line_no"]), inode, str(saved.get("head", ""))
            )
            learn = False
        elif since_start and self.backend is not None and component is not None:
            # The output log of a component: what it wrote since its last start is what matters now.
            from agentheal.estate.process import read_record

            offset = read_record(self.backend.state_dir, component).log_offset
            try:
                if 0 < offset <= path.stat().st_size:
                    tail = LogTail(path, offset, count_lines_before(path, offset))
            except OSError:
                pass  # unreadable: the first read reports it
        self.streams.append(LogStream(path, name, component, tail, miner, learn))

    # -- input from other threads ------------------------------------------------------------------

    def push(self, signal: Signal) -> None:
        """Queue a signal from another thread (alert listener, feedback); taken at the next round."""
        self._inbox.put(signal)

    def alert(self, payload: str | bytes | dict[str, Any]) -> int:
        """Queue an Alertmanager webhook payload; returns how many alerts it held.

        Raises:
            AlertError: The payload is malformed (the field is named).
        """
        signals = alert_signals(parse_webhook(payload), self.estate)
        for s in signals:
            self.push(s)
        return len(signals)

    def feedback(self, text: str, component: str | None = None) -> Signal:
        """Queue a person's report, linked to a component and a known gap when it matches one."""
        known = [t.gap for t in self.book.open.values()]
        if self.events is not None:
            known += self.events.gaps(limit=500)
        if component is not None and self.estate is not None:
            self.estate.component(component)  # EstateError naming the known ones
        signal = feedback_signal(text, self.estate, known, component)
        self.push(signal)
        return signal

    # -- rounds --------------------------------------------------------------------------------------

    def round(
        self, now: float | None = None, all_components: bool = False, final: bool = False
    ) -> list[Signal]:
        """One detection step: sample what is due, read new log lines, fit trends, take queued signals.

        Args:
            now: The time of the round (epoch seconds); default now.
            all_components: Sample every component, due or not (a one-shot detection).
            final: Take a last log line that has no newline yet.

        Returns:
            The signals of this round (already applied to `book`).
        """
        now = time.time() if now is None else now
        signals: list[Signal] = []
        samples: list[Sample] = []
        self.mutes.refresh()
        if self.mutes.problem:
            self.reports.append(self.mutes.problem)
            self.mutes.problem = None
        if self.checks.refresh() and self.monitor is not None:
            self.monitor.take_checks(self.checks.intervals(), now)
        if self.checks.problem:
            self.reports.append(self.checks.problem)
            self.checks.problem = None
        if self.monitor is not None:
            names = self.estate.order() if all_components and self.estate else self.monitor.due(now)
            names = [n for n in names if n not in self.paused]
            found, samples = self.monitor.round(names, now)
            signals += found
        if self.config.metrics:
            found, more = self.metrics.round(now)
            signals += found
            samples += more
            self.reports += self.metrics.reports
            self.metrics.reports = []
        for stream in self.streams:
            signals += self._read_log(stream, now, final)
        for sample in samples:
            self.trends.add(sample)
        signals += self.trends.signals(now)
        if self.events is not None and self.rounds % self.config.patterns_every == 0:
            from agentheal.detect.patterns import scan_history

            signals += scan_history(self.events, self.estate, self.config)
        while True:
            try:
                signals.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        signals = [s for s in signals if not self._muted(s)]
        for signal in signals:
            self.book.add(signal)
        self.book.expire()
        self.book.correlate()
        self.rounds += 1
        self.signals_seen += len(signals)
        return signals

    def _muted(self, signal: Signal) -> bool:
        """A problem signal whose gap an operator muted by its fingerprint (a recovery always passes)."""
        if signal.data.get("ok") or not self.mutes.mutes:
            return False
        from agentheal.models import GapKind, fingerprint_of

        fingerprint = signal.data.get("fingerprint") or fingerprint_of(
            str(signal.data.get("kind", GapKind.incident.value)), signal.component, signal.text
        )
        return self.mutes.fingerprint_muted(str(fingerprint)) is not None

    def _read_log(self, stream: LogStream, now: float, final: bool) -> list[Signal]:
        limit = self.config.log_max_lines_once if not self.persist else None
        try:
            lines = stream.tail.read(max_lines=limit, final=final)
        except LogReadError as exc:
            if stream.component is None or stream.path.exists():
                self.reports.append(f"log skipped: {exc}")
            return []  # a component's log that does not exist yet is no problem
        learn, stream.learn = stream.learn, False
        return stream.miner.feed(lines, now, learn=learn) if lines else []

    def once(self) -> list[TrackedGap]:
        """Detect within one call: n samples `once_spacing_s` apart, logs read to their end.

        Returns:
            The open gaps, roots first.
        """
        for i in range(self.config.n):
            if i:
                time.sleep(self.config.once_spacing_s)
            self.round(all_components=True, final=True)
            if self.monitor is None:
                break  # logs alone: one pass reads everything
        return self.book.tracked()

    def gaps(self) -> list[Gap]:
        """The open gaps now, roots first."""
        return self.book.gaps()

    def save(self) -> None:
        """Persist miner state, tail positions and trend samples (continuous mode only)."""
        if not self.persist:
            return
        for stream in self.streams:
            try:
                stream.miner.save(stream.tail.state())
            except OSError as exc:
                self.reports.append(f"log miner state of {stream.name} not saved: {exc}")
        try:
            self.trends.save(self._trend_file)
        except OSError as exc:
            self.reports.append(f"trend history not saved: {exc}")

    def close(self) -> None:
        """Save (when persisting) and close the followed files."""
        self.save()
        for stream in self.streams:
            stream.tail.close()

    def take_reports(self) -> list[str]:
        """Problems of the detectors themselves since the last call (skipped inputs)."""
        out, self.reports = self.reports, []
        return out
