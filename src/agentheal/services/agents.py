"""The agents as every door shows them: each persona with its record, computed from the event store.

`agentheal agents list|show` and `GET /agents`, `GET /agents/{name}` call these. The figures
(runs, heals, success rate, median time to heal, last used) come from `agentheal.agents`, which
counts recorded runs only; with no runs a figure is None, never a guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from agentheal.agents import AgentRecord

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.events import EventStore
    from agentheal.personas import Registry


class UnknownAgent(LookupError):
    """No persona of that name loads; the message names the ones that do."""


class StoredVersion(BaseModel):
    """One stored version of a generated persona."""

    model_config = ConfigDict(extra="forbid")

    version: int
    path: str


class AgentList(BaseModel):
    """Every persona that loads, with its record, and the persona files that do not load."""

    model_config = ConfigDict(extra="forbid")

    agents: list[AgentRecord]
    errors: list[str] = Field(description="Broken persona files: the path and what is wrong with it.")


class AgentDetail(AgentRecord):
    """One persona: its record, what it takes and may do, and its stored versions."""

    kinds: list[str] = Field(description="The gap kinds it takes.")
    components: list[str] = Field(description="Component globs it takes.")
    actions: list[str] = Field(description="Catalogue actions it may use.")
    handoffs: list[str] = Field(description="Personas it passes gaps to.")
    expertise: str
    versions: list[StoredVersion] = Field(description="Stored versions, oldest first (generated personas).")


def list_agents(registry: Registry, events: EventStore, settings: Settings) -> AgentList:
    """Every persona with its record, by name, and the broken persona files."""
    from agentheal.agents import records

    return AgentList(agents=records(registry, events, settings), errors=[str(e) for e in registry.errors])


def show_agent(name: str, registry: Registry, events: EventStore, settings: Settings) -> AgentDetail:
    """One persona's record, with what it may do and its stored versions.

    Raises:
        UnknownAgent: No persona of that name loads.
    """
    from agentheal.agents import all_runs, record_of
    from agentheal.factory.store import versions
    from agentheal.personas import RETIREMENTS, load_retirements

    persona = next((p for p in registry.all() if p.name == name), None)
    if persona is None:
        known = ", ".join(sorted(p.name for p in registry.all())) or "none"
        raise UnknownAgent(f"no persona named {name!r}; `agentheal agents list` shows them (loaded: {known})")
    retired = load_retirements(settings.generated_personas_dir / RETIREMENTS)
    record = record_of(persona, all_runs(events), retired.get(name))
    return AgentDetail(
        **record.model_dump(),
        kinds=[k.value for k in persona.kinds],
        components=list(persona.components),
        actions=list(persona.actions),
        handoffs=list(persona.handoffs),
        expertise=persona.expertise,
        versions=[StoredVersion(version=n, path=str(p)) for n, p in versions(settings, name)],
    )
