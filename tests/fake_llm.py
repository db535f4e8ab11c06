"""A fake OpenAI-compatible endpoint for tests: chat-completion replies built as JSON.

Used with respx at the HTTP boundary, so the real `openai` client parses every reply:

    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(side_effect=[tool_reply(...), content_reply(...)])
        ...
        bodies = sent_bodies(route)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx
from pydantic import BaseModel

BASE_URL = "http://llm.test/v1"

_ids = itertools.count(1)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    message: dict[str, Any], *, prompt_tokens: int = 10, completion_tokens: int = 5
) -> dict[str, Any]:
    """A chat.completion body with one choice holding `message`."""
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": finish, "message": message, "logprobs": None}],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def content_reply(
    content: str | dict[str, Any] | BaseModel, *, prompt_tokens: int = 10, completion_tokens: int = 5
) -> httpx.Response:
    """A 200 reply whose assistant message says `content` (a dict or model is sent as JSON text)."""
    if isinstance(content, BaseModel):
        content = content.model_dump_json()
    elif isinstance(content, dict):
        content = json.dumps(content)
    message = {"role": "assistant", "content": content}
    return httpx.Response(
        200, json=completion(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    )


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict[str, Any]:
    """One function tool call; `arguments` as a dict, or raw text to fake broken JSON."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id or f"call_{next(_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def tool_reply(*calls: dict[str, Any], prompt_tokens: int = 10, completion_tokens: int = 5) -> httpx.Response:
    """A 200 reply in which the model asks for the given tool calls (see `tool_call`)."""
    message = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    return httpx.Response(
        200, json=completion(message, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    )


def error_reply(
    status: int, message: str = "fake error", headers: dict[str, str] | None = None
) -> httpx.Response:
    """An OpenAI-style error reply, e.g. 429 with {"retry-after": "1"}."""
    body = {"error": {"message": message, "type": "fake_error", "code": None, "param": None}}
    return httpx.Response(status, json=body, headers=headers)


@contextmanager
def fake_endpoint(base_url: str = BASE_URL) -> Iterator[respx.MockRouter]:
    """respx router over `base_url`; any request it does not mock fails the test."""
    with respx.mock(base_url=base_url, assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def sent_bodies(route: respx.Route) -> list[dict[str, Any]]:
    """The JSON bodies of every request the route received, in order."""
    return [json.loads(call.request.content) for call in route.calls]


def sent_text(route: respx.Route) -> str:
    """Every request body the route received, as one text (for "never appears" assertions)."""
    return "\n".join(call.request.content.decode() for call in route.calls)
