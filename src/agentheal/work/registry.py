"""The workers sharing one database: each registers under a name, beats its heart while it runs and
says when it stops; `agentheal workers` reads who is live and what each holds.

A worker is live while it has not stopped and its last heartbeat is younger than its lease. A
name is one worker's at a time: a second process cannot take the name of a live one, and a worker
that starts again under its name (after a crash) hands back the claims its previous life held,
since nothing renews them now.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agentheal.work.queue import Item, WorkError, WorkQueue
from agentheal.work.tables import CLAIMED, WORK_ITEMS, WORKERS

_K = WORKERS.c


class WorkerNameTaken(WorkError):
    """Another live process already works under this name."""


def default_name() -> str:
    """host-pid: unique on one database as long as hosts' names are."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerRow:
    """A worker as `agentheal workers` lists it."""

    name: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    lease_s: float
    max_heals: int
    live: bool = False
    holds: list[Item] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "live": self.live,
            "started_at": self.started_at.isoformat(),
            "heartbeat_at": self.heartbeat_at.isoformat(),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "lease_s": self.lease_s,
            "max_heals": self.max_heals,
            "holds": [
                {
                    "run_id": i.run_id,
                    "component": i.key,
                    "fingerprint": i.fingerprint,
                    "lease_until": i.lease_until.isoformat() if i.lease_until else None,
                    "claimed_at": i.claimed_at.isoformat() if i.claimed_at else None,
                    "resumed": i.claims > 1,
                }
                for i in self.holds
            ],
        }


class Registry:
    """The workers table, on a work queue's engine."""

    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue
        self.engine = queue.engine
        self.clock = queue.clock

    def register(self, name: str, lease_s: float, max_heals: int) -> list[str]:
        """Record this process as worker `name`; returns the claims of its previous life, handed back.

        Raises:
            WorkerNameTaken: a live worker of another process has the name.
        """
        host, pid = socket.gethostname(), os.getpid()
        with self.engine.begin() as conn:
            row = conn.execute(WORKERS.select().where(_K.name == name).with_for_update()).first()
            if row is not None:
                live = conn.execute(
                    sa.select(sa.literal(True)).where(
                        _K.name == name, _K.stopped_at.is_(None), _K.heartbeat_at > self._lease_ago()
                    )
                ).scalar()
                if live and (row.host, row.pid) != (host, pid):
                    raise WorkerNameTaken(
                        f"worker name {name!r} is taken by a live worker (pid {row.pid} on {row.host}, "
                        f"last heartbeat {row.heartbeat_at:%H:%M:%S}); set AGENTHEAL_WORKER_NAME to another"
                    )
                conn.execute(WORKERS.delete().where(_K.name == name))
            conn.execute(
                WORKERS.insert().values(
                    name=name,
                    host=host,
                    pid=pid,
                    started_at=self.clock.now(),
                    heartbeat_at=self.clock.now(),
                    stopped_at=None,
                    lease_s=lease_s,
                    max_heals=max_heals,
                )
            )
        return self.queue.hand_back(name)

    def heartbeat(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(WORKERS.update().where(_K.name == name).values(heartbeat_at=self.clock.now()))

    def stopped(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(WORKERS.update().where(_K.name == name).values(stopped_at=self.clock.now()))

    def workers(self, everyone: bool = False) -> list[WorkerRow]:
        """Live workers (or `everyone` ever registered), each with the claims it holds, by name."""
        live = sa.and_(_K.stopped_at.is_(None), _K.heartbeat_at > self._lease_ago())
        stmt = sa.select(*WORKERS.c, live.label("live")).order_by(_K.name)
        if not everyone:
            stmt = stmt.where(live)
        with self.engine.connect() as conn:
            rows = [WorkerRow(**r._mapping) for r in conn.execute(stmt)]
        held = self.queue.items(WORK_ITEMS.c.state == CLAIMED)
        for row in rows:
            row.live = bool(row.live)
            row.holds = [i for i in held if i.worker == row.name]
        return rows

    def _lease_ago(self) -> Any:
        if self.clock.postgres:
            return self.clock.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, _K.lease_s)
        # SQLite: one host, one worker; its seconds-old heartbeat is compared in Python's terms
        return sa.func.datetime(self.clock.now(), sa.func.printf("-%f seconds", _K.lease_s))
