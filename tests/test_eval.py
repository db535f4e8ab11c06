"""The eval harness: scenario files (schema, errors naming the field), the suite's figures, and a fast
subset of the shipped suite run for real against the shopfront estate through `agentheal eval run`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.eval.estates import materialize
from agentheal.eval.faults import FAULTS
from agentheal.eval.results import ScenarioResult, Stages, percentile, suite_of
from agentheal.eval.runner import check_estates
from agentheal.eval.scenario import ScenarioError, find_scenarios, load_scenario, scenario_schema
from agentheal.eval.session import processes_under

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "eval" / "scenarios"
SUITE_KEYS = {
    "scenarios", "detection_rate", "heal_rate", "median_time_to_heal_s", "p95_time_to_heal_s",
    "wrong_actions", "llm_calls",
}  # fmt: skip
SCENARIO_KEYS = {
    "name", "detected", "time_to_detect_s", "healed", "time_to_heal_s", "wrong_actions", "actions",
    "llm_calls", "reason",
}  # fmt: skip


# -- scenario files ------------------------------------------------------------------------------------


def test_published_schema_is_current() -> None:
    published = json.loads((REPO / "eval" / "scenario.schema.json").read_text(encoding="utf-8"))
    assert published == scenario_schema(), "eval/scenario.schema.json is stale: agentheal eval schema --out …"


def test_the_shipped_suite_covers_every_fault_combinations_and_controls() -> None:
    items = find_scenarios(REPO / "eval")  # `eval` means eval/scenarios, not the estates beside it
    check_estates(items)
    scenarios = [i.scenario for i in items]
    single = {s.faults[0].fault for s in scenarios if len(s.faults) == 1}
    assert single == set(FAULTS)
    assert any(len(s.faults) >= 2 and all(f.after == "start" for f in s.faults) for s in scenarios)
    assert any(any(f.after == "heal_started" for f in s.faults) for s in scenarios)
    controls = [s for s in scenarios if s.control]
    assert any(s.load is not None for s in controls) and any(s.operator for s in controls)
    assert len(scenarios) >= 12


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "name: x\ndescription: d\nfaults:\n  - {fault: process_killed, component: api}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("component: api}", "component: api, at_s: -1}"),
            "faults.0.at_s: Input should be greater",
        ),
        (GOOD.replace("component:", "compnent:"), "faults.0.compnent: Extra inputs are not permitted"),
        (
            GOOD.replace("process_killed", "melted"),
            "faults.0.fault: unknown fault 'melted' (known: process_killed",
        ),
        (
            GOOD + "expect: {forbid: [restart api]}\n",
            "expect.forbid: ['restart api']: write action(component)",
        ),
        (GOOD + "expect: {detect_within_s: 20, heal_within_s: 5}\n", "expect: heal_within_s (5) is shorter"),
        (GOOD.replace("name: x", "name: Big Name"), "name: scenario name 'Big Name'"),
        (GOOD + "load: {component: api}\n", "load.requests: Field required"),
        ("name: x\ndescription: d\nfaults: [\n", "YAML syntax error at line"),
        ("- a list\n", "must be a YAML mapping at the top level"),
    ],
    ids=[
        "negative-time",
        "typo",
        "unknown-fault",
        "bad-signature",
        "heal-before-detect",
        "bad-name",
        "load-without-requests",
        "yaml-syntax",
        "not-a-mapping",
    ],
)
def test_a_broken_scenario_file_is_named_with_its_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_a_scenario_that_does_not_fit_its_estate_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        GOOD.replace("component: api}", "component: web}")
        + "  - {fault: bad_release, component: worker}\noperator: [{action: restart, component: db}]\n",
    )
    assert main(["eval", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "faults.0.component: unknown component 'web' (known: api, inventory, worker)" in err
    assert "faults.1: bad_release does not apply to worker: it needs releases" in err
    assert "operator.0.component: unknown component 'db'" in err


def test_no_scenarios_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "run", str(tmp_path)]) == 2
    assert "no scenario files (*.yaml) in it" in capsys.readouterr().err


# -- the suite's figures ---------------------------------------------------------------------------------


def _result(name: str, kind: str, healed: bool, tth: float | None, wrong: int = 0) -> ScenarioResult:
    return ScenarioResult(
        name=name, detected=kind == "fault", time_to_detect_s=1.0 if kind == "fault" else None, healed=healed,
        time_to_heal_s=tth, wrong_actions=wrong, actions=[], llm_calls=0, reason=None if healed else "why",
        kind=kind, stages=Stages(detected=kind == "fault", routed=healed),
    )  # fmt: skip


def test_rates_count_fault_scenarios_and_controls_apart() -> None:
    results = [
        _result("a", "fault", True, 2.0),
        _result("b", "fault", True, 4.0),
        _result("c", "fault", False, None),
        _result("d", "fault", True, 10.0),
        _result("idle", "control", True, None),
        _result("load", "control", False, None, wrong=2),
    ]
    suite = suite_of(results)
    assert suite.scenarios == 6 and suite.fault_scenarios == 4 and suite.control_scenarios == 2
    assert suite.heal_rate == 0.75 and suite.detection_rate == 1.0
    assert suite.median_time_to_heal_s == 4.0 and suite.p95_time_to_heal_s == 10.0
    assert suite.wrong_actions == 2 and suite.controls_clean == 1
    assert suite.stages["routed"] == 3
    assert suite_of([_result("idle", "control", True, None)]).heal_rate is None
    assert percentile([], 95) is None and percentile([3.0, 1.0, 2.0], 50) == 2.0


# -- sample estates in an installed wheel -----------------------------------------------------------------


def test_materialize_restores_release_links_a_wheel_cannot_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "wheel"
    shutil.copytree(REPO / "eval" / "estates", wheel, symlinks=False)  # links become folders, as in a wheel
    shutil.rmtree(wheel / "shopfront" / "api" / "releases" / "v1")  # and the wheel keeps one copy only
    monkeypatch.setattr("agentheal.eval.estates.estates_root", lambda: wheel)
    estate_file = materialize("shopfront", tmp_path / "copy")
    api = estate_file.parent / "api"
    assert (api / "current").is_symlink() and (api / "current").readlink() == Path("releases/v1")
    assert sorted(p.name for p in (api / "releases").iterdir()) == ["v1", "v2-bad"]
    assert (api / "releases" / "v1" / "shopfront_api.py").is_file()
    assert (estate_file.parent / "worker" / "current").is_symlink()


# -- a fast subset of the suite, for real -----------------------------------------------------------------


@pytest.mark.slow
def test_a_subset_of_the_suite_runs_against_the_real_estate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AGENTHEAL_HOME", "AGENTHEAL_LLM_BASE_URL", "AGENTHEAL_POLICY_FILE", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTHEAL_CONFIG", str(tmp_path / "no-agentheal.toml"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # the runner's working folders go here
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("dependency_down-inventory", "control-operator_restart-worker"):
        shutil.copy(SCENARIOS / f"{name}.yaml", suite)
    out, md = tmp_path / "e.json", tmp_path / "e.md"

    code = main(["eval", "run", str(suite), "--json", str(out), "--markdown", str(md), "-q"])

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert set(doc["suite"]) >= SUITE_KEYS and all(set(s) >= SCENARIO_KEYS for s in doc["scenarios"])
    by_name = {s["name"]: s for s in doc["scenarios"]}
    dependency = by_name["dependency_down-inventory"]
    assert dependency["healed"] and dependency["reason"] is None, dependency["reason"]
    assert dependency["actions"] == ["restart(inventory)"]  # healed at the dependency, never the api
    assert dependency["detected"] and dependency["time_to_detect_s"] <= dependency["time_to_heal_s"]
    assert all(dependency["stages"].values()) and dependency["llm_calls"] == 0
    control = by_name["control-operator_restart-worker"]
    assert control["healed"] and control["actions"] == [] and control["wrong_actions"] == 0
    assert control["operator"] and "; healthy:" in control["operator"][0]
    s = doc["suite"]
    assert s["scenarios"] == 2 and s["heal_rate"] == 1.0 and s["detection_rate"] == 1.0
    assert s["wrong_actions"] == 0 and s["controls_clean"] == 1
    assert s["median_time_to_heal_s"] == dependency["time_to_heal_s"]
    assert code == 0
    assert "| dependency_down-inventory | fault | yes |" in md.read_text(encoding="utf-8")
    assert processes_under(tmp_path) == []
    assert list(work.iterdir()) == []  # the working folders are removed
