"""Probes: is a component answering? HTTP status and latency, a TCP connect, or a command's exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agentheal.estate.model import Probe


class ProbeResult(BaseModel):
    """The outcome of one probe. `slow` marks an HTTP answer over its latency budget."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http", "tcp", "command"]
    target: str
    ok: bool
    detail: str
    latency_ms: float | None = None
    status: int | None = None
    slow: bool = False

    def line(self) -> str:
        """The result as one line of text, for observations and evidence."""
        verdict = "ok" if self.ok else "FAILED"
        if self.slow:
            verdict += " (slow)"
        return f"{self.kind} {self.target}: {verdict}: {self.detail}"


class ComponentHealth(BaseModel):
    """A component's health: its process and its probes. Healthy = running and every probe passes."""

    model_config = ConfigDict(extra="forbid")

    name: str
    healthy: bool
    running: bool
    pid: int | None = None
    uptime_s: float | None = None
    probes: list[ProbeResult]
    detail: str


def run_probe(probe: Probe, cwd: Path | None = None, env: dict[str, str] | None = None) -> ProbeResult:
    """Run one probe once.

    Args:
        probe: The probe from the estate file.
        cwd: Working folder for a command probe (the component's workdir).
        env: Extra environment for a command probe (the component's env).

    Returns:
        The result; a probe never raises for a failing target, it reports it.
    """
    if probe.http is not None:
        return _http(probe, probe.http)
    if probe.tcp is not None:
        return _tcp(probe, probe.tcp)
    return _command(probe, cwd, env)


_CLIENT: Any = None


def _client() -> Any:
    """One HTTP client for every probe: building one costs ~15 ms (its TLS context), which a
    restart that polls its probes would pay on every poll."""
    global _CLIENT
    if _CLIENT is None:
        import httpx  # imported here: the CLI's --help must not pay for it

        # trust_env=False: a probe measures the component itself, never a proxy from the environment.
        # No keep-alive: each probe opens its own connection, so a restarted process is never
        # probed over a socket of its dead predecessor, and latency includes the connect.
        _CLIENT = httpx.Client(
            trust_env=False, follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
    return _CLIENT


def _http(probe: Probe, url: str) -> ProbeResult:
    import httpx

    start = time.perf_counter()
    try:
        response = _client().get(url, timeout=probe.timeout_s)
    except httpx.TimeoutException:
        return ProbeResult(
            kind="http", target=url, ok=False, detail=f"no answer within {probe.timeout_s:g} s"
        )
    except httpx.HTTPError as e:
        return ProbeResult(kind="http", target=url, ok=False, detail=f"{type(e).__name__}: {e}")
    ms = (time.perf_counter() - start) * 1000
    ok = response.status_code == probe.expect_status
    slow = probe.latency_budget_ms is not None and ms > probe.latency_budget_ms
    detail = f"status {response.status_code} (want {probe.expect_status}) in {ms:.0f} ms"
    if slow:
        detail += f", over its {probe.latency_budget_ms:g} ms budget"
    return ProbeResult(
        kind="http", target=url, ok=ok, detail=detail, latency_ms=ms, status=response.status_code, slow=slow
    )


def _tcp(probe: Probe, target: str) -> ProbeResult:
    host, _, port = target.rpartition(":")
    start = time.perf_counter()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=probe.timeout_s):
            pass
    except OSError as e:
        return ProbeResult(kind="tcp", target=target, ok=False, detail=f"connect failed: {e}")
    ms = (time.perf_counter() - start) * 1000
    return ProbeResult(kind="tcp", target=target, ok=True, detail=f"connected in {ms:.0f} ms", latency_ms=ms)


def _command(probe: Probe, cwd: Path | None, env: dict[str, str] | None) -> ProbeResult:
    argv = probe.command or []
    target = " ".join(argv)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=probe.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(
            kind="command", target=target, ok=False, detail=f"still running after {probe.timeout_s:g} s"
        )
    except OSError as e:
        return ProbeResult(kind="command", target=target, ok=False, detail=f"cannot run: {e}")
    ms = (time.perf_counter() - start) * 1000
    output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    tail = output[-300:]
    detail = f"exit code {done.returncode} in {ms:.0f} ms" + (f": {tail}" if tail else "")
    return ProbeResult(kind="command", target=target, ok=done.returncode == 0, detail=detail, latency_ms=ms)
