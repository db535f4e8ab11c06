"""`agentheal agents add-remote URL`: read another agent's A2A Agent Card, check it, and make the
persona file that routes gaps to it (`remote: {a2a: URL}`).

The card must name the agent, describe it, offer a JSON-RPC interface and at least one skill; its
description and skills become the persona's expertise and tags, which is what routing matches
gaps against. What the agent may propose is the persona's `actions` (default: the catalogue's
everyday remediations), and its plans pass the guard like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentheal.models import GapKind, utcnow

if TYPE_CHECKING:
    from agentheal.persona_model import Persona

__all__ = ["DEFAULT_ACTIONS", "RemoteCardError", "fetch_card", "persona_from_card"]

DEFAULT_ACTIONS = (
    "restart",
    "start",
    "stop",
    "restore_config",
    "rotate_logs",
    "clean_dir",
    "probe",
    "tail_logs",
)


class RemoteCardError(ValueError):
    """The agent's card cannot be read or used; the message says what is missing."""


async def _fetch(url: str) -> Any:
    import httpx
    from a2a.client import A2ACardResolver

    async with httpx.AsyncClient(timeout=15) as http:
        return await A2ACardResolver(http, url).get_agent_card()


def fetch_card(url: str) -> Any:
    """The agent's card, read from `URL/.well-known/agent-card.json` and checked.

    Raises:
        RemoteCardError: unreachable, not a card, or missing what a remote persona needs.
    """
    import anyio

    try:
        card = anyio.run(_fetch, url)
    except Exception as exc:
        raise RemoteCardError(f"no Agent Card at {url}: {type(exc).__name__}: {exc}") from None
    problems = []
    if not card.name.strip():
        problems.append("it has no name")
    if not card.skills:
        problems.append("it lists no skills")
    if not any(i.protocol_binding.upper() == "JSONRPC" for i in card.supported_interfaces):
        problems.append("it offers no JSON-RPC interface (agentheal speaks A2A over JSON-RPC)")
    if problems:
        raise RemoteCardError(f"the Agent Card at {url} cannot be used: " + "; ".join(problems))
    return card


def _slug(text: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug if slug[:1].isalpha() else f"remote-{slug}"
    return (slug or "remote-agent")[:60]


def persona_from_card(
    card: Any,
    url: str,
    *,
    name: str | None = None,
    kinds: list[str] | None = None,
    components: list[str] | None = None,
    actions: list[str] | None = None,
    timeout_s: float = 120.0,
    token_env: str | None = None,
) -> Persona:
    """The persona of a remote agent (validated like every persona file).

    Raises:
        pydantic.ValidationError: an option does not make a valid persona (named field).
    """
    from agentheal.persona_model import Persona

    kinds = kinds or [GapKind.incident.value]
    skills = [f"{s.name}: {s.description}".strip() for s in card.skills]
    expertise = " ".join([card.description.strip() or card.name, *skills])
    if len(expertise) < 80:  # routing matches on it; a terse card still says what the agent is for
        expertise += f" A remote agent reached over A2A at {url}, asked for plans for gaps it takes."
    tags = sorted({t.lower() for s in card.skills for t in s.tags} | {"remote", "a2a"})
    procedures = "\n".join(
        f"### {kind}: the gap and the findings are sent as an A2A task; its answer is a plan"
        for kind in kinds
    )
    body = f"""## Role
A remote specialist: {card.name}, an agent reached over A2A at {url}.

## Expertise
{expertise}

## Procedures
{procedures}

## Coordination
agentheal sends the gap and its redacted findings; the plan that comes back passes the guard,
approval and validation like any other plan.

## Escalation
No answer within {timeout_s:g} s, a malformed answer, or a plan outside the catalogue or the
policy ends the run in an escalation with the reason.
"""
    data: dict[str, Any] = {
        "name": name or _slug(card.name),
        "title": f"{card.name} (remote)",
        "role": "specialist",
        "origin": "generated",
        "kinds": kinds,
        "components": components or ["*"],
        "tags": tags,
        "expertise": expertise,
        "actions": list(actions or DEFAULT_ACTIONS),
        "remote": {"a2a": url, "timeout_s": timeout_s, "token_env": token_env},
        "provenance": {
            "source": "agents add-remote",
            "card": card.name,
            "version": card.version,
            "url": url,
            "at": utcnow().isoformat(),
        },
        "body": body,
    }
    return Persona.model_validate(data)
