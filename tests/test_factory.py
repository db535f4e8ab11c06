"""The agent factory offline: a derived specialist that validates, registers and plans for its gap."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.estate.facts import Fact
from agentheal.events import EventStore
from agentheal.factory.checks import DUPLICATE_COSINE
from agentheal.factory.derive import derive_design
from agentheal.factory.filler import design_units, filler_problems
from agentheal.factory.patterns import propose
from agentheal.factory.store import versions
from agentheal.factory.terms import Vocabulary
from agentheal.graphs.context import HealContext
from agentheal.graphs.factory import create_for_gap
from agentheal.models import Gap, GapKind, Plan, RunStatus, Step
from agentheal.personas import Registry, load_persona
from agentheal.policy import evaluate

TANTIVY = (
    "the nightly search-index compaction job leaves the tantivy segment count above 4000 and queries time out"
)
SLOW = [
    Fact(name="process_running", component="web", detail="pid 1"),
    Fact(name="slow_response", component="web", detail="2300 ms over 500 ms"),
]


@pytest.fixture
def ctx(settings: Settings) -> HealContext:
    return HealContext(settings=settings)


def test_a_gap_no_persona_fits_gets_a_registered_specialist_offline(ctx: HealContext) -> None:
    gap = Gap(text=TANTIVY)
    assert ctx.registry.route(gap)[0] is None  # a capability gap for the built-ins
    result = create_for_gap(ctx, gap, [], None, trigger="cli")
    assert result.registered and result.reasons == [] and result.source == "offline"
    # Named like a role: the role noun of its symptom, qualified by the gap's own compound name.
    assert result.created == result.name == "search-index-latency"
    path = Path(result.path or "")
    assert path.parent == ctx.settings.generated_personas_dir and path.is_file()
    persona = load_persona(path)
    assert persona.origin == "generated" and persona.status == "active" and persona.version == 1
    prov = persona.provenance or {}
    assert prov["gap"] == TANTIVY and prov["fingerprint"] == gap.fingerprint and prov["model"] == "offline"
    assert prov["factory_version"] and datetime.fromisoformat(prov["created_at"]).tzinfo is not None
    # Registered in the live registry: the router now sends this gap to it, and it has a plan.
    assert ctx.registry.get(persona.name) == persona
    routed, score, _ = ctx.registry.route(gap, ["slow_response"])
    assert routed is not None and routed.name == persona.name and score >= ctx.settings.match_threshold
    plan = persona.plan_for(gap, ["slow_response"], "search")
    assert plan is not None and [s.action for s in plan.steps][-1] == "restart"
    # Specific, not generic: the body speaks of the gap's own words in every section.
    body = persona.body
    for word in ("tantivy", "compaction", "slow_response", "restart"):
        assert word in body
    assert result.closest is not None and result.closest["cosine"] < DUPLICATE_COSINE
    # A fresh registry (a new process) loads it from the home folder, with no error.
    again = Registry.load(ctx.settings)
    assert again.errors == [] and again.get(persona.name).origin == "generated"


def test_with_an_estate_the_persona_plans_for_the_real_facts(
    settings: Settings, tiny_estate_file: Path
) -> None:
    ctx = HealContext(settings=settings, estate_path=tiny_estate_file)
    gap = Gap(
        text="web answers the catalogue export endpoint after 40 seconds once the nightly csv export starts",
        component="web",
    )
    result = create_for_gap(ctx, gap, list(SLOW), None)
    assert result.registered, result.reasons
    assert not any("without an estate" in n for n in result.notes)
    persona = ctx.registry.get(result.created or "")
    assert persona.components == ["web"]
    plan = persona.plan_for(gap, SLOW, "web")
    assert plan is not None and plan.steps[-1] == Step(
        action="restart", component="web", args={}, why=plan.steps[-1].why
    )
    assert ctx.estate is not None
    decision = evaluate(ctx.policy, plan, ctx.estate, persona.actions, lambda *_: 0)
    assert decision.allowed and not decision.needs_approval
    # Its playbook is keyed to this gap's words: a slow web with another story is not its business.
    assert persona.plan_for(Gap(text="web is slow", component="web"), SLOW, "web") is None


def test_the_same_gap_again_is_a_duplicate_and_is_not_registered(ctx: HealContext) -> None:
    first = create_for_gap(ctx, Gap(text=TANTIVY), [], None)
    second = create_for_gap(ctx, Gap(text=TANTIVY + " again"), [], None)
    assert first.registered and not second.registered
    assert second.created is None
    assert any(r.startswith(f"near-duplicate of {first.name}: expertise cosine") for r in second.reasons)
    assert second.closest is not None and second.closest["name"] == first.name
    # The draft is kept for a person, where the registry never loads it.
    assert second.path is not None and Path(second.path).parent.name == "rejected"
    assert sorted(p.name for p in ctx.settings.generated_personas_dir.glob("*.md")) == [f"{first.name}.md"]


def test_a_gap_no_action_answers_gets_a_diagnosis_only_specialist(ctx: HealContext) -> None:
    # Nothing in the catalogue changes LDAP group membership: it observes, and says so.
    result = create_for_gap(ctx, Gap(text="the ldap group sync cron drops nested groups"), [], None)
    assert result.registered, result.reasons
    persona = ctx.registry.get(result.created or "")
    assert persona.name == "directory-sync" and persona.diagnosis_only and persona.playbooks == []
    assert result.plan is None and any("is diagnosis-only" in n for n in result.notes)


def test_a_generated_persona_never_replaces_a_builtin(ctx: HealContext) -> None:
    result = create_for_gap(ctx, Gap(text=TANTIVY), [], None, replace="capacity")
    assert not result.registered
    assert "name 'capacity' is a built-in persona; a generated persona never replaces one" in result.reasons
    assert ctx.registry.get("capacity").origin == "builtin"


def test_a_new_version_keeps_the_old_one(ctx: HealContext, capsys: pytest.CaptureFixture[str]) -> None:
    first = create_for_gap(ctx, Gap(text=TANTIVY), [], None)
    assert first.name is not None
    second = create_for_gap(
        ctx, Gap(text=TANTIVY + "; the merge policy stops merging"), [], None, replace=first.name
    )
    assert second.registered and second.version == 2, second.reasons
    stored = versions(ctx.settings, first.name)
    assert [n for n, _ in stored] == [1, 2]
    assert stored[0][1].parent.name == "versions" and load_persona(stored[0][1]).version == 1
    loaded = Registry.load(ctx.settings)
    assert loaded.errors == [] and loaded.get(first.name).version == 2
    assert main(["agents", "diff", first.name]) == 0
    diff = capsys.readouterr().out
    assert "-version: 1" not in diff and "+version: 2" in diff and "merge policy" in diff


def test_generic_filler_is_named_section_by_section(ctx: HealContext) -> None:
    gap = Gap(text=TANTIVY)
    design = derive_design(gap, [], ctx.registry, ctx.policy)
    vocabulary = Vocabulary([gap.text], ["slow_response", "restart", "probe", "performance"])
    assert filler_problems(design_units(design), vocabulary) == []
    generic = design.model_copy(
        update={
            "role": "Ensures system stability. Responds to incidents quickly and thoroughly.",
            "escalates_when": ["Escalate to the relevant team as needed."],
        }
    )
    problems = filler_problems(design_units(generic), vocabulary)
    assert "Role: boilerplate 'Ensures system stability' in \"Ensures system stability.\"" in problems
    assert (
        'Role: 1 of 2 sentences are generic filler, e.g. "Responds to incidents quickly and thoroughly."'
        in problems
    )
    assert any(p.startswith("Escalation: boilerplate 'relevant team'") for p in problems)
    assert any(p.startswith("Escalation: boilerplate 'as needed'") for p in problems)
    # Length proves nothing: a long section of sentences without the gap's words still fails.
    padded = design.model_copy(
        update={"role": " ".join(["It watches every part of the platform closely."] * 12)}
    )
    assert any(p.startswith("Role:") for p in filler_problems(design_units(padded), vocabulary))


def _record(
    store: EventStore, gap: Gap, status: RunStatus, persona: str | None, plan: Plan | None, facts: list[str]
) -> str:
    run_id = f"{status.value}-{gap.fingerprint}-{len(store.runs(limit=1000))}"
    store.record_gap(gap)
    store.start_run(run_id, gap)
    result: dict[str, Any] = {
        "diagnosis": {"facts": facts},
        "plan": plan.model_dump(mode="json") if plan else None,
    }
    store.finish_run(run_id, status, persona=persona, source="persona", reason=None, result=result)
    return run_id


def test_replay_refuses_a_persona_that_would_take_healed_gaps_with_another_plan(ctx: HealContext) -> None:
    healed_by = Plan(
        hypothesis="stuck", steps=[Step(action="rotate_logs", component="search")], source="persona"
    )
    for i in range(2):
        gap = Gap(
            text=f"the nightly tantivy compaction of search shard {i} stalls and queries time out",
            component="search",
        )
        _record(ctx.events, gap, RunStatus.healed, "performance", healed_by, ["slow_response"])
    result = create_for_gap(ctx, Gap(text=TANTIVY, component="search"), [], None)
    assert not result.registered
    assert result.replay is not None and result.replay.taken == 2 and result.replay.kept == 0
    regressions = [r for r in result.reasons if r.startswith("replay: run ")]
    assert (
        len(regressions) == 2
        and "rotate_logs(search)" in regressions[0]
        and "restart(search)" in regressions[0]
    )


def test_replay_counts_escalated_gaps_it_would_now_plan_for(ctx: HealContext) -> None:
    gap = Gap(text="the nightly tantivy compaction of search stalls and queries time out", component="search")
    _record(ctx.events, gap, RunStatus.escalated, None, None, ["slow_response"])
    _record(
        ctx.events,
        Gap(text="web is down", component="web"),
        RunStatus.healed,
        "availability",
        None,
        ["process_down"],
    )
    result = create_for_gap(ctx, Gap(text=TANTIVY, component="search"), [], None)
    assert result.registered, result.reasons
    assert result.replay is not None
    assert (result.replay.replayed, result.replay.taken, result.replay.improved) == (2, 1, 1)


def test_escalations_piling_up_become_a_proposal(ctx: HealContext) -> None:
    for shard in range(3):
        gap = Gap(
            text=f"tantivy merges of search index {shard} never finish; searches time out", component="search"
        )
        _record(ctx.events, gap, RunStatus.escalated, None, None, ["slow_response"])
    _record(ctx.events, Gap(text="web is down", component="web"), RunStatus.escalated, None, None, [])
    proposals = propose(ctx.events, ctx.registry, window_s=3600, min_count=3)
    assert [p.key for p in proposals] == ["component search"] and proposals[0].count == 3
    gap = proposals[0].gap
    assert (
        gap.kind is GapKind.recurring
        and gap.component == "search"
        and "3 runs ended without a heal" in gap.evidence[0]
    )
    result = create_for_gap(ctx, gap, [], None, trigger="pattern")
    assert result.registered, result.reasons
    assert (ctx.registry.get(result.created or "").provenance or {})["trigger"] == "pattern"
    # Once a pattern-made persona covers the group, it is not proposed again.
    assert propose(ctx.events, ctx.registry, window_s=3600, min_count=3) == []
    later = datetime(2100, 1, 1, tzinfo=UTC)
    assert propose(ctx.events, ctx.registry, window_s=3600, min_count=3, now=later) == []


def test_agents_create_cli_contract(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "create", "--for-gap", TANTIVY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["registered"] is True and out["reasons"] == [] and Path(out["path"]).is_file()
    assert str(settings.home_dir) in out["path"]
    assert main(["agents", "create", "--for-gap", TANTIVY, "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["registered"] is False and again["reasons"] and set(again) >= {"name", "path", "reasons"}
    gap_file = settings.home_dir / "gap.json"
    gap_file.write_text(
        json.dumps({"text": "the ldap group sync cron fails on nested groups", "kind": "weakness"})
    )
    assert main(["agents", "create", "--gap-file", str(gap_file), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert "weakness" in [k.value for k in load_persona(Path(made["path"])).kinds]
    assert main(["agents", "create", "--json"]) == 2
    assert "--for-gap TEXT or --gap-file FILE" in capsys.readouterr().err
