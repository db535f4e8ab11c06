"""The LLM path end to end against a real OpenAI-compatible server (llama.cpp, SmolLM2-135M).

Whatever a 135M model answers, a heal ends `healed`, `escalated` or `awaiting_approval` with a
reason, never a crash, and no action outside the catalogue, the persona or the policy runs.
A heal through this model takes a minute or two on two cores, so the module heals once and
several tests read that run.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentheal.config import package_data
from agentheal.estate.actions import CATALOGUE
from agentheal.models import Risk
from agentheal.personas import load_persona, load_personas
from conftest import stop_processes_under, tiny_estate

from .conftest import agentheal, collect_refusals, env_for

# A Python crash's header at the start of a line. The model's own words are echoed in refusals
# (a plan naming "Traceback (most recent call)" as a component was seen), so a bare word is no sign.
_CRASH = re.compile(r"^Traceback \(most recent call last\):", re.MULTILINE)

# Routed to the built-in `configuration` specialist, whose playbooks need a finding this gap
# does not have (the web is up, its config unchanged): no playbook and no memory covers it.
NOVEL_GAP = "web returns the wrong greeting after its config file was edited"


class Scene:
    """A tiny estate, up, with its own home, and the result of one heal through the real server."""

    def __init__(self, estate: Path, env: dict[str, str]) -> None:
        self.estate, self.env = estate, env
        self.home = Path(env["AGENTHEAL_HOME"])
        self.code, self.result = self.heal()

    def heal(self, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        done = agentheal(
            env or self.env,
            *("heal", "--gap", NOVEL_GAP, "--component", "web", "--estate", str(self.estate), "--json"),
            *extra,
        )
        assert not _CRASH.search(done.stderr), done.stderr[-3000:]
        assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr[-2000:]}"
        return done.returncode, json.loads(done.stdout)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "events.sqlite") as conn:
            return list(conn.execute(sql).fetchall())


@pytest.fixture(scope="module")
def scene(llm_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("scene")
    estate = tiny_estate(root)
    env = env_for(llm_server, root / "home")
    up = agentheal(env, "estate", "up", str(estate))
    assert up.returncode == 0, up.stderr
    try:
        yield Scene(estate, env)
    finally:
        stop_processes_under(estate.parent)


def test_a_novel_gap_ends_healed_escalated_or_awaiting_approval_with_a_reason(
    scene: Scene, request: pytest.FixtureRequest
) -> None:
    collect_refusals(scene.home, request.node.name)
    result = scene.result
    assert result["status"] in ("healed", "escalated", "awaiting_approval"), result
    assert (scene.code == 0) == (result["status"] == "healed")
    if result["status"] != "healed":
        assert result["reason"], "a run that did not heal says why"
    assert result["persona"] == "configuration"
    # the diagnosis and the plan went to the model (a refusal is a call too)
    assert result["llm"]["calls"] >= 2, result["llm"]
    answered = {p for (p,) in scene.rows("SELECT purpose FROM llm_calls WHERE ok = 1")}
    assert {"diagnose", "plan"} <= answered, answered


def test_the_tool_loop_ends_cleanly_on_a_server_without_tool_calls(scene: Scene) -> None:
    # llama.cpp's default chat format does not do tool calls: the diagnosis' tool loop gets a
    # final answer (or a refused one) at once, never loops to its cap, and the run goes on to
    # plan.
    diagnose = [d for (d,) in scene.rows("SELECT detail FROM node_events WHERE node = 'diagnose'")]
    assert diagnose, "no diagnose step recorded"
    assert not any("observation-tool cap" in d for d in diagnose), diagnose
    assert scene.rows("SELECT count(*) FROM node_events WHERE node = 'plan'")[0][0] >= 1


def test_the_refused_response_format_is_learnt_at_once_not_retried(scene: Scene) -> None:
    # llama.cpp refuses a JSON-schema response format with a 500 naming the field; agentheal
    # steps down to the format it takes on the next call, without back-off or retries.
    (profile,) = json.loads((scene.home / "llm-endpoints.json").read_text()).values()
    assert profile["structured"] == "json_object_schema", profile
    failed = scene.rows("SELECT error FROM llm_calls WHERE ok = 0")
    assert len(failed) == 1 and "response_format" in failed[0][0], failed
    story = [d for (d,) in scene.rows("SELECT detail FROM node_events WHERE node = 'llm'")]
    assert any("refused response_format as json_schema" in d for d in story), story


def test_usage_figures_are_recorded_when_the_server_gives_them(scene: Scene) -> None:
    answered = scene.rows("SELECT prompt_tokens, completion_tokens, usage_known FROM llm_calls WHERE ok = 1")
    assert answered and all(known == 1 and prompt > 0 and done > 0 for prompt, done, known in answered)
    assert scene.result["llm"]["unknown_usage_calls"] == 0


def test_nothing_outside_the_catalogue_the_persona_or_the_policy_ran(scene: Scene) -> None:
    loaded = load_personas([package_data("personas"), scene.home / "personas"]).personas
    persona = loaded[str(scene.result["persona"])]
    ran = [a for a in scene.result["actions"] if not a["dry_run"]]
    for action in ran:
        assert action["action"] in CATALOGUE and action["action"] in persona.actions, action
        assert action["component"] == "web", action
        risk = CATALOGUE[action["action"]].risk
        assert risk.rank <= Risk.medium.rank, f"{action} is above the default policy's risk ceiling"
    if scene.result["status"] == "awaiting_approval":
        assert ran == []
    recorded = scene.rows("SELECT action FROM actions WHERE dry_run = 0")
    assert sorted(a for (a,) in recorded) == sorted(a["action"] for a in ran)


def test_a_second_run_asks_the_way_the_server_takes_from_the_start(
    scene: Scene, request: pytest.FixtureRequest
) -> None:
    before = scene.rows("SELECT count(*) FROM llm_calls WHERE ok = 0")[0][0]
    _, result = scene.heal("--dry-run")
    collect_refusals(scene.home, request.node.name)
    assert result["status"] in ("dry_run", "escalated", "awaiting_approval"), result
    assert result["llm"]["calls"] >= 1
    after = scene.rows("SELECT count(*) FROM llm_calls WHERE ok = 0")[0][0]
    assert after == before  # the format refusal was learnt once, not met again


def test_a_time_out_ends_the_run_with_a_reason_instead_of_retrying(
    scene: Scene, request: pytest.FixtureRequest
) -> None:
    env = {**scene.env, "AGENTHEAL_LLM_TIMEOUT_S": "0.05"}
    before = scene.rows("SELECT max(id) FROM llm_calls")[0][0]
    code, result = scene.heal(env=env)
    collect_refusals(scene.home, request.node.name)
    assert code == 1 and result["status"] == "escalated", result
    assert "no answer to" in str(result["reason"]) and "not asked again" in str(result["reason"])
    assert result["actions"] == []
    timed_out = [
        purpose
        for (purpose,) in scene.rows(
            f"SELECT purpose FROM llm_calls WHERE id > {before} AND error LIKE 'no answer within%'"
        )
    ]
    # each LLM step that timed out was asked once: a slow model is not asked again
    assert timed_out and len(timed_out) == len(set(timed_out)), timed_out


def test_the_factory_designs_through_the_real_server_and_refuses_what_fails_its_checks(
    llm_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    gap = "TLS certificate on the public load balancer expires in 3 days; clients will fail handshakes"
    done = agentheal(llm_env, "agents", "create", "--for-gap", gap, "--json")
    assert not _CRASH.search(done.stderr), done.stderr[-3000:]
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    collect_refusals(Path(llm_env["AGENTHEAL_HOME"]), request.node.name)
    notes = " ".join(result.get("notes", []))
    assert result["source"] in ("llm", "offline")
    if result["source"] == "offline":
        # the model's design was refused (unusable JSON, filler, unsafe): said, then derived offline
        assert "the LLM gave no usable design" in notes or result["reasons"], result
    if result["registered"]:
        persona = load_persona(Path(str(result["path"])))
        assert "restart" not in persona.actions  # a restart does not renew a certificate
        assert set(persona.actions) <= set(CATALOGUE)
    else:
        assert result["reasons"], "a refused design says why"
