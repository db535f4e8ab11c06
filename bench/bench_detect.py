"""Detection figures: log lines/s through template mining into signals, and the memory of `agentheal watch`.

- `log_mining_lines_per_s`: a seeded synthetic service log of 100,000 lines (timestamps, levels,
  request lines with ids, IPs, durations and paths, and a few error templates that come and go)
  read by `LogTail` and fed to `LogMiner` (drain3 templates, error classification, rates, the
  anomaly score of each error template with its noise and mute checks, signals).
  Baseline: bare drain3, a `TemplateMiner` with the same config and masks, fed the same lines
  read from the same file, as they are (ours strips each line's leading timestamp before mining,
  and parses it for error lines). Ratio = ours / bare (goal: at least 0.9, scoring on; against
  drain3 on lines already stripped of their timestamps, at least 0.7). The error templates of this
  log recur all through its half hour, so scoring finds them routine: few or no signals.
- `watch_rss_after_10k_signals`: `agentheal serve --watch` (the watch loop in the server's process)
  on a one-component estate of a real process; 10,000 alerts (100 alert names x 100 reports, as
  Alertmanager webhook batches) are posted to `/alerts/alertmanager` while it probes; the
  process's RSS is read once the server has taken them all and the watch has had two seconds of
  rounds. Baseline: the RSS of the same server before the first alert.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LINES = 100_000
SEED = 20260301
ROUNDS = 3
SIGNALS = 10_000

_PATHS = ["/api/orders", "/api/users", "/api/cart", "/health", "/static/app.js", "/api/search", "/login"]
_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def synthetic_log(path: Path, lines: int = LINES, seed: int = SEED) -> None:
    """A realistic service log: mostly requests, some warnings, error templates in bursts."""
    rng = random.Random(seed)
    t = 1_772_000_000.0
    out = []
    burst = 0
    for _ in range(lines):
        t += rng.expovariate(50)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        ip = f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        roll = rng.random()
        if burst > 0 or roll < 0.004:
            burst = burst - 1 if burst > 0 else rng.randint(5, 40)
            kind = rng.randint(0, 3)
            ms, order, user = rng.randint(100, 5000), rng.randint(10**5, 10**6), rng.randint(1, 999)
            line = [
                f"ERROR db pool exhausted after {ms} ms waiting for connection to {ip}:5432",
                f"ERROR payment gateway timeout for order {order} after {rng.randint(1, 30)} s",
                f"ERROR Traceback: KeyError 'user_{user}' in handler {rng.choice(_PATHS)}",
                f"FATAL worker {rng.randint(1, 16)} died with signal {rng.choice([9, 11, 15])}",
            ][kind]
        elif roll < 0.05:
            table = rng.choice(["orders", "users", "items"])
            line = f"WARN slow query {rng.randint(200, 3000)} ms on table {table}"
        elif roll < 0.08:
            line = f"INFO user {rng.choice(_USERS)} logged in from {ip} session {rng.getrandbits(64):016x}"
        elif roll < 0.10:
            key, ttl = rng.randint(1, 50000), rng.randint(1, 600)
            line = f"DEBUG cache {rng.choice(['hit', 'miss'])} key=product:{key} ttl={ttl}"
        else:
            status = rng.choice([200] * 20 + [201, 204, 301, 304, 400, 404, 500])
            method, item = rng.choice(["GET", "POST", "PUT"]), rng.randint(1, 9999)
            line = (
                f'INFO {ip} "{method} {rng.choice(_PATHS)}/{item} HTTP/1.1" {status} '
                f"{rng.randint(120, 90000)} {rng.uniform(0.5, 900):.1f}ms"
            )
        out.append(f"{stamp} {line}")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _bare(path: Path, stripped: bool = False) -> tuple[float, int]:
    from agentheal.detect.logs import _TIMESTAMP, new_template_miner

    miner = new_template_miner(None)
    with path.open(encoding="utf-8") as f:
        text = f.read()
    if stripped:  # done before the clock starts: this baseline gets the timestamps removed for free
        text = "\n".join(_TIMESTAMP.sub("", line) for line in text.splitlines())
    started = time.perf_counter()
    lines = text.splitlines()
    add = miner.add_log_message
    for line in lines:
        add(line)
    return time.perf_counter() - started, len(lines)


def _ours(path: Path) -> tuple[float, int, int]:
    from agentheal.detect.config import DetectConfig
    from agentheal.detect.logs import LogMiner, LogTail

    miner = LogMiner(path.name, "web", DetectConfig(), state_dir=None)
    started = time.perf_counter()
    tail = LogTail(path)
    lines = tail.read(final=True)
    signals = miner.feed(lines)
    tail.close()
    return time.perf_counter() - started, len(lines), len(signals)


def bench_mining() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "service.log"
        synthetic_log(path)
        bare, stripped, ours = [], [], []
        signals = 0
        for _ in range(ROUNDS):  # alternate, best of each: the machine's noise hits both alike
            t, n = _bare(path)
            bare.append(n / t)
            t, n = _bare(path, stripped=True)
            stripped.append(n / t)
            t, n, signals = _ours(path)
            ours.append(n / t)
    value = max(ours)
    rows = []
    for name, baseline, what, goal in (
        ("log_mining_lines_per_s", max(bare), "bare drain3 (same config) on the same lines", 0.9),
        (
            "log_mining_vs_drain3_on_stripped_lines",
            max(stripped),
            "bare drain3 on lines pre-stripped of timestamps",
            0.7,
        ),
    ):
        rows.append(
            {"name": name, "value": round(value), "unit": "lines/s", "baseline": round(baseline),
             "ratio": round(value / baseline, 3), "met": value / baseline >= goal,
             "goal": f">= {goal:g} x {what}, scoring on; {LINES} seeded lines, {signals} signals"}
        )  # fmt: skip
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch(i: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": f"Synthetic{n}", "severity": "warning", "instance": f"host{n % 7}:9100"},
            "annotations": {"summary": f"synthetic alert {n}, report {i}"},
            "startsAt": "2026-03-01T10:00:00Z",
            "fingerprint": f"{n:016x}",
        }
        for n in range(100)
    ]
    return json.dumps({"version": "4", "status": "firing", "receiver": "bench", "alerts": alerts}).encode()


def _post(client: Any, path: str, body: bytes, deadline: float) -> int:
    """POST an alert batch; wait out the server's rate limit (429 with Retry-After). The signals taken."""
    while True:
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
        if reply.status_code != 429:
            reply.raise_for_status()
            return int(reply.json()["signals"])
        if time.monotonic() > deadline:
            raise RuntimeError("the server kept answering 429")
        time.sleep(float(reply.headers.get("retry-after", "1")))


def bench_watch_memory() -> dict[str, Any]:
    import httpx
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        port, api = _free_port(), _free_port()
        estate = root / "estate.yaml"
        estate.write_text(
            "name: bench\ncomponents:\n  web:\n"
            f"    command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1]\n    workdir: www\n"
            f"    probes:\n      - http: http://127.0.0.1:{port}/\n    logs: [logs/web.log]\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
        env.update(AGENTHEAL_HOME=str(root / "home"), AGENTHEAL_CONFIG=str(root / "none.toml"))
        cli = [sys.executable, "-m", "agentheal"]
        subprocess.run([*cli, "estate", "up", str(estate)], env=env, check=True, capture_output=True)
        # The watch loop in the server's process takes the alerts (`watch --listen` is gone).
        server = subprocess.Popen(
            [*cli, "serve", "--estate", str(estate), "--watch", "--watch-interval", "0.2", "--insecure-local",
             "--host", "127.0.0.1", "--port", str(api)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        taken = 0
        try:
            proc = psutil.Process(server.pid)
            with httpx.Client(base_url=f"http://127.0.0.1:{api}", trust_env=False, timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("agentheal serve --watch did not answer within 60 s")
                    time.sleep(0.1)
                time.sleep(1.0)  # a few detection rounds on the healthy estate
                before = proc.memory_info().rss
                for i in range(SIGNALS // 100):
                    taken += _post(client, "/alerts/alertmanager", _batch(i), deadline + 180)
                time.sleep(2.0)  # the watch takes queued signals at its next rounds
                after = proc.memory_info().rss
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
            subprocess.run([*cli, "estate", "down", str(estate)], env=env, capture_output=True)
    mb, base = after / 2**20, before / 2**20
    return {
        "name": "watch_rss_after_10k_signals",
        "value": round(mb, 1),
        "unit": "MB",
        "baseline": round(base, 1),
        "ratio": round(mb / base, 2),
        "goal": f"under 300 MB (baseline: serve --watch before any alert; {taken} signals taken over HTTP, "
        f"exit {code} on SIGTERM)",
        # The exit code is reported, not judged here: how serve stops is the HTTP API's own check.
        "met": mb < 300 and taken == SIGNALS,
    }


def run() -> list[dict[str, Any]]:
    return [*bench_mining(), bench_watch_memory()]


if __name__ == "__main__":
    for row in run():
        print(row)
