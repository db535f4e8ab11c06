"""A thread per run: its head message, each step as a reply, an approval request with buttons when
the run waits for a person, an escalation with the reason and what was tried, and the head (and
the approval request) updated in place when the run ends.

Each followed run has a thread of its own that reads the run's steps from the event store (any
process may write them), as the API's live stream does; the heal context's progress wakes it, so
a step is posted as soon as it is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentheal.chatops import views
from agentheal.chatops.messages import Message, Place, Poster

if TYPE_CHECKING:
    from agentheal.config import Settings
    from agentheal.services.heal import HealPool

__all__ = ["RunThreads"]

log = logging.getLogger("agentheal.chatops")

_LOOK_S = 0.25  # the longest a thread waits between looks when nothing wakes it
_QUEUED_S = 600.0  # how long a run may sit queued without a row before its thread gives up
_ANNOUNCE_S = 0.5  # how often the event store is asked for runs started elsewhere
_GRACE_S = 1.0


@dataclass
class _Followed:
    run_id: str
    poster: Poster
    where: Place  # the conversation; the thread is the head's message
    head: Message
    head_at: Place | None = None
    approval: Message | None = None
    approval_at: Place | None = None
    decision: tuple[bool, str, str] | None = None  # approved, by, note
    reasons: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    posted: int = 0  # thread replies posted


class RunThreads:
    """The runs this process follows in chat, each in a thread of its own."""

    def __init__(self, pool: HealPool, checkpoints: Path | Settings) -> None:
        self.pool = pool
        self.events = pool.ctx.events
        self.checkpoints = checkpoints
        self._runs: dict[tuple[str, str], _Followed] = {}  # by run id and conversation
        self._known: set[tuple[str, str]] = set()  # every thread opened, ended or not: never again
        self._asked: set[str] = set()  # runs followed where a chat user asked for them: not announced
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def following(self, run_id: str) -> bool:
        """Whether the run is (or was) followed where a chat user asked for it."""
        with self._lock:
            return run_id in self._asked

    def follow(self, run_id: str, poster: Poster, where: Place, head: Message, *, asked: bool = True) -> None:
        """Post the run's head in `where` now, then follow the run in its thread until it ends.
        `asked`: a chat user asked for it there (the channels that announce runs leave it be)."""
        followed = _Followed(run_id, poster, where, head)
        key = (run_id, where.conversation)
        with self._lock:
            if key in self._known:
                return
            self._runs[key] = followed
            self._known.add(key)
            if asked:
                self._asked.add(run_id)
        followed.head_at = self._post(followed, where, head)
        thread = threading.Thread(target=self._run, args=(followed,), name=f"chat-{run_id[:8]}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def answered(self, run: str, approved: bool, by: str, note: str) -> str:
        """Note a decision on a run (by id or prefix): its approval request loses its buttons now.
        Returns the run's full id."""
        with self._lock:
            found = [f for (rid, _), f in self._runs.items() if rid.startswith(run)]
        if not found:
            detail = self.events.run(run)
            return detail.row.run_id if detail else run
        for followed in found:  # every thread of the run, in every conversation
            followed.decision = (approved, by, note)
            if followed.approval is not None and followed.approval_at is not None:
                self._update(
                    followed, followed.approval_at, views.answered(followed.approval, approved, by, note)
                )
        return found[0].run_id

    def announce(self, poster: Poster, where: Place) -> None:
        """Follow in `where`, from now on, the runs started elsewhere (the detection loop, the API,
        another chat), each in a thread of its own, as a run started from chat is followed."""
        thread = threading.Thread(
            target=self._announce, args=(poster, where), name="chat-announce", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _announce(self, poster: Poster, where: Place) -> None:
        from agentheal.models import utcnow
        from agentheal.services.runs import list_runs

        since, seen = utcnow() - timedelta(seconds=1), set[str]()
        while not self._closed.is_set():
            try:
                for row in reversed(list_runs(self.events, limit=50, since=since).runs):
                    # a second's grace: a heal asked for in chat is followed by that chat's thread
                    if row.run_id in seen or (utcnow() - row.started_at).total_seconds() < _GRACE_S:
                        continue
                    seen.add(row.run_id)
                    if not self.following(row.run_id):
                        self.follow(row.run_id, poster, where, self._head(row), asked=False)
            except Exception:
                log.exception("chat: looking for new runs failed; trying again")
            self._closed.wait(_ANNOUNCE_S)

    def _head(self, row: Any) -> Message:
        from agentheal.services import audit

        detail = self.events.run(row.run_id)
        text = detail.gap.text if detail is not None and detail.gap is not None else "(no gap text)"
        asked = next((r for r in audit.trail(self.events, 200, action="gap")
                      if r.data.get("fingerprint") == row.fingerprint), None)  # fmt: skip
        who = f"{asked.actor} via {asked.door}" if asked else "agentheal"
        return views.started(row.run_id, row.component or "-", text, who, joined=False)

    def close(self) -> None:
        """Stop following: each thread ends at its next look (a run goes on; its thread stops)."""
        self._closed.set()
        self.wake()
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- one run --

    def _post(self, f: _Followed, where: Place, message: Message) -> Place | None:
        try:
            return f.poster.post(where, message)
        except Exception as exc:  # the chat platform refused or is down: the heal goes on regardless
            log.warning("chat: posting for run %s failed: %s", f.run_id[:12], exc)
            return None

    def _update(self, f: _Followed, at: Place, message: Message) -> None:
        try:
            f.poster.update(at, message)
        except Exception as exc:
            log.warning("chat: updating a message of run %s failed: %s", f.run_id[:12], exc)

    def _reply(self, f: _Followed, message: Message) -> Place | None:
        thread = f.head_at.message if f.head_at else None
        f.posted += 1
        return self._post(f, f.where.in_thread(thread), message)

    def _run(self, f: _Followed) -> None:
        from agentheal.services.runs import FINAL_STATUSES, node_events_after, run_status

        after, waited = 0, 0.0
        try:
            while not self._closed.is_set():
                status = run_status(self.events, f.run_id)  # first: every step before an end is read after it
                rows = node_events_after(self.events, f.run_id, after)
                for row in rows:
                    after = row["id"]
                    self._step(f, row)
                if status == "awaiting_approval" and f.approval is None and f.decision is None:
                    self._ask(f)
                if status in FINAL_STATUSES and len(rows) < 200:
                    self._end(f)
                    return
                if status is None and self.pool.queued(f.run_id) is None:
                    waited += _LOOK_S
                    if waited > _QUEUED_S:
                        return
                if not rows:
                    with self._changed:
                        self._changed.wait(_LOOK_S)
        except Exception:
            log.exception("chat: following run %s stopped", f.run_id[:12])
        finally:
            with self._lock:
                self._runs.pop((f.run_id, f.where.conversation), None)

    def _step(self, f: _Followed, row: dict[str, Any]) -> None:
        node, detail, data = str(row["node"]), str(row["detail"]), row.get("data") or {}
        if node == "guard" and isinstance(data, dict):
            f.reasons = [str(r) for r in data.get("approvals") or []]
        if node == "plan":
            f.plans.append(detail)
        if node == "approval" and f.decision is None:
            self._decided_elsewhere(f, detail)
        self._reply(f, views.step(node, detail))

    def _decided_elsewhere(self, f: _Followed, detail: str) -> None:
        """An answer given through another door (the CLI, the API): the request loses its buttons too."""
        verb, _, rest = detail.partition(" by ")
        if verb not in ("approved", "rejected") or not rest:
            return
        who, _, note = rest.partition(": ")
        f.decision = (verb == "approved", who, note)
        if f.approval is not None and f.approval_at is not None:
            self._update(f, f.approval_at, views.answered(f.approval, *f.decision))

    def _result(self, f: _Followed) -> dict[str, Any]:
        from agentheal.services.runs import show_run

        return show_run(self.events, f.run_id, self.checkpoints) or {"run_id": f.run_id, "status": "unknown"}

    def _ask(self, f: _Followed) -> None:
        f.approval = views.approval_request(self._result(f), f.reasons)
        f.approval_at = self._reply(f, f.approval)

    def _end(self, f: _Followed) -> None:
        result = self._result(f)
        status = str(result.get("status"))
        if f.head_at is not None:
            self._update(f, f.head_at, views.ended(result, f.head))
        if f.approval is not None and f.approval_at is not None:
            approved, by, note = f.decision or (status not in ("rejected",), "someone", "")
            self._update(f, f.approval_at, views.answered(f.approval, approved, by, note, status))
        if status in ("escalated", "failed"):
            tried = [f"plan {p}" for p in f.plans]
            tried += [
                f"`{a.get('action')}` on `{a.get('component')}`: {a.get('outcome')}"
                + (f" ({a['detail']})" if a.get("detail") else "")
                for a in result.get("actions", [])
            ]
            self._reply(f, views.escalation(result, tried))
        else:
            with contextlib.suppress(Exception):
                self._reply(
                    f,
                    views.step(
                        "end", f"{status}" + (f": {result['reason']}" if result.get("reason") else "")
                    ),
                )
