"""What a chat message asks for: a command with its arguments, or nothing (and why).

The parser is pure and total: any text gives a `Command` or a `NotACommand`, never an exception,
and only text whose first word is a command (after a leading bot mention or `/agentheal`) gives
a `Command`. The chat core answers a `NotACommand` with help and does nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["COMMANDS", "USAGE", "Command", "NotACommand", "parse", "parse_duration"]

USAGE: dict[str, str] = {
    "heal": "heal <component>: <what is wrong>",
    "status": "status",
    "runs": "runs [component]",
    "show": "show <run>",
    "why": "why <run>",
    "approve": "approve <run> [note]",
    "reject": "reject <run> [note]",
    "mute": "mute <fingerprint> <duration, e.g. 30m, 2h, 1d>",
    "help": "help",
}
COMMANDS = frozenset(USAGE)

MAX_TEXT = 4000  # a gap's text is at most this long (as the API takes it)
MAX_MUTE = timedelta(days=30)

_MENTION = re.compile(r"^\s*(?:<@[A-Za-z0-9_.-]+(?:\|[^>]*)?>|<at>[^<]*</at>)\s*")
_SLASH = re.compile(r"^\s*/agentheal\b\s*", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_RUN = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{3,63}$")
_FINGERPRINT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.:-]{3,127}$")
_DURATION = re.compile(r"^(\d{1,6})\s*(s|m|h|d)$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Command:
    """A command and its arguments (`component`, `text`, `run`, `note`, `fingerprint`, `duration`)."""

    name: str
    args: dict[str, str] = field(default_factory=dict)
    duration: timedelta | None = None


@dataclass(frozen=True)
class NotACommand:
    """Text that asks for nothing this bot does; `problem` says why (empty: plain help was asked)."""

    problem: str = ""
    command: str | None = None  # the command word, when the rest of the text was wrong


def parse_duration(text: str) -> timedelta | None:
    """`30m`, `2h`, `1d`, `45s` as a duration (above 0, at most 30 days); None when it is not one."""
    found = _DURATION.match(text.strip())
    if not found:
        return None
    span = timedelta(**{_UNITS[found.group(2).lower()]: int(found.group(1))})
    return span if timedelta(0) < span <= MAX_MUTE else None


def _strip(text: str) -> str:
    text = _MENTION.sub("", text, count=1)
    return _SLASH.sub("", text, count=1).strip()


def parse(text: str) -> Command | NotACommand:
    """The command `text` asks for, or why it asks for none."""
    if not isinstance(text, str):
        return NotACommand("a message must be text")
    body = _strip(text.replace("\x00", ""))
    if not body:
        return NotACommand()
    word, *more = body.split(None, 1)
    word, rest = word.lower(), (more[0].strip() if more else "")
    if word not in COMMANDS:
        return NotACommand(f"`{word[:40]}` is not a command")
    try:
        return _ARGS[word](rest)
    except _Usage as exc:
        return NotACommand(str(exc), word)


class _Usage(ValueError):
    pass


def _usage(name: str, why: str = "") -> _Usage:
    return _Usage(f"{why + '; ' if why else ''}usage: {USAGE[name]}")


def _heal(rest: str) -> Command:
    component, colon, what = rest.partition(":")
    component, what = component.strip(), what.strip()
    if not colon or not component or not what:
        raise _usage("heal")
    if not _NAME.match(component):
        raise _usage("heal", f"`{component[:40]}` is not a component name")
    if len(what) > MAX_TEXT:
        raise _usage("heal", f"the text is over {MAX_TEXT} characters")
    return Command("heal", {"component": component, "text": what})


def _bare(name: str) -> Callable[[str], Command]:
    def parse_bare(rest: str) -> Command:
        if rest:
            raise _usage(name, f"`{name}` takes nothing after it")
        return Command(name)

    return parse_bare


def _runs(rest: str) -> Command:
    if not rest:
        return Command("runs")
    if " " in rest or not _NAME.match(rest):
        raise _usage("runs", f"`{rest[:40]}` is not a component name")
    return Command("runs", {"component": rest})


def _one_run(name: str) -> Callable[[str], Command]:
    def parse_run(rest: str) -> Command:
        run, _, more = rest.partition(" ")
        if not run:
            raise _usage(name)
        if not _RUN.match(run):
            raise _usage(name, f"`{run[:40]}` is not a run id (4 or more hex characters)")
        if name in ("show", "why") and more.strip():
            raise _usage(name, f"`{name}` takes one run id")
        args = {"run": run.lower()}
        if name in ("approve", "reject"):
            args["note"] = more.strip()[:MAX_TEXT]
        return Command(name, args)

    return parse_run


def _mute(rest: str) -> Command:
    parts = rest.split()
    if len(parts) != 2:
        raise _usage("mute")
    fingerprint, span = parts
    if not _FINGERPRINT.match(fingerprint):
        raise _usage("mute", f"`{fingerprint[:40]}` is not a fingerprint")
    duration = parse_duration(span)
    if duration is None:
        raise _usage("mute", f"`{span[:20]}` is not a duration of 1s to 30d")
    return Command("mute", {"fingerprint": fingerprint, "for": span.lower()}, duration)


def _help(rest: str) -> Command:
    topic = rest.split()[0].lower() if rest else ""
    return Command("help", {"topic": topic} if topic in COMMANDS else {})


_ARGS: dict[str, Callable[[str], Command]] = {
    "heal": _heal,
    "status": _bare("status"),
    "runs": _runs,
    "show": _one_run("show"),
    "why": _one_run("why"),
    "approve": _one_run("approve"),
    "reject": _one_run("reject"),
    "mute": _mute,
    "help": _help,
}
