"""Memory, agents, estate, alerts and operations over HTTP.

`GET /memory/search`, `GET /agents`, `GET /agents/{name}`, `GET /estate`, `GET /readyz` and
`GET /metrics` need a viewer token; `POST /alerts/alertmanager` and `POST /feedback` an operator's;
`POST /memory` and `POST /faults` an admin's (and faults a server started with `--allow-faults`).
`GET /healthz`, which needs none, is the app's own (`agentheal.api.app`). Every route calls the
application services (`agentheal.services`), as the CLI does; each change is recorded in the audit
trail with who made it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agentheal.api.auth import Caller, Role, require
from agentheal.api.state import ServerState, get_state
from agentheal.detect.alerts import Alert, AlertError, WebhookMessage
from agentheal.eval.fault_model import FaultRecord
from agentheal.memory import ImportLine
from agentheal.models import Gap
from agentheal.services import audit
from agentheal.services.agents import AgentDetail, AgentList, UnknownAgent, list_agents, show_agent
from agentheal.services.estate import EstateView, FaultRequestError, estate_view, inject_fault
from agentheal.services.memory import (
    MAX_IMPORT,
    MAX_K,
    MemoryImportResult,
    MemoryMatch,
    MemoryQueryError,
    import_records,
    search,
)
from agentheal.services.signals import IntakeResult, SignalIntake, SignalRequestError, SubmitFn

router = APIRouter()

State = Annotated[ServerState, Depends(get_state)]
Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Operator = Annotated[Caller, Depends(require(Role.operator))]
Admin = Annotated[Caller, Depends(require(Role.admin))]

__all__ = ["router"]


class Problem(BaseModel):
    """An error: what is wrong, in words."""

    detail: str


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {400: "The request is malformed; the detail names the problem.", 404: "Not found.",
             409: "The estate is not in a state this can be done in.", 503: "Not ready."}  # fmt: skip
    return {code: {"model": Problem, "description": words.get(code, "An error.")} for code in codes}


def _fail(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


# ---------------------------------------------------------------- memory


def _iso_datetime(value: Any) -> Any:
    """A date-time given as ISO 8601 text (or None). Pydantic alone would also take a number as
    epoch seconds, which no caller of these routes means and the schema does not say."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    raise ValueError("expected an ISO 8601 date-time such as 2026-03-01T10:00:00Z")


IsoDatetime = Annotated[datetime | None, BeforeValidator(_iso_datetime)]


class MemoryRecordIn(ImportLine):
    """One past resolution, as a line of `agentheal memory import` takes it."""

    occurred_at: IsoDatetime = None


class MemoryImportIn(BaseModel):
    """Past resolutions to import."""

    model_config = ConfigDict(extra="forbid")

    records: list[MemoryRecordIn] = Field(min_length=1, max_length=MAX_IMPORT)


@router.get("/memory/search", tags=["memory"], response_model=list[MemoryMatch], responses=_problems(400))
def memory_search(
    state: State,
    _caller: Viewer,
    q: Annotated[str, Query(min_length=1, max_length=4000, description="What to look for, in words.")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many matches.")] = 5,
    mode: Annotated[
        str | None,
        Query(
            pattern="^(hybrid|dense|lexical)$",
            description="hybrid: meaning and words (the default); dense: meaning; lexical: words, "
            "identifiers such as error codes and paths kept whole (BM25).",
        ),
    ] = None,
) -> list[MemoryMatch]:
    """Past resolutions that best match `q`, best first (as `agentheal memory search`)."""
    try:
        return search(state.ctx.memory, q, k, mode)
    except MemoryQueryError as exc:
        raise _fail(400, str(exc)) from None


@router.post("/memory", tags=["memory"], response_model=MemoryImportResult, responses=_problems(400))
def memory_import(body: MemoryImportIn, state: State, caller: Admin) -> MemoryImportResult:
    """Import past resolutions (as `agentheal memory import`); records already in memory are skipped."""
    from agentheal.memory import MemoryImportError

    try:
        result = import_records(state.ctx.memory, body.records)
    except MemoryImportError as exc:
        raise _fail(400, str(exc)) from None
    audit.record(
        state.events, caller.name, "memory_import", door="api", role=caller.role.value,
        target=f"{len(body.records)} record(s)",
        detail=f"imported {result.imported}, skipped {result.skipped}",
        data={"imported": result.imported, "skipped": result.skipped},
    )  # fmt: skip
    return result


# ---------------------------------------------------------------- agents


@router.get("/agents", tags=["agents"], response_model=AgentList)
def agents(state: State, _caller: Viewer) -> AgentList:
    """Every persona with its record from the event store, and the persona files that do not load."""
    return list_agents(state.ctx.registry, state.events, state.settings)


@router.get("/agents/{name}", tags=["agents"], response_model=AgentDetail, responses=_problems(404))
def agent(name: str, state: State, _caller: Viewer) -> AgentDetail:
    """One persona: its record, what it may do, its stored versions."""
    try:
        return show_agent(name, state.ctx.registry, state.events, state.settings)
    except UnknownAgent as exc:
        raise _fail(404, str(exc)) from None


# ---------------------------------------------------------------- estate and faults


class FaultIn(BaseModel):
    """A fault to inject (see `agentheal fault list`)."""

    model_config = ConfigDict(extra="forbid")

    fault: str = Field(min_length=1, max_length=100, description="The fault's name, e.g. process_killed.")
    component: str = Field(min_length=1, max_length=200, description="The component to break.")


def _backend(state: ServerState) -> Any:
    backend = state.ctx.backend
    if backend is None:
        raise _fail(404, "this server has no estate: start it with `agentheal serve --estate FILE`")
    return backend


@router.get("/estate", tags=["estate"], response_model=EstateView, responses=_problems(404))
def estate(state: State, _caller: Viewer) -> EstateView:
    """Every component of the estate, probed now: running, probes, health."""
    return estate_view(_backend(state))


@router.post(
    "/faults",
    tags=["estate"],
    status_code=201,
    response_model=FaultRecord,
    responses=_problems(400, 404, 409),
)
def faults(body: FaultIn, state: State, caller: Admin) -> FaultRecord:
    """Break a component of the running estate for real (drills); only when the server allows faults."""
    from agentheal.eval.fault_model import FaultError

    if not state.allow_faults:
        raise _fail(403, "faults are off on this server: start it with `agentheal serve --allow-faults` "
                         "to inject them (for drills, never in production)")  # fmt: skip
    backend = _backend(state)
    try:
        record = inject_fault(backend, body.fault, body.component)
    except FaultRequestError as exc:
        raise _fail(400, str(exc)) from None
    except FaultError as exc:
        raise _fail(409, str(exc)) from None
    audit.record(
        state.events, caller.name, "fault", door="api", role=caller.role.value, target=body.component,
        detail=f"{body.fault} injected into {body.component}", data={"fault": body.fault},
    )  # fmt: skip
    return record


# ---------------------------------------------------------------- alerts and feedback


class FeedbackIn(BaseModel):
    """A person's report, in words."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000, description="What the person sees.")
    component: str | None = Field(default=None, max_length=200, description="The component, if known.")


_intake_lock = threading.Lock()


def _intake(state: ServerState) -> SignalIntake:
    """The server's one intake (its gap book lives as long as the server), on the watch loop's detector
    when `serve --watch` runs one."""
    with _intake_lock:
        intake: SignalIntake | None = state.extras.get("signal_intake")
        if intake is None:
            watch = state.extras.get("watch")
            detector = getattr(watch, "detector", None)
            from agentheal.detect.mutes import MuteBook

            intake = SignalIntake(
                state.ctx.estate,
                state.events,
                detector=detector,
                detector_lock=getattr(watch, "lock", None),
                mutes=MuteBook(state.settings.home_dir),
            )
            state.extras["signal_intake"] = intake
        return intake


def _submitter(state: ServerState, caller: Caller) -> SubmitFn:
    def submit(gap: Gap) -> str | None:
        run_id, _future, _joined = state.pool.submit(
            gap, actor=caller.name, door="api", role=caller.role.value
        )
        return run_id

    return submit


def _audit_intake(state: ServerState, caller: Caller, action: str, result: IntakeResult) -> None:
    gaps = ", ".join(f"{g.status} {g.fingerprint[:12]}" for g in result.gaps)
    audit.record(
        state.events, caller.name, action, door="api", role=caller.role.value,
        target=", ".join(sorted({g.component or "-" for g in result.gaps}))[:200] or None,
        detail=f"{result.signals} signal(s): {gaps}", data={"gaps": [g.model_dump() for g in result.gaps]},
    )  # fmt: skip


class AlertmanagerAlert(Alert):
    """One alert of Alertmanager's webhook."""

    startsAt: IsoDatetime = None
    endsAt: IsoDatetime = None


class AlertmanagerWebhook(WebhookMessage):
    """Alertmanager's webhook body (version 4), as detection parses it."""

    alerts: list[AlertmanagerAlert]  # type: ignore[assignment]  # narrower items, same wire format


@router.post("/alerts/alertmanager", tags=["alerts"], response_model=IntakeResult, responses=_problems(400))
def alertmanager(body: AlertmanagerWebhook, state: State, caller: Operator) -> IntakeResult:
    """Take Alertmanager's webhook (version 4): firing alerts open gaps, healed as `watch` heals them."""
    try:
        result = _intake(state).alertmanager(body, _submitter(state, caller))
    except AlertError as exc:
        raise _fail(400, f"alertmanager payload: {exc}") from None
    _audit_intake(state, caller, "alert", result)
    return result


@router.post("/feedback", tags=["alerts"], response_model=IntakeResult, responses=_problems(400))
def feedback(body: FeedbackIn, state: State, caller: Operator) -> IntakeResult:
    """Take a person's report: linked to a component, joining a known gap when its words match one."""
    try:
        result = _intake(state).feedback(body.text, body.component, _submitter(state, caller))
    except (AlertError, SignalRequestError) as exc:
        raise _fail(400, f"feedback: {exc}") from None
    _audit_intake(state, caller, "feedback", result)
    return result


# ---------------------------------------------------------------- operations


class Readiness(BaseModel):
    ready: bool
    worker: str = Field(description="The worker answering (`AGENTHEAL_WORKER_NAME`, default HOST-PID).")
    checks: dict[str, str] = Field(description="Each part: `ok`, or what is wrong with it.")
    detail: str = Field(description="What is not ready, in words (`ready` when all is).")


def _check(name: str, fn: Any, checks: dict[str, str]) -> None:
    try:
        checks[name] = fn() or "ok"
    except Exception as exc:  # readiness reports every failure, whatever it is
        checks[name] = f"not reachable: {type(exc).__name__}: {exc}"[:500]


def _checkpointer(state: ServerState) -> str:
    from agentheal.storage.checkpoints import ping

    return ping(state.settings)  # the SQLite file, or PostgreSQL's checkpoint tables


def _estate(state: ServerState) -> str:
    if state.estate_path is None:
        return "ok (no estate)"
    backend = _backend(state)
    backend.state_dir.mkdir(parents=True, exist_ok=True)
    return "ok"


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A part is not reachable; its check says why."}},
)
def readyz(state: State, _caller: Viewer) -> Any:
    """Ready when the event store, the checkpointer, memory and the estate file are reachable."""
    import sqlalchemy as sa

    checks: dict[str, str] = {}
    _check("events", lambda: state.events.query(sa.select(sa.literal(1))) and None, checks)
    _check("checkpointer", lambda: _checkpointer(state), checks)
    _check("memory", lambda: state.ctx.memory.count() >= 0 and None, checks)
    _check("estate", lambda: _estate(state), checks)
    failing = [f"{name}: {why}" for name, why in checks.items() if not why.startswith("ok")]
    ready = not failing
    answer = Readiness(
        ready=ready,
        worker=state.worker_name,
        checks=checks,
        detail="not ready: " + "; ".join(failing) if failing else "ready",
    )
    return answer if ready else JSONResponse(answer.model_dump(), status_code=503)


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition."}},
)
def metrics(state: State, _caller: Viewer) -> Response:
    """Prometheus series computed from the event store (`agentheal_…`)."""
    from agentheal.api.metrics import exposition, registry_for

    registry = state.extras.get("metrics_registry")
    if registry is None:
        registry = state.extras["metrics_registry"] = registry_for(state.events, state.pool.busy)
        from agentheal.work.metrics import WorkerCollector  # agentheal_worker_info{worker}, the shared queue

        registry.register(WorkerCollector(state.worker_name, state.pool.shared))
    body, content_type = exposition(registry)
    return Response(content=body, media_type=content_type)
