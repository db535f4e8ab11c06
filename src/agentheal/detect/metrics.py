"""Prometheus scraping: a component's /metrics in the text exposition format, parsed by prometheus_client.

Each rule bounds one sample (by name and labels): over `max` or under `min` for k of the last n
scrapes is a gap; with `predict`, the samples also feed the trend fits, so a queue that will
overflow is forecast before it does. An endpoint that cannot be reached or parsed is reported
and skipped; the other detectors go on.
"""

from __future__ import annotations

import time

from agentheal.detect.config import DetectConfig, MetricRule, MetricsEndpoint
from agentheal.detect.gaps import problem, recovered
from agentheal.detect.monitor import KofN
from agentheal.detect.predict import Sample
from agentheal.models import Severity, Signal


class MetricsError(Exception):
    """An endpoint that did not answer with parseable Prometheus text."""


def scrape(url: str, timeout_s: float = 2.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch and parse an endpoint: {(sample name, sorted labels): value}.

    Raises:
        MetricsError: Unreachable, a status other than 200, or text that is not the exposition format.
    """
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise MetricsError(f"{url}: unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise MetricsError(f"{url}: status {response.status_code}")
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsError(f"{url}: not the Prometheus text format: {exc}") from None
    return values


def _pick(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], rule: MetricRule) -> float | None:
    """The rule's sample: the sum over the samples of that name whose labels include the rule's labels."""
    found = [
        v
        for (name, labels), v in values.items()
        if name == rule.metric and all(dict(labels).get(k) == want for k, want in rule.labels.items())
    ]
    return sum(found) if found else None


class MetricsWatcher:
    """Scrapes the configured endpoints and checks their rules with k-of-n thresholds."""

    def __init__(self, config: DetectConfig, kofn: KofN | None = None) -> None:
        self.config = config
        self.kofn = kofn or KofN(config.k, config.n)
        self.reports: list[str] = []

    def round(self, now: float | None = None) -> tuple[list[Signal], list[Sample]]:
        """One scrape of every endpoint."""
        now = time.time() if now is None else now
        signals: list[Signal] = []
        samples: list[Sample] = []
        for component, endpoint in self.config.metrics.items():
            try:
                values = scrape(endpoint.url, endpoint.timeout_s)
            except MetricsError as exc:
                self.reports.append(f"metrics of {component} skipped: {exc}")
                continue
            signals += self._check(component, endpoint, values, samples, now)
        return signals, samples

    def _check(
        self,
        component: str,
        endpoint: MetricsEndpoint,
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float],
        samples: list[Sample],
        now: float,
    ) -> list[Signal]:
        out: list[Signal] = []
        for rule in endpoint.rules:
            value = _pick(values, rule)
            what = rule.what or rule.metric
            if value is None:
                self.reports.append(f"metrics of {component}: no sample {rule.metric} {rule.labels or ''}")
                continue
            if rule.predict and rule.max is not None:
                samples.append(
                    Sample(series=f"{component}:metric:{rule.metric}:{sorted(rule.labels.items())}",
                           component=component, at=now, value=value, limit=rule.max, what=what)
                )  # fmt: skip
            for bound, over in (("max", rule.max is not None and value > rule.max),
                                ("min", rule.min is not None and value < rule.min)):  # fmt: skip
                limit = rule.max if bound == "max" else rule.min
                if limit is None:
                    continue
                channel = f"metric:{rule.metric}:{bound}:{sorted(rule.labels.items())}"
                verdict = self.kofn.observe((component, channel), over)
                if verdict == "recover":
                    out.append(recovered("metrics", component, channel))
                elif verdict in ("open", "renew") and over:
                    side = "above" if bound == "max" else "below"
                    text = f"{component} {what} is {side} its limit"
                    cls = "metric_over" if bound == "max" else "metric_under"
                    detail = (
                        f"{rule.metric}{rule.labels or ''} = {value:g}, {side} {limit:g} ({endpoint.url})"
                    )
                    out.append(
                        problem("metrics", component, text, cls, channel=channel,
                                severity=Severity.medium, evidence=[detail])
                    )  # fmt: skip
        return out
