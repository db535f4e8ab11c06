"""The Teams adapter on `agentheal serve` (real uvicorn on loopback), through the Teams SDK's own
request handling: Bot Framework activities with tokens signed by a key of a loopback stand-in's key
set, and a stand-in Bot Connector that records the replies, cards and card updates. A heal from
Teams heals a killed process with each step in its thread; Approve pressed by an operator finishes
the run, by a viewer changes nothing; an activity without valid authentication is refused 401."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.api.app import create_app
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import load_estate
from agentheal.events import EventStore
from chat_standins import (
    TEAMS_APP_ID,
    BotFramework,
    Call,
    bot_framework,
    teams_activity,
    teams_execute,
)
from conftest import served

pytestmark = pytest.mark.slow

OPS, VIC = "29:ops", "29:vic"
CONVERSATION = "19:ops@thread.tacv2"


@pytest.fixture
def teams(settings: Settings) -> Iterator[tuple[Settings, BotFramework]]:
    with bot_framework() as framework:
        chat = Settings(
            home=settings.home,
            teams_client_id=TEAMS_APP_ID,
            teams_client_secret="not-a-secret",
            teams_token_url=f"{framework.base}/token",
            teams_openid_url=framework.openid_url,
            chat_roles={f"teams:{OPS}": "operator", f"teams:{VIC}": "viewer"},
        )
        yield chat, framework


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_file: Path) -> Iterator[tuple[Path, LocalBackend]]:
    estate = load_estate(tiny_estate_file)
    backend = LocalBackend(estate, settings.estates_dir / estate.name)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_file, backend
    backend.down()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_web(backend: LocalBackend, url: str) -> None:
    (web,) = [h for h in backend.status() if h.name == "web"]
    assert web.pid
    os.kill(web.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _answers(url)


def _send(
    base: str, framework: BotFramework, activity: dict[str, Any], token: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or framework.sign()}"}
    return httpx.post(f"{base}/teams/messages", json=activity, headers=headers, timeout=30)


def _said(call: Call) -> str:
    """All the text of an activity the bot sent: its text and its cards' text blocks and facts."""
    found: list[str] = [str(call.params.get("text") or "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(call.params.get("attachments"))
    return "\n".join(found)


def _sent(framework: BotFramework, kind: str, words: str, path_has: str = "") -> Any:
    def found(calls: list[Call]) -> Any:
        return next((c for c in calls if c.method == kind and words in _said(c) and path_has in c.path), None)

    return found


def _actions(call: Call) -> list[dict[str, Any]]:
    return [a for att in call.params.get("attachments", []) for a in att["content"].get("actions", [])]


def test_heal_from_teams_heals_a_killed_process_and_its_thread_shows_each_step(
    teams: tuple[Settings, BotFramework], estate_up: tuple[Path, LocalBackend]
) -> None:
    settings, framework = teams
    estate_file, backend = estate_up
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    with served(create_app(settings, estate_path=estate_file)) as base:
        _kill_web(backend, url)
        activity = teams_activity(
            "<at>agentheal</at>&nbsp;heal web: web is down", OPS, service_url=framework.service_url
        )
        answered = _send(base, framework, activity)
        assert answered.status_code == 200, answered.text
        recorder = framework.connector
        head = recorder.wait(
            _sent(framework, "create", "Healing", f"/v3/conversations/{CONVERSATION}/"), why="head"
        )
        assert head.auth.startswith("Bearer ey")  # the bot's own token, from the token endpoint
        recorder.wait(_sent(framework, "create", "Healing `web`: run"), why="the reply to the message")
        head_id = head.ts
        thread = f"{CONVERSATION};messageid={head_id}"
        recorder.wait(
            _sent(framework, "update", "healed", f"/activities/{head_id}"), why="the head updated, healed"
        )
        assert _answers(url)
        steps = [
            _said(c).strip().split("**")[1]
            for c in recorder.calls
            if c.method == "create" and thread in c.path
        ]
        for node in ("triage", "recall", "route", "diagnose", "plan", "guard", "execute", "validate"):
            assert node in steps, steps
    gap = next(r for r in EventStore(settings.events_url).audit_rows() if r.action == "gap")
    assert (gap.actor, gap.role, gap.door, gap.target) == (f"teams:{OPS}", "operator", "teams", "web")


def test_execute_approve_finishes_the_run_for_an_operator_and_changes_nothing_for_a_viewer(
    teams: tuple[Settings, BotFramework], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, framework = teams
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    events = EventStore(settings.events_url)
    recorder = framework.connector
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        activity = teams_activity("heal web: web is down", OPS, service_url=framework.service_url)
        assert _send(base, framework, activity).status_code == 200
        head = recorder.wait(
            _sent(framework, "create", "Healing", f"/v3/conversations/{CONVERSATION}/"), why="head"
        )
        request = recorder.wait(_sent(framework, "create", "Approval needed"), why="the approval card")
        assert f";messageid={head.ts}" in request.path
        said = _said(request)
        assert "`restart` on `web`" in said and "restarts need a person here" in said and "risk" in said
        buttons = _actions(request)
        assert [(b["type"], b["verb"]) for b in buttons] == [
            ("Action.Execute", "approve"),
            ("Action.Execute", "reject"),
        ]
        run_id = buttons[0]["data"]["run_id"]

        press = teams_execute("approve", run_id, VIC, reply_to=request.ts, service_url=framework.service_url)
        refused = _send(base, framework, press)
        assert refused.status_code == 200
        assert refused.json()["type"] == "application/vnd.microsoft.activity.message"
        assert "may not approve" in refused.json()["value"]
        time.sleep(0.5)
        assert events.run(run_id).row.status.value == "awaiting_approval" and not _answers(url)
        assert not [c for c in recorder.calls if c.method == "update" and request.ts in c.path]

        press = teams_execute("approve", run_id, OPS, reply_to=request.ts, service_url=framework.service_url)
        done = _send(base, framework, press)
        assert done.status_code == 200 and "approved by ops" in done.json()["value"]
        recorder.wait(
            _sent(framework, "update", "Approved by ops", f"/activities/{request.ts}"), why="card answered"
        )
        final = recorder.wait(
            _sent(framework, "update", "Run ended: **healed**", f"/activities/{request.ts}"),
            why="the card refreshed at the end",
        )
        assert _actions(final) == []
        recorder.wait(_sent(framework, "update", "healed", f"/activities/{head.ts}"), why="head healed")
        assert _answers(url)
    trail = events.audit_rows()
    refused_row = next(r for r in trail if r.outcome == "refused")
    assert (refused_row.actor, refused_row.action, refused_row.door) == (f"teams:{VIC}", "approve", "teams")
    approve = next(r for r in trail if r.action == "approve")
    assert (approve.actor, approve.role, approve.target) == (f"teams:{OPS}", "operator", run_id)


def test_activities_without_valid_authentication_are_refused(teams: tuple[Settings, BotFramework]) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    settings, framework = teams
    activity = teams_activity("heal web: down", OPS, service_url=framework.service_url)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with served(create_app(settings)) as base:
        bare = httpx.post(f"{base}/teams/messages", json=activity, timeout=30)
        assert bare.status_code == 401
        for token in (
            framework.sign(key=stranger),  # not signed by the Bot Framework's keys
            framework.sign(audience="another-bot"),
            framework.sign(issuer="https://login.example.com"),
            framework.sign(expires_in=-900),
            framework.sign(service_url="https://elsewhere.example.com/"),  # not this activity's service URL
            "not.a.token",
        ):
            assert _send(base, framework, activity, token).status_code == 401, token
        # a valid token for help: answered
        assert (
            _send(base, framework, teams_activity("help", OPS, service_url=framework.service_url)).status_code
            == 200
        )
    assert [c.method for c in framework.connector.calls if c.method != "token"] == ["create"]  # help only
    assert [r.action for r in EventStore(settings.events_url).audit_rows()] == ["help"]


def test_runs_other_doors_start_are_followed_in_the_configured_conversation(
    teams: tuple[Settings, BotFramework], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, framework = teams
    settings = settings.model_copy(
        update={"teams_conversation": CONVERSATION, "teams_service_url": framework.service_url}
    )
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    recorder = framework.connector
    with served(
        create_app(settings, estate_path=estate_file, policy_path=policy, insecure_local=True)
    ) as base:
        _kill_web(backend, url)
        posted = httpx.post(f"{base}/gaps", json={"text": "web is down", "component": "web"}, timeout=30)
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["run_id"]
        head = recorder.wait(
            _sent(framework, "create", "local via api", f"/v3/conversations/{CONVERSATION}/")
        )
        request = recorder.wait(_sent(framework, "create", "Approval needed"), why="the approval card")
        assert f"{CONVERSATION};messageid={head.ts}" in request.path
        press = teams_execute("approve", run_id, OPS, reply_to=request.ts, service_url=framework.service_url)
        assert "approved by ops" in _send(base, framework, press).json()["value"]
        recorder.wait(_sent(framework, "update", "Run ended: **healed**", f"/activities/{request.ts}"))
        recorder.wait(_sent(framework, "update", "healed", f"/activities/{head.ts}"), why="head healed")
        assert _answers(url)
