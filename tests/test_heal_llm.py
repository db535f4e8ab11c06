"""The heal graph with an LLM, the OpenAI API faked over HTTP (respx): the real client runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.models import Check, DiagnosisReply, PlanReply, Step
from fake_llm import BASE_URL, content_reply, sent_bodies, tool_call, tool_reply

pytestmark = pytest.mark.slow

NOVEL_GAP = "web serves stale pages and some requests hang"


@pytest.fixture
def estate(
    capsys: pytest.CaptureFixture[str],
    tiny_estate_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Path]:
    monkeypatch.setenv("AGENTHEAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTHEAL_LLM_BASE_URL", BASE_URL)
    monkeypatch.setenv("AGENTHEAL_LLM_MAX_RETRIES", "0")
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    yield tiny_estate_file
    main(["estate", "down", str(tiny_estate_file)])


def _heal(capsys: pytest.CaptureFixture[str], estate: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    args = ["heal", "--gap", NOVEL_GAP, "--component", "web", "--estate", str(estate), "--json", "-q", *extra]
    code = main(args)
    return code, json.loads(capsys.readouterr().out)


def _diagnosis_replies() -> list[httpx.Response]:
    return [
        tool_reply(
            tool_call("process_stats", {"component": "web"}), tool_call("tail_logs", {"component": "web"})
        ),
        content_reply(
            DiagnosisReply(
                hypothesis="a worker thread of web hangs", root_component="web", facts=["threads stuck"]
            ),
            prompt_tokens=120,
            completion_tokens=30,
        ),
    ]


def _plan_reply(*steps: Step) -> httpx.Response:
    plan = PlanReply(
        hypothesis="a restart clears the hung worker", steps=list(steps), checks=[Check(component="web")]
    )
    return content_reply(plan, prompt_tokens=200, completion_tokens=40)


def _pid(capsys: pytest.CaptureFixture[str], estate: Path) -> int:
    main(["estate", "status", str(estate), "--json"])
    status = json.loads(capsys.readouterr().out)
    return int(next(c["pid"] for c in status["components"] if c["name"] == "web"))


@contextmanager
def fake_endpoint() -> Iterator[respx.MockRouter]:
    """The fake LLM; the estate's own probes on loopback go through for real."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        yield router


@contextmanager
def _other_process_view() -> Iterator[EventStore]:
    events = EventStore(Settings().events_url)
    try:
        yield events
    finally:
        events.close()


def _route(router: respx.MockRouter, replies: list[httpx.Response]) -> respx.Route:
    return router.post(f"{BASE_URL}/chat/completions").mock(side_effect=replies)


def test_novel_gap_is_diagnosed_with_tools_planned_and_healed(
    capsys: pytest.CaptureFixture[str], estate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agentheal.events.HOLD_S", 3600.0)  # held until written on purpose
    before = _pid(capsys, estate)
    replies = iter([*_diagnosis_replies(), _plan_reply(Step(action="restart", component="web"))])
    seen: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        # what another process reads of the run while the model thinks: its first steps are written
        # before the LLM is asked, although a new run's first steps hold their events back
        with _other_process_view() as events:
            seen.append([e.node for r in events.runs() for e in events.run(r.run_id).timeline])  # type: ignore[union-attr]
        return next(replies)

    with fake_endpoint() as router:
        route = router.post(f"{BASE_URL}/chat/completions").mock(side_effect=answer)
        code, result = _heal(capsys, estate)
    assert code == 0, result["reason"]
    assert seen[0][:3] == ["triage", "recall", "route"], seen
    assert result["status"] == "healed" and result["source"] == "llm"
    assert result["llm"] == {
        "calls": 3,
        "prompt_tokens": 10 + 120 + 200,
        "completion_tokens": 5 + 30 + 40,
        "unknown_usage_calls": 0,
    }
    assert [a["action"] for a in result["actions"]] == ["restart"]
    assert _pid(capsys, estate) != before
    bodies = sent_bodies(route)
    tool_messages = [m for m in bodies[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 2
    assert "pid" in tool_messages[0]["content"]  # the real observation ran and its output reached the model
    assert "hang" in result["diagnosis"]["hypothesis"]

    code, story = main(["runs", "show", result["run_id"]]), capsys.readouterr().out
    assert "3 call(s)" in story and "diagnose" in story


def test_malformed_plan_is_retried_once_then_escalated(
    capsys: pytest.CaptureFixture[str], estate: Path
) -> None:
    before = _pid(capsys, estate)
    with fake_endpoint() as router:
        bad = [content_reply("restart it, I think"), content_reply({"hypothesis": "x", "steps": "restart"})]
        route = _route(router, [*_diagnosis_replies(), *bad])
        code, result = _heal(capsys, estate)
    assert code == 1
    assert result["status"] == "escalated"
    assert "no usable plan" in result["reason"] and "steps" in result["reason"]
    assert result["actions"] == [] and result["llm"]["calls"] == 4
    assert len(route.calls) == 4
    assert _pid(capsys, estate) == before


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (Step(action="shell", component="web", args={"cmd": "rm -rf /"}), "shell"),
        (Step(action="clean_dir", component="web", args={"path": "www"}), "clean_dir"),
        (Step(action="restart", component="db"), "db"),
    ],
    ids=["outside-catalogue", "outside-persona-actions", "unknown-component"],
)
def test_plan_outside_what_is_allowed_never_runs(
    capsys: pytest.CaptureFixture[str], estate: Path, step: Step, why: str
) -> None:
    before = _pid(capsys, estate)
    with fake_endpoint() as router:
        _route(router, [*_diagnosis_replies(), _plan_reply(step)])
        code, result = _heal(capsys, estate)
    assert code == 1 and result["status"] == "escalated"
    assert "policy refused the llm plan" in result["reason"] and why in result["reason"]
    assert result["actions"] == []
    assert _pid(capsys, estate) == before


def test_plan_above_the_risk_ceiling_waits_for_a_person(
    capsys: pytest.CaptureFixture[str], estate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHEAL_MAX_AUTO_RISK", "none")
    before = _pid(capsys, estate)
    with fake_endpoint() as router:
        _route(router, [*_diagnosis_replies(), _plan_reply(Step(action="restart", component="web"))])
        code, result = _heal(capsys, estate)
    assert code == 1 and result["status"] == "awaiting_approval"
    assert result["actions"] == []
    assert _pid(capsys, estate) == before


def test_tool_loop_cap_escalates_with_findings(
    capsys: pytest.CaptureFixture[str], estate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHEAL_LLM_MAX_TOOL_ITERATIONS", "2")
    with fake_endpoint() as router:
        ask = [tool_reply(tool_call("process_stats", {"component": "web"})) for _ in range(2)]
        _route(router, ask)
        code, result = _heal(capsys, estate)
    assert code == 1 and result["status"] == "escalated"
    assert "cap" in result["reason"]
    assert any("process_stats" in e or "pid" in e for e in result["diagnosis"]["evidence"])
    assert result["actions"] == []
