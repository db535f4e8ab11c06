"""Value-based redaction: the secret values an estate holds, removed wherever they appear.

The values of environment variables and config keys whose names look secret (`*_KEY`,
`*_TOKEN`, `*_SECRET`, `PASSWORD`, `DSN`, …) are collected when the estate loads and kept in
one process-wide registry. `redact` removes each of them in raw form, URL-encoded, and
base64-encoded at each of the three byte alignments it can have inside a longer encoded text
(`Basic dXNlcjpodW50ZXIy` holds `hunter2` at offset 5). Values shorter than
`MIN_VALUE_CHARS` are not registered: a six-character string is as likely to be an ordinary
word or number of a log as the secret, and removing it everywhere would blank real evidence;
for the same reason values made of digits only are not registered (they collide with figures).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

MIN_VALUE_CHARS = 6
_MIN_ENCODED_CHARS = 8  # a base64 core shorter than this is too short to be the value's alone

_SECRET_NAME = re.compile(
    r"(?:^|[_.\-])(?:key|token|secret|secrets|password|passwd|passphrase|pwd|pass|dsn|credential|"
    r"credentials|cookie|salt|signature|apikey|privatekey|accesskey|private_key|key_data|auth)(?:$|[_.\-])"
    r"|password|passwd|secret|token|apikey|api_key|private_key|client_key",
    re.IGNORECASE,
)
# Environment names that look secret by their words but hold ordinary text.
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD", "PASS_MAX_DAYS", "GPG_TTY", "SSH_AUTH_SOCK", "KEYMAP"})
_NOT_SECRET_VALUES = frozenset({"true", "false", "yes", "no", "null", "none", "[redacted]"})
_PAIR_LINE = re.compile(
    r"^[ \t]*(?:export[ \t]+)?[\"']?([A-Za-z_][\w.\-]*)[\"']?[ \t]*[:=][ \t]*(.*?)[ \t]*,?[ \t]*$",
    re.MULTILINE,
)


def is_secret_name(name: str) -> bool:
    """Does a variable or config key name look like it holds a secret?"""
    return name.upper() not in _NOT_SECRET_NAMES and _SECRET_NAME.search(name.replace("-", "_")) is not None


def secret_env_values(env: Mapping[str, str]) -> list[str]:
    """The values of the secret-looking names of an environment."""
    return [value for name, value in env.items() if is_secret_name(name)]


def secret_config_values(text: str) -> list[str]:
    """The values of secret-looking keys in a config text.

    Reads JSON (nested, any depth) when the text is JSON, and `KEY=VALUE`, `export KEY=VALUE`,
    `key: value` and `key = value` lines otherwise (YAML, INI, TOML, .env), quotes removed.
    """
    found: list[str] = []
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            found += _json_values(json.loads(text), secret=False)
    for m in _PAIR_LINE.finditer(text):
        name, value = m.group(1), m.group(2)
        if is_secret_name(name):
            found.append(_unquote(value))
    return found


def _json_values(data: Any, secret: bool) -> list[str]:
    if isinstance(data, dict):
        return [
            v for key, item in data.items() for v in _json_values(item, secret or is_secret_name(str(key)))
        ]
    if isinstance(data, list):
        return [v for item in data for v in _json_values(item, secret)]
    if secret and isinstance(data, str):
        return [data]
    return []


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[1:-1]
    return value


def _pieces(value: str) -> Iterator[str]:
    """What of a value is worth matching: each line of it, and the password inside a URL (a DSN)."""
    for line in value.splitlines():
        line = line.strip()
        if "-----BEGIN " in line or "-----END " in line:
            continue  # PEM markers are not secret; the body lines are
        yield line
        if "://" in line:
            try:
                password = urlsplit(line).password
            except ValueError:
                password = None
            if password:
                yield password


def encoded_forms(value: str) -> set[str]:
    """The forms a value may take in a text: raw, URL-encoded, and base64 (standard and URL-safe)
    at each byte alignment, each form only the characters that depend on the value alone."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    data = value.encode("utf-8")
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data).decode("ascii")
        # Base64 character i covers bits 6i..6i+6: keep those that lie wholly inside the value.
        core = encoded[-(-8 * pad // 6) : 8 * (pad + len(data)) // 6]
        if len(core) >= _MIN_ENCODED_CHARS:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))
    return {f for f in forms if len(f) >= MIN_VALUE_CHARS}


class SecretValues:
    """The registry of secret values (thread-safe; the forms are swapped in whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.forms: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> bool:
        """Register values (each line, and a DSN's password, separately).

        Returns:
            Whether anything new was registered.
        """
        fresh = {
            piece
            for value in values
            for piece in _pieces(str(value))
            if len(piece) >= MIN_VALUE_CHARS
            and piece.lower() not in _NOT_SECRET_VALUES
            and not piece.isdigit()
        }
        with self._lock:
            fresh -= self._values
            if not fresh:
                return False
            self._values |= fresh
            forms = {form for value in self._values for form in encoded_forms(value)}
            # Longest first, so a value that contains another is removed whole.
            self.forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        return True

    def clear(self) -> None:
        with self._lock:
            self._values = set()
            self.forms = ()

    def __len__(self) -> int:
        return len(self._values)
