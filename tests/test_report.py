"""`agentheal report`: one self-contained HTML page, opened in a real headless Chromium (Debian's
`chromium`) over the DevTools protocol: no console error, no request leaves the file, and every
plot is drawn. A screenshot lands in the test's temporary folder."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentheal.cli import main
from agentheal.config import Settings
from agentheal.events import EventStore
from test_metrics import _history

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ["time-to-heal", "resolution-by-week", "recurrences", "agents", "predictions", "evolutions"]


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, flat session)."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited {self.proc.returncode}")
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            url = found.group(1) if found else None
        if url is None:
            self.close()
            raise RuntimeError("chromium did not say where its DevTools listen within 60 s")
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=64 << 20, open_timeout=30))
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv(timeout=60))
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self.events.append(answer)

    def open(self, url: str) -> None:
        """Load a page and wait for its load event."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page did not load within 60 s"
            self.events.append(json.loads(self.ws.recv(timeout=60)))

    def evaluate(self, expression: str) -> Any:
        got = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return got["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and error log entries so far."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if CHROMIUM is None:
        missing = "chromium is not installed (Debian: apt-get install -y chromium); the report is not opened"
        if os.environ.get("AGENTHEAL_TEST_POSTGRES_REQUIRED", "") not in ("", "0"):
            pytest.fail(
                f"the engines the tests use are required (AGENTHEAL_TEST_POSTGRES_REQUIRED) but: {missing}"
            )
        pytest.skip(missing)
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _report(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> Path:
    out = tmp_path / name
    assert main(["report", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    return out


def test_the_report_is_one_file_with_every_plot_inline(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _history(EventStore(settings.events_url))
    page = _report(settings, tmp_path, capsys, "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == len(PLOTS)
    assert not re.search(r"<(script|link|img|iframe|object)\b", page, re.I)
    assert not re.search(r"(src|href)=\"(?!#)", page), "the page refers to something outside itself"
    assert "url(http" not in page and "@import" not in page
    for plot in PLOTS:
        assert f'<figure id="{plot}">' in page
    assert "gap_resolution_rate" in page and "50.0 %" in page  # the known history's rate


def test_the_report_opens_in_a_real_browser_with_every_plot_drawn(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Browser
) -> None:
    _history(EventStore(settings.events_url))
    full = _report(settings, tmp_path, capsys, "report.html")
    browser.open(full.as_uri())
    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:"))] == []
    drawn = browser.evaluate(
        "[...document.querySelectorAll('figure')].map(f => { const s = f.querySelector('svg');"
        " const r = s.getBoundingClientRect(); const b = s.getBBox();"
        " return {id: f.id, w: r.width, h: r.height, bw: b.width, bh: b.height,"
        " paths: s.querySelectorAll('path').length, bars: s.querySelectorAll('g[id^=\"patch\"]').length}; })"
    )
    assert [d["id"] for d in drawn] == PLOTS
    for d in drawn:
        assert d["w"] > 300 and d["h"] > 100 and d["bw"] > 100 and d["bh"] > 50, d
        assert d["paths"] > 10, d  # axes, ticks, text as paths, and the data
    shot = browser.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000

    # an empty store: every plot still drawn, each saying it has no data
    settings.home_dir.joinpath("events.sqlite").unlink()
    empty = _report(settings, tmp_path, capsys, "empty.html")
    browser.open(empty.as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.querySelectorAll('figure svg').length") == len(PLOTS)


def test_the_browser_check_sees_a_console_error(tmp_path: Path, browser: Browser) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('broken plot')</script></body></html>")
    browser.open(bad.as_uri())
    assert any("broken plot" in p for p in browser.problems())
