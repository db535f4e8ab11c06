"""Mermaid diagrams of the compiled graphs, kept in the repository's `graphs/` folder."""

from __future__ import annotations

from pathlib import Path


def diagrams() -> dict[str, str]:
    """Each graph's name and its Mermaid text, drawn from the compiled graph itself."""
    from agentheal.graphs.evolve import compile_evolve_graph
    from agentheal.graphs.factory import compile_factory_graph
    from agentheal.graphs.heal import compile_heal_graph
    from agentheal.graphs.prevent import compile_prevent_graph

    return {
        "heal": compile_heal_graph(None).get_graph().draw_mermaid(),
        "factory": compile_factory_graph(None).get_graph().draw_mermaid(),
        "prevent": compile_prevent_graph(None).get_graph().draw_mermaid(),
        "evolve": compile_evolve_graph(None).get_graph().draw_mermaid(),
    }


def export_diagrams(folder: Path) -> list[Path]:
    """Write `<name>.mmd` for every graph into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in diagrams().items():
        path = folder / f"{name}.mmd"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
