"""Scored log anomalies: a steady routine error is noise, a rare burst is an incident; mutes silence."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.detect import DetectConfig, Detector
from agentheal.detect.mutes import MuteBook, MuteError, parse_duration
from agentheal.detect.scoring import combine, level_part, rarity_part
from agentheal.services.feedback import active_mutes, mute, unmute

ROUTINE = "ERROR cache: miss for key user:<*>, fetching from origin"
BURST = range(2400, 2412)


def _app_log(path: Path, lines: int = 3000) -> Path:
    """A service log of an hour: requests, a routine cache error every tenth line, one burst of a fatal."""
    rng = random.Random(11)
    out = []
    for i in range(1, lines + 1):
        stamp = f"2026-11-30 10:{i // 60 % 60:02d}:{i % 60:02d}"
        if i in BURST:
            out.append(f"{stamp} FATAL storage: controller reset on /dev/sd{'abc'[i % 3]}, I/O aborted")
        elif i % 10 == 0:
            out.append(
                f"{stamp} ERROR cache: miss for key user:{rng.randint(1, 99999)}, fetching from origin"
            )
        else:
            out.append(f"{stamp} INFO http: GET /item/{rng.randint(1, 9999)} 200 in {rng.randint(2, 40)} ms")
    path.write_text("\n".join(out) + "\n")
    return path


def _detect(log: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["detect", "--log", str(log), "--once", "--json"]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_a_burst_is_an_incident_a_steady_routine_error_is_not_and_mutes_silence(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _app_log(tmp_path / "app.log")
    [gap] = _detect(log, capsys)
    assert "FATAL storage: controller reset" in str(gap["text"]) and ROUTINE not in str(gap["text"])
    assert gap["lines"] == list(BURST)
    evidence = [str(e) for e in gap["evidence"]]  # type: ignore[attr-defined]
    assert evidence[0].startswith(f"{log} lines {', '.join(str(n) for n in BURST)}: template")
    assert any(e.startswith("anomaly score ") and "burst 1.00" in e for e in evidence)
    assert 0.5 <= float(gap["score"]) <= 1  # type: ignore[arg-type]
    # muting the template (a part of it is enough) stops its gap; unmuting brings it back
    assert main(["feedback", "mute", "controller reset on", "--for", "2h"]) == 0
    assert "muted template 'controller reset on' until" in capsys.readouterr().out
    assert _detect(log, capsys) == []
    assert main(["feedback", "unmute", "controller reset on"]) == 0
    capsys.readouterr()
    assert [g["fingerprint"] for g in _detect(log, capsys)] == [gap["fingerprint"]]
    # a fingerprint mutes one gap, whatever detected it
    assert main(["feedback", "mute", str(gap["fingerprint"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "fingerprint"
    assert _detect(log, capsys) == []
    assert main(["feedback", "unmute", "not-muted"]) == 2
    assert "'not-muted' is not muted" in capsys.readouterr().err


def test_a_routine_error_that_bursts_is_flagged_for_its_burst_only(
    tmp_path: Path, settings: Settings
) -> None:
    lines = []
    for i in range(1, 3001):
        stamp = f"2026-11-30 10:{i // 60 % 60:02d}:{i % 60:02d}"
        if i % 10 == 0 or 1500 <= i < 1540:
            lines.append(f"{stamp} ERROR cache: miss for key user:{i}, fetching from origin")
        else:
            lines.append(f"{stamp} INFO http: GET /item/{i} 200 in 5 ms")
    log = tmp_path / "app.log"
    log.write_text("\n".join(lines) + "\n")
    [gap] = Detector(settings, DetectConfig(), logs=[log]).once()
    assert ROUTINE in gap.gap.text
    assert set(gap.details["lines"]) <= set(range(1500, 1560)) and len(gap.details["lines"]) >= 40


def test_a_running_detector_takes_a_mute_at_its_next_round(tmp_path: Path, settings: Settings) -> None:
    log = tmp_path / "app.log"
    log.write_text("2026-03-01T10:00:00 INFO started\n")
    detector = Detector(settings, DetectConfig(), logs=[log], persist=True)
    detector.round()
    mute(settings, "certificate expired", "1h", by="test")
    with log.open("a") as f:
        f.write("2026-03-01T10:01:00 ERROR certificate expired for api.example\n")
    detector.round()
    assert detector.gaps() == []
    unmute(settings, "certificate expired")
    with log.open("a") as f:
        f.write("2026-03-01T10:05:00 ERROR disk quota exceeded for /srv/data\n")
    detector.round()
    assert [g.text.split(": ", 1)[1] for g in detector.gaps()] == ["ERROR disk quota exceeded for /srv/data"]
    detector.close()


def test_mutes_end_at_their_time_and_bad_input_is_named(settings: Settings) -> None:
    made = mute(settings, "  pool exhausted  ", 60)
    assert (made.target, made.kind, made.until is not None) == ("pool exhausted", "template", True)
    book = MuteBook(settings.home_dir)
    assert book.template_muted("ERROR db pool exhausted after <*> ms") is not None
    assert book.template_muted("ERROR db pool exhausted", now=time.time() + 61) is None
    assert [m.target for m in active_mutes(settings)] == ["pool exhausted"]
    mute(settings, "pool exhausted")  # muting again replaces: no end now
    assert [m.until for m in active_mutes(settings)] == [None]
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration("1d") == 86_400
    for bad in ("soon", "0m", "-5"):
        with pytest.raises(MuteError, match="duration"):
            mute(settings, "x", bad)
    with pytest.raises(MuteError, match="say what to mute"):
        mute(settings, "   ")
    # a damaged file is reported and mutes nothing
    book.path.write_text("{not json")
    broken = MuteBook(settings.home_dir)
    assert broken.mutes == [] and broken.problem is not None and "mutes not read" in broken.problem


def test_score_parts() -> None:
    assert level_part("2026 FATAL disk gone")[1] == 1.0 and level_part("ERROR x")[1] == 0.6
    assert rarity_part(1, 100_000) == 1.0 and rarity_part(300, 3000) < 0.4 < rarity_part(12, 3000)
    assert combine({"level": 0, "rarity": 0, "burst": 0, "new": 0}) == 0
    assert combine({"level": 1, "rarity": 1, "burst": 1, "new": 1}) > 0.9
    # one strong sign is enough; a known, common, steady error is not
    assert combine({"level": 0.6, "rarity": 0.3, "burst": 1.0, "new": 0}) >= 0.5
    assert combine({"level": 0.6, "rarity": 0.3, "burst": 0.0, "new": 0}) < 0.5


def test_an_hpc_log_with_its_own_time_format_is_scored_by_its_times(
    tmp_path: Path, settings: Settings
) -> None:
    """Times in the middle of the line (an HPC system log's format): routine corrected errors at INFO
    all hour are noise, a minute of FATAL interrupts is the incident."""
    rng = random.Random(5)
    start = 1_764_500_000
    lines = []
    for i in range(4000):
        at = start + i  # one line a second, over 66 minutes
        stamp = time.strftime("%Y-%m-%d-%H.%M.%S", time.localtime(at)) + f".{rng.randint(0, 999999):06d}"
        node = f"R{rng.randint(0, 7):02d}-M{rng.randint(0, 1)}-N{rng.randint(0, 15)}"
        if 3000 <= i < 3020:
            body = f"RAS KERNEL FATAL data TLB error interrupt on core {rng.randint(0, 3)}"
        elif i % 7 == 0:
            body = f"RAS KERNEL INFO {rng.randint(1, 9)} ddr error(s) detected and corrected on rank 0"
        else:
            body = f"RAS KERNEL INFO generating core.{rng.randint(1000, 9999)}"
        lines.append(f"- {at} {time.strftime('%Y.%m.%d', time.localtime(at))} {node} {stamp} {node} {body}")
    log = tmp_path / "hpc.log"
    log.write_text("\n".join(lines) + "\n")
    [gap] = Detector(settings, DetectConfig(), logs=[log]).once()
    assert "data TLB error interrupt" in gap.gap.text
    assert gap.details["lines"] == list(range(3001, 3021))


def test_an_error_word_in_a_warning_opens_a_gap_only_when_it_bursts(
    tmp_path: Path, settings: Settings
) -> None:
    lines = [f"2026-03-01T10:{m:02d}:00 INFO order {m} done" for m in range(30)]
    lines.append(
        "2026-03-01T10:30:00 WARNING worker: order 77: inventory answered {'error': 'unknown sku'}; retrying"
    )
    log = tmp_path / "worker.log"
    log.write_text("\n".join(lines) + "\n")
    assert Detector(settings, DetectConfig(), logs=[log]).once() == []  # new and rare, but a handled warning
    again = "WARNING worker: order {}: inventory answered {{'error': 'x'}}; retrying"
    burst = [f"2026-03-01T10:31:{s:02d} " + again.format(s) for s in range(40)]
    log.write_text("\n".join(lines + burst) + "\n")
    [gap] = Detector(settings, DetectConfig(), logs=[log]).once()
    assert "inventory answered" in gap.gap.text and len(gap.details["lines"]) >= 40
