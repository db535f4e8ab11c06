"""The evolve drill on the real sample estate: faults injected again and again, healed for real, and
evolutions validated by replaying that history on fresh copies of the estate.

A log storm that fills inventory's log again and again gets a scheduled log rotation, and the
replay keeps it because the pattern stops coming back; a tighter restart limit on a worker that
keeps dying makes the replayed history worse (heals refused, the gap left open) and is reverted,
the policy file back byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentheal.detect import DetectConfig, Detector
from agentheal.eval.faults import get_fault
from agentheal.eval.session import DRILL_POLICY, EstateSession
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.graphs.evolve import EvolveJob, apply_one, evolve_round, validate_one
from agentheal.graphs.runner import Healer
from agentheal.metrics import records
from agentheal.models import utcnow

pytestmark = pytest.mark.slow


@pytest.fixture
def session(tmp_path: Path) -> Iterator[EstateSession]:
    with EstateSession(tmp_path / "estate", "shopfront", policy=DRILL_POLICY) as s:
        s.start()
        yield s


def _again_and_again(session: EstateSession, fault: str, component: str, times: int) -> list[str]:
    """Inject the fault, let detection find it and the heal graph heal it; `times` times. The fingerprints."""
    seen = []
    ctx = HealContext(session.settings, session.estate_file, policy_path=session.policy_file)
    detector = Detector(session.settings, DetectConfig(once_spacing_s=0.05), session.backend)
    try:
        with Healer(ctx) as healer:
            for _ in range(times):
                get_fault(fault).inject(session.backend, component)
                roots = [t.gap for t in detector.once() if t.gap.root is None]
                found = [g for g in roots if g.component == component]
                assert len(found) == 1, found
                result = healer.heal(found[0])
                assert result["status"] == "healed", result["reason"]
                seen.append(found[0].fingerprint)
    finally:
        detector.close()
    return seen


def _job(session: EstateSession, events: EventStore) -> EvolveJob:
    assert session.policy_file is not None
    return EvolveJob(
        events=events, home=session.settings.home_dir, now=utcnow(), estate_file=session.estate_file,
        policy_file=session.policy_file, min_every_s=0.1,  # the history is seconds apart, not hours
    )  # fmt: skip


def _row(events: EventStore, evolution_id: str) -> dict[str, Any]:
    return next(r for r in records.evolutions(events) if r["id"] == evolution_id)


def test_a_recurring_log_storm_gets_a_rotation_kept_and_a_worse_policy_is_reverted(
    session: EstateSession,
) -> None:
    events = EventStore(session.settings.events_url)
    home = session.settings.home_dir

    # inventory's log fills past its budget three times; each time detection finds it, rotate_logs heals it
    fingerprints = _again_and_again(session, "log_over_budget", "inventory", 3)
    assert len(set(fingerprints)) == 1
    done = evolve_round(_job(session, events))
    assert [(a["kind"], a["status"]) for a in done["applied"]] == [("schedule_action", "applied")]
    (verdict,) = done["validated"]
    assert verdict["status"] == "kept", verdict["reason"]
    kept = _row(events, verdict["id"])
    played = kept["data"]["replay"]
    assert played["script"]["fault"] == "log_over_budget" and played["script"]["component"] == "inventory"
    before, after = played["before"], played["after"]
    # without the rotation the storm came back every interval and was healed; with it, never
    assert before["reports"] >= 2 and before["resolution_rate"] == 1.0
    assert after["reports"] < before["reports"]
    assert kept["status"] == "kept" and kept["reason"].startswith("replay: the pattern's reports fell")
    schedule = yaml.safe_load((home / "evolution" / "schedule.yaml").read_text())
    (entry,) = schedule["schedule"]
    assert (entry["component"], entry["action"]) == ("inventory", "rotate_logs")

    # the worker dies again and again; a restart limit of one an hour on it (what tighten_policy
    # proposes for a restart that keeps failing) leaves the later deaths unhealed in the replay
    _again_and_again(session, "process_killed", "worker", 3)
    assert session.policy_file is not None
    original = session.policy_file.read_bytes()
    job = _job(session, events)
    worker_fp = events.runs(limit=1)[0].fingerprint
    proposal = {"kind": "tighten_policy", "target": str(session.policy_file), "fingerprint": worker_fp,
                "entry": {"action": "restart", "max": 1, "window_s": 3600.0, "components": ["worker"]},
                "why": "restart of worker again and again"}  # fmt: skip
    applied = apply_one(job, proposal)
    assert applied["status"] == "applied" and session.policy_file.read_bytes() != original
    verdict = validate_one(job, applied["id"])
    assert verdict is not None and verdict["status"] == "reverted", job.notes
    assert "resolution rate dropped" in verdict["reason"]
    reverted = _row(events, applied["id"])
    assert reverted["data"]["replay"]["after"]["resolution_rate"] < 1.0
    assert reverted["data"]["revert"]["reverted"] == "previous version restored byte for byte"
    assert session.policy_file.read_bytes() == original
