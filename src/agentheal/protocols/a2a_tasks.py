"""The A2A tasks agentheal gives its callers, kept across a restart of `agentheal serve`.

A task that heals a gap follows a run, and the run is what the event store keeps: when a task is
bound to its run, an event of the run says so (node `a2a`: the task id, its context and its owner,
the API token's name). Tasks live in memory while the server runs (a2a-sdk's `InMemoryTaskStore`,
which the executor keeps current as it follows the run); a task the memory does not hold (the server
restarted) is made again from its run: its state from the run's status (`working`, `input-required`
while it waits for approval, `completed`, `failed`) and, once the run ended, the run's result as
its artifact. So a caller can read it, and answer an approval on it, after a restart. Tasks that
answered at once (`explain`, `search`) follow no run and are not kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from a2a.helpers.proto_helpers import new_data_part, new_text_part
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import Artifact, Message, Role, Task, TaskState, TaskStatus

if TYPE_CHECKING:
    from a2a.server.context import ServerCallContext
    from a2a.types import ListTasksRequest, ListTasksResponse

    from agentheal.events import EventStore

__all__ = ["RunTaskStore", "bind", "bound_run", "result_parts", "task_state"]

_NODE = "a2a"
_DONE = {"healed": TaskState.TASK_STATE_COMPLETED, "dry_run": TaskState.TASK_STATE_COMPLETED}
_OPEN = {
    "running": TaskState.TASK_STATE_WORKING,
    "awaiting_remote": TaskState.TASK_STATE_WORKING,
    "awaiting_approval": TaskState.TASK_STATE_INPUT_REQUIRED,
}


def task_state(status: str | None) -> TaskState:
    """The A2A task state of a run in this status (an ended run that did not heal: failed)."""
    if status is None:
        return TaskState.TASK_STATE_WORKING  # queued, not recorded yet
    return _OPEN.get(status) or _DONE.get(status, TaskState.TASK_STATE_FAILED)


def _detail(task_id: str) -> str:
    return f"A2A task {task_id} follows this run"


def bind(events: EventStore, task_id: str, context_id: str, run_id: str, owner: str) -> None:
    """Record that the A2A task follows the run (an event of the run: what a restart finds)."""
    events.node(
        run_id, _NODE, _detail(task_id), {"a2a_task": task_id, "context_id": context_id, "owner": owner}
    )


def bound_run(events: EventStore, task_id: str) -> dict[str, Any] | None:
    """The run an A2A task follows: `{"run_id", "context_id", "owner"}`, or None."""
    import sqlalchemy as sa

    from agentheal.event_schema import NODE_EVENTS

    stmt = (
        sa.select(NODE_EVENTS.c.run_id, NODE_EVENTS.c.data)
        .where(NODE_EVENTS.c.node == _NODE, NODE_EVENTS.c.detail == _detail(task_id))
        .limit(1)
    )
    rows = events.query(stmt)
    if not rows:
        return None
    data = rows[0]["data"] or {}
    return {"run_id": rows[0]["run_id"], "context_id": str(data.get("context_id", "")),
            "owner": str(data.get("owner", ""))}  # fmt: skip


def result_parts(
    events: EventStore, checkpoints: Any, run_id: str, status: str | None
) -> tuple[dict[str, Any], str]:
    """The run's result as a task's artifact data (`run_summary`) and its one-line status text."""
    from agentheal.services.documents import run_summary
    from agentheal.services.runs import show_run

    shown = show_run(events, run_id, checkpoints)
    result = run_summary(shown or {"run_id": run_id, "status": status})
    line = f"run {run_id}: {status}" + (f" ({result['reason']})" if result.get("reason") else "")
    return result, line


class RunTaskStore(TaskStore):
    """Tasks in memory while the server runs; made again from their runs after a restart."""

    def __init__(self, events: EventStore, checkpoints: Any) -> None:
        self.events, self.checkpoints = events, checkpoints
        self._live = InMemoryTaskStore()

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await self._live.save(task, context)

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        task = await self._live.get(task_id, context)
        if task is not None:
            return task
        return await anyio.to_thread.run_sync(self._from_run, task_id, resolve_user_scope(context))

    async def list(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        return await self._live.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        await self._live.delete(task_id, context)

    def _from_run(self, task_id: str, owner: str) -> Task | None:
        from agentheal.services.runs import run_status

        bound = bound_run(self.events, task_id)
        if bound is None or bound["owner"] != owner:  # tasks are kept per token, as in memory
            return None
        run_id = bound["run_id"]
        status = run_status(self.events, run_id)
        state = task_state(status)
        result, line = result_parts(self.events, self.checkpoints, run_id, status)
        said = Message(role=Role.ROLE_AGENT, message_id=f"{task_id}-{status}", parts=[new_text_part(line)],
                       task_id=task_id, context_id=bound["context_id"])  # fmt: skip
        task = Task(id=task_id, context_id=bound["context_id"], status=TaskStatus(state=state, message=said),
                    metadata={"run_id": run_id})  # fmt: skip
        if state in (TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED):
            parts = [new_data_part(result, "application/json"), new_text_part(line)]
            task.artifacts.append(Artifact(artifact_id=f"{task_id}-result", name="heal result", parts=parts))
        return task
