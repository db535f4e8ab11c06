"""Heal runs per second, as a ratio to a bare LangGraph graph of the same shape and checkpointer.

Ours: `Healer.heal(gap)` on a real `HealContext` (event store, chromadb memory, personas, policy)
whose estate backend answers at once and changes nothing. Three figures:

- `heal_runs_per_s` (the headline, the issue's figure): every gap text is new, so no playbook
  fits and the LLM diagnoses (one tool-loop call) and plans (one call). The LLM is an instant
  fake in-process: it replaces only `LLM._complete`, the one exchange with the endpoint, so the
  prompts, redaction, JSON schemas, reply parsing and validation, and the per-call accounting
  in the event store all run as they do against a real endpoint.
- `heal_http_runs_per_s`: the same, with the fake moved out to the HTTP boundary (respx), so
  the openai client and httpx run too. Reported to show what they add per call; no goal.
- `heal_replay_runs_per_s`: one gap again and again; after two heals memory holds a playbook
  for it, replayed with no LLM call (each replay adds one record to that gap's history).

Baseline: a `StateGraph` with the heal graph's nodes and edges (conditional where the heal graph
has them), nodes that only name the next hop, on a `SqliteSaver` made by a `Healer` (so with the
runner's connection settings) on its own file, invoked with `durability="sync"` and a new thread
per run, along the path a heal takes.

A new heal run is checkpointed only at the breakpoint before its first acting step and when it
stops (`durability="exit"` on both halves), where the baseline checkpoints after every step. So part
of the headline ratio is the checkpoints we no longer write; `heal_vs_exit_runs_per_s` compares the
LLM path with the bare graph invoked with `durability="exit"` too (one checkpoint, at its end), to
show what is left when neither side checkpoints on the way. Reported; no goal.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _noop_backend import NoopBackend

N = 60
WARMUP = 5
ROUNDS = 3  # timed rounds per figure, alternating ours and the baseline; the best round counts
BASE_URL = "http://llm.test/v1"
COMPONENT = "web"
GOAL = "within 2x of a bare graph (ratio <= 2)"

# The path a healed run takes through the heal graph: (node, next hop).
PATH = [
    ("triage", "recall"),
    ("recall", "route"),
    ("route", "diagnose"),
    ("diagnose", "plan"),
    ("plan", "guard"),
    ("guard", "execute"),
    ("execute", "validate"),
    ("validate", "learn"),
    ("learn", "__end__"),
]

_ESTATE = f"""name: bench
components:
  {COMPONENT}:
    command: [python3, -m, http.server, "1", --bind, 127.0.0.1]
    probes:
      - tcp: 127.0.0.1:1
    depends_on: []
"""
_POLICY = "rate_limits: []\n"


# ------------------------------------------------------------------ the instant fake LLM


def _completion(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message, "logprobs": None}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


_DIAGNOSIS = {
    "hypothesis": f"{COMPONENT} dies again soon after each start; a restart brings it back for now",
    "root_component": COMPONENT,
    "facts": ["process_down", "crash_loop"],
}
_PLAN = {
    "hypothesis": f"{COMPONENT} crashed; restart it",
    "steps": [{"action": "restart", "component": COMPONENT, "args": {}, "why": "bring it back"}],
    "rollback": [],
    "checks": [{"component": COMPONENT, "kind": "probes", "settle_s": 0, "deadline_s": 1}],
}


def _answer(request: Any) -> Any:
    """DiagnosisReply to the tool loop (its request carries tools), PlanReply to the plan call."""
    import httpx

    reply = _DIAGNOSIS if b'"tools"' in request.content else _PLAN
    return httpx.Response(200, json=_completion({"role": "assistant", "content": json.dumps(reply)}))


def _instant_context(**kwargs: Any) -> Any:
    """A `HealContext` whose LLM answers at once, in-process, while `instant` is true."""
    from openai.types.chat import ChatCompletion

    from agentheal.graphs.context import HealContext
    from agentheal.llm import LLM

    class InstantLLM(LLM):
        def _complete(self, request: dict[str, Any]) -> Any:
            InstantContext.calls += 1
            json.dumps(request)  # what the client would send; the reply is read as it would be
            reply = _DIAGNOSIS if "tools" in request else _PLAN
            message = {"role": "assistant", "content": json.dumps(reply)}
            return ChatCompletion.model_validate(_completion(message))

    class InstantContext(HealContext):
        instant = True
        calls = 0

        def _new_llm(self, on_call: Any, on_note: Any = None) -> Any:
            if self.instant:
                return InstantLLM(self.settings, on_call=on_call, on_note=on_note, http_client=self._http)
            return super()._new_llm(on_call, on_note)

    return InstantContext(**kwargs)


@contextmanager
def _fake_llm() -> Iterator[Any]:
    import respx

    with respx.mock(base_url=BASE_URL, assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post("/chat/completions").mock(side_effect=_answer)
        yield route


# ------------------------------------------------------------------ ours


def _word(i: int) -> str:
    """`i` spelled in the letters g-z: gap texts that differ after numbers and hex ids are folded."""
    letters = "ghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, len(letters))
        out = letters[r] + out
        if i == 0:
            return out


def _new_texts(numbers: Iterator[int], n: int) -> list[str]:
    """Gap texts no earlier run had: new fingerprints, so neither memory nor a persona has a plan."""
    return [f"web keeps crashing after each start, report {_word(next(numbers))}" for _ in range(n)]


def _settings(home: Path) -> Any:
    """Settings with their home in `home`, the fake LLM, and nothing from the environment or a toml file."""
    from agentheal.config import Settings

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AGENTHEAL_")}
    os.environ["AGENTHEAL_CONFIG"] = str(home / "no-agentheal.toml")
    try:
        return Settings(home=home / "home", llm_base_url=BASE_URL, llm_api_key="bench-key", llm_max_retries=0)
    finally:
        os.environ.pop("AGENTHEAL_CONFIG")
        os.environ.update(saved)


def _healer(home: Path, estate: bool = True) -> Any:
    """A `Healer` on a real context in `home`, its estate backend replaced by the no-op one."""
    from agentheal.graphs.context import HealContext
    from agentheal.graphs.runner import Healer

    home.mkdir(parents=True)
    if not estate:  # only its checkpointer is used: nothing else of the context is ever opened
        return Healer(HealContext(settings=_settings(home)))
    estate_file = home / "estate" / "estate.yaml"
    estate_file.parent.mkdir()
    estate_file.write_text(_ESTATE)
    policy_file = home / "policy.yaml"
    policy_file.write_text(_POLICY)
    ctx = _instant_context(settings=_settings(home), estate_path=estate_file, policy_path=policy_file)
    assert ctx.estate is not None
    ctx.__dict__["backend"] = NoopBackend(ctx.estate)
    return Healer(ctx)


def _heal(healer: Any, text: str, source: str) -> None:
    from agentheal.models import Gap

    result = healer.heal(Gap(text=text, component=COMPONENT))
    if result["status"] != "healed" or result["source"] != source:
        raise RuntimeError(f"expected a run healed from {source!r}, got: {json.dumps(result)[:600]}")


def _time_ours(healer: Any, texts: list[str], source: str) -> float:
    started = time.perf_counter()
    for text in texts:
        _heal(healer, text, source)
    return time.perf_counter() - started


# ------------------------------------------------------------------ the bare graph


def _bare_graph(checkpointer: Any) -> Any:
    """The heal graph's shape with nodes that only name their next hop."""
    from agentheal.graphs.heal import shape_heal_graph

    hops = dict(PATH)
    graph: Any = shape_heal_graph(lambda name: _returns({"next": hops.get(name, "__end__")}))
    return graph.compile(checkpointer=checkpointer, name="bare")


def _returns(update: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def node(state: dict[str, Any]) -> dict[str, Any]:
        return update

    return node


def _time_bare(graph: Any, runs: int, durability: str = "sync") -> float:
    from agentheal.models import Gap

    gap = Gap(text="web keeps crashing after each start", component=COMPONENT).model_dump(mode="json")
    started = time.perf_counter()
    for _ in range(runs):
        run_id = uuid.uuid4().hex
        state = {"run_id": run_id, "gap": gap, "attempts": 0, "failed_plans": [], "actions": []}
        config = {"configurable": {"thread_id": run_id}, "recursion_limit": 60}
        final = graph.invoke(state, config, durability=durability)
        assert final["next"] == "__end__", final
    return time.perf_counter() - started


# ------------------------------------------------------------------ the figures


def _row(name: str, ours_s: float, bare_s: float, runs: int, goal: str | None = GOAL) -> dict[str, Any]:
    ours_rps, bare_rps = runs / ours_s, runs / bare_s
    ratio = bare_rps / ours_rps
    return {
        "name": name,
        "value": round(ours_rps, 1),
        "unit": "runs/s",
        "baseline": round(bare_rps, 1),
        "ratio": round(ratio, 2),
        "goal": goal or "no goal (the goal is on heal_runs_per_s)",
        "met": ratio <= 2 if goal else True,
    }


def run(runs: int = N) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="agentheal-bench-heal-") as tmp:
        root = Path(tmp)
        # The baseline's checkpointer is made by `Healer` itself, on its own file, so it is the
        # same SqliteSaver with the same connection settings as ours, whatever those become.
        with _healer(root / "bare", estate=False) as bare_healer, _healer(root / "ours") as healer:
            bare = _bare_graph(bare_healer.graph.checkpointer)
            numbers = itertools.count()
            with _fake_llm() as llm:
                # Warm-up: chromadb, the embedding model, the openai client, the prompts, both graphs.
                for instant in (False, True):
                    healer.ctx.instant = instant
                    for text in _new_texts(numbers, WARMUP):
                        _heal(healer, text, "llm")
                _time_bare(bare, WARMUP)
                # Heal one gap until memory holds a playbook for it; each replay adds to its history.
                replay = "web crashed and was restarted"
                for source in ("llm", "memory", "playbook", "playbook"):
                    _heal(healer, replay, source)

                # Other work on this host comes and goes; interleaved rounds, best of each, keep
                # both sides measured in its quiet moments.
                bare_s, exit_s, instant_s, http_s, replay_s = [], [], [], [], []
                for _ in range(ROUNDS):
                    bare_s.append(_time_bare(bare, runs))
                    exit_s.append(_time_bare(bare, runs, durability="exit"))
                    healer.ctx.instant = True
                    calls = healer.ctx.calls
                    instant_s.append(_time_ours(healer, _new_texts(numbers, runs), "llm"))
                    assert healer.ctx.calls - calls == 2 * runs, "each LLM-path run makes two LLM calls"
                    healer.ctx.instant = False
                    calls = llm.call_count
                    http_s.append(_time_ours(healer, _new_texts(numbers, runs), "llm"))
                    assert llm.call_count - calls == 2 * runs, "each LLM-path run makes two LLM calls"
                    calls = llm.call_count
                    replay_s.append(_time_ours(healer, [replay] * runs, "playbook"))
                    assert llm.call_count == calls, "a playbook replay makes no LLM call"
        return [
            _row("heal_runs_per_s", min(instant_s), min(bare_s), runs),
            _row("heal_http_runs_per_s", min(http_s), min(bare_s), runs, goal=None),
            _row("heal_replay_runs_per_s", min(replay_s), min(bare_s), runs),
            _row("heal_vs_exit_runs_per_s", min(instant_s), min(exit_s), runs, goal=None),
        ]


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else N):
        print(row)
