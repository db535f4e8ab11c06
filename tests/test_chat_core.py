"""The chat core without a platform: the parser (property-based: any text is a command or help, never an
exception, never an action from text that is not a command), roles, the audit trail, mutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentheal.chatops.core import ChatOps
from agentheal.chatops.messages import ChatUser, Message, Place
from agentheal.chatops.parser import COMMANDS, Command, NotACommand, parse, parse_duration
from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.graphs.context import HealContext
from agentheal.services.feedback import active_mutes
from agentheal.services.heal import HealPool

OPS, VIC, NOBODY = (
    ChatUser("slack", "UOPS", "olga"),
    ChatUser("teams", "29:vic", "vic"),
    ChatUser("slack", "UX"),
)


class Posted:
    """The platform side, kept in memory: what the core asked to post, update or say privately."""

    def __init__(self) -> None:
        self.posts: list[tuple[Place, Message]] = []
        self.updates: list[tuple[Place, Message]] = []
        self.privately: list[tuple[ChatUser, str]] = []

    def post(self, where: Place, message: Message) -> Place:
        self.posts.append((where, message))
        return where.at(str(len(self.posts)))

    def update(self, posted: Place, message: Message) -> None:
        self.updates.append((posted, message))

    def private(self, where: Place, user: ChatUser, text: str) -> None:
        self.privately.append((user, text))


def _first_word(text: str) -> str:
    import re

    body = re.sub(
        r"^\s*(?:<@[A-Za-z0-9_.-]+(?:\|[^>]*)?>|<at>[^<]*</at>)\s*", "", text.replace("\x00", ""), count=1
    )
    body = re.sub(r"^\s*/agentheal\b\s*", "", body, count=1, flags=re.IGNORECASE)
    return (body.split() or [""])[0].lower()


@given(st.text(max_size=300))
@hsettings(max_examples=400)
def test_any_text_parses_to_a_command_or_help_and_only_commands_are_commands(text: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Command | NotACommand)
    if isinstance(parsed, Command):
        assert parsed.name in COMMANDS and _first_word(text) == parsed.name
    elif _first_word(text) not in COMMANDS:
        assert parsed.command is None


@given(
    st.sampled_from(sorted(COMMANDS)),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120),
)
def test_a_command_word_with_any_arguments_never_raises(word: str, rest: str) -> None:
    parsed = parse(f"{word} {rest}")
    assert isinstance(parsed, Command | NotACommand)
    if isinstance(parsed, NotACommand):
        assert parsed.command == word and "usage:" in parsed.problem


@given(
    st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200).filter(
        lambda t: t.strip()
    ),
)
def test_heal_round_trips_component_and_text(component: str, what: str) -> None:
    assert parse(f"<@UBOT> heal {component}: {what}") == Command(
        "heal", {"component": component, "text": what.strip()}
    )


def test_the_commands_as_written() -> None:
    assert parse("/agentheal approve 1a2b3c4d off-peak, fine") == Command(
        "approve", {"run": "1a2b3c4d", "note": "off-peak, fine"}
    )
    assert parse("runs web") == Command("runs", {"component": "web"})
    assert parse("mute 0123456789abcdef 2h") == Command(
        "mute", {"fingerprint": "0123456789abcdef", "for": "2h"}, timedelta(hours=2)
    )
    assert isinstance(parse("mute 0123456789abcdef 31d"), NotACommand)
    assert parse_duration("0m") is None and parse_duration("90s") == timedelta(seconds=90)
    assert isinstance(parse("heal web"), NotACommand) and isinstance(parse("show xyz!"), NotACommand)
    assert parse("please restart everything") == NotACommand("`please` is not a command")


@pytest.fixture
def chat(settings: Settings) -> Iterator[tuple[ChatOps, Posted, EventStore]]:
    configured = Settings(
        home=settings.home,
        chat_roles={"slack:UOPS": "operator", "teams:29:vic": "viewer"},
        chat_default_role="",
    )
    ctx = HealContext(settings=configured)
    pool = HealPool(ctx, max_heals=1)
    ops = ChatOps(pool, configured)
    yield ops, Posted(), ctx.events
    ops.close()
    pool.close()


@given(st.text(max_size=200))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_text_that_is_not_a_command_gets_help_and_does_nothing(
    chat: tuple[ChatOps, Posted, EventStore], text: str
) -> None:
    ops, posted, events = chat
    parsed = parse(text)
    if isinstance(parsed, Command):
        return
    reply = ops.handle(OPS, text, Place("C1"), posted)  # an operator: anything is allowed, nothing happens
    if parsed.command is None:
        assert "heal <component>" in reply.plain()  # not a command at all: the help
    else:
        assert f"usage: {parsed.command}" in reply.plain()  # a command word without its arguments
    assert posted.posts == [] and posted.updates == []
    assert events.audit_rows() == [] and events.runs(limit=5) == []


def test_roles_decide_and_every_command_is_audited_with_the_chat_identity(
    chat: tuple[ChatOps, Posted, EventStore],
) -> None:
    ops, posted, events = chat
    refused = ops.handle(VIC, "heal web: down", Place("19:conv"), posted)
    assert "may not heal" in refused.text and "needs operator" in refused.text
    nobody = ops.handle(NOBODY, "runs", Place("C1"), posted)
    assert "no role" in nobody.plain() and '"slack:UX": "viewer"' in nobody.plain()
    assert "heal <component>" in ops.handle(NOBODY, "help", Place("C1"), posted).plain()  # help needs no role
    assert "No runs" in ops.handle(VIC, "runs", Place("19:conv"), posted).plain()
    pressed = ops.press(VIC, "approve", "abcdef12")
    assert pressed.private and "may not approve" in pressed.message.text
    missing = ops.handle(OPS, "show abcdef12", Place("C1"), posted)
    assert "no run 'abcdef12'" in missing.text
    assert posted.posts == []

    rows = [(r.actor, r.action, r.outcome, r.role, r.door) for r in reversed(events.audit_rows())]
    assert rows == [
        ("teams:29:vic", "heal", "refused", "viewer", "teams"),
        ("slack:UX", "runs", "refused", None, "slack"),
        ("slack:UX", "help", "ok", None, "slack"),
        ("teams:29:vic", "runs", "ok", "viewer", "teams"),
        ("teams:29:vic", "approve", "refused", "viewer", "teams"),
        ("slack:UOPS", "show", "ok", "operator", "slack"),
    ]


def test_mute_is_recorded_until_when_and_audited(
    chat: tuple[ChatOps, Posted, EventStore], settings: Settings
) -> None:
    ops, posted, events = chat
    reply = ops.handle(OPS, "mute 0123456789abcdef 2h", Place("C1"), posted)
    assert "Muted `0123456789abcdef` until" in reply.plain()
    (made,) = active_mutes(settings)
    assert (made.target, made.kind, made.by) == ("0123456789abcdef", "fingerprint", "slack:UOPS")
    assert 7199 <= made.until - made.since <= 7201
    until = datetime.fromtimestamp(made.until, UTC)
    (row,) = events.audit_rows()
    assert (row.actor, row.action, row.target, row.data["until"]) == (
        "slack:UOPS",
        "mute",
        "0123456789abcdef",
        until.isoformat(),
    )
    assert "may not mute" in ops.handle(VIC, "mute 0123456789abcdef 1h", Place("C1"), posted).text


def test_the_slack_manifest_matches_what_the_bot_serves() -> None:
    from pathlib import Path

    import yaml

    from agentheal.chatops.slack import blocks

    manifest = yaml.safe_load((Path(__file__).parent.parent / "slack-app-manifest.yaml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/agentheal" and command["url"].endswith("/slack/events")
    settings_ = manifest["settings"]
    assert settings_["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings_["interactivity"] == {"is_enabled": True, "request_url": command["url"]}
    assert set(settings_["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    assert {"chat:write", "commands", "app_mentions:read", "im:history"} <= set(
        manifest["oauth_config"]["scopes"]["bot"]
    )
    assert blocks(Message(text="x", title="t"))[0]["text"]["type"] == "mrkdwn"
