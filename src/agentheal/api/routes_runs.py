"""Gaps and runs over HTTP: submit a gap, list runs, show one, follow its steps live, answer an approval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import Future
from datetime import datetime
from typing import Annotated, Any, NoReturn

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from agentheal.api.auth import Caller, Role, require
from agentheal.api.state import ServerState, get_state
from agentheal.events import AmbiguousRun, RunLookupError
from agentheal.graphs.runner import HealError, RunNotFound, UnknownComponent
from agentheal.models import GapKind, RunStatus, Severity
from agentheal.services.heal import GapProblem, parse_gap
from agentheal.services.runs import (
    FINAL_STATUSES,
    MAX_PAGE,
    RunPage,
    RunQueryError,
    node_events_after,
    run_status,
    show_run,
)

router = APIRouter(tags=["gaps and runs"])

State = Annotated[ServerState, Depends(get_state)]
Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Operator = Annotated[Caller, Depends(require(Role.operator))]
WaitS = Annotated[float, Query(gt=0, le=3600, description="How long to wait for the end, in seconds.")]


class Problem(BaseModel):
    """What is wrong, in words."""

    detail: str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


NOT_FOUND = _problem("No such run.")
NOT_WAITING = _problem("The run is not waiting for approval, or a prefix names several runs.")
STOPPING = _problem("The server is stopping.")


def _invalid(where: tuple[str | int, ...], message: str, value: Any = None) -> NoReturn:
    """A 422 shaped like FastAPI's own (`detail`: [{"loc", "msg", "type"}]), naming the field."""
    raise RequestValidationError([{"type": "value_error", "loc": where, "msg": message, "input": value}])


# How often a live stream looks for a run's new steps in the event store (any process may write them).
_POLL_S = 0.1


class GapIn(BaseModel):
    """A gap, as `agentheal heal --gap-file` takes it."""

    model_config = ConfigDict(extra="forbid")

    # the pattern: not blank (JSON Schema patterns search, as pydantic's do)
    text: str = Field(min_length=1, max_length=4000, pattern=r"\S", description="What is wrong, in words.")
    component: str | None = Field(default=None, max_length=200, description="The component it is about.")
    kind: GapKind = GapKind.incident
    severity: Severity = Severity.medium
    evidence: list[str] = Field(default_factory=list, max_length=200)


class AnswerIn(BaseModel):
    """An answer to a run waiting for approval."""

    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(default=None, max_length=200, description="Who decides (default: the caller).")
    note: str = Field(default="", max_length=4000, description="Why.")


class HealAnswer(BaseModel):
    """A run as `agentheal heal --json` prints it (its status as it is now)."""

    model_config = ConfigDict(extra="allow")

    run_id: str | None = None
    status: str
    persona: str | None = None
    source: str = "none"
    actions: list[dict[str, Any]] = Field(default_factory=list)
    validation: dict[str, Any] = Field(default_factory=dict)
    llm: dict[str, int] = Field(default_factory=dict)
    reason: str | None = None
    fingerprint: str | None = None
    component: str | None = None
    diagnosis: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    factory: Any = None


class RunView(HealAnswer):
    """A run's heal JSON with its whole story (`story`, as `agentheal runs show --json`)."""

    story: dict[str, Any] | None = Field(default=None, description="None while the run is still queued.")


class Submitted(BaseModel):
    """A gap accepted: the run that heals it (a new one, or the open run it joined)."""

    run_id: str
    status: str
    joined: bool
    run: str = Field(description="Where the run is shown.")
    events: str = Field(description="Where its steps stream as server-sent events.")


def _submitted(run_id: str, status: str, joined: bool) -> Submitted:
    return Submitted(
        run_id=run_id, status=status, joined=joined, run=f"/runs/{run_id}", events=f"/runs/{run_id}/events"
    )


async def _wait(future: Future[dict[str, Any]], timeout_s: float) -> dict[str, Any] | None:
    """The job's answer, or None when it did not end in time (the job carries on either way)."""
    wrapped = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(asyncio.shield(wrapped), timeout_s)
    except TimeoutError:
        return None
    except HealError as exc:
        raise HTTPException(409, str(exc)) from None
    except RuntimeError as exc:  # the pool is stopping
        raise HTTPException(503, str(exc)) from None


@router.post(
    "/gaps",
    status_code=202,
    response_model=Submitted,
    responses={
        200: {"model": HealAnswer, "description": "`?wait=true`: the heal's end."},
        409: NOT_WAITING,
        503: STOPPING,
    },
)
async def submit_gap(
    gap_in: GapIn,
    caller: Operator,
    state: State,
    wait: Annotated[
        bool, Query(description="Answer at the heal's end (200) instead of at once (202).")
    ] = False,
    timeout: WaitS = 120.0,
    dry_run: Annotated[bool, Query(description="Plan and check policy; change nothing.")] = False,
) -> Any:
    """Heal a gap: answers 202 with its run id at once, or with `?wait=true` 200 and the heal's end."""
    try:
        gap = parse_gap(gap_in.model_dump())
    except GapProblem as exc:
        raise RequestValidationError(
            [
                {"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}
                for loc, msg in exc.problems
            ]
        ) from None

    def submit() -> tuple[str, Future[dict[str, Any]], bool]:
        return state.pool.submit(gap, actor=caller.name, door="api", role=caller.role.value, dry_run=dry_run)

    try:
        run_id, future, joined = await anyio.to_thread.run_sync(submit)
    except UnknownComponent as exc:
        _invalid(("body", "component"), str(exc), gap.component)
    except RuntimeError as exc:
        raise HTTPException(503, str(exc)) from None
    if wait:
        result = await _wait(future, timeout)
        if result is not None:
            return JSONResponse(HealAnswer.model_validate(result).model_dump(mode="json"), status_code=200)
    return _submitted(run_id, RunStatus.running.value, joined)


@router.get("/runs", response_model=RunPage)
def list_runs(
    _caller: Viewer,
    state: State,
    status: RunStatus | None = None,
    component: Annotated[str | None, Query(max_length=200)] = None,
    persona: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[datetime | None, Query(description="Runs started at or after this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=400, description="`next_cursor` of the last page.")
    ] = None,
) -> RunPage:
    """Runs, newest first, filtered; pages continue with the `next_cursor` of the previous one."""
    from agentheal.services.runs import list_runs as page

    try:
        return page(
            state.events,
            limit=limit,
            status=status.value if status else None,
            component=component,
            persona=persona,
            since=since,
            cursor=cursor,
        )
    except RunQueryError as exc:
        _invalid(("query", "cursor"), str(exc), cursor)


def _show(state: ServerState, run_id: str) -> dict[str, Any]:
    try:
        shown = show_run(state.events, run_id, state.settings)
    except AmbiguousRun as exc:
        raise HTTPException(409, str(exc)) from None
    except RunLookupError as exc:
        raise HTTPException(404, str(exc)) from None
    if shown is None:
        shown = state.pool.queued(run_id)
    if shown is None:
        raise HTTPException(404, f"no run {run_id!r}; GET /runs lists them")
    return shown


@router.get("/runs/{run_id}", response_model=RunView, responses={404: NOT_FOUND, 409: NOT_WAITING})
def get_run(run_id: str, _caller: Viewer, state: State) -> dict[str, Any]:
    """A run as `heal --json` answers it (status current), with its whole story beside it."""
    return _show(state, run_id)


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`node`, `status` and `end` events."},
        404: NOT_FOUND,
        409: NOT_WAITING,
    },
)
async def run_events(
    run_id: str,
    request: Request,
    _caller: Viewer,
    state: State,
    last_event_id: Annotated[
        str,
        Header(
            pattern=r"^\s*[0-9]{0,18}\s*$",
            description="Resume after this event id (EventSource clients send it back by themselves).",
        ),
    ] = "",
) -> EventSourceResponse:
    """The run's steps as server-sent events, as they happen: `node` events (id: the event's row id,
    so `Last-Event-ID` resumes after it), a `status` event when its status changes, and `end` once
    it is finished. A run waiting for approval keeps the stream open."""
    after = int(last_event_id) if last_event_id.strip() else 0
    full_id = str((await anyio.to_thread.run_sync(_show, state, run_id))["run_id"])
    return EventSourceResponse(_follow(state, request, full_id, after), ping=15)


async def _follow(
    state: ServerState, request: Request, run_id: str, after: int
) -> AsyncIterator[ServerSentEvent]:
    events, seen_status = state.events, None
    while True:
        # the status first: every step recorded before a run finished is read after it
        status = await anyio.to_thread.run_sync(run_status, events, run_id)
        rows = await anyio.to_thread.run_sync(node_events_after, events, run_id, after)
        for row in rows:
            after = row["id"]
            yield ServerSentEvent(json.dumps(row, default=str), event="node", id=str(row["id"]))
        if status is not None and status != seen_status:
            seen_status = status
            yield ServerSentEvent(json.dumps({"run_id": run_id, "status": status}), event="status")
        if status in FINAL_STATUSES and len(rows) < 200:
            yield ServerSentEvent(json.dumps({"run_id": run_id, "status": status}), event="end")
            return
        if status is None and state.pool.queued(run_id) is None:
            # The pool may have run it since the reads above (a busy host can hold this coroutine
            # for the whole heal): only a run still unrecorded a while later was dropped before it
            # started (a stream that ended 'unknown' on a heal that went on was seen under load).
            if await _dropped(state, run_id):
                yield ServerSentEvent(json.dumps({"run_id": run_id, "status": "unknown"}), event="end")
                return
            continue
        if await request.is_disconnected():
            return
        if not rows:
            await anyio.sleep(_POLL_S)


async def _dropped(state: ServerState, run_id: str, looks: int = 5) -> bool:
    """Whether a run neither recorded nor held by the pool stays so over a few polls."""
    for _ in range(looks):
        if await anyio.to_thread.run_sync(run_status, state.events, run_id) is not None:
            return False
        if state.pool.queued(run_id) is not None:
            return False
        await anyio.sleep(_POLL_S)
    return True


async def _answer(
    state: ServerState, run_id: str, approved: bool, answer: AnswerIn | None, caller: Caller, wait_s: float
) -> Any:
    answer = answer or AnswerIn()
    by = answer.by or caller.name

    def queue() -> Future[dict[str, Any]]:
        return state.pool.answer(
            run_id, approved, by=by, note=answer.note, actor=caller.name, door="api", role=caller.role.value
        )

    try:
        future = await anyio.to_thread.run_sync(queue)
    except RunNotFound:
        raise HTTPException(404, f"no run {run_id!r}; GET /runs lists them") from None
    except AmbiguousRun as exc:
        raise HTTPException(409, str(exc)) from None
    except RunLookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except HealError as exc:
        raise HTTPException(409, str(exc)) from None
    except RuntimeError as exc:
        raise HTTPException(503, str(exc)) from None
    result = await _wait(future, wait_s)
    if result is None:
        return JSONResponse(_submitted(run_id, RunStatus.running.value, False).model_dump(), status_code=202)
    return HealAnswer.model_validate(result)


_ANSWER_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": Submitted, "description": "Not finished within the time-out; it carries on."},
    404: NOT_FOUND,
    409: NOT_WAITING,
    503: STOPPING,
}


@router.post("/runs/{run_id}/approve", response_model=HealAnswer, responses=_ANSWER_RESPONSES)
async def approve_run(
    run_id: str, caller: Operator, state: State, answer: AnswerIn | None = None, timeout: WaitS = 120.0
) -> Any:
    """Approve a run waiting for approval: it carries on from its checkpoint; answers its end."""
    return await _answer(state, run_id, True, answer, caller, timeout)


@router.post("/runs/{run_id}/reject", response_model=HealAnswer, responses=_ANSWER_RESPONSES)
async def reject_run(
    run_id: str, caller: Operator, state: State, answer: AnswerIn | None = None, timeout: WaitS = 120.0
) -> Any:
    """Reject a run waiting for approval: nothing of its plan runs; answers its end (rejected)."""
    return await _answer(state, run_id, False, answer, caller, timeout)
