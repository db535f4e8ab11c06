"""The heal graph: triage, recall, route, diagnose, plan, guard, approval, execute, validate, learn.

Nodes are small functions over the run's state; the side effects sit behind `HealContext`
(estate backend, event store, memory, personas, policy, LLM). State holds only JSON-able data,
so the SQLite checkpoint can carry a run across a crash or a wait for approval.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from agentheal.graphs import nodes
from agentheal.graphs.context import HealContext

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph


class HealState(TypedDict, total=False):
    run_id: str
    gap: dict[str, Any]
    estate_path: str | None
    dry_run: bool
    triage: dict[str, Any]
    facts: list[dict[str, str]]
    memory: list[dict[str, Any]]
    persona: str | None
    route: dict[str, Any]
    factory: dict[str, Any] | None
    handoffs: int
    diagnosis: dict[str, Any]
    remembered: list[dict[str, Any]]
    plan: dict[str, Any] | None
    decision: dict[str, Any]
    approval: dict[str, Any] | None
    actions: Annotated[list[dict[str, Any]], operator.add]
    validation: dict[str, Any] | None
    attempts: int
    failed_plans: list[str]
    status: str
    reason: str | None
    llm: dict[str, Any]  # a healed run's LLM use, read by learn as it recorded the end
    next: str


NODE_NAMES = (
    "triage",
    "recall",
    "route",
    "diagnose",
    "plan",
    "guard",
    "approval",
    "execute",
    "validate",
    "learn",
    "escalate",
)


def build_heal_graph(ctx: HealContext | None) -> Any:
    """The uncompiled heal `StateGraph`; `ctx` is None only to draw it."""
    return shape_heal_graph(lambda name: nodes.bind(getattr(nodes, name), ctx, name))


def shape_heal_graph(node_for: Callable[[str], Callable[[dict[str, Any]], dict[str, Any]]]) -> Any:
    """The heal graph's nodes and edges, each node made by `node_for(name)`.

    Nodes choose their next hop in the state's `next`; the bench builds the same shape with
    no-op nodes as its baseline, so the two never drift apart.
    """
    from langgraph.graph import END, START, StateGraph

    graph: Any = StateGraph(HealState)
    hops = {
        "triage": ("recall", "escalate"),
        "route": ("diagnose", "escalate"),
        "diagnose": ("plan", "escalate"),
        "plan": ("guard", "escalate"),
        "guard": ("approval", "execute", "escalate"),
        "approval": ("execute", END),
        "execute": ("validate", "learn"),
        "validate": ("learn", "escalate"),
        "learn": ("plan", "escalate", END),
    }
    for name in NODE_NAMES:
        node = node_for(name)
        if name in hops:
            graph.add_node(name, _going(node, hops[name]), destinations=hops[name])
        else:
            graph.add_node(name, node)
    graph.add_edge(START, "triage")
    graph.add_edge("recall", "route")
    graph.add_edge("escalate", END)
    return graph


def _going(
    node: Callable[[dict[str, Any]], dict[str, Any]], targets: tuple[str, ...]
) -> Callable[[dict[str, Any]], Any]:
    """`node` answering with where the run goes next (LangGraph's `Command`): its update's `next`, else
    the state's. (A conditional edge reading `next` had LangGraph copy the state's channels to read it,
    after every step: a tenth of a heal's time in the graph.)"""
    from langgraph.types import Command

    def going(state: dict[str, Any]) -> Any:
        update = node(state)
        goto = update.get("next", state.get("next", "escalate"))
        if goto not in targets:
            raise ValueError(f"a node chose {goto!r} as its next step; it can go to {', '.join(targets)}")
        return Command(update=update, goto=goto)

    going.__name__ = getattr(node, "__name__", "node")
    return going


def compile_heal_graph(
    ctx: HealContext | None, checkpointer: Any = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled heal graph, with a checkpointer when a run must survive a crash or an approval."""
    compiled: CompiledStateGraph[Any, Any, Any, Any] = build_heal_graph(ctx).compile(
        checkpointer=checkpointer, name="heal"
    )
    return compiled


Durability = Literal["sync", "async", "exit"]
