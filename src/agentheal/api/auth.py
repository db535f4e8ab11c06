"""Who may call the API: bearer tokens (authentication, in a middleware) and roles (per route).

Every request but `GET /healthz` must carry `Authorization: Bearer TOKEN` from
`agentheal tokens add`: none, or one that is not valid, is answered 401 before any route runs, so
an unknown path and a malformed body are refused alike. A route then asks for a role with
`Depends(require(Role.operator))` and gets the `Caller`; a role too low is answered 403. With
`--insecure-local` (loopback only) no token is checked and every request is the local admin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from agentheal.api.tokens import Caller, Role, TokenStore

__all__ = ["LOCAL_ADMIN", "PUBLIC_PATHS", "AuthMiddleware", "Caller", "Role", "require"]

# Answered without a token: a load balancer's liveness probe carries none.
PUBLIC_PATHS = frozenset({"/healthz"})
LOCAL_ADMIN = Caller(name="local", role=Role.admin)
# Requests that change nothing: a refusal of one of these is not worth an audit row.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Refused = Callable[[Scope, str, str, Caller | None], None]  # scope, action, reason, caller

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `agentheal tokens add NAME --role viewer|operator|admin`.",
)


class AuthMiddleware:
    """Authenticates every request (but PUBLIC_PATHS) and puts its `Caller` in the request state."""

    def __init__(
        self, app: ASGIApp, tokens: TokenStore, insecure_local: bool, on_refused: Refused | None = None
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.insecure_local = insecure_local
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        caller: Caller | None = LOCAL_ADMIN
        problem = ""
        if not self.insecure_local:
            header = Headers(scope=scope).get("authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if not header:
                problem = "no token: send `Authorization: Bearer TOKEN` (see `agentheal tokens add`)"
            elif scheme.lower() != "bearer" or not token:
                problem = "the Authorization header must be `Bearer TOKEN`"
            else:
                # scrypt takes ~30 ms the first time a token is seen: not on the event loop
                caller = self.tokens.known(token) or await anyio.to_thread.run_sync(self.tokens.verify, token)
                if caller is None:
                    problem = "the token is not valid (unknown, revoked or mistyped)"
            if problem:
                caller = None
        if caller is None:
            if self.on_refused is not None and scope.get("method") not in _READS:
                self.on_refused(scope, "unauthenticated", problem, None)
            await _answer(send, 401, problem, {"www-authenticate": 'Bearer realm="agentheal"'})
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def require(role: Role) -> Callable[..., Caller]:
    """A FastAPI dependency: the request's caller, refused with 403 unless its role allows `role`.

    Example:
        `def approve(caller: Caller = Depends(require(Role.operator))) -> ...`
    """

    def dependency(
        request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Caller:
        caller: Caller | None = getattr(request.state, "caller", None)
        if caller is None:  # the middleware is missing: never serve a route unauthenticated
            raise HTTPException(401, "no caller: the server's authentication is not installed")
        if not caller.role.allows(role):
            reason = f"{caller.name} has role {caller.role.value}; this needs {role.value} or above"
            refused: Refused | None = getattr(request.app.state, "on_refused", None)
            if refused is not None and request.method not in _READS:
                refused(request.scope, "forbidden", reason, caller)
            raise HTTPException(403, reason)
        return caller

    dependency.__name__ = f"require_{role.value}"
    return dependency
