"""A heal whose fix cannot be proved because a dependency died meanwhile waits for that dependency.

On the shopfront estate the api's health check calls inventory. The api is killed and healed;
inventory is killed after the plan passed policy and before it acts. The run waits for inventory
(its story names it), survives its process being killed mid-wait (the resumed run waits again),
and ends healed once inventory is back; a dependency that stays down past the bound escalates the
run with the dependency named, and the plan is not blamed for it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from agentheal.estate.process import find_process, read_record
from agentheal.eval.score import summarize
from agentheal.events import EventStore
from agentheal.models import Gap, Step
from shopfront_estate import Shopfront, running_shopfront

pytestmark = pytest.mark.slow

GAP = Gap(text="api is down: process not running", component="api")

# Heals the gap in its own process; once the plan has passed policy it stops until the test, which
# kills inventory meanwhile, answers on stdin; it prints the story's lines as they come.
HEAL_SCRIPT = """\
import sys
from pathlib import Path
from agentheal.config import Settings
from agentheal.graphs.context import HealContext
from agentheal.graphs.runner import Healer
from agentheal.models import Gap

def progress(run_id, node, detail, data):
    print(f"{node}: {detail}", flush=True)
    if node == "guard" and detail.startswith("allowed"):
        sys.stdin.readline()

ctx = HealContext(settings=Settings(), estate_path=Path(sys.argv[1]), progress=progress)
with Healer(ctx) as healer:
    print("result:", healer.heal(Gap.model_validate_json(sys.argv[2]))["status"], flush=True)
"""


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shopfront]:
    # One copy per test: a copy whose api was just restarted would show it crash-looping.
    with running_shopfront(tmp_path) as running:
        # The api never passes its probes while inventory is down: a restart of it fails in this
        # long rather than the estate's 5 s (only the heals read the edited file).
        data = yaml.safe_load(running.estate_file.read_text())
        data["components"]["api"]["start_timeout_s"] = 2
        running.estate_file.write_text(yaml.safe_dump(data, sort_keys=False))
        yield running


def _kill(shop: Shopfront, component: str) -> None:
    proc = find_process(read_record(shop.backend.state_dir, component))
    assert proc is not None, f"{component} is not running"
    proc.kill()
    try:
        proc.wait(10)
    except psutil.TimeoutExpired:
        raise AssertionError(f"{component} (pid {proc.pid}) did not die") from None
    assert not shop.backend.health(component).running


def _start(shop: Shopfront, component: str) -> None:
    result = shop.backend.execute(Step(action="start", component=component))
    assert result.outcome in ("ok", "skipped"), result.detail


def _story(shop: Shopfront, run_id: str) -> list[tuple[str, str]]:
    store = EventStore(shop.settings.events_url)
    try:
        detail = store.run(run_id)
        assert detail is not None
        return [(e.node, e.detail) for e in detail.timeline]
    finally:
        store.close()


def _waits(story: list[tuple[str, str]]) -> list[str]:
    return [d for n, d in story if n == "validate" and "waiting for dependency inventory" in d]


def test_a_run_waits_for_the_dependency_that_died_even_across_a_restart(shop: Shopfront) -> None:
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer

    _kill(shop, "api")
    first = subprocess.Popen(
        [sys.executable, "-c", HEAL_SCRIPT, str(shop.estate_file), GAP.model_dump_json()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert first.stdin is not None and first.stdout is not None
    seen: list[str] = []
    try:
        for line in first.stdout:
            seen.append(line.rstrip())
            if line.startswith("guard: allowed"):
                _kill(shop, "inventory")  # after triage found inventory healthy, before the restart
                first.stdin.write("go\n")
                first.stdin.flush()
            if line.startswith("validate:") and "waiting for dependency inventory" in line:
                break
        else:
            raise AssertionError("the run never waited for inventory:\n" + "\n".join(seen))
    finally:
        first.kill()  # mid-wait: the process driving the run is gone
        first.wait(10)
    assert not any(s.startswith(("escalate", "result")) for s in seen), seen

    def bring_inventory_back(run_id: str | None, node: str, detail: str, data: dict[str, Any]) -> None:
        if node == "validate" and "waiting for dependency inventory" in detail:
            _start(shop, "inventory")  # the dependency's own heal, as the watch would run it

    ctx = HealContext(settings=shop.settings, estate_path=shop.estate_file, progress=bring_inventory_back)
    with Healer(ctx) as healer:
        result = healer.heal(GAP)  # the open run, resumed from its checkpoint
    assert result["status"] == "healed", result["reason"]
    story = _story(shop, result["run_id"])
    nodes = [n for n, _ in story]
    assert "resume" in nodes
    assert len(_waits(story)) == 2, story  # it waited before the kill, and again once resumed
    assert "inventory" in result["validation"]["detail"]
    # resumed from the checkpoint before execute (a new run's first): the execute node runs again but
    # its story says restart(api) ran before the kill, and it is not run again (the actions below)
    executes = [d for n, d in story if n == "execute"]
    assert sum("before the process driving this run ended; not again" in d for d in executes) == 1, executes
    assert sum(d.startswith("restart(api)") and "not again" not in d for d in executes) == 1, executes
    # the restart failed its own probe wait (inventory was down): recorded so, but the eval does
    # not count it as a failed step of the plan, which validation proved once inventory was back
    store = EventStore(shop.settings.events_url)
    try:
        run = store.run(result["run_id"])
        assert run is not None
        assert [a.result.outcome for a in run.actions] == ["failed"]
        assert summarize(run, 0.0).failed_steps == [] and summarize(run, 0.0).remediations == ["restart(api)"]
    finally:
        store.close()
    assert shop.backend.health("api").healthy and shop.backend.health("inventory").healthy


def test_a_dependency_still_down_past_the_bound_escalates_naming_it(shop: Shopfront) -> None:
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer

    def kill_inventory(run_id: str | None, node: str, detail: str, data: dict[str, Any]) -> None:
        if node == "guard" and detail.startswith("allowed"):
            _kill(shop, "inventory")

    _kill(shop, "api")
    settings = shop.settings.model_copy(update={"validate_dependency_wait_s": 1.0})
    ctx = HealContext(settings=settings, estate_path=shop.estate_file, progress=kill_inventory)
    try:
        with Healer(ctx) as healer:
            result = healer.heal(GAP)
    finally:
        _start(shop, "inventory")
    assert result["status"] == "escalated"
    assert "dependency inventory stayed down" in result["reason"], result["reason"]
    story = _story(shop, result["run_id"])
    assert len(_waits(story)) == 1
    assert "learn" not in [n for n, _ in story]  # the plan is not recorded as one that failed
    assert shop.backend.wait_healthy("api", 10)[0]  # api recovers by itself once inventory answers
