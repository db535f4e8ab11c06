"""`agentheal serve --watch` stopped with SIGTERM stops its watch, then exits 0 (as `agentheal watch`)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conftest import stop_processes_under, tiny_estate
from test_api_ops import ApiServer

pytestmark = pytest.mark.slow


def test_serve_with_watch_exits_0_on_sigterm(tmp_path: Path) -> None:
    estate = tiny_estate(tmp_path)
    srv = ApiServer(tmp_path, estate, "--watch", "--watch-interval", "0.5")
    try:
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(60)
    finally:
        srv.stop()
        stop_processes_under(estate.parent)
    log = srv.log.read_text()
    assert code == 0, log[-2000:]  # uvicorn re-raised the SIGTERM after its graceful stop: -15
    assert "stopped after" in log  # the watch loop ended before the process did
