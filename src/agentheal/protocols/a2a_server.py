"""agentheal as an A2A agent on `agentheal serve` (`a2a-sdk`): a message with a gap starts a heal run
and the task follows it; `explain RUN` and `search: TEXT` answer at once.

The task's state follows the run as the event store records it, so an approval given through any
door (CLI, API, MCP, this task) moves it on: `working` while the run acts (each step a status
message), `input-required` while it waits for approval, then `completed` (healed, dry run) or
`failed` (escalated, failed, rejected), with the run's result as the task's artifact. A caller
answers an approval by sending `approve` or `reject` (and a note) on the same task: operator role.
A task that follows a run survives a restart of the server (`a2a_tasks`: made again from its run).
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import anyio
from a2a.auth.user import User
from a2a.helpers.proto_helpers import get_data_parts, new_data_part, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.tasks import TaskUpdater
from a2a.types import Task, TaskState, TaskStatus
from a2a.utils.errors import TaskNotCancelableError

from agentheal.api.tokens import Caller, Role
from agentheal.protocols.a2a_tasks import RunTaskStore, bind, bound_run, result_parts, task_state
from agentheal.services import audit

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request

    from agentheal.api.state import ServerState

__all__ = ["HealExecutor", "install"]

_POLL_S = 0.2
_EXPLAIN = re.compile(r"^\s*explain\s+(?:run\s+)?([0-9a-f]{4,64})\s*$", re.I)
_SEARCH = re.compile(r"^\s*search\s*:\s*(.+)$", re.I | re.S)
_ANSWER = re.compile(r"^\s*(approve|reject)\b[\s:,-]*(.*)$", re.I | re.S)


class _TokenUser(User):
    """The API token's caller as a2a-sdk's user: tasks are kept per token name."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self.caller.name


class _CallerContext(DefaultServerCallContextBuilder):
    """The SDK's context (it reads the protocol version from the headers) with the token's caller."""

    def build(self, request: Request) -> ServerCallContext:
        caller = getattr(request.state, "caller", None)
        if caller is None:  # the API's authentication is missing: never act for nobody
            raise PermissionError("no caller: the server's authentication is not installed")
        context = super().build(request)
        context.user = _TokenUser(caller)
        context.state["caller"] = caller
        return context


class HealExecutor(AgentExecutor):
    """Runs each A2A task through the application services of one server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._runs: dict[str, str] = {}  # task id -> run id
        self._sent: dict[str, int] = {}  # run id -> the last node event sent as a status message
        self._unbound: dict[str, str] = {}  # task id -> its owner, until its run is recorded and bound

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id or "", context.context_id or ""
        updater = TaskUpdater(event_queue, task_id, context_id)
        caller: Caller = context.call_context.state["caller"]
        if context.current_task is None and context.message is not None:
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    history=[context.message],
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                )
            )
        text = context.get_user_input().strip()
        run_id = self._runs.get(task_id)
        if run_id is None and context.current_task is not None:  # a task of the server before a restart
            bound = await anyio.to_thread.run_sync(bound_run, self.state.events, task_id)
            run_id = bound["run_id"] if bound is not None else None
        if run_id is not None:
            await self._follow_up(updater, caller, run_id, text)
            return
        explain, search = _EXPLAIN.match(text), _SEARCH.match(text)
        if explain:
            await self._explain(updater, explain.group(1))
        elif search:
            await self._search(updater, search.group(1).strip())
        else:
            data = get_data_parts(context.message.parts) if context.message is not None else []
            await self._heal(updater, caller, data[0] if data else {"text": text})

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise TaskNotCancelableError(
            "a heal cannot be stopped halfway (its actions are not undone by stopping); reject it while it "
            "waits for approval instead"
        )

    # -- the skills --

    async def _say(self, updater: TaskUpdater, state: TaskState, text: str) -> None:
        await updater.update_status(state, message=updater.new_agent_message([new_text_part(text)]))

    async def _explain(self, updater: TaskUpdater, run: str) -> None:
        from agentheal.events import RunLookupError
        from agentheal.services.documents import DocumentNotFound, story_text

        try:
            story = await anyio.to_thread.run_sync(story_text, self.state.events, run)
        except (DocumentNotFound, RunLookupError) as exc:
            await self._say(updater, TaskState.TASK_STATE_FAILED, str(exc))
            return
        await updater.add_artifact([new_text_part(story, "text/plain")], name="story", last_chunk=True)
        await updater.complete()

    async def _search(self, updater: TaskUpdater, text: str) -> None:
        from agentheal.services.memory import MemoryQueryError, search

        try:
            hits = await anyio.to_thread.run_sync(search, self.state.ctx.memory, text, 5)
        except MemoryQueryError as exc:
            await self._say(updater, TaskState.TASK_STATE_FAILED, str(exc))
            return
        matches = [h.model_dump() for h in hits]
        lines = [f"{h.similarity:.2f} {h.outcome}: {h.gap} -> {h.resolution}" for h in hits] or ["no match"]
        parts = [new_data_part({"matches": matches}, "application/json"), new_text_part("\n".join(lines))]
        await updater.add_artifact(parts, name="matches", last_chunk=True)
        await updater.complete()

    def _allowed(self, caller: Caller, what: str) -> str | None:
        """Why `caller` may not `what` (None: allowed), audited when refused."""
        if caller.role.allows(Role.operator):
            return None
        reason = f"{caller.name} has role {caller.role.value}; {what} needs operator or above"
        audit.record(self.state.events, caller.name, "forbidden", door="a2a", role=caller.role.value,
                     target=what, outcome="refused", detail=reason)  # fmt: skip
        return reason

    async def _heal(self, updater: TaskUpdater, caller: Caller, data: Any) -> None:
        from agentheal.graphs.runner import UnknownComponent
        from agentheal.services.heal import GapProblem, parse_gap

        refused = self._allowed(caller, "a heal")
        if refused is not None:
            await self._say(updater, TaskState.TASK_STATE_REJECTED, f"refused: {refused}")
            return
        try:
            gap = parse_gap(data)
        except GapProblem as exc:
            await self._say(updater, TaskState.TASK_STATE_REJECTED, str(exc))
            return

        def submit() -> tuple[str, Any, bool]:
            return self.state.pool.submit(gap, actor=caller.name, door="a2a", role=caller.role.value)

        try:
            run_id, _future, joined = await anyio.to_thread.run_sync(submit)
        except (UnknownComponent, RuntimeError) as exc:
            await self._say(updater, TaskState.TASK_STATE_REJECTED, str(exc))
            return
        self._runs[updater.task_id] = run_id
        self._unbound[updater.task_id] = caller.name
        how = "joined the open run" if joined else "started run"
        await updater.update_status(
            TaskState.TASK_STATE_WORKING,
            message=updater.new_agent_message([new_text_part(f"{how} {run_id}")]),
            metadata={"run_id": run_id},
        )
        await self._follow(updater, run_id)

    async def _follow_up(self, updater: TaskUpdater, caller: Caller, run_id: str, text: str) -> None:
        """A message on a task whose run waits for approval: `approve` or `reject`, with a note."""
        from agentheal.graphs.runner import HealError

        answer = _ANSWER.match(text)
        status = await anyio.to_thread.run_sync(self._status, run_id)
        if status == "awaiting_approval":
            refused = self._allowed(caller, "an approval") if answer else None
            if answer is None or refused is not None:
                why = (
                    f"refused: {refused}"
                    if refused
                    else "this run waits for approval: answer `approve` or `reject`"
                )
                await self._say(updater, TaskState.TASK_STATE_INPUT_REQUIRED, why)
                return
            approved = answer.group(1).lower() == "approve"

            def queue() -> Any:
                note = answer.group(2).strip()
                return self.state.pool.answer(
                    run_id,
                    approved,
                    by=caller.name,
                    note=note,
                    actor=caller.name,
                    door="a2a",
                    role=caller.role.value,
                )

            try:
                answering = await anyio.to_thread.run_sync(queue)
            except (HealError, RuntimeError) as exc:  # answered meanwhile through another door
                await self._say(updater, TaskState.TASK_STATE_WORKING, str(exc))
            else:
                await self._follow(updater, run_id, answering)
                return
        await self._follow(updater, run_id)

    def _status(self, run_id: str) -> str | None:
        from agentheal.services.runs import run_status

        return run_status(self.state.events, run_id)

    async def _follow(self, updater: TaskUpdater, run_id: str, answering: Future[Any] | None = None) -> None:
        """Status messages for the run's steps, until it ends or waits for approval (again: while an
        answer is still `answering`, the run's old status is not its next one)."""
        from agentheal.services.runs import FINAL_STATUSES, node_events_after

        events = self.state.events
        while True:
            status = await anyio.to_thread.run_sync(self._status, run_id)
            owner = self._unbound.get(updater.task_id)
            if status is not None and owner is not None:  # recorded: the task can be bound to it
                await anyio.to_thread.run_sync(
                    bind, events, updater.task_id, updater.context_id, run_id, owner
                )
                del self._unbound[updater.task_id]
            rows = await anyio.to_thread.run_sync(
                node_events_after, events, run_id, self._sent.get(run_id, 0)
            )
            for row in rows:
                self._sent[run_id] = row["id"]
                await self._say(updater, TaskState.TASK_STATE_WORKING, f"{row['node']}: {row['detail']}")
            waiting = status == "awaiting_approval" and (answering is None or answering.done())
            if waiting or status in FINAL_STATUSES:
                break
            if status is None and self.state.pool.queued(run_id) is None:
                await self._say(
                    updater, TaskState.TASK_STATE_FAILED, f"run {run_id} was dropped before it started"
                )
                return
            if not rows:
                await anyio.sleep(_POLL_S)
        result, line = await anyio.to_thread.run_sync(
            result_parts, events, self.state.settings.checkpoints_path, run_id, status
        )
        if status == "awaiting_approval":
            await self._say(updater, TaskState.TASK_STATE_INPUT_REQUIRED,
                            f"{line}. Plan: {'; '.join(result['plan']) or '-'}. Send `approve` or `reject` "
                            "(operator role), or answer with `agentheal approve`.")  # fmt: skip
            return
        parts = [new_data_part(result, "application/json"), new_text_part(line)]
        await updater.add_artifact(parts, name="heal result", last_chunk=True)
        state = task_state(status)
        await updater.update_status(state, message=updater.new_agent_message([new_text_part(line)]))


def install(app: FastAPI, state: ServerState) -> None:
    """The A2A JSON-RPC route (behind the API's tokens) and the public Agent Card."""
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_jsonrpc_routes

    from agentheal.protocols.a2a_card import PublicCard, agent_card
    from agentheal.protocols.serve import A2A_PATH

    handler = DefaultRequestHandler(
        agent_executor=HealExecutor(state),
        task_store=RunTaskStore(state.events, state.settings.checkpoints_path),
        agent_card=agent_card("http://127.0.0.1", A2A_PATH),
    )
    for route in create_jsonrpc_routes(handler, A2A_PATH, context_builder=_CallerContext(),
                                       enable_v0_3_compat=True):  # fmt: skip
        app.router.routes.append(route)
    app.add_middleware(PublicCard, rpc_path=A2A_PATH, tokens=not state.insecure_local)
