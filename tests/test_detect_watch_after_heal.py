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
