"""A long-lived heal context (agentheal watch) sees persona changes made by other processes."""

from __future__ import annotations

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.graphs.context import HealContext

GAP = (
    "the nightly search-index compaction job leaves the tantivy segment count above 4000 and queries time out"
)


def test_registry_reloads_when_another_process_creates_or_retires_an_agent(settings: Settings) -> None:
    ctx = HealContext(settings=settings)
    before = {p.name for p in ctx.registry.all()}
    assert ctx.registry is ctx.registry  # unchanged folders: no reload

    # what `agentheal agents create` in another process would write
    assert main(["agents", "create", "--for-gap", GAP, "--json", "-q"]) == 0
    created = {p.name for p in ctx.registry.all()} - before
    assert len(created) == 1
    name = created.pop()
    assert ctx.registry.get(name).status == "active"

    assert main(["agents", "retire", name, "--why", "replaced by hand"]) == 0
    assert ctx.registry.get(name).status == "retired"
