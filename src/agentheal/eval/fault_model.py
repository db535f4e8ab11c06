"""What a fault is, what injecting one records, and the helpers the faults share.

A fault breaks a running estate for real (a killed process, a file written, a link switched)
and records what it did, where the damage should show (the component and the facts a diagnosis
should find there), the words a person would use to report it, and how it is expected to be
healed (the persona and the remediations), so the eval can score a heal against it.
"""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentheal.estate import changes
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import Estate, EstateError
from agentheal.estate.process import ProcRecord, find_process, read_record, start_process, stop_process
from agentheal.models import utcnow


class FaultError(Exception):
    """A fault that cannot be injected: unknown, not applicable to the component, or the estate is
    not in the state it needs (e.g. the component is not running)."""


class ExpectedHeal(BaseModel):
    """How the fault is expected to be healed, for scoring."""

    model_config = ConfigDict(extra="forbid")

    persona: str | None = Field(description="The built-in persona whose playbook heals it.")
    actions: list[str] = Field(description='Remediations in order, as signatures: "restart(inventory)".')
    offline: bool = Field(description="A built-in playbook heals it with no LLM.")
    why_not: str | None = Field(default=None, description="Why offline healing cannot, when it cannot.")


class FaultRecord(BaseModel):
    """What an injection did and what should follow from it."""

    model_config = ConfigDict(extra="forbid")

    fault: str
    component: str = Field(description="Where the fault was injected.")
    estate: str
    injected_at: datetime = Field(default_factory=utcnow)
    did: list[str] = Field(description="What was done, step by step.")
    symptom: str = Field(description="The gap as a person would report it.")
    gap_component: str = Field(description="Where the symptom shows (a dependent, for dependency_down).")
    breaks: list[str] = Field(description="Facts a diagnosis of gap_component should find.")
    expected: ExpectedHeal
    wrong_targets: list[str] = Field(description="Components any remediation on which is a wrong action.")


class Fault(ABC):
    """One kind of fault. Subclasses set the class variables and implement `_applies` and `_inject`."""

    name: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[str] = "nothing special"

    def applies_to(self, estate: Estate) -> list[str]:
        """The components this fault can be injected into, in dependency order."""
        return [c for c in estate.order() if self._applies(estate, c)]

    def inject(self, backend: LocalBackend, component: str) -> FaultRecord:
        """Break `component` of the running estate for real.

        Raises:
            FaultError: The component is unknown, the fault does not apply to it, or the estate
                is not in the state the fault needs.
        """
        estate = backend.estate
        try:
            estate.component(component)
        except EstateError as e:
            raise FaultError(str(e)) from None
        if not self._applies(estate, component):
            where = ", ".join(self.applies_to(estate)) or "no component of this estate"
            raise FaultError(
                f"fault {self.name} does not apply to {component}: it needs {self.needs} "
                f"(applies to: {where})"
            )
        return self._inject(backend, component)

    @abstractmethod
    def _applies(self, estate: Estate, component: str) -> bool: ...

    @abstractmethod
    def _inject(self, backend: LocalBackend, component: str) -> FaultRecord: ...

    def _record(
        self,
        backend: LocalBackend,
        component: str,
        did: list[str],
        symptom: str,
        breaks: list[str],
        persona: str,
        actions: list[str],
        gap_component: str | None = None,
    ) -> FaultRecord:
        targets = {a[a.index("(") + 1 : -1] for a in actions}
        return FaultRecord(
            fault=self.name,
            component=component,
            estate=backend.estate.name,
            did=did,
            symptom=symptom,
            gap_component=gap_component or component,
            breaks=breaks,
            expected=ExpectedHeal(persona=persona, actions=actions, offline=True),
            wrong_targets=sorted(set(backend.estate.components) - targets),
        )


# -- helpers -------------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def running_pid(backend: LocalBackend, component: str) -> int:
    """The pid of the component's live process (FaultError when it is not running)."""
    proc = find_process(read_record(backend.state_dir, component))
    if proc is None:
        raise FaultError(f"{component} is not running; start the estate first (agentheal estate up FILE)")
    return int(proc.pid)


def is_down(backend: LocalBackend, component: str) -> bool:
    return find_process(read_record(backend.state_dir, component)) is None


def kill(backend: LocalBackend, component: str) -> str:
    """SIGKILL the component's main process (not its group: children are left as a crash leaves them)."""
    pid = running_pid(backend, component)
    os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: is_down(backend, component), 5.0):
        raise FaultError(f"{component}: pid {pid} still runs 5 s after SIGKILL")
    return f"sent SIGKILL to {component}'s process (pid {pid})"


def relaunch(backend: LocalBackend, component: str) -> tuple[str, ProcRecord]:
    """Stop and start the component the way a deploy script or an operator would: without waiting
    for its probes (the estate's own `restart` action waits, and heals are measured on it)."""
    stopped = stop_process(backend.state_dir, component)
    count = changes.replicas(backend.estate, backend.state_dir, component)
    extra = {"AGENTHEAL_REPLICAS": str(count)} if count is not None else {}
    try:
        record = start_process(backend.estate, component, backend.state_dir, extra)
    except EstateError as e:
        raise FaultError(f"{component}: cannot start: {e}") from None
    return f"restarted {component} ({stopped}; started pid {record.pid})", record


def wait_broken(backend: LocalBackend, record: FaultRecord, timeout_s: float = 10.0) -> list[str]:
    """Wait until the facts the fault should cause hold on its gap component.

    Returns:
        The expected facts still missing at the end (empty: the fault shows).
    """
    missing: list[str] = list(record.breaks)

    def shows() -> bool:
        nonlocal missing
        names = {f.name for f in backend.facts(record.gap_component)}
        missing = [b for b in record.breaks if b not in names]
        return not missing

    wait_until(shows, timeout_s, step_s=0.2)
    return missing
