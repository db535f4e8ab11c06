"""Logs: tailing across rotation and truncation, drain3 templates, new error templates and rate spikes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.detect import DetectConfig, Detector, LogMiner, LogReadError, LogTail

LOG = """\
2026-03-01T10:00:00 INFO request served path=/a in 12 ms
2026-03-01T10:00:01 INFO request served path=/b in 15 ms
2026-03-01T10:00:02 ERROR database timeout after 3000 ms on 10.0.0.7:5432
2026-03-01T10:00:03 INFO request served path=/c in 11 ms
2026-03-01T10:00:04 ERROR database timeout after 2000 ms on 10.0.0.8:5432
2026-03-01T10:00:05 WARN cache miss ratio 0.4
2026-03-01T10:00:06 ERROR disk full writing /var/data/segment-17
"""


def test_tail_follows_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\npart")
    tail = LogTail(log)
    assert tail.read() == [(1, "one"), (2, "two")]  # "part" has no newline yet
    with log.open("a") as f:
        f.write("ial\nthree\n")
    assert tail.read() == [(3, "partial"), (4, "three")]
    # rotation by rename: the old file's last lines first, then the new file from line 1
    with log.open("a") as f:
        f.write("four\n")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("new one\n")
    assert tail.read() == [(5, "four"), (1, "new one")]
    # copytruncate: the file shrinks, reading restarts at its beginning
    log.write_text("")
    log.write_text("after truncate\n")
    assert tail.read() == [(1, "after truncate")]
    tail.close()


def test_new_error_templates_become_gaps_with_line_numbers(tmp_path: Path, settings: Settings) -> None:
    log = tmp_path / "app.log"
    log.write_text(LOG)
    detector = Detector(settings, DetectConfig(), logs=[log])
    tracked = detector.once()
    by_text = {t.gap.text: t for t in tracked}
    assert set(by_text) == {
        f"new error template in {log}: ERROR database timeout after <*> ms on <IP>",
        f"new error template in {log}: ERROR disk full writing /var/data/segment-<*>",
    }, list(by_text)
    db = by_text[f"new error template in {log}: ERROR database timeout after <*> ms on <IP>"]
    assert db.gap.evidence[0].startswith(f"{log} lines 3, 5: template")
    assert f"{log} line 3: 2026-03-01T10:00:02 ERROR database timeout after 3000 ms on 10.0.0.7:5432" in (
        db.gap.evidence
    )
    assert db.details["lines"] == [3, 5] and db.gap.source == "logs" and db.gap.component is None


def test_detect_log_once_json_names_line_numbers(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.log"
    log.write_text(LOG)
    assert main(["detect", "--log", str(log), "--once", "--json"]) == 0
    gaps = json.loads(capsys.readouterr().out)
    assert len(gaps) == 2
    for gap in gaps:
        assert set(gap) >= {"kind", "component", "severity", "fingerprint", "text", "evidence", "root"}
        assert gap["root"] is None and gap["kind"] == "incident"
    disk = next(g for g in gaps if "disk full" in g["text"])
    assert any(e.startswith(f"{log} line 7: ") for e in disk["evidence"])
    # a one-shot writes no state: the same file reports the same gaps again
    assert main(["detect", "--log", str(log), "--once", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [(g["fingerprint"], g["evidence"]) for g in again] == [
        (g["fingerprint"], g["evidence"]) for g in gaps
    ]


def test_known_templates_persist_and_spikes_are_flagged(tmp_path: Path) -> None:
    config = DetectConfig(log_spike_window_s=60, log_spike_factor=3, log_spike_min=5)
    state = tmp_path / "state"
    miner = LogMiner("app.log", "web", config, state)
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    lines, n = [], 0
    for minute in range(10):  # a baseline: one timeout a minute
        n += 1
        at = (start + timedelta(minutes=minute)).isoformat()
        lines.append((n, f"{at} ERROR upstream timeout after {minute + 1} s"))
    [first] = miner.feed(lines)
    assert first.data["problem"] == "new_error_template"
    miner.save({"offset": 0, "line_no": n, "inode": None})

    again = LogMiner("app.log", "web", config, state)  # a restart: drain3 state and known templates load
    burst = []
    for second in range(8):
        n += 1
        at = (start + timedelta(minutes=11, seconds=second)).isoformat()
        burst.append((n, f"{at} ERROR upstream timeout after {second} s"))
    [spike] = again.feed(burst)
    assert spike.data["problem"] == "error_spike"
    assert spike.data["fingerprint"] == first.data["fingerprint"]  # the same template, the same gap
    assert any("8 lines in the busiest 60 s" in e for e in spike.data["evidence"])
    assert 0.5 <= spike.data["details"]["score"] <= 1
    assert spike.data["details"]["lines"] == list(range(11, 19))
    # the same rate again is no spike: 1 line in a fresh minute
    calm = (start + timedelta(minutes=13)).isoformat()
    assert again.feed([(n + 1, f"{calm} ERROR upstream timeout after 1 s")]) == []


def test_unreadable_logs_are_reported_and_skipped(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.log"
    good.write_text("2026-03-01T10:00:00 FATAL out of memory in worker 3\n")
    folder = tmp_path / "a-folder.log"
    folder.mkdir()
    missing = tmp_path / "missing.log"
    code = main(
        ["detect", "--log", str(missing), "--log", str(folder), "--log", str(good), "--once", "--json"]
    )
    out = capsys.readouterr()
    assert code == 0
    assert [g["text"] for g in json.loads(out.out)] == [
        f"new error template in {good}: FATAL out of memory in worker <*>"
    ]
    err = " ".join(out.err.split())  # the console wraps long lines
    assert f"warning: log skipped: {missing}: cannot read" in err
    assert f"warning: log skipped: {folder}: not a regular file" in err
    with pytest.raises(LogReadError):
        LogTail(missing).read()


def test_watch_mode_learns_the_backlog_and_reports_only_new_errors(
    tmp_path: Path, settings: Settings
) -> None:
    log = tmp_path / "app.log"
    log.write_text(LOG)
    detector = Detector(settings, DetectConfig(), logs=[log], persist=True)
    detector.round()
    assert detector.gaps() == []  # the backlog is history
    with log.open("a") as f:
        f.write("2026-03-01T10:01:00 ERROR certificate expired for api.example\n")
    detector.round()
    [gap] = detector.gaps()
    assert gap.text.endswith("ERROR certificate expired for api.example")
    assert any(e.startswith(f"{log} line 8: ") for e in gap.evidence)
    detector.close()
    # a restart continues at the saved place: nothing old is reported again
    again = Detector(settings, DetectConfig(), logs=[log], persist=True)
    again.round()
    assert again.gaps() == []
    again.close()
