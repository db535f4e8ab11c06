"""Secrets out, size down: what every text passes through before it leaves the host or is stored.

`redact` replaces secrets with a marker, by pattern (`rules`) and by value (`values`: the
secret values the estate holds, registered when it loads); `cut` keeps a long observation
within its budget while keeping both of its ends.

`redact` keeps a text's lines: a secret spanning lines (a PEM body) is replaced line by line,
so line N of a redacted text is line N of the original. The observation tools rely on it to
redact a whole source (or a window with context around it) first and take the window after:
no window, however it cuts the source, can then hold a secret that a cut hid from the rules.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping

from agentheal.redaction.rules import Span, find_spans
from agentheal.redaction.values import (
    MIN_VALUE_CHARS,
    SecretValues,
    is_secret_name,
    secret_config_values,
    secret_env_values,
)

__all__ = [
    "MIN_VALUE_CHARS",
    "REDACTED",
    "SECRETS",
    "cut",
    "is_secret_name",
    "redact",
    "redact_data",
    "register_config_secrets",
    "register_env_secrets",
    "register_secrets",
    "secret_config_values",
    "secret_env_values",
]

REDACTED = "[REDACTED]"

SECRETS = SecretValues()
"""The process-wide registry of secret values that `redact` removes wherever they appear."""

_CACHED_CHARS = 65536  # longer texts are not cached: the cache would keep them alive


def register_secrets(secret_values: Iterable[str]) -> bool:
    """Add secret values to the registry `redact` removes (raw, URL-encoded and base64 forms).

    Args:
        secret_values: The values; shorter than `MIN_VALUE_CHARS`, or digits only, are ignored.

    Returns:
        Whether anything new was registered.
    """
    added = SECRETS.add(secret_values)
    if added:
        _redact_cached.cache_clear()  # a cached result may hold a value that is secret now
    return added


def register_env_secrets(env: Mapping[str, str] | None = None) -> bool:
    """Register the values of an environment's secret-looking names (default: this process's)."""
    return register_secrets(secret_env_values(os.environ if env is None else env))


def register_config_secrets(text: str) -> bool:
    """Register the values of a config text's secret-looking keys (JSON, YAML, INI, TOML, .env)."""
    return register_secrets(secret_config_values(text))


def redact(text: str) -> str:
    """Replace secrets in text with "[REDACTED]" before it leaves the host or is stored.

    Covers PEM bodies (also when the BEGIN or the END line is missing, and JSON-escaped), long
    opaque base64 runs, values after secret-looking names, API keys (OpenAI, AWS, GitHub,
    Slack, Stripe, Google), JWTs, Authorization headers and bearer tokens, passwords in URLs,
    and every registered secret value in raw, URL-encoded and base64 form. Results of texts
    up to 64 KB are cached: the same system prompt goes out with every call.

    Args:
        text: Any text: a prompt, a log excerpt, a tool output, a stored detail.

    Returns:
        The text with every secret replaced, with as many lines as the text had; applying it
        twice changes nothing more.
    """
    if len(text) <= _CACHED_CHARS:
        return _redact_cached(text)
    return _redact(text)


@functools.lru_cache(maxsize=512)
def _redact_cached(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    spans = find_spans(text)
    for form in SECRETS.forms:
        at = text.find(form)
        while at >= 0:
            spans.append((at, at + len(form)))
            at = text.find(form, at + len(form))
    if not spans:
        return text
    return _replace(text, spans)


def _replace(text: str, spans: list[Span]) -> str:
    """Replace the (merged) spans; a span across lines is replaced line by line."""
    spans.sort()
    out: list[str] = []
    done = 0
    start, end = spans[0]
    for s, e in [*spans[1:], (len(text) + 1, len(text) + 1)]:
        if s <= end:
            end = max(end, e)
            continue
        if end > start:
            out.append(text[done:start])
            piece = text[start:end]
            out.append(
                "\n".join(REDACTED if line.strip() else line for line in piece.split("\n"))
                if "\n" in piece
                else REDACTED
            )
            done = end
        start, end = s, e
    out.append(text[done:])
    return "".join(out)


def redact_data(value: object) -> object:
    """Redact every string inside JSON-like data (dicts, lists); keys and other values stay."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def cut(text: str, limit: int) -> str:
    """Cut text to about `limit` characters, keeping its head and its tail.

    Both ends matter for observations: the head says what was observed, the tail holds the
    latest log lines. Redact first: a cut through a secret could leave a half no rule matches.

    Args:
        text: The text to cut.
        limit: The budget in characters.

    Returns:
        The text itself when it fits, else head + "[… N chars cut …]" + tail.
    """
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 0)  # room for the marker
    head, tail = keep // 2, keep - keep // 2
    dropped = len(text) - head - tail
    return f"{text[:head]}\n[… {dropped} chars cut …]\n{text[len(text) - tail :]}"
