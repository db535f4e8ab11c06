"""Personas: the built-in files, loading errors, routing, hand-offs and offline plans."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentheal.config import Settings, package_data
from agentheal.models import Check, Gap, GapKind
from agentheal.personas import (
    SECTIONS,
    Persona,
    PersonaLoadError,
    Registry,
    UnknownPersona,
    known_actions,
    load_personas,
    parse_persona,
    persona_schema,
    write_persona,
)

BUILTINS = {
    "triage-lead",
    "availability",
    "configuration",
    "capacity",
    "dependencies",
    "releases",
    "performance",
}
BUILTIN_DIR = package_data("personas")


@dataclass(frozen=True)
class Fact:
    """Shaped like the estate backend's Fact: the registry only relies on these three attributes."""

    name: str
    component: str
    detail: str = ""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    settings = Settings(home=tmp_path_factory.mktemp("personas") / "home")
    return Registry.load(settings)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def _builtin_text(name: str) -> str:
    return (BUILTIN_DIR / f"{name}.md").read_text(encoding="utf-8")


# --- the built-in files -----------------------------------------------------------------------------


def test_every_builtin_loads_and_validates(registry: Registry) -> None:
    assert registry.errors == []
    assert {p.name for p in registry.all()} >= BUILTINS
    catalogue = known_actions()
    for persona in registry.all():
        assert persona.origin == "builtin" and persona.status == "active"
        for section in SECTIONS:
            assert re.search(rf"^##\s+{section}\b", persona.body, re.M), (persona.name, section)
        assert set(persona.handoffs) <= {p.name for p in registry.all()}
        for playbook in persona.playbooks:
            assert {s.action for s in playbook.steps} <= set(persona.actions) <= set(catalogue)
    lead = registry.get("triage-lead")
    assert lead.role == "lead" and not any(not catalogue[a] for a in lead.actions)
    assert set(lead.kinds) == set(GapKind)
    assert all(registry.get(n).role == "specialist" for n in BUILTINS - {"triage-lead"})


def test_schema_json_is_current() -> None:
    committed = json.loads((BUILTIN_DIR / "schema.json").read_text(encoding="utf-8"))
    assert committed == persona_schema(), (
        "personas/schema.json is stale: run agentheal.personas.export_schema"
    )
    assert "body" not in committed["properties"]
    assert committed["additionalProperties"] is False


def test_persona_round_trips_through_markdown(tmp_path: Path, registry: Registry) -> None:
    original = registry.get("capacity")
    path = write_persona(original.model_copy(update={"origin": "generated", "version": 2}), tmp_path)
    again = parse_persona(path.read_text(encoding="utf-8"), path)
    assert (
        again.model_dump() == original.model_copy(update={"origin": "generated", "version": 2}).model_dump()
    )
    assert again.body.strip() == original.body.strip()


# --- broken files -----------------------------------------------------------------------------------

BROKEN = [
    ("unknown-key", lambda t: t.replace("tags:", "tagz:"), "tagz: unknown field; did you mean 'tags'?"),
    (
        "missing-section",
        lambda t: t.replace("## Coordination", "## Teamwork"),
        "body: missing section 'Coordination'",
    ),
    (
        "bad-yaml",
        lambda t: t.replace("kinds: [incident, recurring, weakness]", "kinds: [incident"),
        "not valid YAML",
    ),
    (
        "bad-action",
        lambda t: t.replace("actions: [restart,", "actions: [reboot, restart,"),
        "actions: unknown action 'reboot'",
    ),
    (
        "step-without-action",
        lambda t: t.replace("      - action: restart\n        why: bring", "      - why: bring"),
        "playbooks.0.steps.0.action: Field required",
    ),
    (
        "step-outside-actions",
        lambda t: t.replace("actions: [restart, start,", "actions: [start,"),
        "playbooks.0.steps.0.action: 'restart' is not in this persona's actions",
    ),
    (
        "wrong-type",
        lambda t: t.replace("role: specialist", "role: specialist\nversion: two"),
        "version: Input should be",
    ),
    ("unknown-fact", lambda t: t.replace("[process_down]", "[proces_down]"), "unknown fact 'proces_down'"),
]


@pytest.mark.parametrize(("label", "mutate", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_is_reported_and_the_others_load(
    tmp_path: Path, settings: Settings, label: str, mutate: object, expected: str
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    text = _builtin_text("availability").replace("name: availability", f"name: {label}")
    assert callable(mutate)
    broken = mutate(text)
    assert broken != text, "the mutation did not apply"
    (extra / f"{label}.md").write_text(broken, encoding="utf-8")
    registry = Registry.load(settings.model_copy(update={"personas_dir": extra}))
    assert [str(e) for e in registry.errors] == [f"{extra / f'{label}.md'}: {registry.errors[0].message}"]
    assert expected in registry.errors[0].message
    assert registry.errors[0].path == extra / f"{label}.md"
    assert {p.name for p in registry.all()} == BUILTINS


def test_duplicate_name_is_an_error_of_the_later_file(tmp_path: Path) -> None:
    shutil.copy(BUILTIN_DIR / "capacity.md", tmp_path / "capacity-copy.md")
    result = load_personas([BUILTIN_DIR, tmp_path])
    assert len(result.errors) == 1
    first, later = BUILTIN_DIR / "capacity.md", tmp_path / "capacity-copy.md"
    assert str(result.errors[0]) == f"{later}: name: 'capacity' is already defined in {first}"
    assert set(result.personas) == BUILTINS


def test_unknown_handoff_is_reported_and_dropped(tmp_path: Path) -> None:
    text = (
        _builtin_text("capacity")
        .replace("name: capacity", "name: storage")
        .replace("handoffs: [availability, performance]", "handoffs: [availability, janitor]")
    )
    (tmp_path / "storage.md").write_text(text, encoding="utf-8")
    result = load_personas([BUILTIN_DIR, tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'storage.md'}: handoffs.1: no persona named 'janitor' is loaded"
    ]
    assert result.personas["storage"].handoffs == ["availability"]


def test_missing_procedure_for_a_declared_kind() -> None:
    text = _builtin_text("capacity").replace("### predicted: a trend", "### forecasts: a trend")
    with pytest.raises(PersonaLoadError, match=r"body: Procedures has no procedure for gap kind 'predicted'"):
        parse_persona(text, "capacity.md")


def test_a_lead_may_not_remediate() -> None:
    text = _builtin_text("triage-lead").replace("actions: [probe,", "actions: [restart, probe,")
    with pytest.raises(PersonaLoadError, match=r"actions: a lead only observes; 'restart' is a remediation"):
        parse_persona(text, "triage-lead.md")


def test_missing_persona_folder_is_reported(tmp_path: Path) -> None:
    result = load_personas([BUILTIN_DIR, tmp_path / "nope"])
    assert [str(e) for e in result.errors] == [f"{tmp_path / 'nope'}: persona folder does not exist"]
    assert set(result.personas) == BUILTINS


# --- routing ----------------------------------------------------------------------------------------


def _route(
    registry: Registry, text: str, facts: Sequence[Fact | str], component: str | None = "web"
) -> tuple[str | None, float]:
    persona, score, top = registry.route(Gap(text=text, component=component), facts, [], 0.30)
    assert top and top[0][1] == score and all(name != "triage-lead" for name, _ in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    return (persona.name if persona else None), score


def test_route_process_down_to_availability(registry: Registry) -> None:
    facts = [
        Fact("process_down", "web", "pid 41 is gone"),
        Fact("probe_failed", "web", "http: connection refused"),
    ]
    name, score = _route(registry, "web is down: connection refused", facts)
    assert name == "availability" and score >= 0.30


def test_route_config_change_to_configuration(registry: Registry) -> None:
    facts = [Fact("config_changed", "api", "api.yaml differs"), Fact("crash_loop", "api", "dead after 2 s")]
    name, score = _route(registry, "api fails to start after someone edited its settings file", facts, "api")
    assert name == "configuration" and score >= 0.30


def test_route_disk_full_to_capacity(registry: Registry) -> None:
    facts = [Fact("disk_over_budget", "db", "data/cache holds 120.0 MB, over its 100 MB budget")]
    name, score = _route(registry, "disk full on data folder", facts, "db")
    assert name == "capacity" and score >= 0.30


def test_route_dependency_down_to_dependencies_and_plan_targets_the_dependency(registry: Registry) -> None:
    facts = [
        Fact("dependency_down", "db", "web depends on db, which is unhealthy"),
        Fact("probe_failed", "web"),
    ]
    gap = Gap(text="web returns 502 bad gateway", component="web")
    persona, score, _ = registry.route(gap, facts, [], 0.30)
    assert persona is not None and persona.name == "dependencies" and score >= 0.30
    plan = persona.plan_for(gap, facts, "web")
    assert plan is not None and plan.source == "persona" and plan.playbook == "restart-failed-dependency"
    assert [(s.action, s.component) for s in plan.steps] == [("restart", "db")]
    assert plan.checks == [Check(component="db"), Check(component="web")]
    assert "db" in plan.hypothesis and "web" in plan.hypothesis


def test_unrelated_gap_is_below_threshold(registry: Registry) -> None:
    text = "the nightly search-index compaction job leaves the tantivy segment count above 4000"
    persona, score, top = registry.route(Gap(text=text), [], [], 0.30)
    assert persona is None and score < 0.30 and top[0][1] == score


def test_threshold_defaults_to_settings(registry: Registry) -> None:
    gap = Gap(text="disk full on data folder", component="db")
    facts = [Fact("disk_over_budget", "db", "data/cache holds 120.0 MB")]
    persona, score, _ = registry.route(gap, facts)
    assert persona is not None and persona.name == "capacity"
    persona, same, _ = registry.route(gap, facts, threshold=min(1.0, score + 0.01))
    assert persona is None and same == score


def test_string_facts_are_accepted(registry: Registry) -> None:
    name, _ = _route(registry, "web is down: connection refused", ["process_down", "probe_failed"])
    assert name == "availability"


def test_match_scores_are_in_range_and_exclude_the_lead(registry: Registry) -> None:
    scored = registry.match(
        Gap(text="checkout got slow, p99 over 2 seconds", component="web"), ["slow_response"]
    )
    assert {p.name for p, _ in scored} == BUILTINS - {"triage-lead"}
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    assert scored[0][0].name == "performance"


def test_component_tags_and_globs_raise_the_score(registry: Registry, settings: Settings) -> None:
    base = registry.get("capacity")
    scoped = base.model_copy(
        update={"name": "db-capacity", "components": ["db*"], "tags": [*base.tags, "postgres"]}
    )
    local = Registry([base, scoped], settings)
    gap = Gap(text="disk full on data folder", component="db-main")
    facts = [Fact("disk_over_budget", "db-main", "data/cache holds 120.0 MB")]
    by_glob = dict((p.name, s) for p, s in local.match(gap, facts))
    assert by_glob["db-capacity"] > by_glob["capacity"]
    other = Gap(text="disk full on data folder", component="web")
    by_tag = dict((p.name, s) for p, s in local.match(other, facts, ["postgres"]))
    no_tag = dict((p.name, s) for p, s in local.match(other, facts, []))
    assert by_tag["db-capacity"] > no_tag["db-capacity"] and no_tag["db-capacity"] < no_tag["capacity"]


def test_ties_break_by_name(registry: Registry, settings: Settings) -> None:
    base = registry.get("availability")
    twins = Registry([base.model_copy(update={"name": "zz-availability"}), base], settings)
    scored = twins.match(Gap(text="web is down", component="web"), ["process_down"])
    assert [p.name for p, _ in scored] == ["availability", "zz-availability"]
    assert scored[0][1] == scored[1][1]


def test_lead_only_when_no_specialist_exists(registry: Registry, settings: Settings) -> None:
    alone = Registry([registry.get("triage-lead")], settings)
    persona, _, top = alone.route(Gap(text="web is down: connection refused", component="web"), [], [], 0.0)
    assert persona is not None and persona.name == "triage-lead" and top[0][0] == "triage-lead"
    assert alone.match(Gap(text="web is down"), []) == []


def test_retired_personas_are_not_matched(registry: Registry, settings: Settings) -> None:
    retired = registry.get("capacity").model_copy(update={"status": "retired"})
    local = Registry([retired, registry.get("availability")], settings)
    assert [p.name for p, _ in local.match(Gap(text="disk full"), ["disk_over_budget"])] == ["availability"]


def test_get_unknown_persona(registry: Registry) -> None:
    with pytest.raises(UnknownPersona, match="no persona named 'janitor'; known: availability"):
        registry.get("janitor")


def test_add_checks_name_and_handoffs(registry: Registry, settings: Settings) -> None:
    local = Registry(registry.all(), settings)
    new = registry.get("capacity").model_copy(update={"name": "janitor", "handoffs": ["ghost"]})
    with pytest.raises(PersonaLoadError, match=r"handoffs\.0: no persona named 'ghost'"):
        local.add(new)
    with pytest.raises(PersonaLoadError, match="'capacity' is already registered"):
        local.add(registry.get("capacity"))
    local.add(new.model_copy(update={"handoffs": ["availability"]}))
    assert local.get("janitor").handoffs == ["availability"]


# --- hand-offs and plans ------------------------------------------------------------------------------


def test_handoff_from_availability_to_dependencies(registry: Registry) -> None:
    availability = registry.get("availability")
    gap = Gap(text="web is down: connection refused", component="web")
    facts = [Fact("process_down", "web", "pid 41 is gone"), Fact("dependency_down", "db", "db is unhealthy")]
    assert availability.plan_for(gap, facts, "web") is None
    other = registry.handoff(availability, gap, facts)
    assert other is not None and other.name == "dependencies"
    # Its own playbook fits once the dependency is healthy: no hand-off.
    assert registry.handoff(availability, gap, [Fact("process_down", "web")]) is None
    # A fact given as a bare name cannot say which dependency failed, so nobody can target it.
    assert registry.handoff(availability, gap, ["process_down", "dependency_down"]) is None


def test_handoff_from_lead_picks_the_best_fitting_specialist(registry: Registry) -> None:
    lead = registry.get("triage-lead")
    gap = Gap(text="checkout got slow, p99 over 2 seconds", component="web")
    facts = [Fact("slow_response", "web"), Fact("memory_high", "web", "pid 7 uses 900 MB")]
    other = registry.handoff(lead, gap, facts)
    assert other is not None and other.name == "performance"  # capacity's memory playbook fits too


def test_plan_for_respects_facts_none(registry: Registry) -> None:
    availability = registry.get("availability")
    gap = Gap(text="web is down", component="web")
    plan = availability.plan_for(gap, [Fact("process_down", "web", "pid 41 is gone")], "web")
    assert plan is not None and plan.playbook == "restart-dead-process"
    assert [(s.action, s.component) for s in plan.steps] == [("restart", "web")]
    assert plan.checks == [Check(component="web")]
    for excluded in ("config_changed", "dependency_down", "crash_loop"):
        assert availability.plan_for(gap, [Fact("process_down", "web"), Fact(excluded, "web")], "web") is None
    # probe_failed on a running process restarts too, unless it is only slow.
    hung = [Fact("process_running", "web"), Fact("probe_failed", "web")]
    plan = availability.plan_for(gap, hung, "web")
    assert plan is not None and plan.playbook == "restart-unresponsive-process"
    assert availability.plan_for(gap, [*hung, Fact("slow_response", "web")], "web") is None


def test_plan_for_uses_the_gap_component_and_needs_one(registry: Registry) -> None:
    availability = registry.get("availability")
    plan = availability.plan_for(Gap(text="api is down", component="api"), ["process_down"], "")
    assert plan is not None and plan.steps[0].component == "api"
    assert availability.plan_for(Gap(text="something is down"), ["process_down"]) is None


def test_configuration_restores_then_restarts(registry: Registry) -> None:
    configuration = registry.get("configuration")
    gap = Gap(text="api crash loops after its settings were edited", component="api")
    plan = configuration.plan_for(gap, [Fact("config_changed", "api"), Fact("crash_loop", "api")], "api")
    assert plan is not None and [s.action for s in plan.steps] == ["restore_config", "restart"]
    # The hypothesis names each fact by the first line of its detail, not a whole config diff.
    diff = "api.yaml differs from its last known good copy:\n-port: 8080\n+port: 80"
    plan = configuration.plan_for(
        gap, [Fact("config_changed", "api", diff), Fact("crash_loop", "api")], "api"
    )
    assert plan is not None and "api.yaml differs" in plan.hypothesis and "+port" not in plan.hypothesis
    # A changed config on a healthy component is drift: not reverted.
    assert (
        configuration.plan_for(gap, [Fact("config_changed", "api"), Fact("probes_ok", "api")], "api") is None
    )


def test_capacity_cleans_the_folder_the_fact_names(registry: Registry) -> None:
    capacity = registry.get("capacity")
    gap = Gap(text="disk full on data folder", component="db")
    facts = [Fact("disk_over_budget", "db", "data/cache holds 120.0 MB, over its 100 MB budget")]
    plan = capacity.plan_for(gap, facts, "db")
    assert plan is not None and plan.playbook == "clean-data-over-budget"
    assert [(s.action, s.component, s.args) for s in plan.steps] == [
        ("clean_dir", "db", {"path": "data/cache"})
    ]
    logs = capacity.plan_for(gap, [Fact("logs_large", "db", "logs/db.log is 60.0 MB")], "db")
    assert logs is not None and [s.action for s in logs.steps] == ["rotate_logs"]
    both = capacity.plan_for(gap, [*facts, Fact("logs_large", "db", "logs/db.log is 60.0 MB")], "db")
    assert both is not None and [s.action for s in both.steps] == ["rotate_logs", "clean_dir"]
    # Without a fact object the folder is unknown, so no clean_dir plan is offered.
    assert capacity.plan_for(gap, ["disk_over_budget"], "db") is None


def test_releases_needs_a_release_in_the_text(registry: Registry) -> None:
    releases = registry.get("releases")
    facts = [Fact("config_changed", "api"), Fact("crash_loop", "api")]
    deployed = releases.plan_for(
        Gap(text="api crash loops since the 2.3 deploy", component="api"), facts, "api"
    )
    assert deployed is not None and [s.action for s in deployed.steps] == ["restore_config", "restart"]
    assert releases.plan_for(Gap(text="api crash loops", component="api"), facts, "api") is None


def test_real_estate_fact_objects_are_accepted(registry: Registry) -> None:
    facts_module = pytest.importorskip("agentheal.estate.facts")
    fact = facts_module.Fact(
        name="dependency_down", component="db", detail="web depends on db, which is down"
    )
    plan = registry.get("dependencies").plan_for(Gap(text="web errors", component="web"), [fact], "web")
    assert plan is not None and plan.steps[0].component == "db"


def test_persona_model_rejects_body_in_front_matter() -> None:
    text = _builtin_text("capacity").replace("role: specialist", "role: specialist\nbody: hello")
    with pytest.raises(PersonaLoadError, match="body: not a front-matter field"):
        parse_persona(text, "capacity.md")
    assert "body" not in Persona.model_json_schema()["properties"]
