"""What the server's routes share: settings, the heal context and its event store, the heal pool,
the token store, and how the server was started (`--estate`, `--allow-faults`, `--watch`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from agentheal.models import utcnow

if TYPE_CHECKING:
    from agentheal.api.tokens import TokenStore
    from agentheal.config import Settings
    from agentheal.events import EventStore
    from agentheal.graphs.context import HealContext
    from agentheal.services.heal import HealPool

__all__ = ["ServerState", "get_state"]


@dataclass
class ServerState:
    """One per app; routes get it with `Depends(get_state)`."""

    settings: Settings
    ctx: HealContext
    pool: HealPool
    tokens: TokenStore
    estate_path: Path | None = None
    policy_path: Path | None = None
    allow_faults: bool = False
    watch: bool = False
    insecure_local: bool = False
    started_at: datetime = field(default_factory=utcnow)
    # what other parts of the server keep for themselves (the detection loop, metrics, limits)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def worker_name(self) -> str:
        """This worker's name among those sharing the database (`AGENTHEAL_WORKER_NAME`, or HOST-PID)."""
        from agentheal.work.registry import default_name

        shared = self.pool.shared
        return shared.name if shared is not None else self.settings.worker_name or default_name()

    @property
    def events(self) -> EventStore:
        """The event store the heals write to (the heal context's)."""
        return self.ctx.events


def get_state(request: Request) -> ServerState:
    """The server's shared state (a FastAPI dependency)."""
    state: ServerState = request.app.state.agentheal
    return state
