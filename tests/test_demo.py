"""`agentheal demo` as a newcomer runs it: in a subprocess, with no API key and nothing started by hand.

It must heal what it breaks, report what it measured, and leave no process of its estate behind,
also when it is interrupted with Ctrl-C in the middle of a fault.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentheal.eval.session import kill_under, processes_under
from test_detect_watch import Lines

pytestmark = pytest.mark.slow


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_") and k != "OPENAI_API_KEY"}
    env["AGENTHEAL_CONFIG"] = str(tmp_path / "no-agentheal.toml")
    env["TMPDIR"] = str(tmp_path)  # the demo's temporary folder (estate, home) is created here
    return env


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentheal", "demo", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _left_behind(tmp_path: Path) -> list[str]:
    found = [f"{p.pid} {' '.join(p.cmdline())}" for p in processes_under(tmp_path)]
    kill_under(tmp_path)  # a failing test must not leak the estate into the next one
    return found


def test_demo_heals_a_fault_reports_it_and_leaves_nothing_running(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--faults", "process_killed")
    try:
        out, _ = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 0, out
    assert "1/1 faults healed, 0 wrong action(s), 0 LLM call(s)" in out
    assert "[api " in out and "execute: restart(api): ok" in out  # the heal's story, node by node
    assert _left_behind(tmp_path) == []
    report = json.loads((tmp_path / "agentheal-demo-report.json").read_text(encoding="utf-8"))
    [row] = report["scenarios"]
    assert row["healed"] and row["detected"] and row["actions"] == ["restart(api)"]
    assert row["time_to_detect_s"] <= row["time_to_heal_s"]
    assert row["faults"][0]["persona"] == "availability"
    assert "agentheal demo report" in (tmp_path / "agentheal-demo-report.md").read_text(encoding="utf-8")
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("agentheal-demo-"))
    assert left == ["agentheal-demo-report.json", "agentheal-demo-report.md"]  # the temporary folder is gone


def test_ctrl_c_in_the_middle_of_the_demo_leaves_nothing_running(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--faults", "crash_loop,bad_release")
    try:
        lines = Lines(demo)
        lines.wait_for("injected crash_loop into inventory", timeout=60)
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
        assert code == 130, "".join(lines.seen)
        assert _left_behind(tmp_path) == []
    finally:
        demo.kill()
        kill_under(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("agentheal-demo-")]


def test_an_unknown_fault_is_refused(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--faults", "process_killed,melted")
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 2
    assert "--faults: unknown fault 'melted' (known: process_killed" in out
