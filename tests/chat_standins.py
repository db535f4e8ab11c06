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


TEAMS_APP_ID = "00000000-0000-0000-0000-00000000a99e"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"


class BotFramework:
    """A stand-in for the Bot Framework on loopback: the OpenID metadata and key set whose key signs
    inbound activities (`sign` makes their tokens), a client-credentials token endpoint for the bot,
    and the Bot Connector, recording the activities the bot creates and updates."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.connector = Recorder()
        self.base = ""
        self._ids = iter(range(1_700_000_000_001, 1_800_000_000_000))
        self._lock = threading.Lock()

    @property
    def openid_url(self) -> str:
        return f"{self.base}/v1/.well-known/openidconfiguration"

    @property
    def service_url(self) -> str:
        return f"{self.base}/connector/"

    def sign(
        self,
        *,
        audience: str = TEAMS_APP_ID,
        issuer: str = BOT_FRAMEWORK_ISSUER,
        key: Any = None,
        expires_in: int = 600,
        service_url: str | None = None,
    ) -> str:
        """A Bot Framework token as the Bot Connector sends it with an activity."""
        import jwt

        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + expires_in,
            "serviceurl": service_url or self.service_url,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": "standin-1"})

    def _jwks(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [jwk | {"kid": "standin-1", "use": "sig", "alg": "RS256"}]}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        framework = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, answer: dict[str, Any], status: int = 200) -> None:
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.endswith("/openidconfiguration"):
                    self._answer(
                        {
                            "issuer": BOT_FRAMEWORK_ISSUER,
                            "jwks_uri": f"{framework.base}/v1/.well-known/keys",
                            "id_token_signing_alg_values_supported": ["RS256"],
                        }
                    )
                elif self.path.endswith("/keys"):
                    self._answer(framework._jwks())
                else:
                    self._answer({"error": "not found"}, 404)

            def _read(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                if "json" in (self.headers.get("content-type") or ""):
                    return json.loads(raw or "{}")
                return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

            def do_POST(self) -> None:
                params = self._read()
                if self.path == "/token":
                    import jwt

                    token = jwt.encode(
                        {
                            "aud": "https://api.botframework.com",
                            "appid": params.get("client_id"),
                            "exp": int(time.time()) + 3600,
                        },
                        framework.key,
                        algorithm="RS256",
                    )
                    framework.connector.add(Call("token", params, "", path=self.path))
                    self._answer({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
                    return
                with framework._lock:
                    ident = str(next(framework._ids))
                answer = {"id": ident}
                framework.connector.add(
                    Call(
                        "create",
                        params,
                        self.headers.get("authorization", ""),
                        path=urllib.parse.unquote(self.path),
                        answer=answer,
                    )
                )
                self._answer(answer)

            def do_PUT(self) -> None:
                params = self._read()
                ident = urllib.parse.unquote(self.path).rsplit("/", 1)[-1]
                answer = {"id": ident}
                framework.connector.add(
                    Call(
                        "update",
                        params,
                        self.headers.get("authorization", ""),
                        path=urllib.parse.unquote(self.path),
                        answer=answer,
                    )
                )
                self._answer(answer)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def bot_framework() -> Iterator[BotFramework]:
    """The Bot Framework stand-in, served on loopback."""
    framework = BotFramework()
    server, base = _serve(framework.handler())
    framework.base = base
    try:
        yield framework
    finally:
        server.shutdown()
        server.server_close()


def teams_activity(
    text: str,
    user: str,
    *,
    conversation: str = "19:ops@thread.tacv2",
    service_url: str = "",
    kind: str = "channel",
) -> dict[str, Any]:
    """A message activity as the Bot Connector posts it to the bot."""
    return {
        "type": "message",
        "id": f"{int(time.time() * 1000)}",
        "timestamp": "2026-11-30T12:00:00.000Z",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": user, "name": user.split(":")[-1], "aadObjectId": "aad-" + user.split(":")[-1]},
        "conversation": {"id": conversation, "conversationType": kind, "tenantId": "tenant-1"},
        "recipient": {"id": f"28:{TEAMS_APP_ID}", "name": "agentheal"},
        "text": text,
        "textFormat": "plain",
        "locale": "en-US",
        "channelData": {"tenant": {"id": "tenant-1"}},
    }


def teams_execute(
    action: str,
    run_id: str,
    user: str,
    *,
    reply_to: str,
    service_url: str,
    conversation: str = "19:ops@thread.tacv2",
) -> dict[str, Any]:
    """An `Action.Execute` press (an `adaptiveCard/action` invoke) as the Bot Connector posts it."""
    activity = teams_activity("", user, conversation=conversation, service_url=service_url)
    activity.pop("text")
    activity.pop("textFormat")
    return activity | {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "replyToId": reply_to,
        "value": {
            "action": {
                "type": "Action.Execute",
                "verb": action,
                "data": {"action": action, "run_id": run_id},
            },
            "trigger": "manual",
        },
    }
