"""A bounded request loop on loopback: the load of a control scenario.

`rate_per_s` requests for `duration_s` seconds, spread over `concurrency` threads, round-robin over
the scenario's requests, against the address of the component's first HTTP probe. It reports what
it did (requests, answers, errors, latency), so the control shows the estate really was under load.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

from agentheal.estate.model import Estate
from agentheal.eval.results import percentile
from agentheal.eval.scenario import LoadSpec


def base_url(estate: Estate, component: str) -> str:
    """scheme://host:port of the component's first HTTP probe.

    Raises:
        ValueError: The component has no HTTP probe.
    """
    probe = next((p.http for p in estate.component(component).effective_probes if p.http), None)
    if probe is None:
        raise ValueError(f"{component} has no HTTP probe to take an address from")
    parts = urlsplit(probe)
    return f"{parts.scheme}://{parts.netloc}"


def run_load(estate: Estate, spec: LoadSpec) -> str:
    """Send the load; a one-line report of what was sent and how it was answered."""
    import httpx

    try:
        base = base_url(estate, spec.component)
    except ValueError as exc:
        return f"load not sent: {exc}"
    total = max(1, int(spec.rate_per_s * spec.duration_s))
    interval = spec.concurrency / spec.rate_per_s
    lock = threading.Lock()
    answers: dict[str, int] = {}
    latencies: list[float] = []
    sent = 0

    def worker(offset: int) -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=5.0, trust_env=False) as client:
            i = offset
            next_at = time.monotonic() + offset * interval / spec.concurrency
            while i < total:
                time.sleep(max(0.0, next_at - time.monotonic()))
                req = spec.requests[i % len(spec.requests)]
                began = time.monotonic()
                try:
                    answer = client.request(req.method, req.path, json=req.json_body)
                    key = str(answer.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    sent += 1
                    answers[key] = answers.get(key, 0) + 1
                    latencies.append((time.monotonic() - began) * 1000)
                i += spec.concurrency
                next_at += interval

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(spec.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration_s + 30)
    took = time.monotonic() - began
    ok = sum(n for k, n in answers.items() if k.startswith("2"))
    shown = ", ".join(f"{n}x {k}" for k, n in sorted(answers.items()))
    p95 = percentile(latencies, 95)
    return (
        f"load: {sent} requests to {spec.component} in {took:.1f} s ({sent / took:.1f}/s), "
        f"{ok} answered 2xx ({shown}); p95 latency {p95 or 0:.0f} ms"
    )
