"""What the storage layer refuses, in words that say what to do about it."""

from __future__ import annotations

UPGRADE_COMMAND = "agentheal db upgrade"


class StorageError(Exception):
    """A database URL, connection or schema agentheal cannot use; the message says why."""


class SchemaNotCurrent(StorageError):
    """A store made or last upgraded by another agentheal: older (run `agentheal db upgrade`) or
    newer (upgrade agentheal)."""
