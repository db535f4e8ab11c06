"""A gap no persona fits goes through the agent factory and is healed in the same run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from agentheal.cli import main
from fake_llm import BASE_URL, content_reply
from test_factory_llm import design

pytestmark = pytest.mark.slow

INOTIFY = "the thumbnail worker on web leaks inotify watches until new image thumbnails stop appearing"
# no built-in persona scores this above the match threshold, and no action of the catalogue answers it
SITEMAP = "web's sitemap.xml lists product pages that were deleted last week"


@pytest.fixture
def estate(
    capsys: pytest.CaptureFixture[str],
    tiny_estate_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Path]:
    monkeypatch.setenv("AGENTHEAL_HOME", str(tmp_path / "home"))
    assert main(["estate", "up", str(tiny_estate_file)]) == 0
    capsys.readouterr()
    yield tiny_estate_file
    main(["estate", "down", str(tiny_estate_file)])


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(list(args))
    return code, json.loads(capsys.readouterr().out)


def _heal(estate: Path, text: str) -> list[str]:
    return ["heal", "--gap", text, "--component", "web", "--estate", str(estate), "--json", "-q"]


def _inotify_design() -> dict[str, Any]:
    playbook = design()["playbooks"][0]
    # the real web reports only that it runs: the design keys its playbook to the gap's own words
    return design(playbooks=[{**playbook, "facts_all": ["process_running"], "text_any": ["inotify"]}])


def test_capability_gap_gets_a_new_persona_that_heals_it_in_the_same_run(
    capsys: pytest.CaptureFixture[str], estate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHEAL_LLM_BASE_URL", BASE_URL)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        llm = router.post(f"{BASE_URL}/chat/completions").mock(side_effect=[content_reply(_inotify_design())])
        code, result = _json(capsys, *_heal(estate, INOTIFY))
        assert result["factory"] == {"created": "inotify-watch-leak", "reasons": []}
        assert result["persona"] == "inotify-watch-leak" and result["source"] == "persona"
        # a generated agent's first real heal waits for a person (policy: generated_first_heals)
        assert code == 1 and result["status"] == "awaiting_approval", result["reason"]
        assert result["actions"] == []
        code, done = _json(capsys, "approve", result["run_id"], "--json")
    assert code == 0 and done["status"] == "healed", done["reason"]
    assert [a["action"] for a in done["actions"]] == ["tail_logs", "restart"]
    assert len(llm.calls) == 1 and done["llm"]["calls"] == 1  # the design; its playbook needed no more

    code, agents = _json(capsys, "agents", "list", "--json")
    made = next(a for a in agents if a["name"] == "inotify-watch-leak")
    assert made["origin"] == "generated" and made["status"] == "active"
    assert made["runs"] == 1 and made["heals"] == 1


def test_capability_gap_no_action_answers_gets_a_diagnosis_only_persona_and_escalates(
    capsys: pytest.CaptureFixture[str], estate: Path
) -> None:
    code, result = _json(capsys, *_heal(estate, SITEMAP))
    assert code == 1 and result["status"] == "escalated"
    # Registered in the same run, it gathered the evidence and escalated with it: nothing was run.
    assert result["factory"] == {"created": "data-integrity", "reasons": []}
    assert result["persona"] == "data-integrity" and result["actions"] == []
    assert result["reason"].startswith("data-integrity is a diagnosis-only specialist"), result["reason"]
    assert any(e.startswith("tail_logs(web):") for e in result["diagnosis"]["evidence"])
    code, agents = _json(capsys, "agents", "list", "--json")
    made = next(a for a in agents if a["name"] == "data-integrity")
    assert made["origin"] == "generated" and made["runs"] == 1 and made["heals"] == 0
