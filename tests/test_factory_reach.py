"""The offline factory proposes only actions whose effect answers the gap; else it only diagnoses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.estate.actions import CATALOGUE
from agentheal.estate.facts import Fact
from agentheal.factory.checks import unsuitable_actions
from agentheal.factory.derive import derive_design
from agentheal.factory.design import AgentDesign
from agentheal.factory.filler import echo_problems
from agentheal.factory.symptoms import SYMPTOMS
from agentheal.graphs.context import HealContext
from agentheal.graphs.factory import create_for_gap
from agentheal.models import Gap
from agentheal.personas import load_persona

CERT = "TLS certificate on the public load balancer expires in 3 days; clients will fail handshakes"
DISK = "the media volume on the upload server is full: no space left on device and uploads fail"
# A disk-full gap no built-in persona fits above the threshold: the factory registers its specialist.
CEPH = "the ceph journal partition behind the thumbnail cache is full and new thumbnails are never written"


@pytest.fixture
def ctx(settings: Settings) -> HealContext:
    return HealContext(settings=settings)


def test_the_certificate_gap_gets_a_diagnosis_only_persona(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agents", "create", "--for-gap", CERT, "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("registered: tls-certificates v1 (offline)")
    assert "tls-certificates is diagnosis-only" in out
    persona = load_persona(settings.generated_personas_dir / "tls-certificates.md")
    assert "restart" not in persona.actions and persona.diagnosis_only
    assert all(CATALOGUE[a].read_only for a in persona.actions) and persona.playbooks == []
    assert persona.plan_for(Gap(text=CERT), [], "lb") is None
    # It says so, where a person and an LLM read it.
    assert "**diagnosis-only**" in persona.body and "escalates" in persona.body
    # Its expertise says what such a specialist knows, not the report again.
    assert CERT.lower() not in persona.expertise.lower() and "notAfter" in persona.expertise


def test_a_disk_full_gap_gets_a_persona_that_cleans(ctx: HealContext) -> None:
    design = derive_design(Gap(text=DISK), [], ctx.registry, ctx.policy)
    assert "clean_dir" in design.actions and "restart" not in design.actions
    assert design.name == "media-disk-space"
    result = create_for_gap(ctx, Gap(text=CEPH), [], None)
    assert result.registered, result.reasons
    persona = ctx.registry.get(result.created or "")
    assert persona.name == "ceph-disk-space" and not persona.diagnosis_only
    assert {"clean_dir", "rotate_logs"} & set(persona.actions) and "restart" not in persona.actions
    # The dry run without an estate planned the cleaning of the folder the fact is about.
    assert result.plan is not None and [s.action for s in result.plan.steps][-1] == "clean_dir"
    assert result.plan.steps[-1].args["path"] == "data/stand-in"


def test_a_disk_full_gap_on_a_real_estate_cleans_the_folder_its_fact_names(ctx: HealContext) -> None:
    facts = [Fact(name="disk_over_budget", component="web", detail="data/cache 900 MB over 500 MB")]
    design = derive_design(Gap(text=CEPH, component="web"), facts, ctx.registry, ctx.policy)
    [book] = design.playbooks
    assert book.facts_all == ["disk_over_budget"] and book.steps[-1].action == "clean_dir"
    assert book.steps[-1].args[0].value == "{disk_over_budget.path}"


def test_consequences_a_subject_explains_get_no_restart(ctx: HealContext) -> None:
    # Errors and timeouts that a full disk explains are answered by freeing space, not a restart;
    # with a subject out of reach, not even an observed error fact makes a restart fit.
    disk = derive_design(Gap(text=DISK + " and requests time out"), [], ctx.registry, ctx.policy)
    assert "restart" not in disk.actions
    errors = [Fact(name="log_errors", component="lb", detail="ssl handshake failed")]
    cert = derive_design(Gap(text=CERT, component="lb"), errors, ctx.registry, ctx.policy)
    assert cert.playbooks == [] and "restart" not in cert.actions
    # With no subject at all, the process state is the only suspect: a restart answers slowness.
    slow = derive_design(Gap(text="the pricing page hangs for minutes"), [], ctx.registry, ctx.policy)
    assert slow.actions[-1] == "restart" and slow.name.endswith("-latency")


def test_names_read_like_roles_and_stay_unique(ctx: HealContext) -> None:
    first = create_for_gap(ctx, Gap(text=CERT), [], None)
    assert first.created == "tls-certificates"
    other = derive_design(
        Gap(text="the mtls client certificate of the billing api has expired"), [], ctx.registry, ctx.policy
    )
    assert other.name != "tls-certificates" and other.name.endswith("tls-certificates")
    assert other.title.startswith("Mtls tls certificates") or "TLS certificates" in other.title


def test_every_symptom_treatment_answers_its_facts_by_the_catalogue() -> None:
    for symptom in SYMPTOMS:
        for i, action in enumerate(symptom.remedy):
            spec = CATALOGUE[action]
            completes = action == "restart" and any(CATALOGUE[a].needs_restart for a in symptom.remedy[:i])
            assert set(spec.answers) & set(symptom.facts) or completes, (symptom.label, action)


def test_a_design_with_a_restart_for_a_certificate_is_refused_with_reasons(ctx: HealContext) -> None:
    design = derive_design(Gap(text="the ceph journal partition is full"), [], ctx.registry, ctx.policy)
    assert unsuitable_actions(design, Gap(text="the ceph journal partition is full"), []) == []
    gap = Gap(text=CERT)
    wrong = design.model_copy(update={"actions": ["tail_logs", "restart"], "playbooks": []})
    [problem] = unsuitable_actions(wrong, gap, [])
    assert problem.startswith("actions: 'restart' does not answer this gap: it changes process state")
    assert problem.endswith(
        "the gap's evidence is none; it is about a TLS certificate, which no action changes"
    )
    # A playbook is judged step by step, whatever facts its own condition names.
    cleaning = unsuitable_actions(design, gap, [Fact(name="log_errors", component="lb", detail="x")])
    assert [p.split(":")[0] for p in cleaning] == [f"playbooks.{design.playbooks[0].name}", "actions"]


def test_an_expertise_that_repeats_the_gap_is_refused(ctx: HealContext) -> None:
    gap = Gap(text=CERT)
    design = derive_design(gap, [], ctx.registry, ctx.policy)
    assert echo_problems(design, gap) == []
    quoted = design.model_copy(update={"expertise": f"Specialist for: {CERT}. It handles it."})
    assert echo_problems(quoted, gap)[0].startswith("Expertise: quotes the gap")
    shuffled = AgentDesign.model_validate(
        {
            **design.model_dump(),
            "expertise": "Public load balancer certificate expires; clients fail handshakes.",
        }
    )
    assert echo_problems(shuffled, gap)[0].startswith("Expertise: repeats the gap's words (")


def test_a_heal_routed_to_a_diagnosis_only_persona_escalates_with_evidence(
    settings: Settings, tiny_estate_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agents", "create", "--for-gap", CERT, "-q"]) == 0
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    try:
        capsys.readouterr()
        code = main(
            ["heal", "--gap", CERT, "--component", "web", "--estate", str(tiny_estate_file), "--json"]
        )
        result = json.loads(capsys.readouterr().out)
    finally:
        main(["estate", "down", str(tiny_estate_file)])
    assert code == 1 and result["status"] == "escalated", result["reason"]
    assert result["persona"] == "tls-certificates" and result["actions"] == [] and result["plan"] is None
    assert result["reason"].startswith("tls-certificates is a diagnosis-only specialist: no action")
    assert "process_stats(web): pid:" in result["reason"]
    evidence = result["diagnosis"]["evidence"]
    assert any(e.startswith("tail_logs(web):") for e in evidence) and len(evidence) >= 2
