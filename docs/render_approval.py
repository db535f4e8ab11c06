# ruff: noqa: E501  (the page's style sheet reads better on long lines)
"""Draw docs/chat-approval.png: an approval request as the bot posts it to Slack (Block Kit) and to
Teams (an Adaptive Card), from a real run.

It heals a killed `python3 -m http.server` under a policy that wants a person for restarts, through
the chat core as a chat user would (`heal web: …`), takes the approval request the bot posts, renders
its Block Kit blocks and its Adaptive Card as HTML (a plain rendering of those JSON payloads, not
Slack's or Teams' own), and screenshots that with headless Chromium. The run is then rejected and
the estate stopped. Run: `.venv/bin/python docs/render_approval.py` (needs `chromium`).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _estate(root: Path) -> Path:
    (root / "www").mkdir(parents=True)
    (root / "www" / "index.html").write_text("<h1>shop</h1>\n")
    port = _free_port()
    estate = root / "estate.yaml"
    estate.write_text(f"""name: shop
components:
  web:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    workdir: www
    probes:
      - http: http://127.0.0.1:{port}/
        expect_status: 200
    depends_on: []
""")
    return estate


def _mrkdwn(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", out)
    out = re.sub(r"(?m)^&gt; ?(.*)$", r"<blockquote>\1</blockquote>", out)
    return out.replace("\n", "<br>")


def _slack_html(blocks: list[dict[str, Any]]) -> str:
    parts = []
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            parts.append(f"<div class=s>{_mrkdwn(b['text']['text'])}</div>")
        elif b["type"] == "section":
            cells = "".join(f"<div>{_mrkdwn(f['text'])}</div>" for f in b["fields"])
            parts.append(f"<div class=fields>{cells}</div>")
        elif b["type"] == "actions":
            buttons = "".join(f"<span class='btn {e.get('style', '')}'>{html.escape(e['text']['text'])}</span>"
                              for e in b["elements"])  # fmt: skip
            parts.append(f"<div class=actions>{buttons}</div>")
        elif b["type"] == "context":
            parts.append(f"<div class=ctx>{_mrkdwn(b['elements'][0]['text'])}</div>")
    return "".join(parts)


def _md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _card_html(card: dict[str, Any]) -> str:
    def element(e: dict[str, Any]) -> str:
        if e["type"] == "Container":
            inner = "".join(element(i) for i in e.get("items", []))
            return f"<div class='container {e.get('style', 'default')}'>{inner}</div>"
        if e["type"] == "TextBlock":
            cls = " ".join(c for c in ("title" if e.get("weight") == "Bolder" else "",
                                       "subtle" if e.get("isSubtle") else "") if c)  # fmt: skip
            return f"<div class='tb {cls}'>{_md(e['text'])}</div>"
        if e["type"] == "FactSet":
            rows = "".join(f"<tr><th>{_md(f['title'])}</th><td>{_md(f['value'])}</td></tr>" for f in e["facts"])
            return f"<table class=facts>{rows}</table>"
        return ""

    body = "".join(element(e) for e in card.get("body", []))
    actions = "".join(f"<span class='abtn {a.get('style', '')}'>{html.escape(a['title'])}</span>"
                      for a in card.get("actions", []))  # fmt: skip
    return f"<div class=card>{body}<div class=cardactions>{actions}</div></div>"


_PAGE = """<!doctype html><html><head><meta charset=utf-8><style>
body {{ font-family: 'DejaVu Sans', Arial, sans-serif; margin: 0; background: #f4f4f6; display: flex; gap: 28px;
       padding: 24px; font-size: 14px; color: #1d1c1d; }}
.pane {{ background: white; border-radius: 10px; box-shadow: 0 1px 4px #0002; padding: 18px 20px; width: 620px; }}
.pane h2 {{ font-size: 12px; color: #616061; text-transform: uppercase; letter-spacing: .06em; margin: 0 0 12px; }}
.who {{ font-weight: bold; margin-bottom: 6px; }} .who span {{ color: #616061; font-weight: normal; font-size: 12px; }}
.s {{ margin: 4px 0 8px; line-height: 1.45; }} code {{ background: #f0eeee; color: #c0143c; padding: 1px 4px;
  border-radius: 3px; font-size: 12.5px; }}
.fields {{ display: grid; grid-template-columns: 1fr 1fr; gap: 8px 20px; margin: 8px 0; }}
.actions {{ margin: 10px 0; }} .btn {{ display: inline-block; border: 1px solid #bbb; border-radius: 4px;
  padding: 5px 14px; margin-right: 8px; font-weight: bold; }}
.btn.primary {{ background: #007a5a; color: white; border-color: #007a5a; }}
.btn.danger {{ color: #e01e5a; border-color: #e01e5a; }}
.ctx {{ color: #616061; font-size: 12px; }} blockquote {{ margin: 2px 0; padding-left: 8px; border-left: 3px solid #ddd; }}
.card {{ border: 1px solid #e1dfdd; border-radius: 6px; overflow: hidden; }}
.container {{ padding: 12px 14px; }} .container.warning {{ background: #fff4ce; }}
.container.good {{ background: #dff6dd; }} .container.attention {{ background: #fde7e9; }}
.tb {{ margin: 3px 0; line-height: 1.4; }} .tb.title {{ font-size: 16px; font-weight: bold; margin-bottom: 8px; }}
.tb.subtle {{ color: #605e5c; font-size: 12px; margin-top: 8px; }}
.facts th {{ text-align: left; padding: 2px 14px 2px 0; font-weight: bold; }} .facts {{ margin: 8px 0; }}
.cardactions {{ display: flex; border-top: 1px solid #e1dfdd; }}
.abtn {{ flex: 1; text-align: center; padding: 9px; color: #5b5fc7; font-weight: bold; }}
.abtn.positive {{ color: #237b4b; }} .abtn.destructive {{ color: #c4314b; border-left: 1px solid #e1dfdd; }}
</style></head><body>
<div class=pane><h2>Slack · Block Kit</h2><div class=who>agentheal <span>APP · in the run's thread</span></div>{slack}</div>
<div class=pane><h2>Microsoft Teams · Adaptive Card</h2><div class=who>agentheal <span>in the run's thread</span></div>
{teams}</div></body></html>"""


def main() -> int:
    sys.path.insert(0, str(HERE.parent / "src"))
    work = Path(tempfile.mkdtemp(prefix="agentheal-picture-"))
    os.environ["AGENTHEAL_CONFIG"] = str(work / "none.toml")
    from agentheal.chatops.core import ChatOps
    from agentheal.chatops.messages import ChatUser, Message, Place
    from agentheal.chatops.slack import blocks
    from agentheal.chatops.teams import card_json
    from agentheal.config import Settings
    from agentheal.estate.local import LocalBackend
    from agentheal.estate.model import load_estate
    from agentheal.graphs.context import HealContext
    from agentheal.services.heal import HealPool

    estate_file = _estate(work / "estate")
    policy = work / "policy.yaml"
    policy.write_text("approval:\n  - actions: [restart]\n    reason: restarts of the shop need a person in opening hours\n")
    settings = Settings(home=work / "home", chat_roles={"slack:U0OPS": "operator"})
    backend = LocalBackend(load_estate(estate_file), settings.estates_dir / "shop")
    backend.up()
    posted: list[Message] = []

    class Keep:
        def post(self, where: Place, message: Message) -> Place:
            posted.append(message)
            return where.at(str(len(posted)))

        def update(self, posted_at: Place, message: Message) -> None:
            pass

        def private(self, where: Place, user: ChatUser, text: str) -> None:
            pass

    ctx = HealContext(settings=settings, estate_path=estate_file, policy_path=policy)
    pool = HealPool(ctx, max_heals=1)
    chat = ChatOps(pool, settings)
    user = ChatUser("slack", "U0OPS", "olga")
    try:
        (web,) = [h for h in backend.status() if h.name == "web"]
        assert web.pid
        os.kill(web.pid, signal.SIGKILL)
        time.sleep(0.5)
        chat.handle(user, "heal web: the shop answers connection refused", Place("C0OPS"), Keep())
        deadline = time.monotonic() + 60
        while not any(m.buttons for m in posted):
            assert time.monotonic() < deadline, "no approval request"
            time.sleep(0.1)
        request = next(m for m in posted if m.buttons)
        page = work / "approval.html"
        page.write_text(_PAGE.format(slack=_slack_html(blocks(request)), teams=_card_html(card_json(request))))
        out = HERE / "chat-approval.png"
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={out}", "--window-size=1360,520", page.as_uri()],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        print(f"wrote {out}; the request: {json.dumps(request.plain())[:300]}")
        chat.handle(user, f"reject {request.buttons[0].run_id} the picture is taken", Place("C0OPS"), Keep())
        time.sleep(1)
    finally:
        chat.close()
        pool.close()
        backend.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
