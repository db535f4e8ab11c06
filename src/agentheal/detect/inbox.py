"""The inbox of `agentheal watch --listen`: an HTTP receiver for Alertmanager webhooks and feedback.

`POST /alerts` takes Alertmanager's webhook JSON; `POST /feedback` takes `{"text": ..., "component"?}`;
`GET /gaps` lists the open gaps and `GET /status` counts rounds and signals. A malformed body is
answered 400 with the problem named, reported in the watch view, and skipped; detection goes on.
Loopback by default: it has no authentication.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from agentheal.detect.alerts import AlertError

if TYPE_CHECKING:
    from agentheal.detect.detector import Detector

MAX_BODY = 1 << 20


class Inbox:
    """Serves the receiver in a daemon thread until `close`."""

    def __init__(
        self,
        detector: Detector,
        host: str,
        port: int,
        report: Callable[[str], None],
        lock: threading.Lock,
    ) -> None:
        self.detector = detector
        self.report = report
        self.lock = lock
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.address = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="inbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Answer one request: (status, JSON body)."""
        if method == "GET" and path == "/gaps":
            with self.lock:
                return 200, [t.as_json() for t in self.detector.book.tracked()]
        if method == "GET" and path == "/status":
            d = self.detector
            return 200, {"rounds": d.rounds, "signals": d.signals_seen, "open_gaps": len(d.book.open)}
        if method != "POST" or path not in ("/alerts", "/feedback"):
            return 404, {
                "error": "POST /alerts (Alertmanager webhook), POST /feedback, GET /gaps, GET /status"
            }
        try:
            if path == "/alerts":
                n = self.detector.alert(body)
                return 200, {"alerts": n}
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                raise AlertError('feedback: expected {"text": "...", "component": "..."?}')
            with self.lock:
                signal = self.detector.feedback(data["text"], data.get("component"))
            return 200, {"component": signal.component, "fingerprint": signal.data.get("fingerprint")}
        except (AlertError, ValueError) as exc:
            # json.JSONDecodeError and EstateError (unknown component) land here too
            self.report(f"{path} payload skipped: {exc}")
            return 400, {"error": str(exc)}
        except Exception as exc:
            self.report(f"{path} payload skipped: {type(exc).__name__}: {exc}")
            return 400, {"error": f"{type(exc).__name__}: {exc}"}


def _handler(inbox: Inbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                status, payload = 413, {"error": f"body over {MAX_BODY} bytes"}
            else:
                status, payload = inbox.handle(method, self.path.split("?")[0], self.rfile.read(length))
            data = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
