"""`agentheal chat slack --socket`: the Slack bot over Socket Mode, for teams without a public URL.

HTTP mode needs no command of its own: `agentheal serve` takes Slack's requests at
`POST /slack/events` (and Teams' at `POST /teams/messages`) when their settings are set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from agentheal.cli._common import _err, _fail, _load_estate, _settings, app

chat_app = typer.Typer(help="Chat-ops bots: heal, follow and approve from chat.", no_args_is_help=True)
app.add_typer(chat_app, name="chat")


@chat_app.command("slack")
def chat_slack(
    socket: Annotated[
        bool, typer.Option("--socket", help="Socket Mode: connect out to Slack; no public URL needed.")
    ] = False,
    estate: Annotated[
        Path | None, typer.Option(help="The estate file the bot heals.", envvar="AGENTHEAL_ESTATE")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="A policy file (default: built-in policy).")] = None,
    max_heals: Annotated[int, typer.Option(min=1, max=64, help="Heals at once (one per component).")] = 4,
) -> None:
    """Run the Slack bot over Socket Mode (needs AGENTHEAL_SLACK_APP_TOKEN and AGENTHEAL_SLACK_BOT_TOKEN)."""
    if not socket:
        _fail(
            "HTTP mode runs on `agentheal serve` at POST /slack/events (set AGENTHEAL_SLACK_SIGNING_SECRET); "
            "give --socket for Socket Mode"
        )
    settings = _settings()
    missing = [n for n in ("slack_app_token", "slack_bot_token") if getattr(settings, n) is None]
    if missing:
        _fail("Socket Mode needs " + " and ".join(f"AGENTHEAL_{n.upper()}" for n in missing))
    if estate is not None:
        _load_estate(estate)
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from agentheal.chatops.core import ChatOps
    from agentheal.chatops.slack import announce_runs, build_app
    from agentheal.graphs.context import HealContext
    from agentheal.services.heal import HealPool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ctx = HealContext(settings=settings, estate_path=estate.resolve() if estate else None, policy_path=policy)
    pool = HealPool(ctx, max_heals=max_heals)
    pool.warm()
    chat = ChatOps(pool, settings)
    announce_runs(chat, settings)
    handler = SocketModeHandler(
        build_app(chat, settings, socket_mode=True), settings.slack_app_token.get_secret_value()
    )
    _err("agentheal chat slack: Socket Mode, connecting to Slack (Ctrl-C stops)")
    try:
        handler.start()  # type: ignore[no-untyped-call]
    finally:
        handler.close()  # type: ignore[no-untyped-call]
        chat.close()
        pool.close()
