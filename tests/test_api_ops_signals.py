"""The intake behind POST /alerts/alertmanager and POST /feedback: gaps and heals as watch makes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentheal.config import Settings
from agentheal.detect.alerts import AlertError
from agentheal.estate import load_estate
from agentheal.events import EventStore
from agentheal.models import Gap
from agentheal.services.signals import SignalIntake, SignalRequestError


def _webhook(status: str = "firing", **labels: str) -> dict[str, Any]:
    alert = {"status": status, "labels": {"alertname": "Down", "severity": "critical", **labels},
             "annotations": {"summary": "no answer"}, "fingerprint": str(sorted(labels.items()))}  # fmt: skip
    return {"version": "4", "status": status, "alerts": [alert]}


class Healer:
    """What the server's pool does for the intake: takes the gap, answers a run id."""

    def __init__(self, fail: bool = False) -> None:
        self.gaps: list[Gap] = []
        self.fail = fail

    def __call__(self, gap: Gap) -> str | None:
        if self.fail:
            raise RuntimeError("the server is stopping; nothing new is started")
        self.gaps.append(gap)
        return f"run-{len(self.gaps)}"


@pytest.fixture
def intake(tiny_estate_api_file: Path, settings: Settings) -> SignalIntake:
    return SignalIntake(load_estate(tiny_estate_api_file), EventStore(settings.events_url))


def test_a_firing_alert_on_a_component_is_healed_and_its_resolve_closes_it(intake: SignalIntake) -> None:
    heal = Healer()
    taken = intake.alertmanager(_webhook(component="web"), heal)
    (gap,) = taken.gaps
    assert taken.signals == 1 and gap.status == "healing" and gap.run_id == "run-1"
    assert heal.gaps[0].component == "web" and heal.gaps[0].severity.value == "critical"
    again = intake.alertmanager(_webhook(component="web"), heal)  # re-sent: the same gap, renewed
    assert again.gaps[0].fingerprint == gap.fingerprint and len(intake.open_gaps()) == 1
    closed = intake.alertmanager(_webhook("resolved", component="web"), heal)
    assert [g.status for g in closed.gaps] == ["closed"] and intake.open_gaps() == []


def test_what_watch_would_not_heal_is_recorded_with_the_reason(intake: SignalIntake) -> None:
    heal = Healer()
    nowhere = intake.alertmanager(_webhook(service="payments"), heal).gaps[0]
    assert nowhere.status == "not_healed" and "no component" in (nowhere.why or "")
    # Alerts on two components: each heals (an alert is not an outage the monitor confirmed, so
    # neither is taken as the other's root), one heal each.
    web = intake.alertmanager(_webhook(component="web"), heal).gaps[0]
    api = intake.alertmanager(_webhook(component="api"), heal).gaps[0]
    assert (web.status, api.status) == ("healing", "healing")
    assert [g.component for g in heal.gaps] == ["web", "api"]
    assert intake.events is not None
    assert nowhere.fingerprint in {g.fingerprint for g in intake.events.gaps()}


def test_feedback_names_its_component_and_joins_a_known_gap(intake: SignalIntake) -> None:
    heal = Healer()
    first = intake.feedback("the web front page is blank", submit=heal).gaps[0]
    assert first.component == "web" and first.text == "user reports: the web front page is blank"
    joined = intake.feedback("the web front page is blank again", submit=heal).gaps[0]
    assert joined.fingerprint == first.fingerprint
    with pytest.raises(SignalRequestError, match=r"'ghost'.*api, web"):
        intake.feedback("slow", component="ghost")
    with pytest.raises(AlertError, match="empty"):
        intake.feedback("   ")
    with pytest.raises(AlertError, match=r"alerts\.0\.labels\.alertname"):
        intake.alertmanager(
            {"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {}}]}
        )


def test_a_stopping_server_keeps_the_gap_as_history(intake: SignalIntake) -> None:
    gap = intake.alertmanager(_webhook(component="web"), Healer(fail=True)).gaps[0]
    assert gap.status == "not_healed" and "stopping" in (gap.why or "")
    assert intake.events is not None and gap.fingerprint in {g.fingerprint for g in intake.events.gaps()}


def test_without_a_healer_gaps_are_only_recorded(intake: SignalIntake) -> None:
    gap = intake.alertmanager(_webhook(component="web")).gaps[0]
    assert gap.status == "not_healed" and "detection only" in (gap.why or "")


def test_a_muted_fingerprint_opens_no_gap_until_unmuted(
    tiny_estate_api_file: Path, settings: Settings
) -> None:
    from agentheal.detect.mutes import MuteBook
    from agentheal.services.feedback import mute, unmute

    intake = SignalIntake(
        load_estate(tiny_estate_api_file), EventStore(settings.events_url), mutes=MuteBook(settings.home_dir)
    )
    heal = Healer()
    first = intake.alertmanager(_webhook(component="web"), heal).gaps[0]
    intake.alertmanager(_webhook("resolved", component="web"), heal)
    mute(settings, first.fingerprint, "1h", by="alice")
    muted = intake.alertmanager(_webhook(component="web"), heal).gaps[0]
    assert muted.status == "muted" and muted.fingerprint == first.fingerprint
    assert "alice" in (muted.why or "") and len(heal.gaps) == 1 and intake.open_gaps() == []
    unmute(settings, first.fingerprint)
    assert intake.alertmanager(_webhook(component="web"), heal).gaps[0].status == "healing"
