"""The figures an evolution is judged on, and the verdict: keep it only when the pattern's recurrence
fell, the resolution rate did not drop and the time to heal did not rise.

The same figures serve both ways of validating: a 24-hour trial read from the home's event store
(the trial against the same length before it), and a replay whose two arms each have an event store
of their own (`agentheal.evolve.replay`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentheal.event_schema import GAPS, RUNS
from agentheal.metrics.figures import Window, runs_by_persona, timings

if TYPE_CHECKING:
    from agentheal.events import EventStore

# Real heals on a shared host differ by tenths of a second from one run to the next: a median that
# rose by less than this (and by less than a fifth) is noise, not a regression.
HEAL_NOISE_S = 1.0
HEAL_NOISE_SHARE = 0.2


def stats(events: EventStore, fingerprint: str | None, w: Window) -> dict[str, Any]:
    """Reports of the pattern's fingerprint, runs, resolution rate and median time to heal in `w`."""
    reports = 0
    if fingerprint:
        stmt = sa.select(sa.func.count().label("n")).where(
            GAPS.c.fingerprint == fingerprint, *w.within(GAPS.c.recorded_at)
        )
        reports = int(events.query(stmt)[0]["n"])
    runs = events.query(sa.select(sa.func.count().label("n")).where(*w.within(RUNS.c.started_at)))
    rate = runs_by_persona(events, w)[0]
    heal = timings(events, w)[2]
    return {
        "reports": reports,
        "runs": int(runs[0]["n"]),
        "resolution_rate": rate.value,
        "time_to_heal_median_s": heal.value,
    }


def judge(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, str]:
    """Keep only when the pattern fell and nothing else got worse; the reason either way.

    A figure with no data on either side (no run ended, nothing healed) is not compared: an
    evolution after which the pattern never came back has no heal to time.
    """
    worse = []
    if after["reports"] >= before["reports"]:
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
    return (
        True,
        f"the pattern's reports fell from {before['reports']} to {after['reports']}, nothing got worse",
    )
