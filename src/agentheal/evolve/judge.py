"""The figures an evolution is judged on, and the verdict: keep it only when the pattern's recurrence
fell, the resolution rate did not drop and the time to heal did not rise. An added check (faster
probes of a component) cannot make a fault come back less often, only be caught sooner: it is kept
when its pattern's median time to detect fell instead, the rest as for the others.

The same figures serve both ways of validating: a 24-hour trial read from the home's event store
(the trial against the same length before it), and a replay whose two arms each have an event store
of their own (`agentheal.evolve.replay`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.event_schema import GAPS, RUNS
from agentheal.metrics.figures import Window, runs_by_persona, timings
from agentheal.metrics.sql import backend, percentiles, seconds
from agentheal.metrics.summary import PERSON_SOURCES

if TYPE_CHECKING:
    from agentheal.events import EventStore

# Real heals on a shared host differ by tenths of a second from one run to the next: a median that
# rose by less than this (and by less than a fifth) is noise, not a regression.
HEAL_NOISE_S = 1.0
HEAL_NOISE_SHARE = 0.2


def stats(events: EventStore, fingerprint: str | None, w: Window) -> dict[str, Any]:
    """Reports of the pattern's fingerprint and their median time to detect, runs, resolution rate and
    median time to heal in `w`."""
    reports, detect = 0, None
    if fingerprint:
        stmt = sa.select(sa.func.count().label("n")).where(
            GAPS.c.fingerprint == fingerprint, *w.within(GAPS.c.recorded_at)
        )
        reports = int(events.query(stmt)[0]["n"])
        dialect = backend(events)
        lag = seconds(GAPS.c.recorded_at, dialect) - seconds(GAPS.c.created_at, dialect)
        by_detector = GAPS.c.gap["source"].as_string().not_in(PERSON_SOURCES)
        detected = [GAPS.c.fingerprint == fingerprint, by_detector, *w.within(GAPS.c.recorded_at)]
        median = percentiles(events, lag, detected, (0.5,))[1][0]
        detect = None if median is None else round(median, 3)
    runs = events.query(sa.select(sa.func.count().label("n")).where(*w.within(RUNS.c.started_at)))
    rate = runs_by_persona(events, w)[0]
    heal = timings(events, w)[2]
    return {
        "reports": reports,
        "time_to_detect_median_s": detect,
        "runs": int(runs[0]["n"]),
        "resolution_rate": rate.value,
        "time_to_heal_median_s": heal.value,
    }


def judge(before: dict[str, Any], after: dict[str, Any], kind: str | None = None) -> tuple[bool, str]:
    """Keep only when the pattern fell (for an added check: was caught sooner) and nothing else got
    worse; the reason either way.

    A figure with no data on either side (no run ended, nothing healed) is not compared: an
    evolution after which the pattern never came back has no heal to time.
    """
    worse = []
    if kind == "add_check":
        b, a = before.get("time_to_detect_median_s"), after.get("time_to_detect_median_s")
        if a is None or b is None or a >= b:
            shown = ", ".join("no data" if v is None else f"{v:g} s" for v in (b, a))
            worse.append(f"the pattern's median time to detect did not fall ({shown})")
    elif after["reports"] >= before["reports"]:
        worse.append(
            f"the pattern's reports did not fall ({before['reports']} before, {after['reports']} after)"
        )
    b, a = before["resolution_rate"], after["resolution_rate"]
    if a is not None and b is not None and a < b:
        worse.append(f"the resolution rate dropped ({b:.2f} to {a:.2f})")
    b, a = before["time_to_heal_median_s"], after["time_to_heal_median_s"]
    if a is not None and b is not None and a - b > max(HEAL_NOISE_S, HEAL_NOISE_SHARE * b):
        worse.append(f"the median time to heal rose ({b:g} s to {a:g} s)")
    if worse:
        return False, "; ".join(worse)
    if kind == "add_check":
        b, a = before["time_to_detect_median_s"], after["time_to_detect_median_s"]
        return True, f"the pattern's median time to detect fell from {b:g} s to {a:g} s, nothing got worse"
    return (
        True,
        f"the pattern's reports fell from {before['reports']} to {after['reports']}, nothing got worse",
    )
