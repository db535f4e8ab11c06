"""`make bench`: every figure measured in this run, as a ratio to a baseline measured in the same run.

Prints a table and writes bench-results.json at the repository root: a list of
{"name", "value", "unit", "baseline", "ratio", "goal", "met"}.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHES = [
    "bench_help",
    "bench_heal",
    "bench_recall",
    "bench_detect",
    "bench_kill",
    "bench_redact",
    "bench_serve",
    "bench_chat",
    "bench_mcp",
    "bench_status",
    "bench_workers",
]


def main(names: list[str]) -> int:
    if any(n.startswith("-") for n in names) or set(names) - set(BENCHES):
        unknown = [n for n in names if n not in BENCHES]
        print(
            "usage: bench/run.py [NAME...]  (make bench runs them all; bench-results.json is written)\n"
            + (f"unknown: {', '.join(unknown)}\n" if unknown != ["--help"] and unknown != ["-h"] else "")
            + f"names: {', '.join(BENCHES)}",
            file=sys.stderr,
        )
        return 0 if unknown in (["--help"], ["-h"]) else 2
    sys.path.insert(0, str(ROOT / "bench"))
    rows: list[dict[str, Any]] = []
    for name in names or BENCHES:
        started = time.perf_counter()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            rows.extend(importlib.import_module(name).run())
        except Exception as exc:  # one broken bench must not hide the others' figures
            traceback.print_exc()
            rows.append(
                {"name": name, "value": None, "unit": "", "baseline": None, "ratio": None,
                 "goal": f"runs ({type(exc).__name__}: {exc})", "met": False}
            )  # fmt: skip
        print(f"  {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    (ROOT / "bench-results.json").write_text(json.dumps(rows, indent=2) + "\n")
    width = max(len(r["name"]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>12}  {'baseline':>12}  {'ratio':>7}  goal")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.3g} {r['unit']}"
        base = "-" if r["baseline"] is None else f"{r['baseline']:.3g}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        mark = "met" if r["met"] else "NOT MET"
        print(f"{r['name']:<{width}}  {value:>12}  {base:>12}  {ratio:>7}  {r['goal']} [{mark}]")
    print(f"wrote {ROOT / 'bench-results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
