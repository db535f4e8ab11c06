"""API tokens: roles, and a store of salted token hashes under the home folder.

A token is shown once, when it is made; the store keeps its key id (to find the entry without
hashing against every stored token), a per-token salt and the scrypt hash. A verified token is
remembered in this process's memory only (by its SHA-256), so a busy client pays scrypt once, and
the memory is dropped whenever the file changes (a revoked token stops working at once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from agentheal.models import utcnow

_PREFIX = "ahk"
# scrypt's cost: ~30 ms and 16 MB per check on one core, paid once per token and process.
_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    """What a caller may do: each role may do what the roles below it may."""

    viewer = "viewer"  # reads runs, agents, memory, the estate
    operator = "operator"  # submits gaps, approves and rejects runs
    admin = "admin"  # agents, memory imports, faults

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Caller:
    """Who made a request: a token's name and role (or the local admin with --insecure-local)."""

    name: str
    role: Role


class TokenError(Exception):
    """A token name, role or store that cannot be used; the message names the problem."""


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024, dklen=32)


class TokenStore:
    """`tokens.json` under the home folder: name → role, key id, salt, hash. Never a token."""

    def __init__(self, home: Path) -> None:
        self.path = home / "tokens.json"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._verified: dict[bytes, Caller] = {}

    # -- the file --

    def _load(self) -> dict[str, dict[str, Any]]:
        """The entries, read again when the file changed (another process added or revoked one)."""
        try:
            info = self.path.stat()
            stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or stamp is None:
                entries: dict[str, dict[str, Any]] = {}
                if stamp is not None:
                    try:
                        loaded = json.loads(self.path.read_text(encoding="utf-8"))
                    except (OSError, json.JSONDecodeError) as exc:
                        raise TokenError(f"token store {self.path} is unreadable: {exc}") from exc
                    entries = loaded.get("tokens", {}) if isinstance(loaded, dict) else {}
                self._entries, self._stamp, self._verified = entries, stamp, {}
            return self._entries

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"tokens": entries}, fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)

    # -- changes --

    def add(self, name: str, role: Role | str) -> str:
        """Make a token for `name` with `role`; returns the token (the only time it is seen)."""
        if not _NAME.match(name):
            raise TokenError(
                f"token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
                "letter or digit"
            )
        try:
            role = Role(role)
        except ValueError:
            raise TokenError(f"role {role!r}: one of {', '.join(r.value for r in Role)}") from None
        entries = dict(self._load())
        if name in entries:
            raise TokenError(f"a token named {name!r} exists; `agentheal tokens revoke {name}` first")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_bytes(16)
        entries[name] = {
            "role": role.value,
            "key_id": key_id,
            "salt": salt.hex(),
            "hash": _hash(secret, salt).hex(),
            "scrypt": {"n": _N, "r": _R, "p": _P},
            "created_at": utcnow().isoformat(),
        }
        self._save(entries)
        return f"{_PREFIX}_{key_id}_{secret}"

    def revoke(self, name: str) -> None:
        """Remove `name`'s token; requests carrying it are refused from now on."""
        entries = dict(self._load())
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise TokenError(f"no token named {name!r} (tokens: {known})")
        del entries[name]
        self._save(entries)

    # -- reads --

    def list(self) -> list[dict[str, str]]:
        """Name, role and creation time of each token (no hash, no salt)."""
        return [
            {"name": name, "role": e.get("role", ""), "created_at": e.get("created_at", "")}
            for name, e in sorted(self._load().items())
        ]

    def configured(self) -> bool:
        """Whether any token exists."""
        return bool(self._load())

    def known(self, token: str) -> Caller | None:
        """The caller of a token this process has verified since the file last changed, else None
        (cheap: no scrypt; `verify` decides the rest)."""
        self._load()
        return self._verified.get(hashlib.sha256(token.encode()).digest())

    def verify(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None for a token that is not (or no longer) valid."""
        entries = self._load()
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            return known
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != _PREFIX:
            return None
        for name, entry in entries.items():
            if not hmac.compare_digest(str(entry.get("key_id", "")), parts[1]):
                continue
            try:
                salt, stored = bytes.fromhex(entry["salt"]), bytes.fromhex(entry["hash"])
                role = Role(entry["role"])
            except (KeyError, ValueError):
                return None  # a damaged entry is never a match
            if not hmac.compare_digest(_hash(parts[2], salt), stored):
                return None
            caller = Caller(name=name, role=role)
            with self._lock:
                if self._entries is entries:  # not revoked while we hashed
                    self._verified[digest] = caller
            return caller
        return None
