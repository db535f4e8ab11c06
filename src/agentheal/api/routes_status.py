"""`GET /status` (the figures and the engines, as `agentheal status --json` prints them) and
`GET /report` (the HTML report, as `agentheal report` writes it): a viewer's token each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse

from agentheal.api.auth import Caller, Role, require
from agentheal.api.state import ServerState, get_state
from agentheal.services.status import MAX_DAYS, StatusView, status

router = APIRouter()

State = Annotated[ServerState, Depends(get_state)]
Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Days = Annotated[
    float | None, Query(gt=0, le=MAX_DAYS, description="The window: the last DAYS days (default 30).")
]

__all__ = ["router"]


@router.get("/status", tags=["operations"], response_model=StatusView)
def get_status(state: State, _caller: Viewer, days: Days = None) -> StatusView:
    """The effectiveness figures from recorded events, and what each engine last did and when."""
    try:
        return status(state.events, days)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


@router.get(
    "/report",
    tags=["operations"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "One self-contained HTML page."}},
)
def get_report(state: State, _caller: Viewer, days: Days = None) -> HTMLResponse:
    """The report: figures, engines and plots as inline SVG; it loads nothing from the network."""
    from agentheal.report import build_report

    try:
        page = build_report(state.events, days)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return HTMLResponse(page)
