"""Policy: allowed actions, the risk ceiling, approval rules, rate limits, persona limits, dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentheal.config import Settings
from agentheal.estate import Estate, load_estate
from agentheal.models import Plan, Risk, Step
from agentheal.policy import (
    ApprovalRule,
    Policy,
    PolicyDecision,
    PolicyError,
    RateLimit,
    Rule,
    evaluate,
    load_policy,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def estate(tiny_estate_api_file: Path) -> Estate:
    return load_estate(tiny_estate_api_file)


def _plan(*steps: tuple[str, str] | Step) -> Plan:
    return Plan(
        hypothesis="test",
        steps=[s if isinstance(s, Step) else Step(action=s[0], component=s[1]) for s in steps],
    )


def _never(component: str, action: str, window_s: float) -> int:
    return 0


def _decide(
    policy: Policy, estate: Estate, *steps: tuple[str, str] | Step, persona: list[str] | None = None
) -> PolicyDecision:
    return evaluate(policy, _plan(*steps), estate, persona, _never)


def test_default_policy_allows_a_restart_without_approval(estate: Estate) -> None:
    decision = _decide(Policy(), estate, ("restart", "web"), ("rotate_logs", "api"))
    assert decision.allowed and not decision.needs_approval and not decision.violations
    assert not decision.rate_limited and not decision.dry_run


def test_steps_outside_the_rules_are_violations(estate: Estate) -> None:
    policy = Policy(rules=[Rule(components=["web"], allow=["restart", "rotate_*"])])
    assert _decide(policy, estate, ("restart", "web"), ("rotate_logs", "web")).allowed
    decision = _decide(policy, estate, ("restart", "api"), ("restore_config", "web"))
    assert not decision.allowed
    assert decision.violations == [
        "restart(api): no policy rule allows restart on api",
        "restore_config(web): no policy rule allows restore_config on web",
    ]


def test_rules_match_component_globs(estate: Estate) -> None:
    policy = Policy(rules=[Rule(components=["a*"], allow=["restart"])])
    assert _decide(policy, estate, ("restart", "api")).allowed
    assert not _decide(policy, estate, ("restart", "web")).allowed


def test_invalid_steps_are_violations(estate: Estate) -> None:
    decision = _decide(
        Policy(),
        estate,
        ("reboot", "web"),
        ("restart", "db"),
        Step(action="clean_dir", component="web", args={}),
    )
    assert not decision.allowed and len(decision.violations) == 3
    assert "unknown action 'reboot'" in decision.violations[0]
    assert "unknown component 'db'" in decision.violations[1]
    assert "args.path: Field required" in decision.violations[2]


def test_above_the_risk_ceiling_needs_approval(estate: Estate) -> None:
    decision = _decide(
        Policy(rules=[Rule(allow=["stop", "restart"])]), estate, ("stop", "web"), ("restart", "web")
    )
    assert decision.allowed and decision.needs_approval
    assert decision.approvals == ["stop(web): stop is high risk, above the automatic ceiling medium"]
    low = Policy(max_auto_risk=Risk.none)
    assert _decide(low, estate, ("restart", "web")).needs_approval


def test_approval_rule_needs_a_person(estate: Estate) -> None:
    policy = Policy(
        approval=[ApprovalRule(actions=["restore_config"], components=["web"], reason="configs are reviewed")]
    )
    decision = _decide(policy, estate, ("restore_config", "web"), ("restart", "web"))
    assert decision.allowed and decision.needs_approval
    assert decision.approvals == ["restore_config(web): configs are reviewed"]
    assert not _decide(policy, estate, ("restore_config", "api")).needs_approval


def test_rate_limit_after_three_restarts(estate: Estate) -> None:
    ran: list[tuple[str, str]] = []

    def count_recent(component: str, action: str, window_s: float) -> int:
        assert window_s == 600
        return ran.count((component, action))

    for _ in range(3):
        decision = evaluate(Policy(), _plan(("restart", "web")), estate, None, count_recent)
        assert decision.allowed, decision
        ran.append(("web", "restart"))
    decision = evaluate(Policy(), _plan(("restart", "web")), estate, None, count_recent)
    assert not decision.allowed and decision.rate_limited
    assert decision.violations[0].startswith(
        "restart of web ran 3 times in 600 s; escalating instead of flapping"
    )
    other = evaluate(Policy(), _plan(("restart", "api")), estate, None, count_recent)
    assert other.allowed  # the limit is per component
    custom = Policy(rate_limits=[RateLimit(action="rotate_logs", max=0, window_s=60)])
    assert custom.rate_limits[0].components == ["*"]
    assert not _decide(custom, estate, ("rotate_logs", "web")).allowed


def test_persona_may_only_use_its_own_actions(estate: Estate) -> None:
    decision = _decide(
        Policy(), estate, ("restart", "web"), ("rotate_logs", "web"), persona=["restart", "probe"]
    )
    assert not decision.allowed
    assert decision.violations == [
        "rotate_logs(web): rotate_logs is not one of the persona's actions (restart, probe)"
    ]


def test_read_only_steps_are_always_allowed_and_never_need_approval(estate: Estate) -> None:
    policy = Policy(rules=[], max_auto_risk=Risk.none, approval=[ApprovalRule(reason="everything")])
    decision = _decide(
        policy,
        estate,
        ("probe", "web"),
        Step(action="tail_logs", component="api", args={"lines": 5}),
        persona=[],
    )
    assert decision.allowed and not decision.needs_approval
    assert _decide(policy, estate, ("restart", "web")).needs_approval


def test_rollback_steps_are_checked_too(estate: Estate) -> None:
    plan = Plan(
        hypothesis="x",
        steps=[Step(action="restart", component="web")],
        rollback=[Step(action="stop", component="web")],
    )
    decision = evaluate(Policy(rules=[Rule(allow=["restart"])]), plan, estate, None, _never)
    assert not decision.allowed and "no policy rule allows stop on web" in decision.violations[0]
    decision = evaluate(Policy(), plan, estate, None, _never)
    assert decision.allowed and decision.needs_approval  # a high-risk rollback waits for a person too


def test_load_policy_defaults_follow_the_settings(settings: Settings, tmp_path: Path) -> None:
    policy = load_policy(None, settings)
    assert policy == Policy(max_auto_risk=settings.max_auto_risk)
    strict = Settings(home=tmp_path / "home", max_auto_risk=Risk.low, dry_run=True)
    policy = load_policy(None, strict)
    assert policy.max_auto_risk is Risk.low and policy.dry_run
    file = tmp_path / "policy.yaml"
    file.write_text("rules:\n  - components: [web]\n    allow: [restart]\n")
    from_file = load_policy(file, strict)
    assert from_file.max_auto_risk is Risk.low and from_file.dry_run  # the settings' switch holds
    assert from_file.rate_limits == [RateLimit(action="restart", max=3, window_s=600)]


def test_dry_run_switch_reaches_the_decision(settings: Settings, tmp_path: Path, estate: Estate) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("dry_run: true\nmax_auto_risk: high\n")
    policy = load_policy(file, settings)
    assert policy.dry_run and policy.max_auto_risk is Risk.high
    decision = evaluate(policy, _plan(("stop", "web")), estate, None, _never)
    assert decision.dry_run and not decision.needs_approval


def test_example_policy_loads(settings: Settings, estate: Estate) -> None:
    policy = load_policy(REPO / "policy.example.yaml", settings)
    assert policy.rules and policy.approval and policy.rate_limits
    decision = evaluate(policy, _plan(("stop", "web")), estate, None, _never)
    assert decision.allowed and decision.needs_approval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rule:\n  - allow: [restart]\n", "rule: Extra inputs are not permitted"),
        ("rules:\n  - allow: [restrat]\n", "rules.0.allow: unknown actions ['restrat']"),
        ("rules:\n  - components: [web]\n", "rules.0.allow: Field required"),
        ("max_auto_risk: extreme\n", "max_auto_risk: Input should be 'none', 'low', 'medium' or 'high'"),
        ("rate_limits:\n  - action: restart\n    max: -1\n    window_s: 60\n", "rate_limits.0.max"),
        ("approval:\n  - actions: [stop]\n", "approval.0.reason: Field required"),
        ("rules: [\n  - allow: x\n", "YAML syntax error at line 2"),
        ("- a list\n", "must be a YAML mapping"),
    ],
)
def test_broken_policy_file_names_file_and_field(
    settings: Settings, tmp_path: Path, text: str, expected: str
) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(file, settings)
    assert str(file) in str(err.value) and expected in str(err.value)


def test_missing_policy_file_is_named(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: policy file not found"):
        load_policy(tmp_path / "nope.yaml", settings)
