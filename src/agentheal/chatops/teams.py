"""The Microsoft Teams adapter, on Microsoft's Teams SDK for Python (`microsoft-teams-apps`, with
`microsoft-teams-cards` for Adaptive Cards): messages to the bot, Adaptive Cards with Approve /
Reject as `Action.Execute`, each run's card updated in place when it ends; served on
`agentheal serve` at `POST /teams/messages`.

Inbound activities are authenticated by the SDK itself (`HttpServer.handle_request`): a Bot
Framework JWT signed by a key of the OpenID metadata's key set, for this bot's app id, issued by
the Bot Framework, for the activity's service URL; anything else is answered 401 before a handler
runs. Unauthenticated activities are never accepted: the SDK's
`dangerously_allow_unauthenticated_requests` is always passed False, whatever its environment
variable says. `AGENTHEAL_TEAMS_OPENID_URL` and `AGENTHEAL_TEAMS_TOKEN_URL` point the key set and
the bot's own token at other endpoints (a sovereign cloud, a token proxy, a loopback stand-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agentheal.chatops.messages import ChatUser, Message, Place

if TYPE_CHECKING:
    from microsoft_teams.apps import App
    from microsoft_teams.cards import AdaptiveCard

    from agentheal.chatops.core import ChatOps
    from agentheal.config import Settings

__all__ = ["TeamsEndpoint", "TeamsPoster", "adaptive_card", "teams_configured"]

log = logging.getLogger("agentheal.chatops")

PATH = "/teams/messages"
_BOLD = re.compile(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])")  # Slack's *bold* is Markdown's **bold**
_STYLES = {"good": "good", "bad": "attention", "warning": "warning", "info": "default"}


@contextlib.contextmanager
def _sdk_notices_silenced() -> Iterator[None]:
    """The SDK warns about itself on import and on construction (an HTML widget in preview, its own
    deprecated bot client, which `App` builds regardless): not ours to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def teams_configured(settings: Settings) -> bool:
    """Whether `serve` takes Teams' activities at /teams/messages: the bot's app id is set."""
    return settings.teams_client_id is not None


def _plain(text: str) -> str:
    """A message's text as typed: Teams sends entities (`&nbsp;` after a mention) and may wrap lines
    in tags; the mention itself (`<at>…</at>`) stays for the parser to drop."""
    import html

    text = re.sub(r"<(?!/?at>)[^>]*>", " ", text)
    return html.unescape(text).replace("\xa0", " ")


def _markdown(text: str) -> str:
    return _BOLD.sub(r"**\1**", text)


def adaptive_card(message: Message) -> AdaptiveCard:
    """A message as an Adaptive Card; its buttons are `Action.Execute` with the verb and the run id."""
    from microsoft_teams.cards import AdaptiveCard, Container, ExecuteAction, Fact, FactSet, TextBlock

    body: list[Any] = []
    if message.title:
        body.append(TextBlock(text=_markdown(message.title), weight="Bolder", size="Medium", wrap=True))
    body += [TextBlock(text=_markdown(line), wrap=True, spacing="Small") for line in message.lines]
    if message.facts:
        body.append(FactSet(facts=[Fact(title=k, value=_markdown(v)) for k, v in message.facts]))
    if message.footer:
        body.append(TextBlock(text=_markdown(message.footer), is_subtle=True, size="Small", wrap=True))
    actions = [
        ExecuteAction(
            title=b.label,
            verb=b.action,
            data={"action": b.action, "run_id": b.run_id},
            style="positive" if b.style == "primary" else "destructive",
        )
        for b in message.buttons
    ]
    container = Container(items=body, style=_STYLES.get(message.tone, "default"))
    return AdaptiveCard(body=[container], actions=actions or None, fallback_text=message.text, version="1.5")


def card_json(message: Message) -> dict[str, Any]:
    """The Adaptive Card of a message as JSON (for pictures and tests)."""
    dumped: dict[str, Any] = adaptive_card(message).model_dump(by_alias=True, exclude_none=True)
    return dumped


class TeamsPoster:
    """Posts for the chat core through the Bot Connector (the SDK's `App.send`), from worker threads:
    each call runs on the server's event loop, where the SDK's client lives."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @staticmethod
    def _activity(message: Message, activity_id: str | None = None) -> Any:
        from microsoft_teams.api.activities.message.message import MessageActivityInput

        activity = MessageActivityInput(id=activity_id) if activity_id else MessageActivityInput()
        return activity.add_card(adaptive_card(message))

    def post(self, where: Place, message: Message) -> Place:
        from microsoft_teams.apps.utils.thread import to_threaded_conversation_id

        conversation = where.conversation
        if where.thread and where.get("kind") == "channel":  # chats have no threads: replies follow
            conversation = to_threaded_conversation_id(conversation, where.thread)
        sent = self._run(
            self.app.send(conversation, self._activity(message), service_url=where.get("service_url"))
        )
        return where.at(str(sent.id))

    def update(self, posted: Place, message: Message) -> None:
        assert posted.message is not None
        activity = self._activity(message, posted.message)
        self._run(self.app.send(posted.conversation, activity, service_url=posted.get("service_url")))

    def private(self, where: Place, user: ChatUser, text: str) -> None:
        from microsoft_teams.api import Account
        from microsoft_teams.api.activities.message.message import MessageActivityInput

        activity = MessageActivityInput(text=text).with_recipient(Account(id=user.id), is_targeted=True)
        self._run(self.app.send(where.conversation, activity, service_url=where.get("service_url")))


class _Adapter:
    """The SDK's `HttpServerAdapter`: it keeps the messaging route's handler for `TeamsEndpoint`
    (agentheal serve owns the HTTP server)."""

    def __init__(self) -> None:
        self.handler: Any = None

    def register_route(self, method: str, path: str, handler: Any) -> None:
        if method != "POST" or path != PATH:
            raise ValueError(f"the Teams SDK asked for {method} {path}; agentheal serves POST {PATH} only")
        self.handler = handler

    def serve_static(self, path: str, directory: str) -> None:
        raise ValueError("agentheal serves no static files for Teams")

    async def start(self, port: int) -> None:
        raise RuntimeError("agentheal serve runs the HTTP server; the Teams app is not started itself")

    async def stop(self) -> None:
        return None


def _token_provider(settings: Settings) -> Any:
    """The bot's own token from an OAuth2 client-credentials endpoint (`AGENTHEAL_TEAMS_TOKEN_URL`)."""
    import httpx

    url = str(settings.teams_token_url)
    secret = settings.teams_client_secret.get_secret_value() if settings.teams_client_secret else ""

    async def token(scope: str, tenant_id: str | None = None) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.teams_client_id or "",
            "client_secret": secret,
            "scope": scope,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(url, data=form)
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    return token


def build_app(chat: ChatOps, settings: Settings) -> tuple[App, _Adapter]:
    """The Teams app and its route, answering messages and `Action.Execute` presses through `chat`."""
    with _sdk_notices_silenced():
        import microsoft_teams.apps  # noqa: F401
    from microsoft_teams.api.activities.invoke.adaptive_card.action import AdaptiveCardInvokeActivity
    from microsoft_teams.api.activities.message.message import MessageActivity
    from microsoft_teams.api.auth.cloud_environment import PUBLIC, with_overrides
    from microsoft_teams.api.models.adaptive_card.adaptive_card_action_response import (
        AdaptiveCardActionMessageResponse,
    )
    from microsoft_teams.apps import ActivityContext, App

    adapter = _Adapter()
    options: dict[str, Any] = {"client_id": settings.teams_client_id, "tenant_id": settings.teams_tenant_id}
    if settings.teams_token_url:
        options["token"] = _token_provider(settings)
    elif settings.teams_client_secret is not None:
        options["client_secret"] = settings.teams_client_secret.get_secret_value()
    # the SDK builds its own deprecated bot client for every activity too: that notice only, everywhere
    warnings.filterwarnings("ignore", message="The bot client is deprecated", category=DeprecationWarning)
    with _sdk_notices_silenced():
        app = App(
            **options,
            cloud=with_overrides(PUBLIC, openid_metadata_url=settings.teams_openid_url),
            http_server_adapter=adapter,
            messaging_endpoint=PATH,
            dangerously_allow_unauthenticated_requests=False,  # explicit: its environment variable unread
        )
    posters: dict[int, TeamsPoster] = {}

    def poster() -> TeamsPoster:
        loop = asyncio.get_running_loop()
        return posters.setdefault(id(loop), TeamsPoster(app, loop))

    def place(activity: Any) -> Place:
        conversation = activity.conversation
        extra = (
            ("service_url", str(activity.service_url or "")),
            ("kind", str(conversation.conversation_type or "")),
        )
        return Place(str(conversation.id).split(";messageid=")[0], None, None, extra)

    def user_of(activity: Any) -> ChatUser:
        return ChatUser("teams", str(activity.from_.id), str(activity.from_.name or ""))

    @app.on_message
    async def message(ctx: ActivityContext[MessageActivity]) -> None:
        activity = ctx.activity
        reply = await asyncio.to_thread(
            chat.handle, user_of(activity), _plain(activity.text or ""), place(activity), poster()
        )
        await ctx.send(adaptive_card(reply))

    @app.on_card_action_execute
    async def pressed(ctx: ActivityContext[AdaptiveCardInvokeActivity]) -> Any:
        action = ctx.activity.value.action
        data = action.data if isinstance(action.data, dict) else {}
        outcome = await asyncio.to_thread(
            chat.press,
            user_of(ctx.activity),
            str(data.get("action", "")),
            str(data.get("run_id", "")),
        )
        # shown to the presser alone: a refusal, or what the run does now (its card says it to everyone)
        return AdaptiveCardActionMessageResponse(value=outcome.message.text)

    return app, adapter


class TeamsEndpoint:
    """`POST /teams/messages` as an ASGI app: the JSON activity and its headers to the SDK's own
    request handling (authentication first), the SDK's answer back."""

    def __init__(self, chat: ChatOps, settings: Settings) -> None:
        self.chat, self.settings = chat, settings
        self.app, self.adapter = build_app(chat, settings)
        self._ready = asyncio.Lock()
        self._initialized = False

    async def _initialize(self) -> None:
        async with self._ready:
            if not self._initialized:
                await self.app.initialize()
                self._initialized = True

    async def announce_runs(self) -> None:
        """Follow in `AGENTHEAL_TEAMS_CONVERSATION` the runs other doors start (on the server's loop)."""
        await self._initialize()
        conversation = str(self.settings.teams_conversation)
        kind = "channel" if "@thread.tacv2" in conversation or "@thread.skype" in conversation else "chat"
        extra = (("service_url", self.settings.teams_service_url), ("kind", kind))
        poster = TeamsPoster(self.app, asyncio.get_running_loop())
        self.chat.threads.announce(poster, Place(conversation, None, None, extra))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import json

        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response

        request = Request(scope, receive)
        if request.method != "POST":
            await JSONResponse({"detail": "the Bot Connector posts activities here"}, status_code=405)(
                scope, receive, send
            )
            return
        await self._initialize()
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await JSONResponse({"detail": "an activity is a JSON object"}, status_code=400)(
                scope, receive, send
            )
            return
        answer = await self.adapter.handler({"body": body, "headers": dict(request.headers)})
        status, content = int(answer["status"]), answer.get("body")
        response = (
            Response(status_code=status) if content is None else JSONResponse(content, status_code=status)
        )
        await response(scope, receive, send)
