"""Alertmanager webhooks and feedback: parsed, tied to components, malformed ones reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.detect import AlertError, GapBook, alert_signals, parse_webhook
from agentheal.detect.alerts import feedback_signal
from agentheal.estate import load_estate
from agentheal.models import Gap


def _payload(status: str = "firing", **labels: str) -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "severity": "critical", **labels},
        "annotations": {"summary": "5xx above 5% for 10 minutes", "description": "api answers 503"},
        "startsAt": "2026-03-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=rate",
        "fingerprint": "a1b2c3d4",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "agentheal",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": [alert],
    }


def test_firing_alert_opens_a_gap_on_its_component_and_resolved_closes_it(tiny_estate_api_file: Path) -> None:
    estate = load_estate(tiny_estate_api_file)
    book = GapBook(estate)
    [firing] = alert_signals(parse_webhook(json.dumps(_payload(service="api"))), estate)
    tracked = book.add(firing)
    assert tracked is not None
    assert (tracked.gap.component, tracked.gap.severity.value) == ("api", "critical")
    assert tracked.gap.text == "alert HighErrorRate is firing on api"
    assert "alert HighErrorRate: 5xx above 5% for 10 minutes" in tracked.gap.evidence
    [resolved] = alert_signals(parse_webhook(_payload("resolved", service="api")), estate)
    book.add(resolved)
    assert book.gaps() == []


def test_instance_port_ties_an_alert_to_the_component_probed_there(tiny_estate_file: Path) -> None:
    estate = load_estate(tiny_estate_file)
    port = estate.components["web"].probes[0].http.rsplit(":", 1)[1].strip("/")  # type: ignore[union-attr]
    [signal] = alert_signals(parse_webhook(_payload(instance=f"127.0.0.1:{port}")), estate)
    assert signal.component == "web"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"version": "4", "status": "firing"}), "alerts: Field required"),
        (json.dumps({**_payload(), "status": "exploded"}), "status: Input should be 'firing' or 'resolved'"),
        (
            json.dumps({**_payload(), "alerts": [{"status": "firing", "labels": {}}]}),
            "alerts.0.labels.alertname",
        ),
        (json.dumps({**_payload(), "alerts": [{"status": "firing"}]}), "alerts.0.labels: Field required"),
    ],
)
def test_malformed_payloads_name_the_problem(payload: str, named: str) -> None:
    with pytest.raises(AlertError, match=named.replace("(", r"\(").replace(".", r"\.")):
        parse_webhook(payload)


def test_detect_once_skips_a_malformed_alert_file_and_reads_the_good_one(
    tmp_path: Path, tiny_estate_api_file: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "4", "status": "firing", "alerts": "many"}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_payload(component="api")))
    code = main(["detect", "--alerts", str(bad), "--alerts", str(good), "--log", str(tmp_path / "none.log"),
                 "--once", "--json"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    assert [g["text"] for g in json.loads(out.out)] == ["alert HighErrorRate is firing on api"]
    err = " ".join(out.err.split())
    assert f"alert file {bad} skipped: alerts: Input should be a valid list" in err
    assert "log skipped" in err


def test_feedback_is_linked_to_a_component_and_to_a_known_gap(tiny_estate_api_file: Path) -> None:
    estate = load_estate(tiny_estate_api_file)
    known = Gap(text="web is down: process not running", component="web")
    joined = feedback_signal("the web site is down, process not running?", estate, [known])
    assert joined.component == "web" and joined.data["fingerprint"] == known.fingerprint
    assert joined.data["evidence"][0] == "user feedback: the web site is down, process not running?"
    fresh = feedback_signal("checkout on api feels sluggish today", estate, [known])
    assert fresh.component == "api" and "fingerprint" not in fresh.data
    assert fresh.text == "user reports: checkout on api feels sluggish today"
    with pytest.raises(AlertError, match="empty"):
        feedback_signal("  ", estate)


def test_watch_listen_says_to_use_the_http_api_instead(
    tiny_estate_api_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The unauthenticated receiver gave way to `serve`'s routes (tests/test_api_ops.py takes both there).
    code = main(["watch", "--estate", str(tiny_estate_api_file), "--listen", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert "agentheal serve" in err and "POST /alerts/alertmanager" in err and "--role operator" in err
