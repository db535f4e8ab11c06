"""Work shared by several workers on one PostgreSQL database: gaps queued once per fingerprint,
claimed with `SELECT … FOR UPDATE SKIP LOCKED` under leases the workers renew, one claimed per
component; workers registered with a heartbeat. SQLite homes (one host) do not use it.

- `queue`: the work table: enqueue, claim, renew, finish, hand back.
- `registry`: the workers table: register, heartbeat, stop, who is live and what each holds.
- `worker`: one process's claimer and lease keeper threads.
- `shared`: the heal pool's half on a shared database (`agentheal.services.heal.HealPool`).
"""

from agentheal.work.queue import Claim, Item, WorkError, WorkQueue, component_key
from agentheal.work.registry import Registry, WorkerNameTaken, WorkerRow, default_name

__all__ = [
    "Claim",
    "Item",
    "Registry",
    "WorkError",
    "WorkQueue",
    "WorkerNameTaken",
    "WorkerRow",
    "component_key",
    "default_name",
]
