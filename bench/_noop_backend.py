"""An estate backend that answers at once and changes nothing: what the heal bench acts through.

It has the methods the heal graph calls on `LocalBackend` (`facts`, `observe`, `execute`,
`health`, `snapshot_configs`), so a heal run costs only agentheal's own work, not a process
start or a probe.
"""

from __future__ import annotations

from typing import Any

from agentheal.estate.local import ComponentHealth, Fact
from agentheal.estate.model import Estate
from agentheal.models import ActionResult, Step

# A crash loop: the availability persona fits it by words and facts, but none of its playbooks
# (restart-dead-process excludes crash_loop) nor any other persona's does, so without a memory
# playbook the plan has to come from the LLM.
NO_PLAYBOOK_FACTS = ("process_down", "crash_loop")


class NoopBackend:
    """Answers every question about a component at once; every action is "ok" and does nothing."""

    def __init__(self, estate: Estate, fact_names: tuple[str, ...] = NO_PLAYBOOK_FACTS) -> None:
        self.estate = estate
        self.fact_names = fact_names
        self.executed = 0

    def facts(self, component: str) -> list[Fact]:
        return [Fact(name=n, component=component, detail=f"{n} (bench)") for n in self.fact_names]

    def observe(self, name: str, component: str, **args: Any) -> str:
        return f"{name}({component}): nothing to see (bench)"

    def execute(self, step: Step, dry_run: bool = False) -> ActionResult:
        self.executed += 1
        outcome = "dry_run" if dry_run else "ok"
        return ActionResult(action=step.action, component=step.component, dry_run=dry_run, outcome=outcome)

    def health(self, component: str) -> ComponentHealth:
        return ComponentHealth(
            name=component, healthy=True, running=True, pid=1, uptime_s=1.0, probes=[], detail="up (bench)"
        )

    def snapshot_configs(self, component: str) -> None:
        return None
