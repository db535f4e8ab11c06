"""Alerts and feedback: Alertmanager webhook payloads and free text from people become signals.

The webhook payload is Alertmanager's documented JSON (version 4): a group with `status` and a
list of `alerts`, each with `status`, `labels` (at least `alertname`), `annotations`, `startsAt`,
`endsAt`, `generatorURL` and `fingerprint`. A malformed payload raises `AlertError` naming the
field, so the caller reports and skips it. An alert is tied to a component through its labels
(`component`, `service`, `app`, `job`, `container`, or an `instance` whose port a probe uses).
Feedback that names a component is linked to it; feedback whose words match a known gap joins
that gap (same fingerprint), so a person's report adds evidence instead of a second heal.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentheal.detect.gaps import problem, recovered
from agentheal.estate.model import Estate
from agentheal.models import Gap, GapKind, Severity, Signal, normalize_text

_COMPONENT_LABELS = ("component", "service", "app", "job", "container")
_SEVERITY = {
    "critical": Severity.critical,
    "page": Severity.critical,
    "error": Severity.high,
    "high": Severity.high,
    "warning": Severity.medium,
    "warn": Severity.medium,
    "info": Severity.low,
    "low": Severity.low,
}
_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*")
ALERT_TTL_S = 6 * 3600.0  # Alertmanager re-sends a firing alert every repeat_interval (4 h by default)


class AlertError(ValueError):
    """A payload that is not an Alertmanager webhook message; the message names the field."""


class Alert(BaseModel):
    """One alert of a webhook message."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class WebhookMessage(BaseModel):
    """Alertmanager's webhook body (version 4)."""

    model_config = ConfigDict(extra="ignore")

    version: str
    status: Literal["firing", "resolved"]
    alerts: list[Alert]
    receiver: str = ""
    groupKey: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    truncatedAlerts: int = 0


def parse_webhook(payload: str | bytes | dict[str, Any]) -> WebhookMessage:
    """Validate a webhook body.

    Raises:
        AlertError: Not JSON, or a field is missing or of the wrong type (named, e.g. `alerts.0.labels`).
    """
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise AlertError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(payload, dict):
        raise AlertError(f"expected a JSON object, got {type(payload).__name__}")
    try:
        message = WebhookMessage.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise AlertError(problems) from None
    for i, alert in enumerate(message.alerts):
        if not alert.labels.get("alertname"):
            raise AlertError(f"alerts.{i}.labels.alertname: missing")
    return message


def component_of(labels: dict[str, str], estate: Estate | None) -> str | None:
    """The estate component an alert's labels name, if any."""
    if estate is None:
        return None
    for key in _COMPONENT_LABELS:
        value = labels.get(key)
        if value in estate.components:
            return value
    instance = labels.get("instance", "")
    port = instance.rpartition(":")[2]
    if port.isdigit():
        for name, comp in estate.components.items():
            targets = [p.target for p in comp.effective_probes]
            if comp.port == int(port) or any(re.search(rf":{port}(?:/|$)", t) for t in targets):
                return name
    return None


def alert_signals(message: WebhookMessage, estate: Estate | None = None) -> list[Signal]:
    """One signal per alert: firing opens (or renews) a gap, resolved closes it."""
    out = []
    for alert in message.alerts:
        labels = {**message.commonLabels, **alert.labels}
        name = labels["alertname"]
        component = component_of(labels, estate)
        channel = f"alert:{name}:{alert.fingerprint or json.dumps(labels, sort_keys=True)}"
        if alert.status == "resolved":
            out.append(recovered("alerts", component, channel, f"alert {name} resolved"))
            continue
        annotations = {**message.commonAnnotations, **alert.annotations}
        named = [labels[k] for k in (*_COMPONENT_LABELS, "instance") if labels.get(k)]
        where = component or next(iter(named), "the estate")
        text = f"alert {name} is firing on {where}"
        evidence = [f"alert {name}: {annotations.get('summary') or annotations.get('description') or name}"]
        if annotations.get("description") and annotations.get("summary"):
            evidence.append(f"description: {annotations['description']}")
        evidence.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
        if alert.startsAt is not None:
            evidence.append(f"firing since {alert.startsAt.isoformat()}")
        if alert.generatorURL:
            evidence.append(f"source: {alert.generatorURL}")
        severity = _SEVERITY.get(labels.get("severity", "").lower(), Severity.medium)
        out.append(
            problem("alerts", component, text, "alert", channel=channel, severity=severity,
                    evidence=evidence, ttl_s=ALERT_TTL_S)
        )  # fmt: skip
    return out


def _words(text: str) -> set[str]:
    return set(_WORD.findall(normalize_text(text)))


def similarity(a: str, b: str) -> float:
    """Token overlap (Jaccard) of two texts with numbers and ids folded."""
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def feedback_signal(
    text: str,
    estate: Estate | None = None,
    known: list[Gap] | None = None,
    component: str | None = None,
    threshold: float = 0.5,
) -> Signal:
    """A person's free-text report as a signal, linked to a component and to a known gap if it matches.

    Args:
        text: What the person said.
        estate: The estate, to find component names (and tags) in the text.
        known: Gaps open now or recorded before; the best match above `threshold` is joined.
        component: A component the person named explicitly.
        threshold: Least token overlap with a known gap's text to join it.
    """
    text = text.strip()
    if not text:
        raise AlertError("feedback text is empty")
    words = _words(text)
    if component is None and estate is not None:
        named = [n for n in estate.order() if n.lower() in words]
        tagged = [n for n, c in estate.components.items() if {t.lower() for t in c.tags} & words]
        component = next(iter(named + tagged), None)
    best: tuple[float, Gap] | None = None
    for gap in known or []:
        if component is not None and gap.component not in (component, None):
            continue
        score = similarity(text, gap.text)
        if score >= threshold and (best is None or score > best[0]):
            best = (score, gap)
    evidence = [f"user feedback: {text[:500]}"]
    if best is not None:
        score, gap = best
        evidence.append(f"matches known gap {gap.fingerprint} ({score:.2f} word overlap): {gap.text[:200]}")
        return problem("feedback", gap.component, gap.text, "feedback", channel=f"feedback:{gap.fingerprint}",
                       kind=gap.kind, severity=gap.severity, evidence=evidence, ttl_s=3600.0,
                       fingerprint=gap.fingerprint)  # fmt: skip
    return problem("feedback", component, f"user reports: {text[:300]}", "feedback",
                   kind=GapKind.incident, evidence=evidence, ttl_s=3600.0)  # fmt: skip
