"""`agentheal chat slack --socket`: the bot connects out over Socket Mode (a loopback WebSocket standing
in for Slack's, its URL from a stand-in `apps.connections.open`) and answers slash commands there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_standins import APP_TOKEN, BOT_TOKEN, Call, slack_web_api, socket_mode

pytestmark = pytest.mark.slow


def _slash(envelope: str, user: str, text: str) -> dict[str, Any]:
    payload = {
        "token": "legacy",
        "team_id": "T1",
        "channel_id": "C1",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/agentheal",
        "text": text,
        "response_url": "http://127.0.0.1:9/r",
        "trigger_id": "1",
    }
    return {
        "envelope_id": envelope,
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": payload,
    }


def _ack(envelope: str) -> Any:
    def found(calls: list[Call]) -> Any:
        return next((c.params for c in calls if c.params.get("envelope_id") == envelope), None)

    return found


def test_socket_mode_answers_slash_commands_by_role(tmp_path: Path) -> None:
    with socket_mode() as (ws_url, link), slack_web_api(ws_url) as (api_url, recorder):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHEAL_")}
        env |= {
            "AGENTHEAL_HOME": str(tmp_path / "home"),
            "AGENTHEAL_CONFIG": str(tmp_path / "none.toml"),
            "AGENTHEAL_SLACK_APP_TOKEN": APP_TOKEN,
            "AGENTHEAL_SLACK_BOT_TOKEN": BOT_TOKEN,
            "AGENTHEAL_SLACK_API_URL": api_url,
            "AGENTHEAL_CHAT_ROLES": json.dumps({"slack:UVIC": "viewer"}),
            "AGENTHEAL_CHAT_DEFAULT_ROLE": "",
        }
        bot = subprocess.Popen(
            [sys.executable, "-m", "agentheal", "chat", "slack", "--socket"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert link.connected.wait(60), "the bot did not connect"
            assert recorder.of("apps.connections.open")[0].auth == f"Bearer {APP_TOKEN}"
            link.send(_slash("e1", "UVIC", "runs"))
            ack = link.received.wait(_ack("e1"), why="the ack of runs")
            assert "No runs recorded yet" in json.dumps(ack["payload"])
            link.send(_slash("e2", "UNEW", "heal web: down"))
            ack = link.received.wait(_ack("e2"), why="the ack of heal")
            assert "may not heal" in ack["payload"]["text"] and "no role" in ack["payload"]["text"]
        finally:
            bot.send_signal(signal.SIGINT)
            try:
                out, _ = bot.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                bot.kill()
                out, _ = bot.communicate()
        assert "Socket Mode" in out, out
