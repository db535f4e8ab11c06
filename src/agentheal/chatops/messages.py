"""What the bot says, independent of any chat platform: a `Message` the adapters render as Block Kit
(Slack) or an Adaptive Card (Teams), and where it was said (`Place`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["Button", "ChatUser", "Message", "Place", "Poster", "Tone"]

Tone = Literal["info", "good", "warning", "bad"]


@dataclass(frozen=True)
class ChatUser:
    """Who wrote or pressed: the platform's stable user id, and a display name for people."""

    platform: str  # "slack", "teams"
    id: str
    name: str = ""

    @property
    def actor(self) -> str:
        """The identity the audit trail records: `slack:U0123`, `teams:29:1abc…`."""
        return f"{self.platform}:{self.id}"

    @property
    def shown(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Button:
    """An Approve or Reject button of an approval request."""

    label: str
    action: Literal["approve", "reject"]
    run_id: str
    style: Literal["primary", "danger"] = "primary"


@dataclass
class Message:
    """One message: a title, lines of text (light markdown: `*bold*`, `` `code` ``), facts as
    label/value pairs, buttons, and a footer. `text` is the one-line fallback notifications show."""

    text: str
    title: str = ""
    lines: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    footer: str = ""
    tone: Tone = "info"

    def plain(self) -> str:
        """Everything the message says, as plain text (for tests, logs and the CLI)."""
        parts = [self.title] if self.title else []
        parts += self.lines
        parts += [f"{k}: {v}" for k, v in self.facts]
        parts += [f"[{b.label}]" for b in self.buttons]
        if self.footer:
            parts.append(self.footer)
        return "\n".join(parts) or self.text


@dataclass(frozen=True)
class Place:
    """Where a message is, or goes: a conversation (a Slack channel, a Teams conversation), the
    thread in it, and the message itself once posted. `extra` carries what a platform needs
    besides (Teams: the service URL)."""

    conversation: str
    thread: str | None = None
    message: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        return dict(self.extra).get(key)

    def in_thread(self, thread: str | None) -> Place:
        return Place(self.conversation, thread, None, self.extra)

    def at(self, message: str) -> Place:
        return Place(self.conversation, self.thread, message, self.extra)


class Poster(Protocol):
    """What an adapter does for the chat core: post, update in place, answer one person privately."""

    def post(self, where: Place, message: Message) -> Place:
        """Post `message` in `where` (its thread when set); returns the posted message's place."""
        ...

    def update(self, posted: Place, message: Message) -> None:
        """Replace a posted message's content in place."""
        ...

    def private(self, where: Place, user: ChatUser, text: str) -> None:
        """Tell `user` alone something, in the conversation of `where`."""
        ...


def fact_value(value: Any, limit: int = 300) -> str:
    """A value shown in a fact, on one line and cut."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
