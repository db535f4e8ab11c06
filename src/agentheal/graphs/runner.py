"""Runs the heal graph: new heals, joins of open runs, resumes after a crash, an approval, or a
remote agent's answer.

A heal holds a lock on its gap's fingerprint for as long as its process drives it. A run still
marked running whose lock is free lost its process: it is resumed from its last checkpoint. A run
stopped in `interrupt()` holds no lock and no worker: it waits for a person (`awaiting_approval`,
resumed by `resume`) or for a remote persona's agent (`awaiting_remote`, resumed by
`resume_remote` once the agent answered or its deadline passed).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentheal.event_schema import OPEN_STATUSES
from agentheal.graphs.context import HealContext
from agentheal.graphs.heal import Durability, compile_heal_graph
from agentheal.graphs.results import recorded_result, result_of, with_usage
from agentheal.models import Gap, RunStatus

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from agentheal.work.runlocks import RunLocks


class HealError(Exception):
    """A heal could not start: the gap or the run asked for is not usable."""


class UnknownComponent(HealError):
    pass


class RunNotFound(HealError):
    pass


class Healer:
    """Drives heal runs for one process; use as a context manager so the checkpoint store closes."""

    def __init__(self, ctx: HealContext) -> None:
        from agentheal.storage.checkpoints import open_checkpoints

        self.ctx = ctx
        # the event store's database: the SQLite file under the home folder, or PostgreSQL
        self._checkpoints = open_checkpoints(ctx.settings)
        # PostgreSQL: which process drives a run is the database's to say (workers on other hosts)
        self._run_locks: RunLocks | None = None
        if ctx.settings.database_url is not None:
            from agentheal.work.runlocks import RunLocks

            self._run_locks = RunLocks(ctx.settings.database_url.get_secret_value())
        # a run whose end and answer the event store recorded here is not checkpointed again at its end
        self._checkpoints.skip_ended(lambda run_id: self.ctx.events.ended_here(run_id))
        self.graph = compile_heal_graph(ctx, self._checkpoints.saver)
        # sync: each checkpoint is written before the next step, so a crash or an approval wait loses nothing
        self.durability: Durability = "sync"

    def __enter__(self) -> Healer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.ctx.flush()
        finally:
            self._checkpoints.close()
            if self._run_locks is not None:
                self._run_locks.close()

    def check_gap(self, gap: Gap) -> None:
        """Refuse a gap naming a component the estate does not have."""
        estate = self.ctx.estate
        if estate is not None and gap.component is not None and gap.component not in estate.components:
            raise UnknownComponent(
                f"unknown component {gap.component!r}: the estate {estate.name!r} has "
                + ", ".join(sorted(estate.components))
            )

    def heal(self, gap: Gap, dry_run: bool = False, run_id: str | None = None) -> dict[str, Any]:
        """Heal one gap to the end, to an approval wait, or join the open run of the same fingerprint.

        `run_id`: the id a new run gets (a server answers with it before the heal starts)."""
        self.check_gap(gap)
        self.ctx.memory.embedder.prefetch([gap.text])  # recall and routing need it; triage runs meanwhile
        run_id = run_id or uuid.uuid4().hex
        # Records the gap, and starts run_id unless the fingerprint has an open run.
        open_run = self.ctx.events.begin_heal(gap, run_id)
        if open_run is not None:
            with self._turn(gap.fingerprint, wait=False) as held:
                pass  # only asks whether a live process holds the run
            return self._resume_crashed(open_run, gap) if held else self._join(open_run, gap)
        with self._turn(gap.fingerprint, wait=True):
            self._checkpoints.new_thread(run_id)  # just started: no checkpoint to read
            return self._drive(run_id, self._start_state(run_id, gap, dry_run))

    def _start_state(self, run_id: str, gap: Gap, dry_run: bool = False) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "gap": gap.model_dump(mode="json"),
            "estate_path": str(self.ctx.estate_path) if self.ctx.estate_path else None,
            "dry_run": dry_run,
            "attempts": 0,
            "failed_plans": [],
            "actions": [],
            "status": RunStatus.running.value,
        }

    def resume(self, run_id: str, answer: dict[str, Any]) -> dict[str, Any]:
        """Answer an approval: `{"approved": bool, "by": str, "note": str}`."""
        from langgraph.types import Command

        detail = self.ctx.events.run(run_id)
        if detail is None:
            raise RunNotFound(f"no run {run_id!r}; `agentheal runs` lists them")
        full_id = detail.row.run_id
        if detail.row.status != RunStatus.awaiting_approval.value:
            raise HealError(f"run {full_id[:12]} is {detail.row.status}, not awaiting approval")
        with self._turn(detail.row.fingerprint, wait=True):
            return self._drive(full_id, Command(resume=answer))

    def resume_remote(
        self, run_id: str, *, block: bool = False, tick: Callable[[float], None] | None = None
    ) -> dict[str, Any] | None:
        """Ask the remote agent a run waits for; resume the run with its answer (or a time-out once
        the deadline passed). `block`: ask until then; else once. None: the agent still works.

        Raises:
            RunNotFound: no such run. HealError: the run does not wait for a remote agent.
        """
        from langgraph.types import Command

        from agentheal.protocols.a2a_client import answer_of

        detail = self.ctx.events.run(run_id)
        if detail is None:
            raise RunNotFound(f"no run {run_id!r}; `agentheal runs` lists them")
        full_id = detail.row.run_id
        wait = self.remote_wait(full_id)
        if detail.row.status != RunStatus.awaiting_remote.value or wait is None:
            raise HealError(f"run {full_id[:12]} is {detail.row.status}, not awaiting a remote agent")
        try:
            remote = self.ctx.registry.get(wait["persona"]).remote
        except LookupError:
            remote = None
        if remote is None:  # its persona file went or changed meanwhile: the run cannot be answered
            answer: dict[str, Any] | None = {"outcome": "error", "reason": "its persona is no longer remote"}
        else:
            answer = answer_of(remote, wait, until=wait["deadline"] if block else 0.0, tick=tick)
        if answer is None:
            return None
        with self._turn(detail.row.fingerprint, wait=True):
            row = self.ctx.events.run(full_id)
            if row is None or row.row.status != RunStatus.awaiting_remote.value:
                return self.result(full_id)  # resumed meanwhile by another process
            self.ctx.events.set_status(full_id, RunStatus.running)
            return self._drive(full_id, Command(resume=answer))

    def wait_remote(self, result: dict[str, Any]) -> dict[str, Any]:
        """A heal's result carried on here past every remote wait (`agentheal heal` with no server):
        the agent is asked until it answers or its deadline passes; progress is shown, not recorded."""
        say_every, said = 5.0, [0.0]

        def tick(left: float) -> None:
            if self.ctx.progress is not None and time.monotonic() - said[0] >= say_every:
                said[0] = time.monotonic()
                self.ctx.progress(
                    result["run_id"], "remote", f"waiting for the remote agent ({left:.0f} s left)", {}
                )

        while result.get("status") == RunStatus.awaiting_remote.value:
            run_id = result["run_id"]
            if result.get("joined"):
                wait = self.remote_wait(run_id) or {}
                who, task = wait.get("persona"), wait.get("task")
                detail = f"resumed: still waiting for {who}'s task {task}"
                self.ctx.say(run_id, "remote", detail, {"persona": who, "resumed_task": task})
            try:
                result = self.resume_remote(run_id, block=True, tick=tick) or result
            except HealError:  # another process resumed it meanwhile: where it stands now
                return self.result(run_id)
        return result

    def remote_wait(self, run_id: str) -> dict[str, Any] | None:
        """What a run stopped in `interrupt()` waits for, if a remote agent (its interrupt's payload)."""
        pending = self._pending(run_id)
        return pending if pending is not None and pending.get("kind") == "remote" else None

    def _pending(self, run_id: str) -> dict[str, Any] | None:
        snapshot = self.graph.get_state(_config(run_id))
        for task in snapshot.tasks if snapshot else ():
            for pending in task.interrupts:
                return dict(pending.value)
        return None

    def _turn(self, fingerprint: str, wait: bool) -> contextlib.AbstractContextManager[bool]:
        """The lock of the process driving a fingerprint's run: a file lock in the home folder, or
        on PostgreSQL the database's (see agentheal.work.runlocks)."""
        if self._run_locks is not None:
            return self._run_locks.hold(fingerprint, wait)
        return _lock(self._lock_path(fingerprint), wait=wait)

    def _lock_path(self, fingerprint: str) -> Path:
        folder = self.ctx.settings.home_dir / "locks"
        folder.mkdir(exist_ok=True)
        return folder / f"{fingerprint}.lock"

    def _join(self, run_id: str, gap: Gap | None) -> dict[str, Any]:
        if gap is not None:
            self.ctx.say(run_id, "join", f"a second report of the same gap joined this run: {gap.text[:120]}")
        result = self.result(run_id)
        result["joined"] = True
        result["reason"] = result.get("reason") or f"joined open run {run_id[:12]} ({result['status']})"
        return result

    def result(self, run_id: str) -> dict[str, Any]:
        """A run's heal JSON now (full run id): an ended run's answer as the event store recorded it,
        an open one's from its last checkpoint and its status."""
        detail = self.ctx.events.run(run_id)
        if detail is not None and detail.result and detail.row.status.value not in OPEN_STATUSES:
            # (its last checkpoint may be older than its end: see storage.checkpoints.KnownThreads)
            return recorded_result(detail)
        snapshot = self.graph.get_state(_config(run_id))
        values = dict(snapshot.values) if snapshot and snapshot.values else {"run_id": run_id}
        result = result_of(with_usage(self.ctx, values))
        if detail is not None:
            result["status"] = detail.row.status.value
            if detail.row.status == RunStatus.awaiting_remote:
                result["reason"] = detail.row.reason
        return result

    def _resume_crashed(self, run_id: str, gap: Gap) -> dict[str, Any]:
        snapshot = self.graph.get_state(_config(run_id))
        if snapshot is None or not snapshot.values:
            # no checkpoint yet (its process ended in the first steps, which only look and are
            # checkpointed at the first that acts, or a server stopped with the heal still queued):
            # the run starts from its beginning, under the id its door was given
            self.ctx.say(
                run_id, "resume", "its process ended before its first checkpoint; started from the beginning"
            )
            with self._turn(gap.fingerprint, wait=True):
                return self._drive(run_id, self._start_state(run_id, gap))
        if snapshot.next and any(t.interrupts for t in snapshot.tasks):
            wait = self.remote_wait(run_id)
            if wait is not None:  # its process ended between the interrupt and recording the wait
                self.ctx.events.set_status(run_id, RunStatus.awaiting_remote, _remote_reason(wait))
            return self._join(run_id, gap)
        self.ctx.say(run_id, "resume", "the process driving this run ended; resumed from its last checkpoint")
        self.ctx.resumed.add(run_id)
        try:
            with self._turn(gap.fingerprint, wait=True):
                return self._drive(run_id, None)
        finally:
            self.ctx.resumed.discard(run_id)

    def _drive(self, run_id: str, payload: Any) -> dict[str, Any]:
        config = _config(run_id)
        values: dict[str, Any] = {}
        waiting: dict[str, Any] | None = None
        try:
            durability = self.durability
            if isinstance(payload, dict) and durability == "sync":
                # A new run is checkpointed at the breakpoint before its first step that acts (or
                # waits for a person), and when it stops (ends, or waits), not after every step: a
                # checkpoint a step was a third of a heal's CPU. Its first steps only look: a process
                # that ends among them leaves no checkpoint, and the run starts again from its
                # beginning (see _resume_crashed). One that ends later is resumed from the breakpoint:
                # the execute node does not run again the steps its story says ran (graphs.execute).
                # (and what those steps say is written together when they stop: events.hold_nodes)
                self.ctx.events.hold_nodes(run_id)
                try:
                    values, waiting, paused = self._stream(payload, config, "exit", ACTING)
                finally:
                    self.ctx.events.write_held(run_id)
                if not paused:
                    return self._ended(run_id, values, waiting)
                payload, durability = None, "exit"
            values, waiting, _ = self._stream(payload, config, durability, ())
        finally:
            self.ctx.release(run_id)
            self._checkpoints.forget(run_id)
        return self._ended(run_id, values, waiting)

    def _stream(
        self, payload: Any, config: RunnableConfig, durability: Durability, before: tuple[str, ...]
    ) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
        """Stream the graph: the last state, what an `interrupt()` waits for, and whether it stopped
        at a breakpoint of `before`."""
        values: dict[str, Any] = {}
        waiting: dict[str, Any] | None = None
        paused = False
        # The state after each step, and each step's updates (where a wait shows as
        # `__interrupt__`; a breakpoint as an empty one): the final state without reading it back.
        stream = self.graph.stream(
            payload,
            config,
            stream_mode=["values", "updates"],
            durability=durability,
            interrupt_before=list(before) or None,
        )
        for mode, chunk in cast(Iterator[tuple[str, Any]], stream):
            if mode == "values":
                values = dict(chunk)
            elif "__interrupt__" in chunk:
                if chunk["__interrupt__"]:
                    waiting = dict(chunk["__interrupt__"][0].value)
                else:
                    paused = True
        return values, waiting, paused

    def _ended(self, run_id: str, values: dict[str, Any], waiting: dict[str, Any] | None) -> dict[str, Any]:
        if waiting is not None and waiting.get("kind") == "remote":
            values["status"] = RunStatus.awaiting_remote.value
            values["reason"] = _remote_reason(waiting)
            self.ctx.events.set_status(run_id, RunStatus.awaiting_remote, values["reason"])
            self.ctx.say(
                run_id, "remote", f"stopped in interrupt(), {values['reason']}", {"waiting": waiting["task"]}
            )
        elif waiting is not None:
            values["status"] = RunStatus.awaiting_approval.value
            approvals = (values.get("decision") or {}).get("approvals", [])
            values["reason"] = "awaiting approval: " + "; ".join(approvals)
        if waiting is None and values.get("status") == RunStatus.healed.value and "llm" in values:
            return result_of(values)  # learn read its LLM use as it recorded the end: nothing since
        return result_of(with_usage(self.ctx, values))


# The first steps of a heal that act (or wait for a person to let them): a new run is checkpointed
# step by step from the first of them on.
ACTING = ("approval", "execute")


def _remote_reason(wait: dict[str, Any]) -> str:
    from datetime import UTC, datetime

    until = datetime.fromtimestamp(wait["deadline"], UTC).isoformat(timespec="seconds")
    return f"awaiting remote task {wait['task']} of {wait['persona']} at {wait['url']} until {until}"


def _config(run_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 60}


@contextlib.contextmanager
def _lock(path: Path, wait: bool) -> Iterator[bool]:
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
