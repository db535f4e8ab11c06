"""One worker process of the workers bench: a real heal pool whose estate backend sleeps 50 ms per
action (standing for real work) and otherwise answers at once.

    python _work_worker.py HOME ESTATE POLICY MAX_HEALS [GAPS COMPONENTS]

With AGENTHEAL_DATABASE_URL set it claims from the shared work table until it reads `stop` on its
standard input. Without it (SQLite), it reads `go`, submits GAPS gaps over COMPONENTS components
to its own pool, waits for every heal and prints {"seconds", "statuses"} as JSON.
Either way it prints `ready` once its pool is warm.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _noop_backend import NoopBackend

ACTION_S = 0.05


class SleepBackend(NoopBackend):
    """Every action takes 50 ms, as an action on a real estate takes time doing nothing on this CPU."""

    def execute(self, step: Any, dry_run: bool = False) -> Any:
        time.sleep(ACTION_S)
        return super().execute(step, dry_run)


def gap_text(i: int) -> str:
    word = "".join(chr(ord("a") + int(d)) for d in str(i))
    return f"the service stopped answering, its process is gone ({word})"


def main(argv: list[str]) -> int:
    from agentheal.config import Settings
    from agentheal.graphs.context import HealContext
    from agentheal.models import Gap
    from agentheal.services.heal import HealPool, heal_now

    home, estate, policy, max_heals = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    url = os.environ.get("AGENTHEAL_DATABASE_URL")
    settings = Settings(home=home, database_url=url)
    ctx = HealContext(settings=settings, estate_path=estate, policy_path=policy)
    assert ctx.estate is not None
    ctx.__dict__["backend"] = SleepBackend(ctx.estate, fact_names=("process_down",))
    pool = HealPool(ctx, max_heals=max_heals)
    pool.warm()
    # one heal first, untimed: the embedding model, persona vectors and graph load at their first use
    # (its own text: a fingerprint folds digits, so the name's digits are letters here)
    name = os.environ.get("AGENTHEAL_WORKER_NAME", "").translate(str.maketrans("0123456789", "abcdefghij"))
    heal_now(ctx, Gap(text=f"warming up {name}", component="c0"), actor="bench", door="bench")
    # and each of the pool's threads opens its Healer (a compiled graph, a checkpointer) before the
    # clock starts: a barrier keeps each warming job on a thread of its own
    barrier = threading.Barrier(max_heals)

    def open_healer() -> None:
        pool._healer()
        barrier.wait(timeout=120)

    for warming in [pool._executor.submit(open_healer) for _ in range(max_heals)]:
        warming.result()
    print("ready", flush=True)
    if url is not None:
        cpu = os.times()
        sys.stdin.readline()  # stop
        pool.close()
        if os.environ.get("BENCH_CPU"):
            now = os.times()
            print(f"cpu {now.user - cpu.user + now.system - cpu.system:.2f} s", file=sys.stderr)
        return 0
    gaps, components = int(argv[4]), int(argv[5])
    sys.stdin.readline()  # go
    cpu = os.times()
    started = time.perf_counter()
    futures = [
        pool.submit(Gap(text=gap_text(i), component=f"c{i % components}"), actor="bench", door="bench")[1]
        for i in range(gaps)
    ]
    statuses = Counter(str(f.result().get("status")) for f in futures)
    seconds = time.perf_counter() - started
    pool.close()
    if os.environ.get("BENCH_CPU"):
        now = os.times()
        print(f"cpu {now.user - cpu.user + now.system - cpu.system:.2f} s", file=sys.stderr)
    print(json.dumps({"seconds": seconds, "statuses": statuses}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
