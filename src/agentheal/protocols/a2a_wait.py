"""Who resumes a run waiting for a remote persona's agent (status `awaiting_remote`).

A run sends its task and stops in `interrupt()`; nothing of it runs until its agent answered or its
deadline passed. `agentheal heal` with no server waits in its own process (`Healer.wait_remote`),
and `agentheal runs resume RUN` does the same later from any shell. A process with a heal pool asks
for it: `agentheal serve` runs `poll_remote_runs` in its lifespan (any other long-lived door with a
pool can run `RemotePoller` in a thread). Every `remote_poll_s` seconds it asks each waiting run's
agent once (no worker is held meanwhile) and queues the resume of the runs whose agent answered, or
whose deadline passed, in the heal pool, behind any heal of the same component.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from agentheal.services.heal import HealPool

__all__ = ["RemotePoller", "poll_remote_runs", "ready_runs"]

_log = logging.getLogger("agentheal.remote")


def _ready(pool: HealPool, run_id: str) -> bool:
    """Whether the run's agent answered (or its deadline passed, or it cannot be answered any more)."""
    from agentheal.protocols.a2a_client import answer_of, sent_wait

    wait = sent_wait(pool.ctx.events, run_id)
    if wait is None or time.time() >= wait["deadline"]:
        return True  # nothing to ask: the resume says why
    try:
        remote = pool.ctx.registry.get(wait["persona"]).remote
    except LookupError:  # its persona is gone: the resume escalates with it
        return True
    return remote is None or answer_of(remote, wait) is not None


def ready_runs(pool: HealPool) -> list[str]:
    """Queue the resume of the runs awaiting a remote agent that can go on now; their ids."""
    from agentheal.models import RunStatus

    queued = []
    for row in pool.ctx.events.runs(limit=500, status=RunStatus.awaiting_remote.value):
        if pool.queued(row.run_id) is not None:
            continue  # the pool holds it already
        if _ready(pool, row.run_id) and pool.resume_remote(row.run_id) is not None:
            queued.append(row.run_id)
    return queued


def _round(pool: HealPool) -> bool:
    """One round; False once the pool is closing."""
    try:
        queued = ready_runs(pool)
    except RuntimeError:  # the pool is closing: the process stops
        return False
    except Exception:  # one bad round must not stop the next: the log says what broke
        _log.exception("asking the remote agents that runs wait for failed")
    else:
        if queued:
            _log.info(
                "resuming %d run(s) a remote agent answered: %s",
                len(queued),
                ", ".join(r[:12] for r in queued),
            )
    return True


async def poll_remote_runs(pool: HealPool) -> None:
    """Resume waiting runs as their agents answer, until cancelled (the server stops)."""
    while await anyio.to_thread.run_sync(_round, pool):
        await anyio.sleep(pool.ctx.settings.remote_poll_s)


class RemotePoller:
    """`poll_remote_runs` in a thread of its own, for a door with a heal pool and no event loop."""

    def __init__(self, pool: HealPool) -> None:
        self.pool, self._stop = pool, threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-poller", daemon=True)

    def start(self) -> RemotePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop asking (before the pool closes)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while _round(self.pool) and not self._stop.wait(self.pool.ctx.settings.remote_poll_s):
            pass
