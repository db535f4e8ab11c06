"""The HTTP API's app: `create_app(...)` wires the shared state, authentication, the routers and the
operations' middlewares; `agentheal serve` runs it under uvicorn.

`/openapi.json` and `/docs` need a viewer token like every route but `/healthz`; the schema is the
API's documentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from agentheal import __version__
from agentheal.api.auth import AuthMiddleware, Caller, Role, require
from agentheal.api.state import ServerState
from agentheal.api.tokens import TokenStore
from agentheal.services import audit
from agentheal.services.heal import DEFAULT_MAX_HEALS, HealPool

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.detect.config import DetectConfig
    from agentheal.models import Gap

__all__ = ["create_app"]

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own start-up lines

_DESCRIPTION = """agentheal's HTTP API: submit gaps, follow and answer heal runs, search memory,
see the agents and the estate. Every route but `GET /healthz` needs `Authorization: Bearer TOKEN`
(`agentheal tokens add NAME --role viewer|operator|admin`)."""


def create_app(
    settings: Settings | None = None,
    *,
    estate_path: Path | None = None,
    policy_path: Path | None = None,
    insecure_local: bool = False,
    allow_faults: bool = False,
    watch: bool = False,
    watch_config: DetectConfig | None = None,
    max_heals: int = DEFAULT_MAX_HEALS,
) -> FastAPI:
    """The API app for one server process.

    Args:
        settings: agentheal's settings (default: read from the environment and agentheal.toml).
        estate_path: The estate the server heals (`--estate`); without one, gaps are diagnosed only.
        policy_path: A policy file instead of the settings' one.
        insecure_local: No token is checked; every request is the local admin (loopback only: the
            caller binds the server, see `agentheal serve`).
        allow_faults: Whether `POST /faults` may break the estate.
        watch: Run the detection loop in the server's process too (it needs an estate).
        watch_config: The detection loop's settings (default: DetectConfig's).
        max_heals: Heals running at once (one per component).
    """
    from agentheal.config import Settings
    from agentheal.graphs.context import HealContext

    settings = settings or Settings()
    estate_path = estate_path.resolve() if estate_path else None
    ctx = HealContext(settings=settings, estate_path=estate_path, policy_path=policy_path)
    state = ServerState(
        settings=settings,
        ctx=ctx,
        pool=HealPool(ctx, max_heals=max_heals),
        tokens=TokenStore(settings.home_dir),
        estate_path=estate_path,
        policy_path=policy_path,
        allow_faults=allow_faults,
        watch=watch,
        insecure_local=insecure_local,
    )
    app = FastAPI(
        title="agentheal",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=_lifespan,
        openapi_url=None,  # served below, behind a token
        docs_url=None,
        redoc_url=None,
    )
    app.state.agentheal = state
    if watch_config is not None:
        state.extras["watch_config"] = watch_config

    def refused(scope: Any, kind: str, reason: str, caller: Caller | None) -> None:
        audit.record(
            state.events,
            caller.name if caller else "anonymous",
            kind,
            door="api",
            role=caller.role.value if caller else None,
            target=f"{scope.get('method')} {scope.get('path')}",
            outcome="refused",
            detail=reason,
        )

    app.state.on_refused = refused
    _routes(app)
    app.add_middleware(AuthMiddleware, tokens=state.tokens, insecure_local=insecure_local, on_refused=refused)
    # Slack and Teams sign their own requests: their doors sit outside the bearer tokens, inside the limits
    importlib.import_module("agentheal.chatops.mount").install(app, state)
    # Installed after authentication, so its middlewares wrap it: CORS answers a preflight (which
    # carries no token) and oversized bodies are refused before a token is checked.
    if importlib.util.find_spec("agentheal.api.limits") is not None:
        importlib.import_module("agentheal.api.limits").install(app)
    # MCP at /mcp and A2A at /a2a behind the tokens; the Agent Card, outside them, public
    importlib.import_module("agentheal.protocols.serve").install(app)
    return app


def _routes(app: FastAPI) -> None:
    from agentheal.api import routes_runs

    app.include_router(routes_runs.router)
    if importlib.util.find_spec("agentheal.api.routes_ops") is not None:
        app.include_router(importlib.import_module("agentheal.api.routes_ops").router)
    app.include_router(importlib.import_module("agentheal.api.routes_status").router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Alive: answers without a token."""
        return {"status": "ok"}

    viewer = Depends(require(Role.viewer))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[viewer])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[viewer])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="agentheal API")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.agentheal
    # memory, personas, policy and the estate load once, before the first request
    await anyio.to_thread.run_sync(state.pool.warm)
    watcher = None
    if state.watch:
        watcher = _start_watch(state)  # it resumes the runs left running itself
    else:
        resumed = await anyio.to_thread.run_sync(state.pool.resume_open_runs)
        if resumed:
            log.info("resumed %d run(s) left running: %s", len(resumed), ", ".join(r[:12] for r in resumed))
    from agentheal.protocols.a2a_wait import poll_remote_runs

    # runs waiting for a remote persona's agent hold no worker: this resumes them as agents answer
    remote_poller = asyncio.get_running_loop().create_task(poll_remote_runs(state.pool))
    try:
        yield
    finally:
        remote_poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await remote_poller
        if watcher is not None:
            state.extras["watch"].stop.set()
            await anyio.to_thread.run_sync(watcher.join)
        await anyio.to_thread.run_sync(state.pool.close)
        state.events.close()


def _start_watch(state: ServerState) -> threading.Thread:
    """The detection loop (`agentheal watch`) in this process; its heals go through the server's
    pool, so a heal it starts and one submitted over HTTP never act on one component at once."""
    from agentheal.detect.watch import Watch

    pool = state.pool

    class ServerWatch(Watch):
        def _heal_one(self, gap: Gap) -> dict[str, Any]:
            _run_id, future, _joined = pool.submit(gap, actor="watch", door="watch", dry_run=self.dry_run)
            return future.result()

    config = state.extras.get("watch_config")
    watcher = ServerWatch(
        state.settings, state.estate_path, config, policy_path=state.policy_path, say=log.info
    )
    state.extras["watch"] = watcher
    thread = threading.Thread(target=watcher.run, name="watch", daemon=True)
    thread.start()
    return thread
