"""The Slack adapter on `agentheal serve` (real uvicorn on loopback), through bolt's real request
handling with requests signed as Slack signs them, and a loopback stand-in for Slack's Web API that
records what the bot posts: a heal from chat heals a killed process with each step in its thread;
an approval request's button finishes the run for an operator and changes nothing for a viewer;
bad, missing and stale signatures are refused 401."""

from __future__ import annotations

import json
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
    BOT_TOKEN,
    SIGNING_SECRET,
    Call,
    Recorder,
    button_body,
    slack_signed,
    slack_web_api,
    slash_body,
)
from conftest import served

pytestmark = pytest.mark.slow

ROLES = {"slack:UOPS": "operator", "slack:UVIC": "viewer"}


@pytest.fixture
def slack(settings: Settings) -> Iterator[tuple[Settings, Recorder]]:
    """Settings for a Slack app whose Web API is the stand-in, with an operator and a viewer."""
    with slack_web_api() as (url, recorder):
        chat = Settings(
            home=settings.home,
            slack_signing_secret=SIGNING_SECRET,
            slack_bot_token=BOT_TOKEN,
            slack_api_url=url,
            chat_roles=ROLES,
        )
        yield chat, recorder


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


def _post(base: str, body: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/slack/events", content=body, headers=slack_signed(body) | headers, timeout=30)


def _text(call: Call) -> str:
    """Everything a posted message says, its blocks' text included."""
    found = [str(call.params.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(call.params.get("blocks"))
    return "\n".join(found)


def _head(recorder: Recorder, channel: str = "") -> Call:
    return recorder.wait(
        lambda calls: next(
            (
                c
                for c in calls
                if c.method == "chat.postMessage"
                and not c.params.get("thread_ts")
                and "Healing" in _text(c)
                and channel in c.params["channel"]
            ),
            None,
        ),
        why="the run's head message",
    )


def _updated_to(recorder: Recorder, ts: str, words: str) -> Call:
    return recorder.wait(
        lambda calls: next(
            (
                c
                for c in calls
                if c.method == "chat.update" and c.params.get("ts") == ts and words in _text(c)
            ),
            None,
        ),
        why=f"message {ts} updated to say {words!r}",
    )


def _thread(recorder: Recorder, ts: str) -> list[Call]:
    return [c for c in recorder.of("chat.postMessage") if c.params.get("thread_ts") == ts]


def test_heal_in_chat_heals_a_killed_process_and_its_thread_shows_each_step(
    slack: tuple[Settings, Recorder], estate_up: tuple[Path, LocalBackend]
) -> None:
    settings, recorder = slack
    estate_file, backend = estate_up
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    with served(create_app(settings, estate_path=estate_file)) as base:
        _kill_web(backend, url)
        answer = _post(base, slash_body("UOPS", "heal web: web is down, connection refused", "olga"))
        assert answer.status_code == 200, answer.text
        assert "Healing `web`: run" in answer.text

        head = _head(recorder)
        assert head.auth == f"Bearer {BOT_TOKEN}" and head.params["channel"] == "C1"
        ts = head.ts
        _updated_to(recorder, ts, "healed")
        assert _answers(url)
        steps = [_text(c).split(":", 1)[0] for c in _thread(recorder, ts)]
        for node in ("triage", "recall", "route", "diagnose", "plan", "guard", "execute", "validate"):
            assert node in steps, steps
        assert steps.index("triage") < steps.index("execute") < steps.index("validate")

    audit = EventStore(settings.events_url).audit_rows()
    gap = next(r for r in audit if r.action == "gap")
    assert (gap.actor, gap.role, gap.door, gap.target) == ("slack:UOPS", "operator", "slack", "web")


def test_approval_button_finishes_the_run_for_an_operator_and_changes_nothing_for_a_viewer(
    slack: tuple[Settings, Recorder], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, recorder = slack
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    events = EventStore(settings.events_url)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        assert _post(base, slash_body("UOPS", "heal web: web is down")).status_code == 200
        head = _head(recorder)
        thread_ts = head.ts
        request = recorder.wait(
            lambda calls: next(
                (c for c in calls if c.method == "chat.postMessage" and "Approval needed" in _text(c)), None
            ),
            why="the approval request",
        )
        assert request.params["thread_ts"] == thread_ts
        said = _text(request)
        assert "`restart` on `web`" in said and "restarts need a person here" in said and "risk" in said
        (actions,) = [b for b in request.params["blocks"] if b["type"] == "actions"]
        assert [e["action_id"] for e in actions["elements"]] == ["agentheal_approve", "agentheal_reject"]
        run_id = actions["elements"][0]["value"]
        request_ts = request.ts

        pressed = _post(base, button_body("UVIC", "approve", run_id, "C1", request_ts, thread_ts))
        assert pressed.status_code == 200
        private = recorder.wait(
            lambda calls: [c for c in calls if c.method == "chat.postEphemeral"], why="private"
        )
        assert private[0].params["user"] == "UVIC" and "may not approve" in private[0].params["text"]
        time.sleep(0.5)
        assert events.run(run_id).row.status.value == "awaiting_approval" and not _answers(url)
        assert not [c for c in recorder.of("chat.update") if c.params.get("ts") == request_ts]

        # what a viewer may ask meanwhile: the status, and why the run wants what it wants
        status = _post(base, slash_body("UVIC", "status")).json()
        said = json.dumps(status)
        assert "1 run(s) waiting for approval" in said and run_id[:12] in said and "unhealthy" in said
        why = json.dumps(_post(base, slash_body("UVIC", f"why {run_id[:8]}")).json())
        assert "*Diagnosis:*" in why and "process_down" in why and "`restart` on `web`" in why

        pressed = _post(base, button_body("UOPS", "approve", run_id, "C1", request_ts, thread_ts))
        assert pressed.status_code == 200
        _updated_to(recorder, request_ts, "Approved by uops (slack:UOPS)")
        _updated_to(recorder, thread_ts, "healed")
        final = _updated_to(recorder, request_ts, "Run ended: *healed*")
        assert not [b for b in final.params["blocks"] if b["type"] == "actions"]  # no buttons left
        assert _answers(url)

    trail = events.audit_rows()
    refused = next(r for r in trail if r.outcome == "refused")
    assert (refused.actor, refused.action, refused.role, refused.door) == (
        "slack:UVIC",
        "approve",
        "viewer",
        "slack",
    )
    approve = next(r for r in trail if r.action == "approve")
    assert (approve.actor, approve.role, approve.door, approve.target) == (
        "slack:UOPS",
        "operator",
        "slack",
        run_id,
    )


def test_bad_missing_and_stale_signatures_are_refused_401(slack: tuple[Settings, Recorder]) -> None:
    settings, recorder = slack
    body = slash_body("UOPS", "heal web: down")
    with served(create_app(settings)) as base:
        wrong = slack_signed(body, secret="not-the-secret")
        assert httpx.post(f"{base}/slack/events", content=body, headers=wrong).status_code == 401
        stale = slack_signed(body, at=int(time.time()) - 301)
        assert httpx.post(f"{base}/slack/events", content=body, headers=stale).status_code == 401
        bare = {"Content-Type": "application/x-www-form-urlencoded"}
        assert httpx.post(f"{base}/slack/events", content=body, headers=bare).status_code == 401
        tampered = slack_signed(body)
        assert httpx.post(f"{base}/slack/events", content=body + "x", headers=tampered).status_code == 401
        # the API's own routes still want a bearer token, and Slack's signature is no token
        assert httpx.get(f"{base}/runs", headers=slack_signed("")).status_code == 401

        helped = _post(base, slash_body("UNEW", "what is this"))
        assert (
            helped.status_code == 200
            and "is not a command" in helped.text
            and "heal <component>" in helped.text
        )
    assert recorder.of("chat.postMessage") == []
    assert [r.action for r in EventStore(settings.events_url).audit_rows()] == []


def test_an_escalation_says_the_reason_and_what_was_tried(
    slack: tuple[Settings, Recorder], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, recorder = slack
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - components: ['*']\n    allow: [rotate_logs]\n")  # restart is not allowed
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        assert _post(base, slash_body("UOPS", "heal web: web is down")).status_code == 200
        head = _head(recorder)
        escalation = recorder.wait(
            lambda calls: next(
                (c for c in calls if c.method == "chat.postMessage" and "Escalated" in _text(c)), None
            ),
            why="the escalation",
        )
        assert escalation.params["thread_ts"] == head.ts
        said = _text(escalation)
        assert "*Reason:* policy refused" in said and "restart" in said
        assert "*What was tried:*" in said and "• plan [" in said
        _updated_to(recorder, head.ts, "escalated")
        assert not _answers(url)


def test_runs_other_doors_start_are_followed_in_the_configured_channel(
    slack: tuple[Settings, Recorder], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, recorder = slack
    settings = settings.model_copy(update={"slack_channel": "COPS"})
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    app = create_app(settings, estate_path=estate_file, policy_path=policy, insecure_local=True)
    with served(app) as base:
        _kill_web(backend, url)
        posted = httpx.post(f"{base}/gaps", json={"text": "web is down", "component": "web"}, timeout=30)
        assert posted.status_code == 202, posted.text
        run_id = posted.json()["run_id"]
        head = _head(recorder)
        assert (
            head.params["channel"] == "COPS" and "local via api" in _text(head) and run_id[:12] in _text(head)
        )
        request = recorder.wait(
            lambda calls: next(
                (c for c in calls if c.method == "chat.postMessage" and "Approval needed" in _text(c)), None
            ),
            why="the approval request",
        )
        assert request.params["thread_ts"] == head.ts and request.params["channel"] == "COPS"
        # answered through another door: the request in chat loses its buttons all the same
        done = httpx.post(f"{base}/runs/{run_id}/approve", json={"note": "from the API"}, timeout=60)
        assert done.status_code == 200 and done.json()["status"] == "healed"
        _updated_to(recorder, request.ts, "Approved by local")
        final = _updated_to(recorder, request.ts, "Run ended: *healed*")
        assert not [b for b in final.params["blocks"] if b["type"] == "actions"]
        _updated_to(recorder, head.ts, "healed")
        assert _answers(url)

        # a heal asked for in chat keeps its one thread where it was asked, none in the channel
        asked = slash_body("UOPS", "heal web: the page is slow", channel="C1")
        assert _post(base, asked).status_code == 200
        _updated_to(recorder, _head(recorder, "C1").ts, "for the whole story")  # its head, at its end
        time.sleep(2.5)  # the channel looks for new runs every half second, after a second's grace
    heads = [c.params["channel"] for c in recorder.of("chat.postMessage") if not c.params.get("thread_ts")]
    assert heads == ["COPS", "C1"]  # one thread per run


def _event(event: dict[str, Any]) -> str:
    wrapper = {"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
               "event_id": f"Ev{time.time_ns()}", "event_time": int(time.time()), "event": event}  # fmt: skip
    return json.dumps(wrapper)


def test_mentions_and_direct_messages_answer_in_thread_and_reject_by_text(
    slack: tuple[Settings, Recorder], estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    settings, recorder = slack
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = str(load_estate(estate_file).components["web"].probes[0].http)
    events = EventStore(settings.events_url)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        mention = {"type": "app_mention", "user": "UOPS", "text": "<@UBOT> heal web: down", "ts": "1.000100",
                   "channel": "C1", "event_ts": "1.000100"}  # fmt: skip
        assert _post(base, _event(mention), **{"Content-Type": "application/json"}).status_code == 200
        head = _head(recorder, "C1")
        request = recorder.wait(
            lambda calls: next((c for c in calls if "Approval needed" in _text(c)), None),
            why="approval request",
        )
        actions = next(b for b in request.params["blocks"] if b["type"] == "actions")
        run_id = actions["elements"][0]["value"]

        said = {"type": "message", "channel_type": "im", "user": "UVIC", "text": f"reject {run_id[:8]}",
                "ts": "2.000100", "channel": "D1", "event_ts": "2.000100"}  # fmt: skip
        json_body = {"Content-Type": "application/json"}
        assert _post(base, _event(said), **json_body).status_code == 200
        refused = recorder.wait(
            lambda calls: next((c for c in calls if c.params.get("channel") == "D1"), None),
            why="the DM's answer",
        )
        assert refused.params["thread_ts"] == "2.000100" and "may not reject" in _text(refused)
        assert events.run(run_id).row.status.value == "awaiting_approval"

        rejected = mention | {"text": f"<@UBOT> reject {run_id[:8]} not in opening hours", "ts": "3.0001"}
        assert _post(base, _event(rejected), **json_body).status_code == 200
        _updated_to(recorder, request.ts, "Rejected by slack:UOPS")
        _updated_to(recorder, head.ts, "rejected")
        answer = recorder.wait(
            lambda calls: next((c for c in calls if c.params.get("thread_ts") == "3.0001"), None),
            why="answer",
        )
        assert "rejected by slack:UOPS" in _text(answer)
        assert not _answers(url)
    row = events.run(run_id).row
    assert row.status.value == "rejected" and "not in opening hours" in (row.reason or "")
