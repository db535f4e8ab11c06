"""Prediction: robust trends that forecast a breach, and change points that show a slowdown.

Trends use the Theil–Sen estimator (`scipy.stats.theilslopes`: the median of pairwise slopes, so a
few outliers do not bend the line) on the samples of one series — folder usage, memory, a queue
depth, a latency. A series that will cross its limit within the horizon becomes a `predicted`
gap with the expected time and a confidence (Kendall's tau of the samples, given that the slope's
90 % interval lies above zero). Latency series are also searched for change points with
`ruptures` (PELT); a level shift upwards by `latency_shift_factor` is an incident.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agentheal.detect.config import DetectConfig
from agentheal.detect.gaps import problem, recovered
from agentheal.models import GapKind, Severity, Signal


class Sample(BaseModel):
    """One measurement of a series at a time (epoch seconds), with the limit it must stay under."""

    model_config = ConfigDict(extra="forbid")

    series: str
    component: str | None
    at: float
    value: float
    limit: float | None = None
    what: str = ""
    unit: str = ""
    kind: Literal["level", "latency"] = "level"


class Forecast(BaseModel):
    """When a rising series is expected to cross its limit."""

    model_config = ConfigDict(extra="forbid")

    expected_at: float
    seconds_left: float
    slope: float
    slope_low: float
    slope_high: float
    confidence: float
    level_now: float


def forecast(
    times: list[float], values: list[float], limit: float, now: float, alpha: float = 0.90
) -> Forecast | None:
    """Fit a robust line to (time, value) samples and say when it crosses `limit`.

    Args:
        times: Sample times, epoch seconds.
        values: The values at those times.
        limit: The bound not to cross.
        now: The time the forecast is for.
        alpha: Confidence level of the slope interval.

    Returns:
        The forecast, or None when the trend is not rising with confidence or never reaches the limit.
    """
    from scipy.stats import kendalltau, theilslopes  # type: ignore[import-untyped]

    if len(times) < 3 or max(times) - min(times) <= 0:
        return None
    t0 = times[0]
    xs = [t - t0 for t in times]
    fit = theilslopes(values, xs, alpha=alpha)
    slope, intercept = float(fit.slope), float(fit.intercept)
    low, high = float(fit.low_slope), float(fit.high_slope)
    if not slope > 0 or not low > 0:
        return None
    tau = kendalltau(xs, values).statistic
    confidence = 0.0 if tau is None or math.isnan(tau) else max(0.0, float(tau))
    level_now = intercept + slope * (now - t0)
    crossing = t0 + (limit - intercept) / slope
    return Forecast(
        expected_at=crossing,
        seconds_left=crossing - now,
        slope=slope,
        slope_low=low,
        slope_high=high,
        confidence=round(confidence, 3),
        level_now=level_now,
    )


def latency_shift(values: list[float], min_size: int = 5) -> tuple[int, float, float] | None:
    """The last change point of a latency series by PELT, with the medians before and after it.

    Returns:
        (index of the change, median before, median after), or None without a change point.
    """
    import numpy as np
    import ruptures as rpt  # type: ignore[import-untyped]

    n = len(values)
    if n < 2 * min_size:
        return None
    signal = np.asarray(values, dtype=float)
    # A BIC-like penalty on a robust noise estimate: quiet series need a small shift, noisy ones a big one.
    sigma = float(np.median(np.abs(np.diff(signal)))) / 0.6745 / math.sqrt(2) or 1e-3
    breaks = (
        rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(signal).predict(pen=3 * math.log(n) * sigma**2)
    )
    cuts = [b for b in breaks if b < n]
    if not cuts:
        return None
    cut = cuts[-1]
    return cut, float(np.median(signal[:cut])), float(np.median(signal[cut:]))


def _iso(epoch: float, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec)


class TrendBook:
    """Samples per series, their forecasts and latency change points."""

    def __init__(self, config: DetectConfig) -> None:
        self.config = config
        self.series: dict[str, deque[Sample]] = {}
        self._predicting: set[str] = set()
        self._slow_baseline: dict[str, float] = {}

    def add(self, sample: Sample) -> None:
        """Keep one sample (the oldest drop out past `trend_window`)."""
        self.series.setdefault(sample.series, deque(maxlen=self.config.trend_window)).append(sample)

    def signals(self, now: float) -> list[Signal]:
        """Predicted gaps for series heading over their limit, recoveries for those no longer."""
        out: list[Signal] = []
        for key, samples in self.series.items():
            last = samples[-1]
            if last.limit is not None and last.kind == "level":
                out += self._forecast(key, list(samples), last.limit, now)
            if last.kind == "latency":
                out += self._latency(key, list(samples))
        return out

    def _forecast(self, key: str, samples: list[Sample], limit: float, now: float) -> list[Signal]:
        last = samples[-1]
        found = None
        # A count alone is not enough: samples taken in a quick burst (a one-shot detection, a
        # component sampled again at once) say nothing about a trend over minutes.
        span = last.at - samples[0].at
        if (
            len(samples) >= self.config.trend_min_samples
            and span >= self.config.trend_min_span_s
            and last.value < limit
        ):
            found = forecast([s.at for s in samples], [s.value for s in samples], limit, now)
        channel = f"predict:{key}"
        ok = (
            found is not None
            and 0 < found.seconds_left <= self.config.horizon_s
            and found.confidence >= self.config.trend_min_confidence
        )
        if not ok or found is None:
            if key in self._predicting:
                self._predicting.discard(key)
                return [recovered("predict", last.component, channel)]
            return []
        self._predicting.add(key)
        what = last.what or key
        text = f"{last.component or 'estate'} {what} will exceed its {limit:g} {last.unit} limit".strip()
        evidence = [
            f"expected to cross {limit:g} {last.unit} at {_iso(found.expected_at)} "
            f"(in {found.seconds_left:.0f} s); confidence {found.confidence:.2f}",
            f"now {last.value:.2f} {last.unit}, rising {found.slope * 60:.3g} {last.unit}/min "
            f"(90% interval {found.slope_low * 60:.3g}..{found.slope_high * 60:.3g}) "
            f"over {len(samples)} samples in {samples[-1].at - samples[0].at:.0f} s",
        ]
        severity = Severity.high if found.seconds_left < self.config.horizon_s / 4 else Severity.medium
        details = {
            "expected_at": _iso(found.expected_at, "milliseconds"),
            "expected_in_s": round(found.seconds_left, 1),
            "confidence": found.confidence,
        }
        return [
            problem("predict", last.component, text, "predicted_breach", channel=channel,
                    kind=GapKind.predicted, severity=severity, evidence=evidence, details=details)
        ]  # fmt: skip

    def _latency(self, key: str, samples: list[Sample]) -> list[Signal]:
        last = samples[-1]
        channel = f"latency:{key}"
        values = [s.value for s in samples]
        baseline = self._slow_baseline.get(key)
        if baseline is not None:
            recent = statistics.median(values[-5:])
            if recent < baseline * self.config.latency_shift_factor:
                del self._slow_baseline[key]
                return [recovered("predict", last.component, channel)]
            return []
        if len(values) < self.config.latency_min_samples:
            return []
        shift = latency_shift(values)
        if shift is None:
            return []
        cut, before, after = shift
        if (
            before <= 0
            or after < before * self.config.latency_shift_factor
            or after - before < self.config.latency_min_shift_ms
            or len(values) - cut < 5
        ):
            return []
        self._slow_baseline[key] = before
        text = f"{last.component or 'estate'} got slower: {last.what or 'latency'} rose at a change point"
        evidence = [
            f"{last.what or 'latency'} median {before:.1f} {last.unit} before {_iso(samples[cut].at)}, "
            f"{after:.1f} {last.unit} since ({len(values) - cut} samples, x{after / before:.1f})"
        ]
        return [
            problem("predict", last.component, text, "latency_degraded", channel=channel, evidence=evidence,
                    details={"changed_at": _iso(samples[cut].at), "before": before, "after": after})
        ]  # fmt: skip

    # -- persistence: `watch` keeps its samples so a later one-shot detection can use the history --

    def save(self, path: Path) -> None:
        """Write the samples as JSON (atomically)."""
        data = {key: [s.model_dump() for s in samples] for key, samples in self.series.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)

    def load(self, path: Path) -> str | None:
        """Read samples saved by `save`; returns a problem to report instead of raising."""
        try:
            raw: dict[str, list[dict[str, Any]]] = json.loads(path.read_text(encoding="utf-8"))
            for samples in raw.values():
                for s in samples:
                    self.add(Sample.model_validate(s))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, ValidationError) as exc:
            return f"{path}: trend history unreadable, starting afresh: {exc}"
        return None
