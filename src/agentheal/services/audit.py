"""The audit trail: every change made through a door, with who made it, in the event store.

Doors call `record` for each change they make (a gap submitted, an approval, a rejection, a memory
import, an agent changed, a token made or revoked) and for each change they refused (no token, a
role too low); `agentheal audit` and the API read it back with `trail`.
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Required, TypedDict, Unpack

if TYPE_CHECKING:
    from agentheal.events import AuditRow, EventStore

# The changes the doors record; `refused` rows carry the action that was refused.
ACTIONS = (
    "gap",
    "approve",
    "reject",
    "memory_import",
    "agent_change",
    "fault",
    "token_add",
    "token_revoke",
)


def local_actor() -> str:
    """Who runs this process, for changes made from the CLI on this host."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return f"uid {os.getuid()}"


class AuditFields(TypedDict, total=False):
    """What an audit row says besides who and what (see `EventStore.audit`)."""

    door: Required[str]  # through what: `cli`, `api`, `mcp`, `slack`, ...
    role: str | None  # the caller's role, when the door has roles
    target: str | None  # what it was done to: a run id, a component, an agent, a file
    outcome: str  # `ok`, or `refused` (with the reason in `detail`)
    detail: str  # one line for people
    data: dict[str, Any] | None  # anything else worth keeping (a note, counts)


def record(events: EventStore, actor: str, action: str, **fields: Unpack[AuditFields]) -> None:
    """Append one change to the audit trail: `actor` (a token's name, the local user, or `local`
    for an --insecure-local server) did `action` (e.g. `gap`, `approve`, `memory_import`)."""
    events.audit(actor, action, **fields)


def trail(
    events: EventStore,
    limit: int = 100,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditRow]:
    """The audit trail, newest first, filtered by time, actor or action."""
    return events.audit_rows(limit, since=since, actor=actor, action=action)
