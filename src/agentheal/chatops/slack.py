"""The Slack adapter, on slack-bolt: the slash command `/agentheal`, mentions and direct messages,
Approve / Reject buttons, and Block Kit messages; served over HTTP on `agentheal serve` at
`POST /slack/events` or over Socket Mode (`agentheal chat slack --socket`).

Every HTTP request goes through bolt's own handling, its signature check first: a missing, wrong
or over-five-minutes-old signature is answered 401 by bolt before any listener runs. The Web API's
base URL is `AGENTHEAL_SLACK_API_URL`, so tests point it at a loopback stand-in.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from agentheal.chatops.messages import ChatUser, Message, Place

if TYPE_CHECKING:
    from slack_bolt import App
    from slack_sdk import WebClient

    from agentheal.chatops.core import ChatOps
    from agentheal.config import Settings

__all__ = ["SlackEndpoint", "SlackPoster", "announce_runs", "blocks", "build_app", "slack_configured"]

log = logging.getLogger("agentheal.chatops")

_BUTTON = re.compile(r"^agentheal_(approve|reject)$")
_MAX_TEXT = 2900  # a section's text may be 3000 characters


def slack_configured(settings: Settings) -> bool:
    """Whether `serve` takes Slack's requests at /slack/events: the signing secret is set."""
    return settings.slack_signing_secret is not None


def _cut(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(message: Message) -> list[dict[str, Any]]:
    """A message as Block Kit blocks."""
    out: list[dict[str, Any]] = []
    if message.title:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*{message.title}*")}})
    if message.lines:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n".join(message.lines))}})
    if message.facts:
        fields = [{"type": "mrkdwn", "text": _cut(f"*{k}*\n{v}", 1900)} for k, v in message.facts[:10]]
        out.append({"type": "section", "fields": fields})
    if message.buttons:
        elements = []
        for b in message.buttons:
            button: dict[str, Any] = {
                "type": "button",
                "text": {"type": "plain_text", "text": b.label},
                "action_id": f"agentheal_{b.action}",
                "value": b.run_id,
                "style": b.style,
            }
            elements.append(button)
        out.append(
            {"type": "actions", "block_id": f"run_{message.buttons[0].run_id[:40]}", "elements": elements}
        )
    if message.footer:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(message.footer, 1900)}]})
    return out


class SlackPoster:
    """Posts for the chat core through Slack's Web API (`chat.postMessage`, `chat.update`,
    `chat.postEphemeral`)."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, where: Place, message: Message) -> Place:
        answer = self.client.chat_postMessage(
            channel=where.conversation, text=message.text, blocks=blocks(message), thread_ts=where.thread
        )
        return where.at(str(answer["ts"]))

    def update(self, posted: Place, message: Message) -> None:
        assert posted.message is not None
        self.client.chat_update(
            channel=posted.conversation, ts=posted.message, text=message.text, blocks=blocks(message)
        )

    def private(self, where: Place, user: ChatUser, text: str) -> None:
        self.client.chat_postEphemeral(
            channel=where.conversation, user=user.id, text=text, thread_ts=where.thread
        )


def web_client(settings: Settings, *, with_token: bool = True) -> WebClient:
    """A Web API client with the bot token, on `AGENTHEAL_SLACK_API_URL` when set."""
    from slack_sdk import WebClient

    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token and with_token else None
    base = settings.slack_api_url or WebClient.BASE_URL
    return WebClient(token=token, base_url=base.rstrip("/") + "/", timeout=10)


class _Authorizer:
    """Bolt's authorization for one workspace, without a Web API call on the request's path: the bot's
    own user id (to ignore its own messages) is learnt once, when Slack answers `auth.test`."""

    def __init__(self, client: WebClient) -> None:
        self.client = client
        self.bot_user_id: str | None = None
        self._tried = 0.0
        self._lock = threading.Lock()

    def result(self, enterprise_id: str | None, team_id: str | None) -> Any:
        from slack_bolt.authorization import AuthorizeResult

        with self._lock:
            if self.bot_user_id is None and time.monotonic() - self._tried > 60:
                self._tried = time.monotonic()
                try:
                    self.bot_user_id = str(self.client.auth_test()["user_id"])
                except Exception as exc:  # Slack unreachable now: try again in a minute
                    log.warning(
                        "slack: auth.test failed (%s); the bot's own messages are told by bot_id", exc
                    )
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            bot_token=self.client.token,
            bot_user_id=self.bot_user_id,
        )


def _authorize(authorizer: _Authorizer) -> Any:
    # bolt passes arguments by the names a plain function declares
    def authorize(enterprise_id: str | None, team_id: str | None) -> Any:
        return authorizer.result(enterprise_id, team_id)

    return authorize


def build_app(chat: ChatOps, settings: Settings, *, socket_mode: bool = False) -> App:
    """The bolt app: the slash command, mentions, direct messages and the buttons, answered by `chat`.

    Socket Mode needs no signing secret (Slack's connection is authenticated by the app token)."""
    from slack_bolt import App

    client = web_client(settings)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    if not socket_mode and not secret:
        raise ValueError("AGENTHEAL_SLACK_SIGNING_SECRET is not set: Slack's requests cannot be checked")
    app = App(
        client=web_client(
            settings, with_token=False
        ),  # bolt's own: each request's gets the token from authorize
        signing_secret=secret or "",
        authorize=_authorize(_Authorizer(client)),
        request_verification_enabled=not socket_mode,
        logger=log,
    )
    poster = SlackPoster(client)

    @app.command("/agentheal")
    def slash(ack: Any, command: dict[str, Any]) -> None:
        user = ChatUser("slack", str(command.get("user_id", "")), str(command.get("user_name", "")))
        reply = chat.handle(
            user, str(command.get("text", "")), Place(str(command.get("channel_id", ""))), poster
        )
        ack(text=reply.text, blocks=blocks(reply), response_type="ephemeral")

    def said(event: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype"):
            return  # the bot's own posts, edits, joins
        thread = str(event.get("thread_ts") or event.get("ts") or "") or None
        where = Place(str(event.get("channel", "")), thread)
        user = ChatUser("slack", str(event.get("user", "")))
        reply = chat.handle(user, str(event.get("text", "")), Place(where.conversation), poster)
        poster.post(where, reply)

    @app.event("app_mention")
    def mention(event: dict[str, Any]) -> None:
        said(event)

    @app.event("message")
    def direct(event: dict[str, Any]) -> None:
        if event.get("channel_type") == "im":
            said(event)

    @app.action(_BUTTON)
    def button(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        who = body.get("user") or {}
        user = ChatUser("slack", str(who.get("id", "")), str(who.get("username") or who.get("name") or ""))
        message = body.get("message") or {}
        where = Place(
            str((body.get("channel") or {}).get("id", "")), message.get("thread_ts") or message.get("ts")
        )
        verb = _BUTTON.match(str(action.get("action_id", "")))
        pressed = chat.press(user, verb.group(1) if verb else "", str(action.get("value", "")))
        if pressed.private:
            poster.private(where, user, pressed.message.text)
        else:
            poster.post(where, pressed.message)

    return app


def announce_runs(chat: ChatOps, settings: Settings) -> None:
    """With `AGENTHEAL_SLACK_CHANNEL` set, follow there the runs other doors start (their approval
    requests included), each in a thread."""
    if settings.slack_channel:
        chat.threads.announce(SlackPoster(web_client(settings)), Place(settings.slack_channel))


class SlackEndpoint:
    """`POST /slack/events` as an ASGI app: the raw body and headers to bolt's `dispatch` (in a worker
    thread: listeners call the Web API), bolt's answer back as it is (401 for a bad signature)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import anyio
        from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        request = Request(scope, receive)
        if request.method != "POST":
            await JSONResponse({"detail": "Slack posts its requests here"}, status_code=405)(
                scope, receive, send
            )
            return
        body = await request.body()
        bolt_request = to_bolt_request(request, body)
        answer = await anyio.to_thread.run_sync(self.app.dispatch, bolt_request)
        await to_starlette_response(answer)(scope, receive, send)
