"""Loopback stand-ins for the chat platforms' APIs, recording what the bot sends: Slack's Web API
(`slack_sdk`'s base URL points at it) and, for Teams, the Bot Connector with the keys that sign
inbound activities. Also Slack's request signing, as Slack signs its requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret-0123456789"


@dataclass
class Call:
    """One request the bot made: the path's last part (a Web API method), its parameters, its token."""

    method: str
    params: dict[str, Any]
    auth: str
    at: float = field(default_factory=time.monotonic)
    path: str = ""
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> str:
        """The ts Slack's stand-in gave the posted message."""
        return str(self.answer.get("ts", ""))


class Recorder:
    """What a stand-in has been sent, waited on by tests."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._changed = threading.Condition()

    def add(self, call: Call) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def of(self, method: str) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method]

    def wait(self, what: Callable[[list[Call]], Any], timeout: float = 60, why: str = "") -> Any:
        """Wait until `what(calls)` is truthy; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = what(list(self.calls))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    shown = "\n".join(f"{c.method} {json.dumps(c.params)[:300]}" for c in self.calls)
                    raise AssertionError(f"timed out waiting for {why or what}; calls:\n{shown}")
                self._changed.wait(min(left, 0.2))


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stand-in", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def slack_web_api(socket_url: str = "") -> Iterator[tuple[str, Recorder]]:
    """A stand-in for Slack's Web API on loopback: its base URL (…/api/) and what it was sent.
    `apps.connections.open` (with the app token) answers `socket_url`."""
    recorder = Recorder()
    counter = iter(range(1, 1_000_000))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            if "json" in (self.headers.get("content-type") or ""):
                params = json.loads(raw or "{}")
            else:
                params = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
            for key in ("blocks", "attachments"):
                if isinstance(params.get(key), str):
                    params[key] = json.loads(params[key])
            method = self.path.rsplit("/", 1)[-1]
            if method == "apps.connections.open":
                ok = self.headers.get("authorization") == f"Bearer {APP_TOKEN}"
                answer = {"ok": True, "url": socket_url} if ok else {"ok": False, "error": "invalid_auth"}
            elif self.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
                answer: dict[str, Any] = {"ok": False, "error": "not_authed"}
            elif method == "auth.test":
                answer = {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "team": "test"}
            elif method in ("chat.postMessage", "chat.postEphemeral", "chat.update"):
                with lock:
                    ts = params.get("ts") or f"{1700000000 + next(counter)}.000100"
                answer = {"ok": True, "channel": params.get("channel"), "ts": ts, "message_ts": ts}
            else:
                answer = {"ok": False, "error": "unknown_method"}
            recorder.add(
                Call(method, params, self.headers.get("authorization", ""), path=self.path, answer=answer)
            )
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server, base = _serve(Handler)
    try:
        yield f"{base}/api/", recorder
    finally:
        server.shutdown()
        server.server_close()


def slack_signed(body: str, secret: str = SIGNING_SECRET, at: int | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`: `v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    ts = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def slash_body(user: str, text: str, name: str = "", channel: str = "C1") -> str:
    """A `/agentheal` slash command as Slack posts it."""
    return urllib.parse.urlencode(
        {
            "token": "legacy",
            "team_id": "T1",
            "channel_id": channel,
            "user_id": user,
            "user_name": name or user,
            "command": "/agentheal",
            "text": text,
            "response_url": "http://127.0.0.1:9/r",
            "trigger_id": "1.2.3",
        }
    )


def button_body(user: str, action: str, run_id: str, channel: str, message_ts: str, thread_ts: str) -> str:
    """A block_actions interaction (an Approve / Reject press) as Slack posts it."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T1", "domain": "test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T1"},
        "api_app_id": "A1",
        "token": "legacy",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "trigger_id": "1.2.3",
        "channel": {"id": channel, "name": "ops"},
        "message": {"type": "message", "ts": message_ts, "thread_ts": thread_ts, "text": "approval"},
        "response_url": "http://127.0.0.1:9/r",
        "actions": [
            {
                "type": "button",
                "action_id": f"agentheal_{action}",
                "block_id": "b",
                "value": run_id,
                "action_ts": str(time.time()),
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


@contextmanager
def served(app: Any) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread, on a free loopback port; its base URL."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


class SocketLink:
    """A stand-in for Slack's Socket Mode WebSocket: sends envelopes to the connected app and records
    what it answers (its acknowledgements, with their response payloads)."""

    def __init__(self) -> None:
        self.received = Recorder()
        self._outbox: list[str] = []
        self._changed = threading.Condition()
        self.connected = threading.Event()

    def send(self, envelope: dict[str, Any]) -> None:
        with self._changed:
            self._outbox.append(json.dumps(envelope))
            self._changed.notify_all()

    def handle(self, ws: Any) -> None:
        ws.send(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}))
        self.connected.set()
        while True:
            with self._changed:
                while not self._outbox:
                    self._changed.wait(0.05)
                    try:  # what the app sent meanwhile
                        message = ws.recv(timeout=0)
                    except TimeoutError:
                        continue
                    except Exception:
                        return
                    self.received.add(Call("ack", json.loads(message), ""))
                out = self._outbox.pop(0)
            ws.send(out)


@contextmanager
def socket_mode() -> Iterator[tuple[str, SocketLink]]:
    """A loopback WebSocket server playing Slack's Socket Mode end: its ws:// URL and the link."""
    from websockets.sync.server import serve

    link = SocketLink()
    server = serve(link.handle, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, name="socket-mode", daemon=True).start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/link", link
    finally:
        server.shutdown()
