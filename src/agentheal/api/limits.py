"""What the server takes from a caller: body size, request rate per token, and CORS (off by default).

`install(app)` adds them to a FastAPI app (`create_app` calls it):

- a request body over `AGENTHEAL_API_MAX_BODY_BYTES` (1 MiB; `POST /memory` takes up to
  `AGENTHEAL_API_MAX_IMPORT_BYTES`, 16 MiB) is answered 413 naming the limit, before any route
  reads it, whether the client says its length or streams it;
- each token (or, without one, each client address) gets `AGENTHEAL_API_RATE_PER_S` requests a
  second with bursts of `AGENTHEAL_API_RATE_BURST` (a token bucket); past that, 429 with
  `Retry-After`. `GET /healthz` is not counted, so a liveness probe is never refused;
- CORS only when `AGENTHEAL_API_CORS_ORIGINS` names origins (comma-separated): a browser page on
  another origin gets nothing from the API otherwise.

The limits' responses are added to every operation of the OpenAPI schema, so a client (and the
fuzzer) knows them.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNLIMITED_PATHS = frozenset({"/healthz"})
_LARGE_BODY_PATHS = frozenset({"/memory"})
_MAX_BUCKETS = 10_000  # keys remembered at once; the oldest full buckets are dropped first


class LimitSettings(BaseSettings):
    """The server's limits; each field reads `AGENTHEAL_API_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="AGENTHEAL_API_", extra="ignore")

    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body.")
    max_import_bytes: int = Field(default=16 << 20, ge=1024, description="Largest body of POST /memory.")
    rate_per_s: float = Field(default=50.0, ge=0, description="Requests a second per token; 0: no limit.")
    rate_burst: int = Field(default=100, ge=1, description="Requests a token may send at once.")
    cors_origins: str = Field(default="", description="Origins allowed by CORS, comma-separated; none: off.")

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


class BodyTooLarge(HTTPException):
    """A request body past its limit, raised from `receive` while a route reads it: an HTTPException,
    so the app answers it 413 (FastAPI would turn any other error of a body read into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")
        self.limit = limit


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimit:
    """Answers 413 to a body over the limit: at once when Content-Length says so, else while reading."""

    def __init__(self, app: ASGIApp, limits: LimitSettings) -> None:
        self.app = app
        self.limits = limits

    def limit_for(self, path: str) -> int:
        return self.limits.max_import_bytes if path in _LARGE_BODY_PATHS else self.limits.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, f"the Content-Length header {declared!r} is not a number")
                return
            if int(declared) > limit:
                await _answer(send, 413, f"the request body is {int(declared)} bytes; the limit is {limit}")
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await _answer(send, 413, str(exc.detail))


class RateLimit:
    """A token bucket per token (by a digest of it) or, without a token, per client address."""

    def __init__(self, app: ASGIApp, limits: LimitSettings, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.rate = limits.rate_per_s
        self.burst = float(limits.rate_burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens left, when counted)
        self._lock = threading.Lock()

    @staticmethod
    def key(scope: Scope) -> str:
        auth = _header(scope, b"authorization")
        if auth:
            return "token:" + hashlib.sha256(auth.strip().encode()).hexdigest()[:24]
        client = scope.get("client") or ("unknown", 0)
        return f"address:{client[0]}"

    def take(self, key: str) -> float:
        """Take one request from `key`'s bucket; returns 0, or the seconds until one is free."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > _MAX_BUCKETS:
                    self._forget(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for k in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate <= 0 or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.take(self.key(scope))
        if wait > 0:
            retry = max(1, math.ceil(wait))
            await _answer(
                send,
                429,
                f"rate limit: {self.rate:g} requests a second per token (bursts of {self.burst:g}); "
                f"retry after {retry} s",
                {"retry-after": str(retry)},
            )
            return
        await self.app(scope, receive, send)


_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    }
}


def _either_422(response: dict[str, Any] | None) -> None:
    """A 422 is FastAPI's list of fields that failed validation, or, from a route that checks more than
    the schema can say (an unknown component, a cursor this server did not give), one sentence."""
    if response is None:
        return
    media = response.get("content", {}).get("application/json", {})
    listed = media.get("schema")
    if listed is None or "anyOf" in listed:
        return
    media["schema"] = {"anyOf": [listed, _ERROR["content"]["application/json"]["schema"]]}
    response["description"] = "The request does not validate: the fields that failed, or what is wrong."


def _document(app: Any) -> None:
    """Add what the middleware may answer (401 and 403 where a role is needed; 400, 413, 429) to every
    operation of the app's schema, and a 422's second form (a sentence). The schema says what may be
    answered, not the configured figures, so it is the same whatever the settings."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema  # type: ignore[no-any-return]
        schema: dict[str, Any] = build()
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if operation.get("security") is not None:  # a route that asks for a role
                    responses.setdefault("401", {"description": "No token, or not a valid one.", **_ERROR})
                    responses.setdefault("403", {"description": "The token's role is too low.", **_ERROR})
                if method in ("post", "put", "patch"):
                    setting = "MAX_IMPORT_BYTES" if path in _LARGE_BODY_PATHS else "MAX_BODY_BYTES"
                    responses.setdefault(
                        "413", {"description": f"The body is over AGENTHEAL_API_{setting}.", **_ERROR}
                    )
                    responses.setdefault("400", {"description": "A malformed request.", **_ERROR})
                _either_422(responses.get("422"))
                if path not in UNLIMITED_PATHS:
                    responses.setdefault(
                        "429",
                        {
                            "description": "Too many requests from this token; wait Retry-After seconds.",
                            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                            **_ERROR,
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def install(app: Any, limits: LimitSettings | None = None) -> LimitSettings:
    """Add body limits, rate limits and (when configured) CORS to a FastAPI app; returns the limits."""
    limits = limits or LimitSettings()
    # The last added is the outermost: CORS answers a preflight before anything counts or refuses it.
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(RateLimit, limits=limits)
    if limits.origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=limits.origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    _document(app)
    return limits
