"""`agentheal --help` wall time, as a ratio to `python -c pass` measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

AGENTHEAL = Path(sys.executable).parent / "agentheal"


def _median_wall(cmd: list[str], repeat: int = 9) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> list[dict[str, Any]]:
    _median_wall([str(AGENTHEAL), "--help"], repeat=2)  # warm the file cache
    baseline = _median_wall([sys.executable, "-c", "pass"])
    value = _median_wall([str(AGENTHEAL), "--help"])
    return [
        {
            "name": "help_wall_time",
            "value": round(value * 1000, 1),
            "unit": "ms",
            "baseline": round(baseline * 1000, 1),
            "ratio": round(value / baseline, 2),
            "goal": "under 500 ms (baseline: python -c pass)",
            "met": value < 0.5,
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
