"""What the checkpoint saver is spared for the runs its process drives (storage.checkpoints.KnownThreads),
on both backends: the read that resumes a run after its breakpoint gets back, from memory, exactly
what the database holds; a run whose end is recorded is not checkpointed again at its end, unless it
has no checkpoint yet."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from agentheal.config import Settings
from agentheal.storage.checkpoints import Checkpoints, open_checkpoints
from pg_cluster import postgres_fixture, ready_home_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


class _State(TypedDict, total=False):
    seen: Annotated[list[str], operator.add]
    found: dict[str, Any]


def _graph(checkpoints: Checkpoints) -> Any:
    from langgraph.graph import END, START, StateGraph

    def look(state: _State) -> dict[str, Any]:
        return {"seen": ["look"], "found": {"pairs": [["a", 1], ["b", 2]], "text": "x" * 300, "n": 3}}

    def act(state: _State) -> dict[str, Any]:
        return {"seen": ["act"]}

    builder = StateGraph(_State)
    builder.add_node("look", look)
    builder.add_node("act", act)
    builder.add_edge(START, "look")
    builder.add_edge("look", "act")
    builder.add_edge("act", END)
    return builder.compile(checkpointer=checkpoints.saver)


def _stream(graph: Any, payload: Any, thread: str, before: list[str] | None = None) -> None:
    config = {"configurable": {"thread_id": thread}}
    for _ in graph.stream(payload, config, durability="exit", interrupt_before=before):
        pass


def _rows(home: Settings, thread: str) -> int:
    """The thread's checkpoints, read by a saver of another connection."""
    with open_checkpoints(home) as other:
        return len(list(other.saver.list({"configurable": {"thread_id": thread}})))


def test_the_read_after_a_breakpoint_gets_back_what_the_database_holds(ready_home: Settings) -> None:
    with open_checkpoints(ready_home) as checkpoints:
        graph = _graph(checkpoints)
        thread = "kept-" + ready_home.home.name
        latest = {"configurable": {"thread_id": thread}}
        checkpoints.new_thread(thread)
        _stream(graph, {"seen": []}, thread, before=["act"])  # stops at the breakpoint before `act`
        with open_checkpoints(ready_home) as other:
            stored = other.saver.get_tuple(latest)
        served = checkpoints.saver.get_tuple(latest)  # from memory
        assert stored is not None and served is not None
        for part in ("config", "checkpoint", "metadata", "parent_config", "pending_writes"):
            assert getattr(served, part) == getattr(stored, part), part
        assert served.checkpoint["channel_values"]["found"]["pairs"] == [["a", 1], ["b", 2]]
        again = checkpoints.saver.get_tuple(latest)  # served once: the next read asks the database
        assert again is not None and again.checkpoint == stored.checkpoint and again is not served
        _stream(graph, None, thread)  # resumed from the breakpoint
        values = graph.get_state(latest).values
        assert values["seen"] == ["look", "act"]
        checkpoints.forget(thread)


def test_an_ended_run_is_not_checkpointed_again_unless_it_has_no_checkpoint(ready_home: Settings) -> None:
    ended: set[str] = set()
    with open_checkpoints(ready_home) as checkpoints:
        checkpoints.skip_ended(ended.__contains__)
        graph = _graph(checkpoints)
        paused, whole = "paused-" + ready_home.home.name, "whole-" + ready_home.home.name

        _stream(graph, {"seen": []}, paused, before=["act"])
        ended.add(paused)  # its end recorded (the event store's finish_run), as `act` would
        _stream(graph, None, paused)
        assert _rows(ready_home, paused) == 1  # the breakpoint's only

        ended.add(whole)  # ended before its first checkpoint: the one at its end is its only one
        _stream(graph, {"seen": []}, whole)
        assert _rows(ready_home, whole) == 1

        checkpoints.forget(paused)
        ended.discard(paused)
        _stream(graph, {"seen": []}, paused)  # a run not ended here is checkpointed at its end
        assert _rows(ready_home, paused) == 2
