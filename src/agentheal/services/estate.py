"""The estate as every door shows it: its components and their health; faults for drills.

`agentheal estate status` and `GET /estate` call `estate_view`; `POST /faults` (a server started
with `--allow-faults`) calls `inject_fault`, which checks a request the way `agentheal fault
inject` does before anything is broken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from agentheal.estate.probes import ComponentHealth

if TYPE_CHECKING:
    from agentheal.estate.local import LocalBackend
    from agentheal.eval.fault_model import FaultRecord


class FaultRequestError(ValueError):
    """A fault request that names an unknown fault or component, or a fault that does not apply."""


class ComponentState(ComponentHealth):
    """A component's health now, with what it depends on."""

    depends_on: list[str] = Field(default_factory=list, description="Components it needs.")


class EstateView(BaseModel):
    """Every component of the estate in dependency order, probed now."""

    model_config = ConfigDict(extra="forbid")

    name: str
    healthy: bool = Field(description="Every component is running and passes every probe.")
    components: list[ComponentState]


def estate_view(backend: LocalBackend) -> EstateView:
    """Probe every component now and say how each one is."""
    health = backend.status()
    estate = backend.estate
    return EstateView(
        name=estate.name,
        healthy=all(h.healthy for h in health),
        components=[
            ComponentState(**h.model_dump(), depends_on=list(estate.components[h.name].depends_on))
            for h in health
        ],
    )


def health(backend: LocalBackend) -> list[ComponentHealth]:
    """Every component's health, in dependency order (what `estate status` prints)."""
    return backend.status()


def inject_fault(backend: LocalBackend, name: str, component: str) -> FaultRecord:
    """Break `component` of the running estate for real, as `agentheal fault inject` does.

    Raises:
        FaultRequestError: The fault or the component is unknown, or the fault does not apply there
            (nothing was done).
        FaultError: The estate is not in the state the fault needs (e.g. the component is not running).
    """
    from agentheal.eval.faults import FaultError, get_fault

    try:
        fault = get_fault(name)
    except FaultError as exc:
        raise FaultRequestError(str(exc)) from None
    estate = backend.estate
    if component not in estate.components:
        known = ", ".join(sorted(estate.components))
        raise FaultRequestError(f"unknown component {component!r}: the estate {estate.name!r} has {known}")
    applies = fault.applies_to(estate)
    if component not in applies:
        raise FaultRequestError(
            f"fault {fault.name} does not apply to {component}: it needs {fault.needs} "
            f"(applies to: {', '.join(applies) or 'no component of this estate'})"
        )
    return fault.inject(backend, component)
