"""Secrets out, size down: what every text passes through before it reaches an LLM prompt.

`redact` replaces credentials with a marker; `cut` keeps a long observation within its
budget while keeping both of its ends.
"""

from __future__ import annotations

import functools
import re

REDACTED = "[REDACTED]"

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*\Z)", re.DOTALL
)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?:(bearer|basic|token|digest)\s+)?[^\s,;]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(@)")
_TOKENS = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{16,}"  # OpenAI (sk-..., sk-proj-...) and look-alikes
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bxox[baprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"  # JWTs
)
_PAIR = re.compile(
    r"(?i)\b([\w.\-]*(?:password|passwd|secret|token|api[_\-]?key|access[_\-]?key)[\w.\-]*)"
    r"([\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)


def _pair_value(match: re.Match[str]) -> str:
    value = match.group(3)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{match.group(2)}{quote}{REDACTED}{quote}"


# Literal text each pattern cannot match without: a pattern whose hints are all absent is skipped.
# Most prompts hold no secret at all, and six regex passes over every prompt of every call add up.
_TOKEN_HINTS = (
    *("sk-", "rk_", "sk_", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    *("github_pat_", "xox", "AIza", "eyJ"),
)
_PAIR_HINTS = ("password", "passwd", "secret", "token", "key")


@functools.lru_cache(maxsize=256)
def redact(text: str) -> str:
    """Replace secrets in text with "[REDACTED]" before it reaches a prompt.

    Covers API keys (OpenAI, AWS, GitHub, Slack, Stripe, Google), JWTs, Authorization
    headers and bearer tokens, passwords in URLs, private key blocks (also when cut off
    before their END line) and `password=`/`secret:`/`token=`/`api_key=` pairs. Results are
    cached per text: the same system prompt goes out with every call.

    Args:
        text: Any text: a prompt, a log excerpt, a tool output.

    Returns:
        The text with every secret replaced; applying it twice changes nothing more.
    """
    low = text.lower()
    if "private key" in low:
        text = _PRIVATE_KEY.sub(f"-----BEGIN PRIVATE KEY----- {REDACTED} -----END PRIVATE KEY-----", text)
    if "authorization" in low:
        text = _AUTH_HEADER.sub(
            lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}{REDACTED}", text
        )
    if "bearer" in low:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<2>", text)
    if any(hint in text for hint in _TOKEN_HINTS):
        text = _TOKENS.sub(REDACTED, text)
    if any(hint in low for hint in _PAIR_HINTS):
        text = _PAIR.sub(_pair_value, text)
    return text


def cut(text: str, limit: int) -> str:
    """Cut text to about `limit` characters, keeping its head and its tail.

    Both ends matter for observations: the head says what was observed, the tail holds the
    latest log lines.

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
