"""Watch's signal handling: a SIGTERM stops it whatever the main thread was doing when it landed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agentheal.config import Settings
from agentheal.detect import DetectConfig
from agentheal.detect.watch import Watch
from conftest import tiny_estate


@pytest.mark.timeout(30)
def test_a_sigterm_that_lands_while_the_main_thread_holds_the_stop_events_lock_still_stops_watch(
    tmp_path: Path, settings: Settings
) -> None:
    # Between taking its lock and waiting on it, `Event.wait` holds the event's lock; a handler that
    # set the event there waited for ever on the thread it had interrupted (a CI run hung so).
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("watching"):
            with watch.stop._cond:  # type: ignore[attr-defined]  # what Event.wait holds
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler runs here, inside the lock, at the latest

    watch = Watch(settings, tiny_estate(tmp_path), DetectConfig(interval_s=0.2), heal=False, say=say)
    previous = signal.getsignal(signal.SIGTERM)
    assert watch.run() == 0
    assert signal.getsignal(signal.SIGTERM) is previous
    assert any(line.startswith("SIGTERM: stopping") for line in lines), lines
    assert lines[-1].startswith("stopped after"), lines
