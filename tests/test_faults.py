"""Real faults on the shopfront estate: each breaks what it says, and the heal graph heals it offline.

Every fault in `FAULTS` has a built-in persona playbook that heals it with no LLM, so none is
listed here as needing one. One estate serves the module; the cases run in an order that stays
inside the default policy's restart limit (3 per component in 600 s), since each heal counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.estate.actions import REMEDIATIONS
from agentheal.eval import FAULTS, FaultError, get_fault, wait_broken
from agentheal.eval.fault_model import wait_until
from agentheal.graphs.context import HealContext
from agentheal.graphs.runner import Healer
from agentheal.models import Gap, Step
from shopfront_estate import Shopfront, running_shopfront

pytestmark = pytest.mark.slow

CASES = [
    ("process_killed", "api"),
    ("crash_loop", "inventory"),
    ("data_over_budget", "api"),
    ("log_over_budget", "inventory"),
    ("memory_leak", "api"),
    ("dependency_down", "inventory"),
    ("bad_release", "api"),
    ("latency_regression", "api"),
    ("queue_stalled", "worker"),
    ("stale_lock", "worker"),
    ("process_killed", "worker"),  # the worker's lock stays behind: a stale lock too
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shopfront]:
    with running_shopfront(tmp_path_factory.mktemp("faults")) as running:
        yield running


@pytest.fixture(scope="module")
def healer(shop: Shopfront) -> Iterator[Healer]:
    with Healer(HealContext(shop.settings, shop.estate_file)) as h:
        yield h


def _remediations(result: dict[str, Any]) -> list[str]:
    return [f"{a['action']}({a['component']})" for a in result["actions"] if a["action"] in REMEDIATIONS]


def test_every_fault_is_covered_here() -> None:
    assert len(FAULTS) >= 9
    assert {name for name, _ in CASES} == set(FAULTS)


@pytest.mark.parametrize(("fault", "component"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_fault_breaks_for_real_and_the_heal_graph_heals_it_offline(
    shop: Shopfront, healer: Healer, fault: str, component: str
) -> None:
    backend = shop.backend
    assert all(h.healthy for h in backend.status()), "the previous case left the estate unhealthy"
    record = get_fault(fault).inject(backend, component)
    assert record.fault == fault and record.component == component and record.did
    assert wait_broken(backend, record, timeout_s=10) == [], f"{fault} did not show: {record.did}"
    if {"probe_failed", "process_down"} & set(record.breaks):
        assert not backend.health(record.gap_component).healthy

    result = healer.heal(Gap(text=record.symptom, component=record.gap_component))

    assert result["status"] == "healed", result["reason"]
    assert result["persona"] == record.expected.persona and record.expected.offline
    assert result["llm"]["calls"] == 0
    assert _remediations(result) == record.expected.actions
    touched = {a["component"] for a in result["actions"] if a["action"] in REMEDIATIONS}
    assert not touched & set(record.wrong_targets), f"wrong action: {_remediations(result)}"

    # What the fault broke clears: at once for most, within seconds for a queue whose backlog
    # drains after its consumer came back (the probes pass before the oldest item is taken).
    def still() -> set[str]:
        return set(record.breaks) & {f.name for f in backend.facts(record.gap_component)}

    assert wait_until(lambda: not still(), 10.0, step_s=0.2), f"still broken after the heal: {still()}"
    assert all(h.healthy for h in backend.status())


def test_fault_list_names_every_fault(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fault", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(FAULTS) >= 9
    assert [line.split()[0] for line in lines] == list(FAULTS)


def test_fault_list_for_an_estate_names_the_components(
    shop: Shopfront, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fault", "list", "--estate", str(shop.estate_file), "--json"]) == 0
    rows = {r["name"]: r["components"] for r in json.loads(capsys.readouterr().out)}
    assert rows["dependency_down"] == ["inventory"] and rows["bad_release"] == ["api"]
    assert rows["stale_lock"] == ["worker"] and rows["queue_stalled"] == ["worker"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--component", "api"], "unknown fault 'nope' (known: process_killed, crash_loop"),
        (
            ["crash_loop", "--component", "web"],
            "unknown component 'web': the estate 'shopfront' has api, inventory",
        ),
        (
            ["bad_release", "--component", "worker"],
            "fault bad_release does not apply to worker: it needs releases",
        ),
        (
            ["crash_loop", "--component", "api", "--estate", "/nonexistent/estate.yaml"],
            "estate file not found",
        ),
    ],
    ids=["unknown-fault", "unknown-component", "not-applicable", "no-estate"],
)
def test_fault_inject_refuses_bad_input(
    shop: Shopfront, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    estate = [] if "--estate" in args else ["--estate", str(shop.estate_file)]
    assert main(["fault", "inject", *args, *estate]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert all(h.healthy for h in shop.backend.status())


def test_fault_inject_from_the_cli_breaks_for_real(
    shop: Shopfront, healer: Healer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "fault",
            "inject",
            "log_over_budget",
            "--estate",
            str(shop.estate_file),
            "--component",
            "worker",
            "--json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fault"] == "log_over_budget" and record["expected"]["actions"] == ["rotate_logs(worker)"]
    assert "logs_large" in {f.name for f in shop.backend.facts("worker")}
    result = healer.heal(Gap(text=record["symptom"], component="worker"))
    assert result["status"] == "healed" and _remediations(result) == ["rotate_logs(worker)"]


def test_a_fault_needing_a_running_component_says_so(
    shop: Shopfront, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shop.backend.execute(Step(action="stop", component="api")).outcome == "ok"
    try:
        code = main(
            ["fault", "inject", "memory_leak", "--estate", str(shop.estate_file), "--component", "api"]
        )
        assert code == 1
        assert "api is not running; start the estate first" in capsys.readouterr().err
        with pytest.raises(FaultError, match="api is not running"):
            get_fault("process_killed").inject(shop.backend, "api")
    finally:
        assert shop.backend.execute(Step(action="start", component="api")).outcome == "ok"
