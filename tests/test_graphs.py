"""The committed diagrams in graphs/ are the compiled graphs, not a drawing that drifted."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentheal.graphs.diagrams import diagrams
from agentheal.graphs.heal import NODE_NAMES

GRAPHS = Path(__file__).resolve().parent.parent / "graphs"


@pytest.mark.parametrize("name", sorted(diagrams()))
def test_committed_diagram_matches_the_compiled_graph(name: str) -> None:
    committed = GRAPHS / f"{name}.mmd"
    assert committed.is_file(), f"graphs/{name}.mmd is missing: run `agentheal graphs export`"
    stale = f"graphs/{name}.mmd is stale: run `agentheal graphs export`"
    assert committed.read_text() == diagrams()[name], stale


def test_heal_graph_has_every_node_of_the_design() -> None:
    text = diagrams()["heal"]
    for node in NODE_NAMES:
        assert f"\t{node}(" in text
