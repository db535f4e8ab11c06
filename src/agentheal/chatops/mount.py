"""The chat doors on `agentheal serve`: `POST /slack/events` when Slack's signing secret is set,
`POST /teams/messages` when the Teams bot's app id is set.

They sit outside the API's bearer-token authentication (Slack and Microsoft sign their own requests,
and each adapter checks that signature as its SDK does) and inside the body and rate limits. They
are not in the API's OpenAPI schema: they speak Slack's and the Bot Framework's protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentheal.api.state import ServerState

__all__ = ["ChatDoor", "install"]

log = logging.getLogger("uvicorn.error")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ChatDoor:
    """Hands the chat platforms' paths to their adapters, everything else to the API; at the server's
    shutdown it stops following runs in chat."""

    def __init__(
        self,
        app: ASGIApp,
        routes: dict[str, ASGIApp],
        on_shutdown: Callable[[], None],
        on_startup: list[Callable[[], Awaitable[None]]],
    ) -> None:
        self.app = app
        self.routes = routes
        self.on_shutdown = on_shutdown
        self.on_startup = on_startup

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._watching(receive), send)
            return
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        await (route or self.app)(scope, receive, send)

    def _watching(self, receive: Any) -> Any:
        async def watched() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                for start in self.on_startup:  # on the server's event loop, before the first request
                    await start()
            if message.get("type") == "lifespan.shutdown":
                import anyio

                await anyio.to_thread.run_sync(self.on_shutdown)
            return message

        return watched


def install(app: Any, state: ServerState) -> None:
    """Mount the configured chat adapters on the API app (call after its authentication middleware)."""
    from agentheal.chatops.slack import slack_configured
    from agentheal.chatops.teams import teams_configured

    settings = state.settings
    slack, teams = slack_configured(settings), teams_configured(settings)
    if not (slack or teams):
        return
    from agentheal.chatops.core import ChatOps

    chat = ChatOps(state.pool, settings)
    state.extras["chatops"] = chat
    routes: dict[str, ASGIApp] = {}
    if slack:
        from agentheal.chatops.slack import SlackEndpoint, announce_runs, build_app

        if settings.slack_bot_token is None:
            log.warning(
                "slack: AGENTHEAL_SLACK_BOT_TOKEN is not set; the bot answers commands but cannot post"
            )
        routes["/slack/events"] = SlackEndpoint(build_app(chat, settings))
        announce_runs(chat, settings)
    on_startup: list[Callable[[], Awaitable[None]]] = []
    if teams:
        from agentheal.chatops.teams import PATH, TeamsEndpoint

        endpoint = TeamsEndpoint(chat, settings)
        routes[PATH] = endpoint
        if settings.teams_conversation:
            on_startup.append(endpoint.announce_runs)
    app.add_middleware(ChatDoor, routes=routes, on_shutdown=chat.close, on_startup=on_startup)
    log.info("chat-ops: %s", ", ".join(f"POST {p}" for p in routes))
