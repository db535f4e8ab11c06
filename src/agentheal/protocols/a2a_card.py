"""agentheal's A2A Agent Card: who it is, its skills, where it takes tasks and which auth it needs.

Served at `/.well-known/agent-card.json` on `agentheal serve` without a token (an agent reads the
card to learn which auth to send), by a middleware outside the API's authentication. The card's
URL is the one the caller reached the server at, so it holds behind a proxy that keeps Host.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from agentheal import __version__

__all__ = ["CARD_PATH", "PublicCard", "agent_card"]

CARD_PATH = "/.well-known/agent-card.json"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_SKILLS: list[dict[str, Any]] = [
    {
        "id": "heal_gap",
        "name": "Heal a gap",
        "description": "Send a gap (something broken or degraded now, in words, optionally as a JSON object "
        '{"text", "component", "severity", "kind", "evidence"}): agentheal diagnoses it, plans typed '
        "actions, checks them against policy, runs them and proves the fix. The task follows the run: "
        "working, input-required while a person must approve (answer `approve` or `reject` on the task, "
        "operator role), completed when healed, failed when it escalates. The artifact is the run's result.",
        "tags": ["remediation", "incident", "self-healing", "sre"],
        "examples": ["web is down: connection refused", '{"text": "disk 98% full on db", "component": "db"}'],
    },
    {
        "id": "explain_run",
        "name": "Explain a run",
        "description": "Send `explain RUN_ID`: the run's whole story as text (gap, timeline, evidence, "
        "diagnosis, plan, actions, validation), redacted.",
        "tags": ["explanation", "audit", "postmortem"],
        "examples": ["explain 3f2a9c1d"],
    },
    {
        "id": "search_memory",
        "name": "Search past resolutions",
        "description": "Send `search: TEXT`: the past resolutions most similar in meaning, with what was "
        "done and whether it worked.",
        "tags": ["memory", "knowledge", "runbooks"],
        "examples": ["search: disk full on the database server"],
    },
]


def agent_card(base_url: str, rpc_path: str, tokens: bool = True) -> Any:
    """The Agent Card (a2a-sdk's `AgentCard`) of a server reached at `base_url`; `tokens`: whether
    it checks bearer tokens (an `--insecure-local` server does not, and its card says so)."""
    from a2a.types import (
        AgentCapabilities,
        AgentCard,
        AgentInterface,
        AgentProvider,
        AgentSkill,
        HTTPAuthSecurityScheme,
        SecurityRequirement,
        SecurityScheme,
        StringList,
    )

    url = base_url.rstrip("/") + rpc_path
    bearer = SecurityScheme(
        http_auth_security_scheme=HTTPAuthSecurityScheme(
            scheme="bearer",
            description="A token from `agentheal tokens add NAME --role viewer|operator|admin`; "
            "healing and answering approvals need operator.",
        )
    )
    return AgentCard(
        name="agentheal",
        description="Keeps a software estate healthy: heals gaps with typed, policy-checked actions "
        "proven by checking again, explains its runs, and recalls what fixed a problem before.",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
        ],
        provider=AgentProvider(organization="agentheal", url=base_url.rstrip("/")),
        version=__version__,
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={"bearer": bearer} if tokens else {},
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})] if tokens else [],
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=[AgentSkill(**s) for s in _SKILLS],
    )


class PublicCard:
    """Answers `GET /.well-known/agent-card.json` before authentication; passes the rest on."""

    def __init__(self, app: ASGIApp, rpc_path: str, tokens: bool = True) -> None:
        self.app = app
        self.rpc_path = rpc_path
        self.tokens = tokens
        self._cards: dict[str, bytes] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != CARD_PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        base = _base_url(scope)
        body = self._cards.get(base)
        if body is None:
            from a2a.server.request_handlers.response_helpers import agent_card_to_dict

            # with A2A 0.3's fields (`url`...) beside 1.0's interfaces: /a2a speaks both versions
            body = json.dumps(agent_card_to_dict(agent_card(base, self.rpc_path, self.tokens))).encode()
            self._cards[base] = body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})


def _base_url(scope: Scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
