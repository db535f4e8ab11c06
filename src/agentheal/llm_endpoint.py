"""What an OpenAI-compatible endpoint supports, learnt from its own answers and remembered.

Servers differ. OpenAI takes a JSON-schema `response_format`; llama.cpp's server refuses it
with a 500 that names the field but constrains its output to a schema sent as
`{"type": "json_object", "schema": ...}`; others take only plain JSON mode, or nothing. Some
answer a request with `tools` in plain text. A refusal that names a request field is not an
outage: the LLM door steps down to the next way of asking at once, and this module remembers
the step per base URL and model (in `llm-endpoints.json` under the home folder), so the next
run starts where the last one ended instead of being refused again.
"""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Structured(StrEnum):
    """How a reply's JSON schema is asked for, from the strongest to the weakest."""

    json_schema = "json_schema"  # response_format json_schema (OpenAI, vLLM, Ollama)
    json_object_schema = "json_object_schema"  # response_format json_object + schema (llama.cpp)
    json_object = "json_object"  # plain JSON mode; the schema travels in the prompt
    prompt = "prompt"  # no response_format; the schema in the prompt, parse and retry once


STEPS = list(Structured)
NOTES_KEPT = 20

ToolSupport = Literal["unknown", "native", "unsupported"]
# How a reply's length is capped: OpenAI's newer models refuse `max_tokens` and name
# `max_completion_tokens`; most other servers know only `max_tokens`.
TokenCap = Literal["max_tokens", "max_completion_tokens", "none"]
UsageSupport = Literal["unknown", "reported", "absent"]


class EndpointProfile(BaseModel):
    """What one model behind one base URL was seen to support."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    model: str
    structured: Structured = Structured.json_schema
    tools: ToolSupport = "unknown"
    token_cap: TokenCap = "max_tokens"
    usage: UsageSupport = "unknown"
    notes: list[str] = Field(default_factory=list, description="What was learnt, and from which answer.")
    updated_at: datetime | None = None

    def step_down(self) -> Structured | None:
        """The next weaker way of asking for structured output, or None at the weakest."""
        at = STEPS.index(self.structured)
        return STEPS[at + 1] if at + 1 < len(STEPS) else None

    def learn(self, note: str) -> None:
        stamp = datetime.now(UTC)
        self.notes = [*self.notes, f"{stamp:%Y-%m-%d %H:%M:%S} {note}"][-NOTES_KEPT:]
        self.updated_at = stamp


# Words in a refusal that say which part of the request the server will not take. Checked in
# this order: llama.cpp's refusal of a JSON-schema format mentions both `response_format` and
# the tools-free path, and a format refusal is the one to act on first.
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|\bschema\b|structured output", re.I)
_TOOL_WORDS = re.compile(r"\btools?\b|tool_choice|tool calls?|function[_ ]call", re.I)
_CAP_WORDS = re.compile(r"max_tokens|max_completion_tokens", re.I)

RefusedPart = Literal["response_format", "tools", "token_cap"]


def refused_part(
    status: int, message: str, sent_format: bool, sent_tools: bool, sent_cap: bool = False
) -> RefusedPart | None:
    """Which part of the request a 4xx/5xx answer refuses, when its message names one.

    Args:
        status: The HTTP status.
        message: The server's error message (body text).
        sent_format: Whether the request carried a `response_format`.
        sent_tools: Whether the request carried `tools`.
        sent_cap: Whether the request capped the reply's tokens.

    Returns:
        "response_format", "tools" or "token_cap" when the refusal names a part the request had, else None
        (an outage, a bad model name, an auth error: the caller's usual handling applies).
    """
    if status < 400 or status in (401, 403, 404, 408, 429):
        return None
    if sent_cap and _CAP_WORDS.search(message):
        return "token_cap"
    if sent_format and _FORMAT_WORDS.search(message):
        return "response_format"
    if sent_tools and _TOOL_WORDS.search(message):
        return "tools"
    return None


class EndpointProfiles:
    """Profiles of the endpoints agentheal has talked to, kept in one JSON file.

    Every process reads the file once and writes it whole (atomically, by rename) when it
    learns something: what is learnt only ever steps down, so two processes that learn the
    same thing write the same thing, and a lost write is learnt again at the next refusal.

    Args:
        path: The JSON file, or None to keep profiles in this process only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._profiles: dict[str, EndpointProfile] | None = None

    @staticmethod
    def _key(base_url: str, model: str) -> str:
        return f"{base_url.rstrip('/')}|{model}"

    def _load(self) -> dict[str, EndpointProfile]:
        if self._profiles is None:
            self._profiles = {}
            if self.path is not None and self.path.is_file():
                try:
                    raw = json.loads(self.path.read_text(encoding="utf-8"))
                    for key, value in raw.items():
                        self._profiles[key] = EndpointProfile.model_validate(value)
                except (OSError, ValueError, ValidationError, AttributeError):
                    # A damaged file costs one refusal per endpoint to learn again, nothing more.
                    self._profiles = {}
        return self._profiles

    def get(self, base_url: str, model: str) -> EndpointProfile:
        """The profile of `model` at `base_url` (a fresh one, assuming full support, when unseen)."""
        with self._lock:
            profiles = self._load()
            key = self._key(base_url, model)
            if key not in profiles:
                profiles[key] = EndpointProfile(base_url=base_url.rstrip("/"), model=model)
            return profiles[key]

    def save(self, profile: EndpointProfile) -> None:
        """Remember `profile` (and write the file, when there is one)."""
        with self._lock:
            profiles = self._load()
            profiles[self._key(profile.base_url, profile.model)] = profile
            if self.path is None:
                return
            data = {k: v.model_dump(mode="json") for k, v in sorted(profiles.items())}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a read-only home keeps the profile in this process


_SHARED: dict[Path | None, EndpointProfiles] = {}
_SHARED_LOCK = threading.Lock()


def profiles_at(path: Path | None) -> EndpointProfiles:
    """The one `EndpointProfiles` of this process for `path` (shared by every run's LLM door)."""
    with _SHARED_LOCK:
        if path not in _SHARED:
            _SHARED[path] = EndpointProfiles(path)
        return _SHARED[path]
