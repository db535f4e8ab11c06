"""agentheal watching a session's estate exactly as `agentheal watch` does, with what it does recorded.

The `Watch` loop (detection rounds, heals dispatched from the open gaps) runs in a thread. Two
small recorders see what it does as it happens: the gap book notes when each gap opens (time to
detect), and the heal context passes every node transition on with its run id (the live view).
Everything else — runs, actions, validations, LLM calls — is read back from the event store the
heals write, so every figure comes from recorded events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import GapBook, TrackedGap
from agentheal.models import Signal

if TYPE_CHECKING:
    from agentheal.estate.model import Estate
    from agentheal.estate.probes import ComponentHealth
    from agentheal.eval.session import EstateSession
    from agentheal.events import RunDetail

# Probes every second; k=2 of n=3 as `watch` does by default. A blip shorter than a second (an
# operator's restart) cannot fail two samples, while an outage is confirmed in about two seconds.
DRILL_DETECT = DetectConfig(interval_s=1.0)


@dataclass(frozen=True)
class GapSeen:
    """A gap detection opened."""

    at: float
    component: str | None
    text: str
    problem: str
    source: str
    fingerprint: str


@dataclass(frozen=True)
class NodeSeen:
    """A node transition of a heal run."""

    at: float
    run_id: str
    node: str
    detail: str
    data: dict[str, Any]


class _RecordingBook(GapBook):
    """The gap book, noting the moment each gap opens."""

    def __init__(self, estate: Estate | None, sink: Callable[[GapSeen], None]) -> None:
        super().__init__(estate)
        self._sink = sink

    def add(self, signal: Signal) -> TrackedGap | None:
        before = len(self.opened)
        tracked = super().add(signal)
        if tracked is not None and len(self.opened) > before:  # a new gap, not evidence for an open one
            g = tracked.gap
            self._sink(GapSeen(time.time(), g.component, g.text, tracked.problem, g.source, g.fingerprint))
        return tracked


@dataclass
class Observer:
    """`agentheal watch` on a session's estate, in a thread; use as a context manager."""

    session: EstateSession
    config: DetectConfig = field(default_factory=lambda: DRILL_DETECT)
    gaps: list[GapSeen] = field(default_factory=list)
    nodes: list[NodeSeen] = field(default_factory=list)
    lines: list[tuple[float, str]] = field(default_factory=list)
    on_line: Callable[[str], None] | None = None
    on_node: Callable[[NodeSeen], None] | None = None

    def __post_init__(self) -> None:
        from agentheal.detect.watch import Watch
        from agentheal.events import EventStore

        s = self.session
        self.watch = Watch(s.settings, s.estate_file, self.config, policy_path=s.policy_file, say=self._say)
        self.watch.detector.book = _RecordingBook(self.watch.detector.estate, self.gaps.append)
        self.watch.ctx.progress = self._progress  # each node transition, with its run id
        self.events = EventStore(s.settings.events_url)  # this thread's own reader
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, line: str) -> None:
        self.lines.append((time.time(), line))
        if self.on_line is not None:
            self.on_line(line)

    def _progress(self, run_id: str | None, node: str, detail: str, data: dict[str, Any]) -> None:
        if run_id is not None:
            self._node(NodeSeen(time.time(), run_id, node, detail, dict(data)))

    def _node(self, seen: NodeSeen) -> None:
        self.nodes.append(seen)
        if self.on_node is not None:
            self.on_node(seen)

    def warm(self) -> None:
        """Open the heal's stores and load the embedding model now, so the first heal is not the one
        that pays for them (a watch that runs for days pays once too)."""
        from agentheal.embedding import get_embedder
        from agentheal.models import Gap

        ctx = self.watch.ctx
        _ = (ctx.events, ctx.policy, ctx.memory)
        get_embedder(ctx.settings).embed(["warm up"])
        component = next(iter(self.session.estate.components))
        ctx.registry.route(Gap(text="warm up: the component is down", component=component))

    def start(self, rounds: int = 2, timeout_s: float = 20.0) -> None:
        """Start watching; return once `rounds` detection rounds ran (the healthy baseline)."""
        self.warm()
        self._thread = threading.Thread(target=self.watch.run, name="agentheal-watch", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while self.watch.detector.rounds < rounds and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop watching; running heals finish first (up to `timeout_s`). True when it stopped."""
        self.watch.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            stopped = not self._thread.is_alive()
        else:
            stopped = True
        return stopped

    def close(self) -> None:
        """Stop watching and close the event store reader."""
        self.stop()
        self.events.close()

    # -- what it sees ----------------------------------------------------------------------------------

    def heals_running(self) -> list[str]:
        """Components with a heal in flight."""
        return list(self.watch.in_flight)

    def health(self) -> dict[str, ComponentHealth]:
        """The last health sample of each component, as detection saw it."""
        monitor = self.watch.detector.monitor
        return dict(monitor.health) if monitor is not None else {}

    def open_gaps(self) -> list[TrackedGap]:
        """The gaps open now, roots first."""
        with self.watch.lock:
            return self.watch.detector.book.tracked()

    def runs_since(self, since: float) -> list[RunDetail]:
        """Heal runs started at or after `since` (epoch seconds), oldest first, as recorded."""
        start = datetime.fromtimestamp(since, UTC)
        rows = [r for r in self.events.runs(limit=500) if r.started_at >= start]
        found = [self.events.run(r.run_id) for r in reversed(rows)]
        return [d for d in found if d is not None]

    def first_heal_since(self, since: float) -> float | None:
        """When the first heal run started at or after `since` (its triage), or None."""
        return next((n.at for n in list(self.nodes) if n.at >= since and n.node == "triage"), None)
