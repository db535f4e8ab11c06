"""`agentheal serve` measured from a second process: gaps accepted per second, a run's read under that
load, and memory search with 100,000 records.

The server is the real app (`create_app`, uvicorn, bearer tokens, the rate limiter and body limit,
the heal pool, the event store, chromadb memory) started by this file in its own process
(`--serve`), with two things swapped as `bench_heal` swaps them: the LLM answers at once in-process
(only `LLM._complete`, the exchange with the endpoint, is replaced) and the estate backend is the
no-op one (`_noop_backend`). The estate has 16 components, so the pool's one-heal-per-component rule
lets `max_heals` (4) heals run while gaps come in. Memory holds 100,000 records (`bench_recall`'s
fill) before the server starts.

Figures (this process is the client; keep-alive connections, one per thread):

- `serve_gaps_per_s`: `POST /gaps` answered 202 per second, 8 client threads for 6 s, each gap new
  (no playbook: the heals that follow take the LLM path). Baseline: a bare FastAPI app on uvicorn
  that validates the same body and answers 202, under the same load. Goal: 200/s on two cores.
- `serve_heals_per_s`: those gaps healed per second, from the first submission to the last run
  finished (no goal: the pool's throughput, bounded by `heal_runs_per_s` times the cores).
- `serve_run_get_p95`: p95 of `GET /runs/{id}` (the run with its story) for runs just submitted,
  from a ninth thread during that load. Baseline: a GET of the bare app under its load. Goal < 50 ms.
- `serve_memory_search_p95`: p95 of `GET /memory/search?k=5` over 200 texts worded unlike the
  stored ones, with 100,000 records, no other load. Baseline: `agentheal memory search` from the
  CLI, one process per call, on the same memory (what a call cost before the server). Goal < 20 ms.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
COMPONENTS = [f"c{i:02d}" for i in range(16)]
THREADS = 8
LOAD_S = 4.0
HEAL_WINDOW_S = 8.0
WARMUP_GAPS = 40
SEARCHES = 200
CLI_CALLS = 3
GOAL_GAPS = 200.0
GOAL_GET_MS = 50.0
GOAL_SEARCH_MS = 20.0
_COMPONENT = re.compile(r"\bc\d\d\b")


def _estate_text() -> str:
    lines = ["name: bench-serve", "components:"]
    for c in COMPONENTS:
        lines += [f"  {c}:", "    command: [python3, -m, http.server, '1', --bind, 127.0.0.1]",
                  "    probes:", "      - tcp: 127.0.0.1:1", "    depends_on: []"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


# ------------------------------------------------------------------ the server side (--serve, --bare)


def _instant(ctx: Any) -> None:
    """Make the context's LLM answer at once, naming the component the gap is about."""
    from bench_heal import _DIAGNOSIS, _PLAN, _completion
    from openai.types.chat import ChatCompletion

    from agentheal.llm import LLM

    class InstantLLM(LLM):
        def _complete(self, request: dict[str, Any]) -> Any:
            text = json.dumps(request)
            found = _COMPONENT.search(text)
            component = found.group(0) if found else COMPONENTS[0]
            reply = _DIAGNOSIS if "tools" in request else _PLAN
            reply = json.loads(
                json.dumps(reply).replace('"web', f'"{component}').replace("web ", f"{component} ")
            )
            return ChatCompletion.model_validate(
                _completion({"role": "assistant", "content": json.dumps(reply)})
            )

    def new_llm(on_call: Any, on_note: Any = None) -> Any:
        return InstantLLM(ctx.settings, on_call=on_call, on_note=on_note, http_client=ctx._http)

    ctx._new_llm = new_llm


def serve(home: Path, estate: Path, port: int) -> None:
    """The real app with the instant LLM and the no-op backend, on uvicorn."""
    import uvicorn
    from _noop_backend import NoopBackend
    from bench_heal import _settings

    from agentheal.api.app import create_app

    policy = home / "policy.yaml"
    policy.write_text("rate_limits: []\n")
    settings = _settings(home)  # home/home, the fake LLM's URL, nothing from the environment
    app = create_app(settings, estate_path=estate, policy_path=policy)
    ctx = app.state.agentheal.ctx
    ctx.__dict__["backend"] = NoopBackend(ctx.estate)
    _instant(ctx)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class BareGap(BaseModel):
    """The bare app's gap body (module level: FastAPI resolves the annotation by name)."""

    text: str
    component: str | None = None


def serve_bare(port: int) -> None:
    """The floor of the HTTP stack: FastAPI on uvicorn, the same body validated, nothing stored."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    runs: dict[str, dict[str, Any]] = {}

    @app.post("/gaps", status_code=202)
    def gaps(gap: BareGap) -> dict[str, Any]:
        run_id = uuid.uuid4().hex
        runs[run_id] = {"run_id": run_id, "status": "running", "gap": gap.model_dump()}
        return {"run_id": run_id, "status": "running"}

    @app.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        return runs.get(run_id, {"run_id": run_id, "status": "unknown"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ------------------------------------------------------------------ the client side


class Server:
    """A server process started by this file; stopped with SIGTERM (its pool finishes first)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), *args, str(self.port)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer in 180 s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _load(
    url: str, headers: dict[str, str], gaps: Callable[[], dict[str, str]], rate: float | None = None
) -> tuple[int, float, list[float], list[str]]:
    """THREADS threads POST gaps for LOAD_S seconds (as fast as answered, or `rate` a second in all)
    while one more thread reads the runs just submitted.

    Returns: gaps accepted (202), seconds the submitting took, GET latencies in ms, the run ids.
    """
    import httpx

    accepted: list[str] = []
    refused: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS + 2)
    stop_at = [0.0]
    gap_every = THREADS / rate if rate else 0.0

    def submit() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
            start.wait()
            due = time.monotonic() + random.random() * gap_every
            while time.monotonic() < stop_at[0]:
                if gap_every:
                    time.sleep(max(0.0, due - time.monotonic()))
                    due += gap_every
                answer = client.post("/gaps", json=gaps())
                with lock:
                    if answer.status_code == 202:
                        accepted.append(answer.json()["run_id"])
                    else:
                        refused.append(f"POST /gaps: {answer.status_code} {answer.text[:200]}")

    def read() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
            start.wait()
            while time.monotonic() < stop_at[0]:
                with lock:
                    recent = accepted[-50:]
                if not recent:
                    time.sleep(0.005)
                    continue
                run_id = random.choice(recent)
                began = time.perf_counter()
                answer = client.get(f"/runs/{run_id}")
                latencies.append((time.perf_counter() - began) * 1000)
                if answer.status_code != 200:
                    with lock:
                        refused.append(f"GET /runs/{run_id}: {answer.status_code} {answer.text[:200]}")
                time.sleep(0.005)

    threads = [threading.Thread(target=submit) for _ in range(THREADS)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + LOAD_S + 0.05
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    if refused:
        raise RuntimeError(f"{len(refused)} request(s) refused under load, e.g. {refused[0]}")
    return len(accepted), took, latencies, accepted


def _quiet_gets(url: str, headers: dict[str, str], run_ids: list[str]) -> list[float]:
    """GET /runs/{id} of finished runs one after another, nothing else running: the route's own cost."""
    import httpx

    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
        for run_id in run_ids * 3:
            began = time.perf_counter()
            client.get(f"/runs/{run_id}").raise_for_status()
            out.append((time.perf_counter() - began) * 1000)
    return out


def _metric(client: Any, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", client.get("/metrics").text, re.M)
    if found is None:
        raise RuntimeError(f"/metrics has no {series}")
    return float(found.group(1))


def _healed_per_s(url: str, headers: dict[str, str], window_s: float) -> float:
    """Runs the pool healed per second over `window_s`, read from /metrics (it has a backlog by now)."""
    import httpx

    series = 'agentheal_runs{status="healed"}'
    with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
        if _metric(client, 'agentheal_heal_pool_jobs{state="queued"}') < 1:
            raise RuntimeError("no backlog to measure the pool's heals on")
        before, began = _metric(client, series), time.perf_counter()
        time.sleep(window_s)
        return (_metric(client, series) - before) / (time.perf_counter() - began)


def _drain(url: str, headers: dict[str, str], run_ids: list[str], timeout_s: float = 120) -> None:
    """Wait until the pool is idle; every run given must have healed."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
        while _metric(client, 'agentheal_heal_pool_jobs{state="running"}') + _metric(
            client, 'agentheal_heal_pool_jobs{state="queued"}'
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the heal pool did not drain in {timeout_s:g} s")
            time.sleep(0.2)
        for run_id in run_ids:
            status = client.get(f"/runs/{run_id}").json()["status"]
            if status != "healed":
                raise RuntimeError(f"run {run_id} ended {status}, not healed")


def _gaps() -> Callable[[], dict[str, str]]:
    """Gap bodies no earlier run had (new fingerprints: the LLM path), spread over the components."""
    from bench_heal import _word

    count = iter(range(10**9))
    lock = threading.Lock()

    def gap() -> dict[str, str]:
        with lock:
            n = next(count)
        component = COMPONENTS[n % len(COMPONENTS)]
        return {
            "text": f"{component} keeps crashing after each start, report {_word(n)}",
            "component": component,
        }

    return gap


def _search(url: str, headers: dict[str, str], queries: list[str]) -> list[float]:
    import httpx

    out = []
    with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
        for q in queries[:5]:  # the index and the model are loaded at start; the first calls warm caches
            client.get("/memory/search", params={"q": q, "k": 5}).raise_for_status()
        for q in queries:
            began = time.perf_counter()
            answer = client.get("/memory/search", params={"q": q, "k": 5})
            out.append((time.perf_counter() - began) * 1000)
            if answer.status_code != 200 or len(answer.json()) != 5:
                raise RuntimeError(f"GET /memory/search: {answer.status_code} {answer.text[:300]}")
    return out


def _cli_search(env: dict[str, str], queries: list[str]) -> list[float]:
    out = []
    for q in queries[:CLI_CALLS]:
        began = time.perf_counter()
        argv = [sys.executable, "-m", "agentheal", "memory", "search", q, "--k", "5", "--json"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        out.append((time.perf_counter() - began) * 1000)
        if done.returncode != 0 or len(json.loads(done.stdout)) != 5:
            raise RuntimeError(f"agentheal memory search: {done.returncode} {done.stderr[-500:]}")
    return out


def _fill_memory(home: Path) -> list[str]:
    """100,000 records in `home`'s memory (bench_recall's fill); returns 200 query texts."""
    import numpy as np
    from bench_recall import COMPONENTS as RECALL_COMPONENTS
    from bench_recall import QUERY_TEMPLATES, _fill

    from agentheal.config import Settings
    from agentheal.memory import Memory

    rng = np.random.default_rng(11)
    memory = Memory(Settings(home=home, embed_base_url=None))
    _fill(memory, rng)
    memory.close()
    queries = [t.format(c=c) for t in QUERY_TEMPLATES for c in RECALL_COMPONENTS]
    return [queries[i] for i in rng.choice(len(queries), SEARCHES, replace=False)]


def _env(home: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**keep, "AGENTHEAL_HOME": str(home), "AGENTHEAL_CONFIG": str(home / "none.toml"),
            "PYTHONPATH": path, **extra}  # fmt: skip


def run() -> list[dict[str, Any]]:
    from agentheal.api.tokens import TokenStore

    sys.path.insert(0, str(HERE))
    random.seed(5)
    with tempfile.TemporaryDirectory(prefix="agentheal-bench-serve-") as tmp:
        root = Path(tmp)
        home = root / "home"  # bench_heal._settings puts the server's home at root/home
        queries = _fill_memory(home)
        cli_ms = _cli_search(_env(home), queries)  # before the server: one process on the folder at a time
        token = TokenStore(home).add("bench", "operator")
        headers = {"Authorization": f"Bearer {token}"}
        estate = root / "estate.yaml"
        estate.write_text(_estate_text())
        # The limiter runs, with a rate this one client never reaches.
        env = _env(home, AGENTHEAL_API_RATE_PER_S="100000", AGENTHEAL_API_RATE_BURST="100000")
        server = Server(["--serve", str(root), str(estate)], env, root / "serve.log")
        try:
            search_ms = _search(server.url, headers, queries)
            gaps = _gaps()
            _, _, _, warm = _load_once(server.url, headers, gaps)
            _drain(server.url, headers, warm)
            quiet_ms = _quiet_gets(server.url, headers, warm)
            accepted, took, saturated_ms, _ = _load(server.url, headers, gaps)
            _, _, get_ms, _ = _load(server.url, headers, gaps, rate=GOAL_GAPS)
            heals_s = _healed_per_s(server.url, headers, HEAL_WINDOW_S)
        finally:
            server.stop()  # running heals finish; the backlog is dropped with the process
        bare = Server(["--bare"], _env(root / "bare"), root / "bare.log")
        try:
            bare_accepted, bare_took, bare_saturated_ms, _ = _load(bare.url, {}, _gaps())
            _, _, bare_get_ms, _ = _load(bare.url, {}, _gaps(), rate=GOAL_GAPS)
        finally:
            bare.stop()
    gaps_s, bare_gaps_s = accepted / took, bare_accepted / bare_took
    p95_get, bare_p95_get = _p95(get_ms), _p95(bare_get_ms)
    p95_sat, bare_p95_sat = _p95(saturated_ms), _p95(bare_saturated_ms)
    p95_search, cli = _p95(search_ms), statistics.median(cli_ms)
    return [
        _row("serve_gaps_per_s", gaps_s, "gaps/s", bare_gaps_s, bare_gaps_s / gaps_s, gaps_s >= GOAL_GAPS,
             f">= {GOAL_GAPS:g}/s POST /gaps answered 202 from a second process, {THREADS} threads for "
             f"{LOAD_S:g} s (baseline: a bare FastAPI app validating the same body)"),
        _row("serve_run_get_p95", p95_get, "ms", bare_p95_get, p95_get / bare_p95_get, p95_get < GOAL_GET_MS,
             f"p95 GET /runs/{{id}} under {GOAL_GET_MS:g} ms while {GOAL_GAPS:g} gaps/s come in and the "
             f"pool heals ({len(get_ms)} reads; baseline: the bare app's GET under the same load; with no "
             f"load: p50 {statistics.median(quiet_ms):.1f} ms, p95 {_p95(quiet_ms):.1f} ms)"),
        _row("serve_run_get_p95_saturated", p95_sat, "ms", bare_p95_sat, p95_sat / bare_p95_sat, True,
             f"no goal: p95 GET /runs/{{id}} while POST /gaps runs flat out ({len(saturated_ms)} reads)"),
        _row("serve_heals_per_s", heals_s, "runs/s", None, None, True,
             f"no goal: runs the pool healed per second with a backlog, over {HEAL_WINDOW_S:g} s "
             "(max_heals 4, LLM path, 100,000 records in memory)"),
        _row("serve_memory_search_p95", p95_search, "ms", cli, p95_search / cli, p95_search < GOAL_SEARCH_MS,
             f"p95 GET /memory/search under {GOAL_SEARCH_MS:g} ms with 100,000 records (baseline: "
             f"`agentheal memory search` from the CLI, per call, median of {CLI_CALLS})"),
    ]  # fmt: skip


def _row(
    name: str, value: float, unit: str, baseline: float | None, ratio: float | None, met: bool, goal: str
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 2),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 2),
        "ratio": None if ratio is None else round(ratio, 4),
        "goal": goal,
        "met": met,
    }


def _load_once(
    url: str, headers: dict[str, str], gaps: Callable[[], dict[str, str]]
) -> tuple[int, float, list[float], list[str]]:
    """A warm-up: WARMUP_GAPS gaps, one after another (the graph, prompts and connections get made)."""
    import httpx

    ids = []
    with httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False) as client:
        for _ in range(WARMUP_GAPS):
            answer = client.post("/gaps", json=gaps())
            answer.raise_for_status()
            ids.append(answer.json()["run_id"])
    return len(ids), 0.0, [], ids


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--bare"]:
        serve_bare(int(sys.argv[2]))
    else:
        for row in run():
            print(row)
