"""Evolution beyond the graph itself: judging an evolution on figures, validating it by replaying the
history it concerns on a copy of the estate, and the proposals that need more than a file edit
(a tighter policy, a new agent from the factory). The graph is `agentheal.graphs.evolve`."""

from __future__ import annotations

from agentheal.evolve.judge import judge, stats

__all__ = ["judge", "stats"]
