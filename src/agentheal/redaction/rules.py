"""The secret-finding rules: each one reports the spans of a text that hold a secret.

Every rule works on a view of the text with one byte per character (`_Views`), so a
compiled bytes pattern with a literal prefix (fast in `re`) finds its candidates and the
spans it reports are positions in the original text. A rule whose literal hint is absent is
skipped: most texts hold no secret, and a prompt goes through here with every call.

The rules treat what a window of a text can hold on its own as secret, because an
observation may show only part of a file:

- PEM blocks: the body lines after a `BEGIN` line (up to its `END` line, or while lines still
  look like a body) and the body lines before an `END` line whose `BEGIN` is not in the text,
  also JSON-escaped one-line blocks (`"private_key": "-----BEGIN ...\\n...\\n-----END ..."`);
- long opaque runs: 40+ base64 characters mixing upper case, lower case and digits (a PEM body
  line, `client-key-data`, a key in any encoding) wherever they stand;
- values after secret-looking names (`password=`, `api_key:`, `client-key-data:`,
  `"private_key": "..."`, `token 9f86d0...`), credentials in `Authorization` headers, bearer
  tokens and URLs, and well-known token formats (OpenAI, AWS, GitHub, Slack, Stripe, Google, JWT).
"""

from __future__ import annotations

import re

Span = tuple[int, int]

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
# A translate maps each character to "a" (in the alphabet) or " ", so a run is found by a plain
# substring search for "aaa…" (fast in C) instead of a regex tried at every position.
_B64_TABLE = bytes(ord("a") if c in _B64 else ord(" ") for c in range(256))
_TOKEN_TABLE = bytes(ord("a") if c in _TOKEN_CHARS else ord(" ") for c in range(256))
_RUN_MIN = 40  # a base64 run this long, mixing cases and digits, is a key whatever stands around it
_TOKEN_RUN_MIN = 16  # every token format below holds a run of 16 letters, digits or "_"
_HAS_DIGIT = re.compile(rb"[0-9]")
_HAS_UPPER = re.compile(rb"[A-Z]")
_HAS_LOWER = re.compile(rb"[a-z]")

_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]{1,40}-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]{1,40}-----")
_PEM_BODY_LINE = re.compile(rb"[A-Za-z0-9+/=]*")
_PEM_HEADER_LINE = re.compile(rb"[A-Za-z][A-Za-z-]*: ")  # Proc-Type:, DEK-Info: of encrypted keys
_PEM_WALK_LINES = 400  # an RSA-8192 key has ~120 body lines

# Secret-looking names, found by a literal (lower-cased view) and checked around it.
_NAME_LITERALS = (b"pass", b"pwd", b"secret", b"token", b"key", b"dsn", b"credential")
_SEPARATOR_VALUE = re.compile(
    rb"[\w.\-]*"  # the rest of the name: password_file, api_key_id, client-key-data
    rb"(?:"
    rb"[\"']?[ \t]*[:=][ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&\"']+)"  # name: value, "name": "value"
    rb"|[\"']?[ \t]+([A-Za-z0-9+/=_\-.]{16,})"  # name <opaque run>: "token 9f86d081884c7d65..."
    rb")"
)
_KEY_PREFIXES = (b"api", b"access", b"private", b"secret", b"signing", b"encryption", b"master")

_AUTH_HEADER = re.compile(
    rb"authorization[ \t]*[\"']?[ \t]*[:=][ \t]*[\"']?(?:(?:bearer|basic|token|digest)[ \t]+)?([^\s,;\"']+)"
)
_BEARER = re.compile(rb"bearer[ \t]+([a-z0-9\-._~+/]+=*)")
_URL_PASSWORD = re.compile(rb"://[^\s:/@]*:([^\s@/]+)@")
_TOKEN = re.compile(
    rb"sk-[A-Za-z0-9_\-]{16,}"  # OpenAI (sk-..., sk-proj-...) and look-alikes
    rb"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    rb"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"  # AWS access key ids
    rb"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    rb"|github_pat_[A-Za-z0-9_]{20,}"
    rb"|xox[baprs]-[A-Za-z0-9\-]{10,}"  # Slack
    rb"|AIza[0-9A-Za-z_\-]{35}"  # Google API keys
    rb"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"  # JWTs
)
_TOKEN_WORD_CHARS = frozenset(_TOKEN_CHARS + b"-")
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def find_spans(text: str) -> list[Span]:
    """The spans of `text` that hold a secret, by every rule, unsorted and possibly overlapping."""
    raw = text.encode("ascii", "replace")  # one byte per character: spans are text positions
    low = raw.lower()
    spans = _named_value_spans(low)
    if b"-----" in raw:
        spans += _pem_spans(raw)
    spans += _run_spans(raw)
    spans += _token_spans(raw)
    if b"authorization" in low:
        spans += [m.span(1) for m in _AUTH_HEADER.finditer(low)]
    if b"bearer" in low:
        spans += [m.span(1) for m in _BEARER.finditer(low)]
    if b"@" in raw and b"://" in raw:
        spans += [m.span(1) for m in _URL_PASSWORD.finditer(raw)]
    if b"xox" in raw:  # Slack tokens are dash-separated: their runs can be shorter than 16
        spans += [m.span() for m in _TOKEN.finditer(raw) if _starts_word(raw, m.start())]
    return spans


def _starts_word(raw: bytes, at: int) -> bool:
    return at == 0 or raw[at - 1] not in _WORD


def _run_spans(raw: bytes) -> list[Span]:
    """Runs of 40+ base64 characters that mix upper case, lower case and digits."""
    classes = raw.translate(_B64_TABLE)
    spans = []
    needle = b"a" * _RUN_MIN
    at = classes.find(needle)
    while at >= 0:
        end = classes.find(b" ", at + _RUN_MIN)
        end = len(classes) if end < 0 else end
        run = raw[at:end]
        if _HAS_DIGIT.search(run) and _HAS_UPPER.search(run) and _HAS_LOWER.search(run):
            while end < len(raw) and raw[end] == 0x3D:  # "=" padding
                end += 1
            spans.append((at, end))
        at = classes.find(needle, end)
    return spans


def _token_spans(raw: bytes) -> list[Span]:
    """Well-known tokens, found from the runs of 16+ letters, digits or "_" that each holds, not by
    a search per format."""
    classes = raw.translate(_TOKEN_TABLE)
    spans: list[Span] = []
    needle = b"a" * _TOKEN_RUN_MIN
    at = classes.find(needle)
    while at >= 0:
        end = classes.find(b" ", at + _TOKEN_RUN_MIN)
        end = len(classes) if end < 0 else end
        word = at  # back to the start of the word: sk-proj-…, xoxb-…-…
        while word > 0 and raw[word - 1] in _TOKEN_WORD_CHARS:
            word -= 1
        while word < end:
            m = _TOKEN.match(raw, word)
            if m is not None and _starts_word(raw, word):
                spans.append(m.span())
            dash = raw.find(b"-", word, end)
            word = end if dash < 0 else dash + 1
        at = classes.find(needle, end)
    return spans


def _named_value_spans(low: bytes) -> list[Span]:
    """Values after secret-looking names: `password=x`, `"api_key": "x"`, `token 9f86d0...`."""
    spans = []
    for literal in _NAME_LITERALS:
        at = low.find(literal)
        while at >= 0:
            after = at + len(literal)
            if literal != b"key" or _secret_key_name(low, at):
                m = _SEPARATOR_VALUE.match(low, after)
                if m is not None:
                    if m.group(1) is not None:
                        spans.append(_unquoted(low, m.span(1)))
                    elif _HAS_DIGIT.search(m.group(2)):
                        spans.append(m.span(2))
            at = low.find(literal, after)
    return spans


def _secret_key_name(low: bytes, at: int) -> bool:
    """`key` names a secret after a separator (`client-key-data`, `tls.key`, `SIGNING_KEY`) or a
    secret-looking word (`apikey`, `privatekey`); a bare `key=` (a cache key) does not."""
    if at > 0 and low[at - 1] in b"_.-":
        return True
    return any(low.endswith(prefix, 0, at) for prefix in _KEY_PREFIXES)


def _unquoted(low: bytes, span: Span) -> Span:
    start, end = span
    if end - start >= 2 and low[start] in b"\"'" and low[end - 1] == low[start]:
        return start + 1, end - 1
    return span


def _pem_spans(raw: bytes) -> list[Span]:
    spans = []
    for m in _PEM_BEGIN.finditer(raw):
        spans += _pem_after_begin(raw, m.start(), m.end())
    for m in _PEM_END.finditer(raw):
        spans += _pem_before_end(raw, m.start())
    return spans


def _line_bounds(raw: bytes, at: int) -> Span:
    start = raw.rfind(b"\n", 0, at) + 1
    end = raw.find(b"\n", at)
    return start, len(raw) if end < 0 else end


def _body_part(raw: bytes, line: Span, column: int) -> Span | None:
    """The part of a line that is a PEM body line: the whole line, or the line from the marker's
    column (lines carrying the same prefix as the marker, e.g. a log timestamp)."""
    start, end = line
    if _PEM_BODY_LINE.fullmatch(raw[start:end].strip()) or _PEM_HEADER_LINE.match(raw[start:end].strip()):
        return start, end
    if 0 < column < end - start:
        part = raw[start + column : end].strip()
        if _PEM_BODY_LINE.fullmatch(part) or _PEM_HEADER_LINE.match(part):
            return start + column, end
    return None


def _pem_after_begin(raw: bytes, marker_start: int, marker_end: int) -> list[Span]:
    line_start, line_end = _line_bounds(raw, marker_start)
    if raw[marker_end:line_end].strip():
        # A one-line block (JSON-escaped "\\n", or spaces): up to its END, a quote or the line's end.
        stop = line_end
        end = _PEM_END.search(raw, marker_end, line_end)
        if end is not None:
            stop = end.start()
        for quote in (b'"', b"'"):
            q = raw.find(quote, marker_end, stop)
            if q >= 0:
                stop = q
        return [(marker_end, stop)] if stop > marker_end else []
    column, spans, at = marker_start - line_start, [], line_end
    for _ in range(_PEM_WALK_LINES):
        if at >= len(raw):
            break
        line = _line_bounds(raw, at + 1)
        if b"-----" in raw[line[0] : line[1]]:
            break
        part = _body_part(raw, line, column)
        if part is None:
            break
        spans.append(part)
        at = line[1]
    return spans


def _pem_before_end(raw: bytes, marker_start: int) -> list[Span]:
    line_start, _ = _line_bounds(raw, marker_start)
    before = raw[line_start:marker_start]
    if before.strip() and not before[-1:].isspace():
        # A one-line block without its BEGIN: the body runs back to a quote, a space or the line start.
        if b"-----BEGIN " in before:
            return []  # the BEGIN rule covers it
        start = max(before.rfind(b'"'), before.rfind(b"'"), before.rfind(b" "), before.rfind(b"\t")) + 1
        return [(line_start + start, marker_start)]
    column, spans, at = len(before), [], line_start
    for _ in range(_PEM_WALK_LINES):
        if at == 0:
            break
        line = _line_bounds(raw, at - 1)
        if b"-----" in raw[line[0] : line[1]]:
            break
        part = _body_part(raw, line, column)
        if part is None:
            break
        spans.append(part)
        at = line[0]
    return spans
