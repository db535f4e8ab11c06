"""Redaction throughput: MB/s of `redact` on a realistic 10 MB service log that holds some secrets.

- `redaction_mb_per_s`: the seeded synthetic service log of bench_detect, grown to 10 MB, with
  secrets at random places (PEM private keys, a kubeconfig `client-key-data`, `password=`
  pairs, bearer tokens, an AWS key id, a DSN, and the registered values below), redacted whole
  by `redact` with a registry of eight secret values, as an estate's env and config files give
  it (each removed raw, URL-encoded and base64 at three alignments: 32 forms). Goal: at least
  50 MB/s, so redaction never becomes the reason to read less. Baseline: reading the same file
  and decoding it (what any observation of it costs anyway); ratio = redact / read.
"""

from __future__ import annotations

import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

SIZE = 10_000_000
SEED = 20260310
ROUNDS = 5
GOAL_MB_S = 50.0
_AWS_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def secret_log(path: Path, size: int = SIZE, seed: int = SEED) -> list[str]:
    """Write the log; return the secret values an estate would register for it."""
    from bench_detect import synthetic_log

    rng = random.Random(seed)
    synthetic_log(path, lines=120_000, seed=seed)
    lines = path.read_text(encoding="utf-8").splitlines()
    values = [
        f"{name}-{rng.getrandbits(96):024x}" for name in ("db", "api", "sign", "queue", "smtp", "cache")
    ]
    values += [f"postgres://app:{values[0]}@db:5432/app", "Rt7-registry-only-token-value"]

    def pem() -> list[str]:
        body = base64.b64encode(rng.randbytes(rng.randint(600, 1700))).decode()
        return [
            "-----BEGIN RSA PRIVATE KEY-----",
            *(body[i : i + 64] for i in range(0, len(body), 64)),
            "-----END RSA PRIVATE KEY-----",
        ]

    stamp = "2026-03-01T10:00:00.000Z"
    for _ in range(40):
        kind = rng.randint(0, 7)
        block = [
            pem(),
            [f"{stamp} DEBUG kubeconfig client-key-data: {base64.b64encode(rng.randbytes(900)).decode()}"],
            [f"{stamp} WARN retrying login password={rng.choice(values[:6])}"],
            [f"{stamp} INFO Authorization: Bearer {base64.urlsafe_b64encode(rng.randbytes(30)).decode()}"],
            [f"{stamp} INFO s3 client with AKIA{''.join(rng.choices(_AWS_CHARS, k=16))}"],
            [f"{stamp} INFO connecting to {values[6]}"],
            [f"{stamp} INFO upstream auth={base64.b64encode(f'svc:{rng.choice(values)}'.encode()).decode()}"],
            [f"{stamp} ERROR token rejected: {values[7]}"],
        ][kind]
        at = rng.randint(0, len(lines))
        lines[at:at] = block
    text = "\n".join(lines) + "\n"
    while len(text) < size:
        text += text[: size - len(text)]
    path.write_text(text[:size], encoding="utf-8")
    return values


def _best(work: Any, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> list[dict[str, Any]]:
    from agentheal.redaction import SECRETS, redact, register_secrets

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "service.log"
        values = secret_log(log)
        register_secrets(values)
        forms = len(SECRETS.forms)
        text = log.read_text(encoding="utf-8")
        clean = redact(text)
        leaked = [v for v in values if v in clean]
        if leaked:
            raise AssertionError(f"redaction let {len(leaked)} registered values through")
        read_s = _best(lambda: log.read_bytes().decode("utf-8"))
        redact_s = _best(lambda: redact(text))
    mb = len(text.encode()) / 1e6
    value, baseline = mb / redact_s, mb / read_s
    return [
        {
            "name": "redaction_mb_per_s",
            "value": round(value, 1),
            "unit": "MB/s",
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "goal": f">= {GOAL_MB_S:g} MB/s on a {mb:.0f} MB log with secrets, {len(values)} registered "
            f"values ({forms} forms); baseline: read + decode the file",
            "met": value >= GOAL_MB_S,
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
