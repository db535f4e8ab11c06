"""What watch does once a heal ends: close what it explains, re-check the rest and the dependents now."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agentheal.config import Settings
from agentheal.detect import DetectConfig
from agentheal.detect.gaps import AVAILABILITY, problem
from agentheal.detect.watch import Watch
from conftest import tiny_estate


def test_a_heal_closes_its_components_stale_gaps_and_frees_its_dependents(
    tmp_path: Path, settings: Settings
) -> None:
    watch = Watch(settings, tiny_estate(tmp_path, api=True), DetectConfig(), heal=False)
    book = watch.detector.book
    started = time.time()
    before = datetime.now(UTC) - timedelta(seconds=30)
    after = datetime.now(UTC) + timedelta(seconds=1)
    down = book.add(problem("monitor", "web", "web process is not running", "process_down",
                            channel=AVAILABILITY, at=before))  # fmt: skip
    old_log = book.add(problem("logs", "web", "new error template in web.log: ERROR bind failed",
                               "new_error_template", at=before))  # fmt: skip
    new_log = book.add(problem("logs", "web", "new error template in web.log: ERROR disk quota exceeded",
                               "new_error_template", at=after))  # fmt: skip
    api = book.add(problem("monitor", "api", "api probe failed", "probe_failed", at=before))
    assert down and old_log and new_log and api
    # api's own heal failed while web was down: it waits out its cool-down
    watch.cooldown[api.gap.fingerprint] = started + 300
    watch.cooling[api.gap.fingerprint] = "api"

    watch._after_heal(down.gap, "web", started)

    # what was seen only before the heal is closed, saying why; what was seen after it stays
    assert set(book.open) == {new_log.gap.fingerprint, api.gap.fingerprint}
    assert watch.closed_why[down.gap.fingerprint] == "healed"
    assert "not seen again after web was healed" in watch.closed_why[old_log.gap.fingerprint]
    # the dependent is free of its cool-down and both are sampled at the next round
    assert api.gap.fingerprint not in watch.cooldown
    monitor = watch.detector.monitor
    assert monitor is not None and all(monitor._due[c] <= time.time() for c in ("web", "api"))
    watch.detector.close()


def test_the_demo_reports_each_follow_up_gap_and_why_it_closed() -> None:
    from agentheal.demo import escalations, follow_ups
    from agentheal.eval.results import RunSummary, ScenarioResult

    lines = [
        (1.0, "gap opened: incident api high: old gap before the fault"),
        (10.0, "gap opened: incident api high: api process is not running"),
        (10.5, "gap opened: incident web medium: web probe failed (follows 3f2a9c1b)"),
        (11.0, "heal started: api: api process is not running"),
        (12.0, "gap closed: api: api process is not running (healed)"),
        (12.0, "gap closed: web: web probe failed (followed api's gap, which was healed)"),
        (12.5, "gap opened: incident api medium: new error template in api.log: ERROR bind failed"),
    ]
    assert follow_ups(lines, since=5.0) == [
        "incident api high: api process is not running -> healed",
        "incident web medium: web probe failed (follows 3f2a9c1b) -> followed api's gap, which was healed",
        "incident api medium: new error template in api.log: ERROR bind failed"
        " -> still open at the end of the fault",
    ]
    run = {"component": "api", "persona": None, "source": None, "remediations": [], "observations": [],
           "failed_steps": [], "diagnosis_component": None, "validated": False, "validation": None,
           "reason": None, "llm_calls": 0, "llm_tokens": 0, "started_s": 0.0, "finished_s": 1.0}  # fmt: skip
    result = ScenarioResult(
        name="f", detected=True, time_to_detect_s=1, healed=True, time_to_heal_s=2, wrong_actions=0,
        actions=[], llm_calls=0, reason=None, kind="fault",
        runs=[RunSummary(run_id="a", gap="api down", status="healed", **run),
              RunSummary(run_id="b", gap="log error", status="escalated", **run)],
    )  # fmt: skip
    assert escalations(result) == ["api: log error (escalated)"]
