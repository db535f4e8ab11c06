"""The agent factory's parts: design, offline derivation, rendering, checks and the files on disk.

The graph that runs them is `agentheal.graphs.factory` (`create_for_gap`).
"""

from __future__ import annotations

from agentheal.factory.design import AgentDesign, HandoffDesign, PlaybookDesign, ProcedureDesign
from agentheal.factory.render import FACTORY_VERSION

__all__ = ["FACTORY_VERSION", "AgentDesign", "HandoffDesign", "PlaybookDesign", "ProcedureDesign"]
