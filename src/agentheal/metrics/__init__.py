"""Effectiveness, computed from recorded events: the figures `agentheal status` and the report show.

`compute(store, window)` gives every figure (value, unit, n, window, no_data); `engines(store)` the
state of each engine from what it last did; `records` keeps what the evolve and prevent graphs
record beside the heal events (predictions, evolutions, probe results).
"""

from agentheal.metrics.engines import Engine, engines
from agentheal.metrics.figures import DEFAULT_WINDOW, Figure, Window, compute

__all__ = ["DEFAULT_WINDOW", "Engine", "Figure", "Window", "compute", "engines"]
