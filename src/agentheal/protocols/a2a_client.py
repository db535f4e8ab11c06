"""Remote personas: another agent, reached over A2A (`a2a-sdk`), designs the plan for a persona.

A persona file with `remote: {a2a: URL}` is routed to like any persona. At `plan`, the gap and the
redacted findings go to the agent as an A2A task, once: the task's id, its deadline and the attempt
it answers are recorded in the run's story before anything waits, so a plan node run again (after a
resume or a crash) finds the task and sends nothing twice. A quick agent is heard within a short
grace; otherwise the run waits in LangGraph's `interrupt()` with the `RemoteWait` as its payload,
status `awaiting_remote`, holding no worker, until whoever polls (`agentheal serve`'s poller, or
`agentheal heal` in its own process: see `a2a_wait`) resumes it with the agent's answer or, past
the deadline, with a time-out. The plan that comes back is parsed into the typed plan and goes
through the guard, approval and validation like any other; an agent that does not answer in time,
answers malformed, or fails the task ends the run in an escalation with the reason.

What the agent receives (a data part): `{"gap", "component", "findings": {"hypothesis", "facts",
"evidence"}, "actions": [{"name", "risk", "description", "args"}], "components"}`. What it answers:
an artifact with a data part `{"hypothesis", "steps": [{"action", "component", "args"}], "rollback",
"checks"}` (a plan, as the LLM planner answers it).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentheal.redaction import cut, redact

if TYPE_CHECKING:
    from agentheal.events import EventStore
    from agentheal.graphs.context import HealContext
    from agentheal.models import Diagnosis, Gap, Plan
    from agentheal.persona_model import Persona, RemoteAgent

__all__ = ["RemoteError", "answer_of", "ask_remote", "plan_of_answer", "remote_plan", "sent_wait"]

_POLL_S = 0.2
_GRACE_S = 0.25  # a quick agent's answer is taken in the plan node itself: no interrupt, no resume
_EVIDENCE_CHARS = 1500

RemoteWait = dict[str, Any]
"""What a run waiting for a remote agent waits for (JSON: the interrupt's payload and the story's
"remote" event): `{"kind": "remote", "run_id", "persona", "url", "task", "sent_at", "deadline",
"timeout_s", "attempt"}`."""

Answer = dict[str, Any]
"""What a waiting run is resumed with: `{"outcome": "answered", "task": <the A2A task as JSON>}`,
`{"outcome": "timeout", "note": …}` or `{"outcome": "error", "reason": …}`."""


class RemoteError(Exception):
    """The remote agent gave no usable plan; the message says why (it is the escalation's reason)."""


@functools.cache
def _tls() -> Any:
    """One TLS context for every call: making one costs tens of milliseconds."""
    import httpx

    return httpx.create_ssl_context()


def _client_config(remote: RemoteAgent) -> tuple[Any, Any]:
    import httpx
    from a2a.client import ClientConfig

    headers = {}
    if remote.token_env:
        token = os.environ.get(remote.token_env)
        if not token:
            raise RemoteError(f"the environment variable {remote.token_env} (the agent's token) is not set")
        headers["Authorization"] = f"Bearer {token}"
    http = httpx.AsyncClient(headers=headers, timeout=30, verify=_tls())
    return http, ClientConfig(httpx_client=http, streaming=False, polling=True)


_CARDS: dict[str, tuple[float, Any]] = {}  # URL -> (when read, its Agent Card)
_CARD_TTL_S = 60.0


async def _with_client(name: str, remote: RemoteAgent, use: Callable[[Any], Any]) -> Any:
    """`use(client)` with a client of the agent; its card is read again after a minute, or a failure
    (reading it costs a round trip, and a run asks many times while it waits)."""
    from a2a.client import A2ACardResolver, create_client

    http, config = _client_config(remote)
    async with http:
        cached = _CARDS.get(remote.a2a)
        try:
            if cached is not None and time.monotonic() - cached[0] < _CARD_TTL_S:
                card = cached[1]
            else:
                card = await A2ACardResolver(http, remote.a2a).get_agent_card()
                _CARDS[remote.a2a] = (time.monotonic(), card)
            client = await create_client(card, client_config=config)
        except Exception as exc:  # unreachable, no card
            _CARDS.pop(remote.a2a, None)
            raise RemoteError(
                f"could not reach {name} at {remote.a2a}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            return await use(client)
        except Exception:
            _CARDS.pop(remote.a2a, None)  # the agent may have moved: its card is read again next time
            raise
        finally:
            await client.close()


async def _send(client: Any, message: Any) -> Any:
    """The task the agent made of the message, as it answered at once."""
    from a2a.types import SendMessageRequest

    try:
        async for event in client.send_message(SendMessageRequest(message=message)):
            if event.HasField("task"):
                return event.task
            if event.HasField("message"):
                raise RemoteError("the agent answered with a message, not a task")
    except RemoteError:
        raise
    except Exception as exc:  # refused, broken: the run escalates with it
        raise RemoteError(f"the task was not taken: {type(exc).__name__}: {exc}") from None
    raise RemoteError("the agent answered no task")


@functools.cache
def _settled() -> frozenset[Any]:
    """The task states that end a wait: the agent's answer, or its refusal to give one."""
    from a2a.types import TaskState

    names = ("COMPLETED", "FAILED", "REJECTED", "CANCELED", "INPUT_REQUIRED", "AUTH_REQUIRED")
    return frozenset(TaskState.Value(f"TASK_STATE_{n}") for n in names)


async def _follow(
    client: Any, wait: RemoteWait, until: float, tick: Callable[[float], None] | None
) -> Answer | None:
    """Ask for the task until it settles (its answer), the deadline passes (a time-out), or `until`
    comes first (None: still waiting). An agent that cannot be reached for a while is asked again:
    only its deadline ends the wait, and the last error is named with the time-out."""
    import anyio
    from a2a.types import GetTaskRequest
    from a2a.utils.errors import TaskNotFoundError
    from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]

    # asked every 5 ms for its first quarter second, then less and less often, every _POLL_S at most
    started, pause, note = time.monotonic(), 0.005, ""
    while True:
        try:
            task = await client.get_task(GetTaskRequest(id=wait["task"]))
        except TaskNotFoundError:
            return {"outcome": "error", "reason": f"the agent no longer knows its task {wait['task']}"}
        except Exception as exc:  # a restart of the agent, a network blip: asked again
            note = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if task.status.state in _settled():
                return {"outcome": "answered", "task": MessageToDict(task)}
        now = time.time()
        if now >= wait["deadline"]:
            return {"outcome": "timeout", "note": note}
        if now >= until:
            return None
        if tick is not None:
            tick(wait["deadline"] - now)
        await anyio.sleep(max(min(pause, wait["deadline"] - now, until - now), 0))
        if time.monotonic() - started > 0.25:
            pause = min(pause * 2, _POLL_S)


def answer_of(
    remote: RemoteAgent, wait: RemoteWait, *, until: float = 0.0, tick: Callable[[float], None] | None = None
) -> Answer | None:
    """The answer to a run's wait (see `Answer`), asking until `until` (epoch seconds; 0: ask once);
    None while the agent works and its deadline is ahead."""
    import anyio

    async def follow() -> Answer | None:
        try:
            answer: Answer | None = await _with_client(
                wait["persona"], remote, lambda c: _follow(c, wait, until, tick)
            )
            return answer
        except RemoteError as exc:  # unreachable now: only the deadline ends the wait
            if time.time() >= wait["deadline"]:
                return {"outcome": "timeout", "note": str(exc)}
            return None

    return anyio.run(follow)


def _payload(ctx: HealContext, persona: Persona, gap: Gap, diagnosis: Diagnosis) -> dict[str, Any]:
    from agentheal.estate.actions import CATALOGUE, args_json_schema

    actions = [
        {
            "name": n,
            "risk": s.risk.value,
            "description": s.description,
            "args": args_json_schema(s.args_model),
        }
        for n, s in CATALOGUE.items()
        if n in persona.actions and not s.read_only
    ]
    budget = ctx.settings.llm_tool_output_chars
    return {
        "gap": redact(gap.text),
        "component": gap.component,
        "kind": gap.kind.value,
        "severity": gap.severity.value,
        "findings": {
            "hypothesis": redact(diagnosis.hypothesis),
            "facts": list(diagnosis.facts),
            # redacted before cut, as every observation: a cut through a secret could leave half of it
            "evidence": [cut(redact(e), min(budget, _EVIDENCE_CHARS)) for e in diagnosis.evidence],
        },
        "actions": actions,
        "components": sorted(ctx.estate.components) if ctx.estate is not None else [],
    }


def sent_wait(events: EventStore, run_id: str, attempt: int | None = None) -> RemoteWait | None:
    """The last task this run sent to a remote agent (for `attempt`, when given), as its wait."""
    import sqlalchemy as sa

    from agentheal.event_schema import NODE_EVENTS

    stmt = (
        sa.select(NODE_EVENTS.c.data)
        .where(NODE_EVENTS.c.run_id == run_id, NODE_EVENTS.c.node == "remote")
        .order_by(NODE_EVENTS.c.id.desc())
    )
    for row in events.query(stmt):
        data = row["data"] or {}
        if data.get("kind") == "remote" and data.get("task") and attempt in (None, data.get("attempt")):
            return dict(data)
    return None


def ask_remote(
    ctx: HealContext, run_id: str, persona: Persona, gap: Gap, diagnosis: Diagnosis, attempt: int
) -> tuple[RemoteWait, Answer | None]:
    """Send the persona's agent this attempt's task, unless it was sent already (then nothing is sent
    and nothing asked: the run's resume brings the answer); the wait, and the answer if the agent
    gave it within the grace.

    Raises:
        RemoteError: the agent cannot be reached, or refuses the task.
    """
    import anyio

    remote = persona.remote
    assert remote is not None
    sent = sent_wait(ctx.events, run_id, attempt)
    if sent is not None and sent["persona"] == persona.name:
        return sent, None

    def message() -> Any:
        from a2a.helpers.proto_helpers import new_data_part, new_text_part
        from a2a.types import Message, Role

        summary = f"agentheal asks {persona.name} for a plan: {redact(gap.text)[:300]}"
        parts = [
            new_data_part(_payload(ctx, persona, gap, diagnosis), "application/json"),
            new_text_part(summary),
        ]
        return Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=parts)

    async def send_and_listen(client: Any) -> tuple[RemoteWait, Answer | None]:
        from google.protobuf.json_format import MessageToDict

        task = await _send(client, message())
        task_id, at = str(task.id), time.time()
        wait: RemoteWait = {"kind": "remote", "run_id": run_id, "persona": persona.name, "url": remote.a2a,
                            "task": task_id, "sent_at": at, "deadline": at + remote.timeout_s,
                            "timeout_s": remote.timeout_s, "attempt": attempt}  # fmt: skip
        # in the story before any wait: a plan node run again finds it and sends nothing again
        ctx.say(run_id, "remote", f"asked {persona.name} at {remote.a2a} for a plan (task {task_id})", wait)
        if task.status.state in _settled():  # answered at once
            return wait, {"outcome": "answered", "task": MessageToDict(task)}
        return wait, await _follow(client, wait, min(at + _GRACE_S, wait["deadline"]), None)

    result: tuple[RemoteWait, Answer | None] = anyio.run(_with_client, persona.name, remote, send_and_listen)
    return result


def plan_of_answer(wait: RemoteWait, answer: Answer) -> Plan:
    """The plan in a remote agent's answer.

    Raises:
        RemoteError: a time-out, a failed or refused task, or an answer that is not a plan.
    """
    from a2a.types import Task
    from google.protobuf.json_format import ParseDict

    name, url = wait["persona"], wait["url"]
    if answer.get("outcome") == "timeout":
        note = f" (last error: {answer['note']})" if answer.get("note") else ""
        raise RemoteError(f"{name} ({url}) did not answer within {wait['timeout_s']:g} s{note}")
    if answer.get("outcome") != "answered":
        raise RemoteError(f"{name} ({url}): {answer.get('reason') or 'no answer'}")
    task = ParseDict(answer["task"], Task(), ignore_unknown_fields=True)
    return _plan_of(name, task)


def remote_plan(ctx: HealContext, run_id: str, persona: Persona, gap: Gap, diagnosis: Diagnosis) -> Plan:
    """Ask the persona's remote agent for a plan and wait for it here (what a heal does, less its
    interrupt: the bench's measure of the protocol's cost).

    Raises:
        RemoteError: as `plan_of_answer`, or the agent cannot be reached.
    """
    assert persona.remote is not None
    wait, answer = ask_remote(ctx, run_id, persona, gap, diagnosis, 0)
    while answer is None:
        answer = answer_of(persona.remote, wait, until=wait["deadline"])
    return plan_of_answer(wait, answer)


def _plan_of(name: str, task: Any) -> Plan:
    from a2a.helpers.proto_helpers import get_data_parts
    from a2a.types import TaskState
    from pydantic import ValidationError

    from agentheal.models import Plan, PlanReply

    state = TaskState.Name(task.status.state).removeprefix("TASK_STATE_").lower()
    said = " ".join(p.text for p in task.status.message.parts if p.HasField("text"))[:300]
    if task.status.state != TaskState.TASK_STATE_COMPLETED:
        raise RemoteError(f"{name} ended its task {state}" + (f": {said}" if said else ""))
    data = [d for a in task.artifacts for d in get_data_parts(a.parts) if isinstance(d, dict)]
    if not data:
        raise RemoteError(f"{name} answered malformed: no plan (a data part) in its artifacts")
    try:
        reply = PlanReply.model_validate(_ints(data[0]))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise RemoteError(f"{name} answered malformed: {problems}") from None
    return Plan(hypothesis=reply.hypothesis, steps=reply.steps, rollback=reply.rollback, checks=reply.checks,
                source="persona", playbook=f"remote:{name}")  # fmt: skip


def _ints(value: Any) -> Any:
    """JSON numbers through protobuf's Value come back as floats: whole ones are ints again."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value
