"""Real-time monitoring: probes on intervals with jitter, k-of-n thresholds, process and folder stats.

Each component is sampled through the estate backend (`LocalBackend.health` runs its probes with
their time-outs; `facts` adds the evidence when a problem opens). A problem opens only after k
failing samples among the last n, and closes only after k healthy samples in a row, so one slow
answer opens nothing and a component that recovers by itself within the threshold never flaps.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import psutil

from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import AVAILABILITY, problem, recovered
from agentheal.detect.predict import Sample
from agentheal.estate.changes import queue_backlog
from agentheal.models import Severity, Signal

if TYPE_CHECKING:
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.probes import ComponentHealth

_MB = 1024 * 1024
Verdict = Literal["open", "renew", "recover"] | None


class KofN:
    """k-of-n per key: open after k failures in the last n samples, close after k passes in a row.

    Each sample's time is kept beside it, so an opened problem can say when its first failing sample
    in the window was taken: the time to detect counts from there, not from the confirming sample.
    """

    def __init__(self, k: int, n: int) -> None:
        self.k, self.n = k, n
        self._windows: dict[Hashable, deque[tuple[bool, float]]] = {}
        self.confirmed: set[Hashable] = set()

    def observe(self, key: Hashable, failing: bool, at: float | None = None) -> Verdict:
        """Add one sample (taken at `at`, epoch seconds; default now); say whether the problem opens,
        is renewed, or recovers."""
        window = self._windows.setdefault(key, deque(maxlen=self.n))
        window.append((failing, time.time() if at is None else at))
        if key not in self.confirmed:
            if sum(f for f, _ in window) >= self.k:
                self.confirmed.add(key)
                return "open"
            return None
        recent = list(window)[-self.k :]
        if len(recent) == self.k and not any(f for f, _ in recent):
            self.confirmed.discard(key)
            return "recover"
        return "renew" if failing else None

    def first_failing(self, key: Hashable) -> float | None:
        """When the earliest failing sample still in the key's window was taken."""
        return next((at for failing, at in self._windows.get(key, ()) if failing), None)

    def reset(self, prefix: str) -> None:
        """Forget every key of a component (after a heal, judge it afresh)."""
        for key in [k for k in self._windows if isinstance(k, tuple) and k and k[0] == prefix]:
            del self._windows[key]
            self.confirmed.discard(key)


def _tree_stats(pid: int) -> tuple[float, float, int]:
    """RSS (MB) and CPU (%) of a process with its children, and its open files."""
    proc = psutil.Process(pid)
    rss = cpu = 0.0
    files = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            with p.oneshot():
                rss += p.memory_info().rss / _MB
                cpu += p.cpu_percent(interval=None)  # since the previous call: no sleep here
                files += p.num_fds()
        except psutil.Error:
            continue
    return rss, cpu, files


class Monitor:
    """Samples an estate's components; yields confirmed problem and recovery signals, and trend samples."""

    def __init__(self, backend: LocalBackend, config: DetectConfig, seed: int | None = None) -> None:
        self.backend = backend
        self.estate = backend.estate
        self.config = config
        self.kofn = KofN(config.k, config.n)
        self._random = random.Random(seed)
        self._due: dict[str, float] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self.sampled_at: dict[str, float] = {}
        self.health: dict[str, ComponentHealth] = {}
        self.evolved: dict[str, float] = {}  # component -> the probe interval an evolved check asks for

    def take_checks(self, intervals: dict[str, float], now: float) -> None:
        """Probe intervals from the evolve graph's checks: a component asked to be probed sooner is due
        one new interval after its last sample, not at the end of the longer one."""
        self.evolved = dict(intervals)
        for name in self.estate.order():
            if name in self._due:
                sampled = self.sampled_at.get(name, now)
                self._due[name] = min(self._due[name], sampled + self.interval(name))

    def interval(self, name: str) -> float:
        """A component's probe interval: its own in the config, or the config's, or an evolved check's
        if that is shorter."""
        configured = self.config.component_intervals.get(name, self.config.interval_s)
        return min(configured, self.evolved.get(name, configured))

    def due(self, now: float) -> list[str]:
        """Components whose interval has passed, in dependency order."""
        return [name for name in self.estate.order() if self._due.get(name, 0.0) <= now]

    def expedite(self, names: set[str] | list[str], now: float | None = None) -> None:
        """Sample these components at the next round, whatever their interval says."""
        now = time.time() if now is None else now
        for name in names:
            self._due[name] = min(self._due.get(name, now), now)

    def next_due(self, exclude: set[str] | None = None) -> float | None:
        """When the next component is due (epoch seconds), or None before the first round."""
        times = [t for name, t in self._due.items() if name not in (exclude or set())]
        return min(times) if times else None

    def _schedule(self, name: str, now: float) -> None:
        interval = self.interval(name)
        spread = interval * self.config.jitter
        # Jitter keeps many components (and many agentheal hosts) from probing in lockstep.
        self._due[name] = now + interval + self._random.uniform(-spread, spread)

    def round(
        self, components: list[str] | None = None, now: float | None = None
    ) -> tuple[list[Signal], list[Sample]]:
        """Sample the due components (or those named) once.

        Returns:
            Confirmed problem/recovery signals, and samples for the trend fits.
        """
        now = time.time() if now is None else now
        names = self.due(now) if components is None else components
        signals: list[Signal] = []
        samples: list[Sample] = []
        for name in names:
            self._schedule(name, now)
            health = self.backend.health(name)
            self.health[name] = health
            self.sampled_at[name] = now
            signals += self._availability(name, health, now)
            signals += self._slowness(name, health, samples, now)
            signals += self._resources(name, health, samples, now)
        return signals, samples

    def _availability(self, name: str, health: ComponentHealth, now: float) -> list[Signal]:
        verdict = self.kofn.observe((name, AVAILABILITY), not health.healthy, now)
        if verdict == "recover":
            return [recovered("monitor", name, AVAILABILITY, f"{name} is healthy again: {health.detail}")]
        if verdict is None or health.healthy:
            return []
        evidence = [f"health: {health.detail}"] + [p.line() for p in health.probes if not p.ok]
        facts = self.backend.facts(name) if verdict == "open" else []
        names = {f.name for f in facts}
        evidence += [f.line() for f in facts if f.name not in ("process_running", "probes_ok")]
        if "crash_loop" in names:
            cls, text = "crash_loop", f"{name} is down: it crashes soon after each start"
        elif not health.running:
            cls, text = "process_down", f"{name} is down: process not running"
        else:
            cls, text = "probe_failed", f"{name} is unhealthy: its probes fail"
        at = self._since((name, AVAILABILITY)) if verdict == "open" else None
        return [
            problem(
                "monitor",
                name,
                text,
                cls,
                channel=AVAILABILITY,
                severity=Severity.high,
                evidence=evidence,
                at=at,
            )
        ]

    def _slowness(
        self, name: str, health: ComponentHealth, samples: list[Sample], now: float
    ) -> list[Signal]:
        latencies = [p.latency_ms for p in health.probes if p.latency_ms is not None and p.ok]
        if latencies:
            samples.append(
                Sample(series=f"{name}:latency", component=name, at=now, value=max(latencies),
                       what="probe latency", unit="ms", kind="latency")
            )  # fmt: skip
        if not health.healthy:
            return []  # a down component is not "slow"; the availability gap covers it
        slow = [p for p in health.probes if p.slow]
        verdict = self.kofn.observe((name, "slow_response"), bool(slow), now)
        if verdict == "recover":
            return [recovered("monitor", name, "slow_response")]
        if verdict in ("open", "renew") and slow:
            text = f"{name} answers slowly: over its latency budget"
            at = self._since((name, "slow_response")) if verdict == "open" else None
            evidence = [p.line() for p in slow]
            return [problem("monitor", name, text, "slow_response", evidence=evidence, at=at)]
        return []

    def _resources(
        self, name: str, health: ComponentHealth, samples: list[Sample], now: float
    ) -> list[Signal]:
        from agentheal.estate import files

        comp = self.estate.component(name)
        out: list[Signal] = []
        if health.pid is not None:
            try:
                rss, cpu, fds = _tree_stats(health.pid)
            except psutil.Error:
                rss, cpu, fds = 0.0, 0.0, 0
            self.stats[name] = {"rss_mb": rss, "cpu_percent": cpu, "open_files": fds}
            samples.append(
                Sample(series=f"{name}:memory", component=name, at=now, value=rss,
                       limit=comp.memory_budget_mb, what="memory", unit="MB")
            )  # fmt: skip
            if comp.memory_budget_mb is not None:
                over = rss > comp.memory_budget_mb
                detail = f"pid {health.pid} with children uses {rss:.1f} MB of {comp.memory_budget_mb:g} MB"
                out += self._bounded(name, "memory_high", over, f"{name} uses too much memory", detail, now)
        for data in comp.data_dirs:
            folder = self.estate.path(data.path)
            if data.budget_mb is None:
                continue
            size = files.folder_size(folder) / _MB if folder.is_dir() else 0.0
            samples.append(
                Sample(series=f"{name}:data:{data.path}", component=name, at=now, value=size,
                       limit=data.budget_mb, what=f"data folder {data.path}", unit="MB")
            )  # fmt: skip
            detail = f"{data.path} holds {size:.2f} MB of its {data.budget_mb:g} MB budget"
            text = f"{name} data folder {data.path} is over its budget"
            out += self._bounded(
                name, f"disk_over_budget:{data.path}", size > data.budget_mb, text, detail, now
            )
        backlog = queue_backlog(self.estate, name) if comp.queue is not None else None
        if backlog is not None and comp.queue is not None:
            count, oldest = backlog
            samples.append(
                Sample(series=f"{name}:queue", component=name, at=now, value=count,
                       what=f"queue {comp.queue.path}", unit="items")
            )  # fmt: skip
            stalled = count > 0 and oldest > comp.queue.stall_after_s
            detail = (
                f"{comp.queue.path} holds {count} items, the oldest waiting {oldest:.0f} s "
                f"(stalled after {comp.queue.stall_after_s:g} s)"
            )
            out += self._bounded(name, "queue_stalled", stalled, f"{name} queue is stalled", detail, now)
        if comp.log_budget_mb is not None:
            for log in comp.logs:
                path = self.estate.path(log)
                size = path.stat().st_size / _MB if path.is_file() else 0.0
                detail = f"{log} is {size:.2f} MB, budget {comp.log_budget_mb:g} MB"
                text = f"{name} log {log} is over its budget"
                out += self._bounded(name, f"logs_large:{log}", size > comp.log_budget_mb, text, detail, now)
        return out

    def _since(self, key: tuple[str, str]) -> datetime | None:
        first = self.kofn.first_failing(key)
        return None if first is None else datetime.fromtimestamp(first, UTC)

    def _bounded(
        self, name: str, channel: str, over: bool, text: str, detail: str, now: float
    ) -> list[Signal]:
        verdict = self.kofn.observe((name, channel), over, now)
        if verdict == "recover":
            return [recovered("monitor", name, channel)]
        if verdict in ("open", "renew") and over:
            cls = channel.split(":", 1)[0]
            severity = Severity.high if cls == "disk_over_budget" else Severity.medium
            at = self._since((name, channel)) if verdict == "open" else None
            return [
                problem(
                    "monitor", name, text, cls, channel=channel, severity=severity, evidence=[detail], at=at
                )
            ]
        return []
