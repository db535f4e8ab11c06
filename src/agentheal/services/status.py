"""`agentheal status` and `GET /status`: the effectiveness figures and the state of each engine.

Both doors print this one JSON object: `{"figures": [{"name", "value", "unit", "n", "window",
"no_data"}], "engines": [{"name", "state", "last_activity", "detail"}]}`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from agentheal.metrics import DEFAULT_WINDOW, Engine, Figure, Window, compute, engines

if TYPE_CHECKING:
    from agentheal.events import EventStore

__all__ = ["StatusView", "status", "status_over", "window_of"]

MAX_DAYS = 3650


class StatusView(BaseModel):
    """The figures over one window, and what each engine last did."""

    figures: list[Figure] = Field(description="Each figure: null value and no_data true when nothing counts.")
    engines: list[Engine] = Field(description="detection, healing, factory, evolution, prevention.")


def window_of(days: float | None, now: datetime | None = None) -> Window:
    """The last `days` days (default 30) up to `now`.

    Raises:
        ValueError: days not above 0 or above ten years.
    """
    if days is None:
        return Window.last(DEFAULT_WINDOW, now)
    if not 0 < days <= MAX_DAYS:
        raise ValueError(f"days must be above 0 and at most {MAX_DAYS}, got {days}")
    return Window.last(timedelta(days=days), now)


def status(events: EventStore, days: float | None = None) -> StatusView:
    """Every figure over the last `days` days (30 by default), and the engines' states now.

    Raises:
        ValueError: days not above 0 or above ten years.
    """
    return status_over(events, window_of(days))


def status_over(events: EventStore, window: Window) -> StatusView:
    """Every figure over `window`, and the engines' states at its end."""
    return StatusView(figures=compute(events, window), engines=engines(events, now=window.until))
