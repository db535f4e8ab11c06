"""Who resumes a run waiting for a remote persona's agent (status `awaiting_remote`).

A run sends its task and stops in `interrupt()`; nothing of it runs until its agent answered or its
deadline passed. `agentheal heal` with no server waits in its own process (`Healer.wait_remote`),
and `agentheal runs resume RUN` does the same later from any shell. `agentheal serve` runs
`poll_remote_runs` in its lifespan: every `remote_poll_s` seconds it asks each waiting run's agent
once (no worker is held meanwhile), and queues the resume of the runs whose agent answered, or whose
deadline passed, in the heal pool, behind any heal of the same component.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from agentheal.api.state import ServerState

__all__ = ["poll_remote_runs", "ready_runs"]

_log = logging.getLogger("agentheal.remote")


def _ready(state: ServerState, run_id: str) -> bool:
    """Whether the run's agent answered (or its deadline passed, or it cannot be answered any more)."""
    from agentheal.protocols.a2a_client import answer_of, sent_wait

    wait = sent_wait(state.events, run_id)
    if wait is None or time.time() >= wait["deadline"]:
        return True  # nothing to ask: the resume says why
    try:
        remote = state.ctx.registry.get(wait["persona"]).remote
    except LookupError:  # its persona is gone: the resume escalates with it
        return True
    return remote is None or answer_of(remote, wait) is not None


def ready_runs(state: ServerState) -> list[str]:
    """The runs awaiting a remote agent that can be resumed now, and were queued to be (their ids)."""
    from agentheal.models import RunStatus

    queued = []
    for row in state.events.runs(limit=500, status=RunStatus.awaiting_remote.value):
        if state.pool.queued(row.run_id) is not None:
            continue  # the pool holds it already
        if _ready(state, row.run_id) and state.pool.resume_remote(row.run_id) is not None:
            queued.append(row.run_id)
    return queued


async def poll_remote_runs(state: ServerState) -> None:
    """Resume waiting runs as their agents answer, until cancelled (the server stops)."""
    while True:
        try:
            queued = await anyio.to_thread.run_sync(ready_runs, state)
        except RuntimeError:  # the pool is closing: the server stops
            return
        except Exception:  # one bad round must not stop the next: the log says what broke
            _log.exception("asking the remote agents that runs wait for failed")
        else:
            if queued:
                _log.info(
                    "resuming %d run(s) a remote agent answered: %s",
                    len(queued),
                    ", ".join(r[:12] for r in queued),
                )
        await anyio.sleep(state.settings.remote_poll_s)
