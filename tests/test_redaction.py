"""Redaction: what a window can hold on its own is secret, values are removed in every form,
lines are kept, and stored and shown text is redacted too."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from agentheal.detect.gaps import problem
from agentheal.estate import files
from agentheal.events import EventStore
from agentheal.models import Gap
from agentheal.redaction import REDACTED, SECRETS, redact, register_config_secrets, register_secrets

BODY = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MZR4ZQz9vXyC1rZ0ZfUuJ8QpH3tK5Q9aX2vW1bY7pL0mN4oR6sT8uV0wX2yZ4aB6",
    "c8dE0fG2hI4jK6lM8nO0pQ2rS4tU6vW8xY0zA2bC4dE6fG8hI0jK2lM4nO6pQ8rS",
    "Yk3Q9s0Xw==",
]
PEM = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *BODY, "-----END RSA PRIVATE KEY-----"])


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    saved = set(SECRETS._values)
    yield
    SECRETS.clear()
    register_secrets(saved)


def _clean(text: str, secrets: list[str]) -> None:
    assert [s for s in secrets if s in text] == []


@pytest.mark.parametrize(
    "window",
    [
        "\n".join([*BODY[1:], "-----END RSA PRIVATE KEY-----", "next line"]),  # BEGIN outside
        "\n".join(["log line", "-----BEGIN RSA PRIVATE KEY-----", *BODY[:2]]),  # END outside
        "\n".join(BODY[1:3]),  # neither: long base64 runs stand on their own
        "\n".join(f"2026-03-01T10:00:00Z INFO {line}" for line in PEM.split("\n")),  # logged with a prefix
        json.dumps({"private_key": PEM + "\n"}),  # a JSON key file
        json.dumps({"private_key": PEM})[40:],  # a JSON key file cut before BEGIN
    ],
    ids=["no-begin", "no-end", "body-only", "prefixed", "json", "json-cut"],
)
def test_pem_bodies_are_secret_in_any_window(window: str) -> None:
    clean = redact(window)
    _clean(clean, BODY)
    assert clean.count("\n") == window.count("\n") and redact(clean) == clean


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlF", "LS0tLS1CRUdJTiBSU0Eg"),
        ('  "private_key_id": "0123456789abcdef0123456789abcdef01234567",', "0123456789abcdef0123"),
        ("loaded signing_secret=9f86d081884c7d659a2feaa0c55ad015", "9f86d081884c7d659a2f"),
        ("retry with token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "9f86d081884c7d659a2f"),
        ("tls.key: c2VjcmV0LWtleS1ieXRlcw==", "c2VjcmV0LWtleS1ieXRlcw"),
        ("DB_DSN=postgres://app:pa55word@db/app", "pa55word"),
    ],
)
def test_values_next_to_secret_names(text: str, secret: str) -> None:
    assert secret not in redact(text) and REDACTED in redact(text)


def test_ordinary_log_lines_stay() -> None:
    text = (
        '2026-03-01T10:00:00.123Z INFO 10.1.2.3 "GET /api/orders/1234 HTTP/1.1" 200 512 3.2ms\n'
        "DEBUG cache hit key=product:123 ttl=60 session 9f3a1c2b4d5e6f70\n"
        "WARN slow query 1200 ms on table orders; user alice logged in from https://example.com/login"
    )
    assert redact(text) == text


def test_registered_values_go_in_every_form() -> None:
    value = "Zq9-hunter-PASS-7781x"
    register_config_secrets(f"LOG_LEVEL=info\nexport API_TOKEN='{value}'\nport: 8080\n")
    basic = base64.b64encode(f"svc:{value}".encode()).decode()
    text = (
        f"as {value}; Authorization-less auth={basic} url ?t={quote(value, safe='')} "
        f"alone {base64.b64encode(value.encode()).decode()}"
    )
    clean = redact(text)
    assert value not in clean and quote(value, safe="") not in clean
    assert basic[8:-4] not in clean and base64.b64encode(value.encode()).decode()[:20] not in clean
    assert "info" in redact("LOG_LEVEL=info") and "8080" in redact("port 8080")  # only secret names count


def test_short_and_numeric_values_are_not_registered() -> None:
    assert not register_secrets(["abc", "12345678", "true"])
    assert redact("abc 12345678 true") == "abc 12345678 true"


def test_a_value_registered_later_is_removed_from_cached_text() -> None:
    text = "the token was Rt7-late-registered-value"
    assert redact(text) == text
    register_secrets(["Rt7-late-registered-value"])
    assert "Rt7-late-registered-value" not in redact(text)


def _write_log(path: Path, before: int, after: int) -> None:
    filler = [f"2026-03-01T10:00:00Z INFO GET /api/orders/{i} 200" for i in range(before)]
    rest = [f"2026-03-01T10:00:01Z INFO GET /api/items/{i} 200" for i in range(after)]
    path.write_text("\n".join([*filler, *PEM.split("\n"), *rest]) + "\n")


@pytest.mark.parametrize("size", ["small", "large"])
def test_windows_of_a_file_never_hold_a_body(tmp_path: Path, size: str) -> None:
    log = tmp_path / "app.log"
    _write_log(log, 10 if size == "small" else 3000, 5)
    if size == "large":
        assert log.stat().st_size > files.WHOLE_FILE_BYTES
    start = log.read_bytes().index(b"-----BEGIN")
    for lines in range(1, 12):
        _clean("\n".join(files.tail_lines(log, lines)), BODY)
    for begin in range(start - 30, start + len(PEM) + 5, 7):
        for width in (5, 13, 64, 200):
            window = files.redacted_window(log, begin, begin + width)
            _clean(window, BODY)
            assert all(len(piece) < 12 or piece not in window for s in BODY for piece in _pieces(s))


def _pieces(secret: str) -> list[str]:
    return [secret[i : i + 12] for i in range(len(secret) - 11)]


def test_a_window_is_the_same_bytes_when_nothing_is_secret(tmp_path: Path) -> None:
    log = tmp_path / "plain.log"
    text = "".join(f"line {i} ünïcode ok\n" for i in range(200))
    log.write_text(text)
    data = text.encode()
    for begin, end in ((0, 10), (35, 90), (100, 2000), (len(data) - 7, len(data))):
        assert files.redacted_window(log, begin, end) == data[begin:end].decode("utf-8", "replace")


def test_detection_evidence_and_the_event_store_are_redacted(tmp_path: Path) -> None:
    signal = problem("logs", "web", "ERROR auth failed for token 9f86d081884c7d659a2feaa0c55ad015", "x",
                     evidence=[f"web.log line 3: {BODY[0]}"])  # fmt: skip
    assert "9f86d081884c7d659a2f" not in signal.text
    assert BODY[0] not in json.dumps(signal.data)
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        gap = Gap(
            text=f"db_password=hunter2-very-secret seen with {BODY[1]}", component="web", evidence=[BODY[2]]
        )
        store.begin_heal(gap, "run-1")
        store.node("run-1", "diagnose", f"found {BODY[0]}", {"findings": [PEM]})
        detail = store.run("run-1")
    finally:
        store.close()
    assert detail is not None
    with sqlite3.connect(tmp_path / "events.db") as conn:
        rows = " ".join(
            str(r) for t in ("gaps", "runs", "node_events") for r in conn.execute(f"SELECT * FROM {t}")
        )
    _clean(rows, [*BODY[:3], "hunter2-very-secret"])  # BODY[3], 11 characters alone, is no key
