"""How anomalous an error template's lines are: one score from what separates incidents from noise.

A log's error lines are not all incidents: a busy service logs the same routine error (a cache
miss, a retried request) all day. What marks an incident is known: the template is rare in this
log's history, its level is severe, it comes in a burst against its own base rate, and it was
never seen before. Each of those is a part in [0, 1], weighed, and combined as a noisy-OR,
`1 - prod(1 - weight * part)`, so one strong sign (a burst of a hundred times the base rate) is
enough, and several weak ones add up. A gap opens when the score reaches
`DetectConfig.log_score_threshold`.

A template that recurs at a steady rate over a long enough span (`log_noise_min_windows` windows
with lines, over at least `log_noise_min_span_s`, no window far above its usual count) is known
noise: its lines open no gap, until it bursts. An operator's mute (`agentheal feedback mute`)
sets the score of a template, or of a gap's fingerprint, to 0 until it is unmuted or expires.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from agentheal.detect.config import DetectConfig

_SEVERE = re.compile(
    r"\b(?:FATAL|CRITICAL|CRIT|PANIC|EMERG|EMERGENCY|ALERT|SEVERE|FAILURE)\b|\blevel=(?:fatal|critical)\b"
)
_ERROR = re.compile(r"\b(?:ERROR|ERR)\b|Traceback|Exception\b|\blevel=error\b")
# A line that names a mild level of its own: an error word in it is part of a routine message
# ("INFO instruction cache parity error corrected").
_MILD = re.compile(r"\b(?:INFO|DEBUG|TRACE|NOTICE|WARN|WARNING)\b|\blevel=(?:info|debug|warn|warning)\b")

# Weights of the parts in the noisy-OR: a burst or a never-seen template alone nearly decides.
WEIGHTS = {"level": 0.3, "rarity": 0.5, "burst": 0.7, "new": 0.4}
_PRIOR_LINES = 100  # a short log is not evidence that a template is common
_RARITY_DECADES = 3.0  # one line in a thousand (or rarer) is fully rare
_BURST_DECADES = 2.0  # a hundred times the base rate is a full burst
MILD = 0.1  # the level part of an error word in a line of a mild level
_MILD_DAMPING = 0.25


def level_part(text: str) -> tuple[str, float]:
    """The line's level and its part: severe levels 1.0, errors 0.6, an error word in a line of a
    mild level (INFO, WARN...) 0.1, other error words 0.4."""
    if _SEVERE.search(text):
        return "severe", 1.0
    if _ERROR.search(text):
        return "error", 0.6
    if _MILD.search(text):
        return "mild level", MILD
    return "error word", 0.4


def rarity_part(count: int, total: int) -> float:
    """How rare the template is among all lines this log has had: 1.0 at one in a thousand."""
    share = max(count, 1) / (max(total, 0) + _PRIOR_LINES)
    return max(0.0, min(1.0, -math.log10(share) / _RARITY_DECADES))


@dataclass(frozen=True)
class Burst:
    """A template's busiest window among the new lines against its usual count per window."""

    peak: int
    base: float
    part: float
    steady: bool  # known noise: recurring at a steady rate over a long span


def burst_part(buckets: dict[int, int], fresh: set[int], first_window: int, config: DetectConfig) -> Burst:
    """The burst part of a template from its lines per window.

    Args:
        buckets: Window index -> lines of this template (its kept history and the new lines).
        fresh: The windows that received new lines now.
        first_window: The first window this log was observed in (the base rate is over the log's span).
        config: Window length, spike factor and minimum, noise span.
    """
    newest = max(buckets)
    peak_window = max(fresh, key=lambda b: buckets[b]) if fresh else newest
    peak = buckets[peak_window]
    others = [n for b, n in buckets.items() if b != peak_window]
    # The base rate over every window of the log's span but the peak one, quiet windows included.
    span = max(1, newest - min(first_window, min(buckets)))
    base = sum(others) / span
    ratio = peak / max(base, 1.0 / span)
    part = max(0.0, min(1.0, math.log10(max(ratio, 1.0)) / _BURST_DECADES))
    part *= min(1.0, peak / config.log_spike_min)  # one line is rare, not a burst
    occupied = sorted(buckets.values())
    windows_s = (newest - min(buckets) + 1) * config.log_spike_window_s
    steady = (
        len(occupied) >= config.log_noise_min_windows
        and windows_s >= config.log_noise_min_span_s
        and peak <= config.log_spike_factor * statistics.median(occupied)
    )
    return Burst(peak=peak, base=base, part=part, steady=steady)


def parts(level: float, rarity: float, burst: float, new: bool) -> dict[str, float]:
    """The four parts of a template's score. In a line of a mild level of its own (INFO, WARN), an
    error word is routine vocabulary ("retrying", "error corrected"): being new or rare counts a
    quarter as much there, and only a burst makes such a line an incident."""
    damp = _MILD_DAMPING if level <= MILD else 1.0
    return {"level": level, "rarity": rarity * damp, "burst": burst, "new": (1.0 if new else 0.0) * damp}


def combine(parts: dict[str, float]) -> float:
    """The noisy-OR of the weighed parts, in [0, 1]."""
    keep = 1.0
    for name, value in parts.items():
        keep *= 1.0 - WEIGHTS[name] * max(0.0, min(1.0, value))
    return round(1.0 - keep, 3)


def explain(score: float, parts: dict[str, float], level: str, burst: Burst) -> str:
    """The score as an evidence line: each part, and the burst's figures."""
    shown = ", ".join(f"{name} {value:.2f}" for name, value in parts.items())
    return (
        f"anomaly score {score:.2f} ({shown}; level {level}; busiest window {burst.peak} line(s) "
        f"against a base of {burst.base:.2f} per window)"
    )
