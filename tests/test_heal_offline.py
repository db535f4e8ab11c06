"""The healing spine end to end, offline: a real process killed, healed, remembered, replayed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.cli import main

pytestmark = pytest.mark.slow


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(list(args))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, out


def _probe_url(estate_file: Path) -> str:
    import yaml

    data = yaml.safe_load(estate_file.read_text())
    return str(data["components"]["web"]["probes"][0]["http"])


def _web_answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_web(capsys: pytest.CaptureFixture[str], estate_file: Path, url: str) -> None:
    _code, status = _cli(capsys, "estate", "status", str(estate_file), "--json")
    pid = next(c["pid"] for c in status["components"] if c["name"] == "web")
    assert pid, status
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _web_answers(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _web_answers(url)


@pytest.fixture
def running_estate(
    capsys: pytest.CaptureFixture[str],
    tiny_estate_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    monkeypatch.setenv("AGENTHEAL_HOME", str(tmp_path / "home"))
    code, _ = _cli(capsys, "estate", "up", str(tiny_estate_file), "--json")
    assert code == 0
    yield tiny_estate_file
    main(["estate", "down", str(tiny_estate_file)])


def test_killed_process_is_healed_then_remembered_then_replayed(
    capsys: pytest.CaptureFixture[str], running_estate: Path
) -> None:
    url = _probe_url(running_estate)
    assert _web_answers(url)
    sources = []
    for _ in range(3):
        _kill_web(capsys, running_estate, url)
        code, result = _cli(
            capsys, "heal", "--gap", "web is down: connection refused", "--component", "web",
            "--estate", str(running_estate), "--json",
        )  # fmt: skip
        assert code == 0, result
        assert result["status"] == "healed"
        assert result["validation"]["ok"] is True
        assert result["llm"]["calls"] == 0
        assert [a["action"] for a in result["actions"]] == ["restart"]
        assert result["persona"] == "availability"
        assert _web_answers(url)
        sources.append(result["source"])
    assert sources == ["persona", "memory", "playbook"]

    code, runs = _cli(capsys, "runs", "--json")
    assert code == 0 and [r["status"] for r in runs] == ["healed"] * 3
    code, story = _cli(capsys, "runs", "show", runs[0]["run_id"][:8])
    assert code == 0
    for word in ("triage", "recall", "route", "diagnose", "plan", "guard", "execute", "validate", "learn"):
        assert word in story


def test_dry_run_changes_nothing(capsys: pytest.CaptureFixture[str], running_estate: Path) -> None:
    url = _probe_url(running_estate)
    _kill_web(capsys, running_estate, url)
    code, result = _cli(
        capsys, "heal", "--gap", "web is down", "--component", "web",
        "--estate", str(running_estate), "--dry-run", "--json",
    )  # fmt: skip
    assert result["status"] == "dry_run" and code == 0
    assert [a["outcome"] for a in result["actions"]] == ["dry_run"]
    assert not _web_answers(url)


def test_approval_gated_run_survives_its_process_and_finishes_after_approve(
    capsys: pytest.CaptureFixture[str], running_estate: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts need a person here\n")
    url = _probe_url(running_estate)
    _kill_web(capsys, running_estate, url)
    env = {**os.environ, "AGENTHEAL_POLICY_FILE": str(policy)}
    args = [sys.executable, "-m", "agentheal", "heal", "--gap", "web down", "--component", "web"]
    proc = subprocess.run(
        [*args, "--estate", str(running_estate), "--json", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert result["status"] == "awaiting_approval"
    assert result["actions"] == []
    assert not _web_answers(url)

    # a second report of the same gap joins the open run instead of starting another
    again = subprocess.run(
        [*args, "--estate", str(running_estate), "--json", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    joined = json.loads(again.stdout)
    assert joined["run_id"] == result["run_id"] and joined["joined"] is True
    assert joined["status"] == "awaiting_approval"

    # the process that started the run is gone; a new one approves and the run finishes
    approve = subprocess.run(
        [sys.executable, "-m", "agentheal", "approve", result["run_id"][:10], "--by", "tester", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    done = json.loads(approve.stdout)
    assert approve.returncode == 0, approve.stderr
    assert done["status"] == "healed" and done["run_id"] == result["run_id"]
    assert _web_answers(url)
    code, _again = _cli(capsys, "approve", result["run_id"][:10])
    assert code == 2  # no longer awaiting approval


def test_rejected_run_runs_nothing(
    capsys: pytest.CaptureFixture[str], running_estate: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_auto_risk: none\n")
    url = _probe_url(running_estate)
    _kill_web(capsys, running_estate, url)
    code, result = _cli(
        capsys, "heal", "--gap", "web down", "--component", "web", "--estate", str(running_estate),
        "--policy", str(policy), "--json",
    )  # fmt: skip
    assert result["status"] == "awaiting_approval" and code == 1
    code, done = _cli(capsys, "reject", result["run_id"], "--note", "not now", "--json")
    assert code == 1 and done["status"] == "rejected"
    assert not _web_answers(url)
