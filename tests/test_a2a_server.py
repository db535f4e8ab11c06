"""agentheal as an A2A agent on `agentheal serve`, driven by a client built with `a2a-sdk`: the public
Agent Card, a gap sent as a task followed to `completed` with the run's result as its artifact, an
approval answered on the task (`input-required`, then `approve`), a vague gap `failed` (escalated),
and a viewer refused."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers.proto_helpers import get_artifact_text, get_data_parts, new_data_part, new_text_part
from a2a.types import Message, Role, SendMessageRequest, TaskState

from agentheal.api.app import create_app
from agentheal.api.tokens import TokenStore
from agentheal.config import Settings
from agentheal.estate.local import LocalBackend
from agentheal.events import EventStore
from test_api_core import _answers, _backend, _kill_web, _web_url, served

pytestmark = pytest.mark.slow


@pytest.fixture
def estate_up(settings: Settings, tiny_estate_file: Path) -> Any:
    backend = _backend(settings, tiny_estate_file)
    assert all(r.outcome == "ok" for r in backend.up())
    yield tiny_estate_file, backend
    backend.down()


async def _send(base: str, token: str, parts: list[Any], task: tuple[str, str] = ("", "")) -> dict[str, Any]:
    """Send one message and follow its stream: the states seen, status texts, the artifacts, the task."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=90) as http:
        card = (await http.get(f"{base}/.well-known/agent-card.json")).json()
        client = await create_client(base, client_config=ClientConfig(httpx_client=http, streaming=True))
        task_id, context_id = task  # a follow-up names its task and the task's context
        message = Message(
            role=Role.ROLE_USER,
            message_id=uuid.uuid4().hex,
            parts=parts,
            task_id=task_id,
            context_id=context_id,
        )
        seen: dict[str, Any] = {"states": [], "texts": [], "artifacts": [], "task": task, "card": card}
        async for event in client.send_message(SendMessageRequest(message=message)):
            if event.HasField("task"):
                seen["task"] = (event.task.id, event.task.context_id)
                seen["states"].append(TaskState.Name(event.task.status.state))
            if event.HasField("status_update"):
                status = event.status_update.status
                seen["states"].append(TaskState.Name(status.state))
                seen["texts"] += [p.text for p in status.message.parts if p.HasField("text")]
            if event.HasField("artifact_update"):
                seen["artifacts"].append(event.artifact_update.artifact)
        await client.close()
        return seen


def test_a2a_client_sends_a_gap_and_follows_the_task_to_completed(
    settings: Settings, estate_up: tuple[Path, LocalBackend]
) -> None:
    estate_file, backend = estate_up
    store = TokenStore(settings.home_dir)
    ops, vic = store.add("ops", "operator"), store.add("vic", "viewer")
    url = _web_url(estate_file)
    with served(create_app(settings, estate_path=estate_file)) as base:
        card = httpx.get(f"{base}/.well-known/agent-card.json")  # public: no token
        assert card.status_code == 200
        body = card.json()
        assert body["name"] == "agentheal" and len(body["skills"]) >= 3
        assert body["supportedInterfaces"][0]["url"] == f"{base}/a2a"
        assert "bearer" in body["securitySchemes"]
        assert httpx.post(f"{base}/a2a", json={"jsonrpc": "2.0", "id": 1}).status_code == 401

        refused = anyio.run(_send, base, vic, [new_text_part("web is down")])
        assert refused["states"][-1] == "TASK_STATE_REJECTED"
        assert "vic has role viewer" in refused["texts"][-1]

        _kill_web(backend, url)
        gap = {"text": "web is down: connection refused", "component": "web"}
        seen = anyio.run(_send, base, ops, [new_data_part(gap)])
        assert seen["states"][0] == "TASK_STATE_SUBMITTED" and "TASK_STATE_WORKING" in seen["states"]
        assert seen["states"][-1] == "TASK_STATE_COMPLETED", seen["texts"]
        assert any(t.startswith("execute:") for t in seen["texts"])  # the run's steps, streamed
        (artifact,) = seen["artifacts"]
        (result,) = get_data_parts(artifact.parts)
        assert result["status"] == "healed" and result["actions"] == ["restart web: ok"]
        assert _answers(url)

        run_id = result["run_id"]
        explained = anyio.run(_send, base, vic, [new_text_part(f"explain {run_id[:10]}")])
        assert explained["states"][-1] == "TASK_STATE_COMPLETED"
        assert get_artifact_text(explained["artifacts"][0]).startswith(f"run {run_id}  healed")
    (row,) = [r for r in EventStore(settings.events_url).audit_rows() if r.action == "gap"]
    assert (row.actor, row.door, row.target) == ("ops", "a2a", "web")


def test_a2a_task_waits_for_approval_and_is_approved_on_the_task(
    settings: Settings, estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    store = TokenStore(settings.home_dir)
    ops = store.add("ops", "operator")
    url = _web_url(estate_file)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        vague = anyio.run(_send, base, ops, [new_text_part("something is down")])
        assert vague["states"][-1] == "TASK_STATE_FAILED" and "escalated" in vague["texts"][-1]
        (result,) = get_data_parts(vague["artifacts"][0].parts)
        assert result["status"] == "escalated" and "component" in result["reason"]

        gap = new_data_part({"text": "web down, connection refused", "component": "web"})
        first = anyio.run(_send, base, ops, [gap])
        assert first["states"][-1] == "TASK_STATE_INPUT_REQUIRED", first["texts"]
        assert "restart web" in first["texts"][-1] and "approve" in first["texts"][-1]
        assert not _answers(url)
        task = first["task"]

        idle = anyio.run(_send, base, ops, [new_text_part("what now?")], task)
        assert idle["states"][-1] == "TASK_STATE_INPUT_REQUIRED"

        done = anyio.run(_send, base, ops, [new_text_part("approve: off-peak, ok")], task)
        assert done["states"][-1] == "TASK_STATE_COMPLETED", done["texts"]
        (result,) = get_data_parts(done["artifacts"][0].parts)
        assert result["status"] == "healed" and _answers(url)
    approve = next(r for r in EventStore(settings.events_url).audit_rows() if r.action == "approve")
    assert (approve.actor, approve.door, approve.data["note"]) == ("ops", "a2a", "off-peak, ok")


async def _get(base: str, token: str, task_id: str) -> Any:
    """The task as the server has it now (a2a-sdk's `tasks/get`)."""
    from a2a.types import GetTaskRequest

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        client = await create_client(base, client_config=ClientConfig(httpx_client=http, streaming=False))
        try:
            return await client.get_task(GetTaskRequest(id=task_id))
        finally:
            await client.close()


def test_a2a_task_ids_survive_a_restart_of_the_server(
    settings: Settings, estate_up: tuple[Path, LocalBackend], tmp_path: Path
) -> None:
    estate_file, backend = estate_up
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    store = TokenStore(settings.home_dir)
    ops, eve = store.add("ops", "operator"), store.add("eve", "operator")
    url = _web_url(estate_file)
    gap = new_data_part({"text": "web down, connection refused", "component": "web"})
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:
        _kill_web(backend, url)
        first = anyio.run(_send, base, ops, [gap])
        assert first["states"][-1] == "TASK_STATE_INPUT_REQUIRED", first["texts"]
    task_id, context_id = first["task"]
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:  # restarted
        kept = anyio.run(_get, base, ops, task_id)
        assert (kept.id, kept.context_id) == (task_id, context_id)
        assert TaskState.Name(kept.status.state) == "TASK_STATE_INPUT_REQUIRED"
        assert "awaiting_approval" in kept.status.message.parts[0].text
        with pytest.raises(Exception, match="not found"):  # tasks are kept per token
            anyio.run(_get, base, eve, task_id)
        done = anyio.run(_send, base, ops, [new_text_part("approve")], first["task"])
        assert done["states"][-1] == "TASK_STATE_COMPLETED", done["texts"]
        assert _answers(url)
    with served(create_app(settings, estate_path=estate_file, policy_path=policy)) as base:  # and again
        ended = anyio.run(_get, base, ops, task_id)
    assert TaskState.Name(ended.status.state) == "TASK_STATE_COMPLETED"
    (result,) = get_data_parts(ended.artifacts[0].parts)
    assert result["status"] == "healed" and result["run_id"] == kept.metadata["run_id"]
