"""No window of a file lets a secret reach the model or the event store (property-based).

Files holding each kind of secret at random places are read through every observation tool
with random windows (tails, heads, byte ranges that cut lines, budget cuts). The model is a
real loopback HTTP server speaking the OpenAI chat-completions JSON, so the real openai
client sends real bytes; it asks for the windows as tool calls during a real heal, then
answers. No secret, and no 12-character piece of one, may appear in any request body it
received, nor in any row of the stores under the home folder.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentheal.cli import main
from conftest import free_port, stop_processes_under

pytestmark = pytest.mark.slow

PIECE = 12  # no substring of a secret this long may leak
ENV_TOKEN = "Zq9-hunter-PASS-7781x-env"  # an env value no pattern knows: only the registry does
GAP = "web serves stale pages and some requests hang"
_ids = itertools.count(1)


# -- the loopback model -------------------------------------------------------------------------


@dataclass
class Script:
    """What the fake model does in one heal: rounds of tool calls, then a diagnosis."""

    rounds: list[list[tuple[str, dict[str, Any]]]] = field(default_factory=list, repr=False)
    bodies: list[bytes] = field(default_factory=list, repr=False)


class _Model(BaseHTTPRequestHandler):
    script: Script

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.script.bodies.append(body)
        request = json.loads(body)
        if request.get("tools") and request.get("tool_choice") != "none" and self.script.rounds:
            calls = [
                {
                    "id": f"call_{next(_ids)}",
                    "type": "function",
                    "function": {"name": n, "arguments": json.dumps(a)},
                }
                for n, a in self.script.rounds.pop(0)
            ]
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": calls}
        elif request.get("tools"):
            reply = {"hypothesis": "a worker hangs", "root_component": "web", "facts": ["threads stuck"]}
            message = {"role": "assistant", "content": json.dumps(reply)}
        else:
            message = {"role": "assistant", "content": "no plan"}  # the heal escalates
        answer = json.dumps(
            {
                "id": f"chatcmpl-{next(_ids)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "fake",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                        "message": message,
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


# -- the estate ---------------------------------------------------------------------------------


@dataclass
class Estate:
    file: Path
    root: Path
    home: Path
    script: Script


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    tmp = tmp_path_factory.mktemp("windows")
    root = tmp / "estate"
    for folder in ("www", "conf", "logs", "rel/releases/v1", "rel/releases/v2"):
        (root / folder).mkdir(parents=True)
    (root / "rel/current").symlink_to("releases/v2")
    (root / "conf/flags.json").write_text('{"cache": true}\n')
    port = free_port()
    (root / "estate.yaml").write_text(
        f"""name: windows
components:
  web:
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    workdir: www
    env: {{API_TOKEN: "{ENV_TOKEN}"}}
    probes: [{{http: "http://127.0.0.1:{port}/"}}]
    logs: [logs/web.log]
    configs: [conf/app.env, conf/kubeconfig.yaml, conf/sa.json, conf/bundle.pem]
    flags: conf/flags.json
    releases: {{dir: rel/releases, current: rel/current}}
"""
    )
    script = Script()
    _Model.script = script
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTHEAL_HOME", str(tmp / "home"))
        mp.setenv("AGENTHEAL_LLM_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
        mp.setenv("AGENTHEAL_LLM_MAX_RETRIES", "0")
        mp.setenv("AGENTHEAL_LLM_JSON_SCHEMA", "false")
        assert main(["estate", "up", str(root / "estate.yaml")]) == 0
        try:
            yield Estate(root / "estate.yaml", root, tmp / "home", script)
        finally:
            main(["estate", "down", str(root / "estate.yaml")])
            stop_processes_under(root)
            server.shutdown()
            server.server_close()


# -- secrets and files --------------------------------------------------------------------------


def _b64_lines(data: bytes, width: int = 64) -> list[str]:
    text = base64.b64encode(data).decode()
    return [text[i : i + width] for i in range(0, len(text), width)]


def _pem(label: str, body: list[str]) -> str:
    return "\n".join([f"-----BEGIN {label}-----", *body, f"-----END {label}-----"])


def _random_bytes(sizes: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    # Real secrets are high-entropy: bytes from a drawn seed, not shrunk to b"\\0\\0…" (a run
    # of "A" or "0" that ordinary rows, such as a nil UUID, also hold).
    return st.tuples(st.integers(0, 2**32), sizes).map(lambda s: random.Random(s[0]).randbytes(s[1]))


keys = _random_bytes(st.integers(200, 900))  # PEM bodies of 4 to 19 lines


@dataclass
class Files:
    texts: dict[str, str]
    secrets: list[str]

    def __repr__(self) -> str:  # hypothesis prints failing examples; the texts are long
        return f"Files({ {name: len(text) for name, text in self.texts.items()} })"


@st.composite
def estate_files(draw: st.DrawFn) -> Files:
    log_key, bundle_key, sa_key, kube_key = draw(keys), draw(keys), draw(keys), draw(keys)
    hex_secret = draw(_random_bytes(st.integers(16, 40))).hex()
    db_password = "pw-" + draw(_random_bytes(st.integers(9, 20))).hex()
    log_body, bundle_body, sa_body = _b64_lines(log_key), _b64_lines(bundle_key), _b64_lines(sa_key)
    kube_pem = _pem("RSA PRIVATE KEY", _b64_lines(kube_key)) + "\n"
    kube_data = base64.b64encode(kube_pem.encode()).decode()
    sa_pem = _pem("PRIVATE KEY", sa_body) + "\n"
    sa_id = draw(_random_bytes(st.just(20))).hex()
    env_b64 = base64.b64encode(f"svc:{ENV_TOKEN}".encode()).decode()

    # the log: ordinary lines with secrets at random places, a PEM block raw or with a prefix
    n = draw(st.integers(40, 1500))  # beyond 64 KB, windows are redacted with context only
    lines = [f"2026-03-01T10:00:{i % 60:02d}Z INFO GET /api/orders/{i} 200 {i % 97} ms" for i in range(n)]
    stamp = "2026-03-01T10:00:00Z INFO "
    prefix = draw(st.sampled_from(["", stamp]))
    pem_lines = [prefix + line for line in _pem("RSA PRIVATE KEY", log_body).split("\n")]
    inserts = [
        pem_lines,
        [f"{stamp}connecting with api token {ENV_TOKEN}"],
        [f"{stamp}upstream auth={env_b64}"],
        [f"{stamp}loaded signing_secret={hex_secret}"],
        [f"{stamp}retry with token {hex_secret}"],
        [f"{stamp}db url postgres://app:{db_password}@db:5432/app"],
    ]
    for block in inserts:
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = block
    app_env = f"LOG_LEVEL=info\nDB_PASSWORD={db_password}\nexport API_TOKEN='{ENV_TOKEN}'\n"
    kubeconfig = (
        "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n"
        f"    client-certificate-data: {base64.b64encode(b'public cert').decode()}\n"
        f"    client-key-data: {kube_data}\n"
    )
    service_account = json.dumps(
        {"type": "service_account", "private_key_id": sa_id, "private_key": sa_pem, "client_email": "a@b.c"},
        indent=2,
    )
    cert = _pem("CERTIFICATE", _b64_lines(b"public" * 40))
    bundle = cert + "\n" + _pem("PRIVATE KEY", bundle_body) + "\n"
    secrets = [*log_body, *bundle_body, *sa_body, kube_data, sa_id, hex_secret, db_password, ENV_TOKEN]
    return Files(
        texts={
            "logs/web.log": "\n".join(lines) + "\n",
            "conf/app.env": app_env,
            "conf/kubeconfig.yaml": kubeconfig,
            "conf/sa.json": service_account,
            "conf/bundle.pem": bundle,
        },
        secrets=[s for s in secrets if len(s) >= PIECE] + [env_b64[8:-4]],
    )


_CONFIGS = ["conf/app.env", "conf/kubeconfig.yaml", "conf/sa.json", "conf/bundle.pem"]
_SIZE = 140_000  # offsets range over the largest log

window_calls = st.one_of(
    st.builds(
        lambda lines, offset, max_bytes: (
            "tail_logs",
            {
                "component": "web",
                "lines": lines,
                **({"offset": offset} if offset is not None else {}),
                **({"max_bytes": max_bytes} if max_bytes is not None else {}),
            },
        ),
        st.integers(1, 80),
        st.none() | st.integers(0, _SIZE),
        st.none() | st.integers(1, 4096),
    ),
    st.builds(
        lambda path, offset, max_bytes: (
            "read_config",
            {"component": "web", "path": path, "offset": offset, "max_bytes": max_bytes},
        ),
        st.sampled_from(_CONFIGS),
        st.integers(0, 4000),
        st.integers(1, 3000),
    ),
    st.sampled_from(["probe", "process_stats", "dependencies", "releases", "read_flags"]).map(
        lambda name: (name, {"component": "web"})
    ),
)


def _leaks(secrets: list[str], texts: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        pieces = {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}
        for text in texts:
            if any(piece in text for piece in pieces):
                found.append(secret)
                break
    return found


def _where(leaks: list[str], texts: list[str]) -> list[str]:
    """Around each leaked piece, for the failure message."""
    out = []
    for secret in leaks:
        for i in range(len(secret) - PIECE + 1):
            piece = secret[i : i + PIECE]
            for text in texts:
                at = text.find(piece)
                if at >= 0:
                    out.append(text[max(0, at - 300) : at + 100])
                    break
            else:
                continue
            break
    return out


def _store_rows(home: Path) -> list[str]:
    rows = []
    for db in home.rglob("*"):
        if db.suffix not in (".db", ".sqlite", ".sqlite3") or not db.is_file():
            continue
        with sqlite3.connect(db) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in conn.execute(f'SELECT * FROM "{table}"'):
                    rows.append(
                        " ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
                    )
    return rows


@settings(
    max_examples=int(os.environ.get("AGENTHEAL_REDACTION_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    files=estate_files(),
    rounds=st.lists(st.lists(window_calls, min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_no_window_leaks_a_secret(
    estate: Estate,
    capsys: pytest.CaptureFixture[str],
    files: Files,
    rounds: list[list[tuple[str, dict[str, Any]]]],
) -> None:
    for name, text in files.texts.items():
        (estate.root / name).write_text(text)
    estate.script.rounds = [list(r) for r in rounds]
    estate.script.bodies.clear()
    code = main(["heal", "--gap", GAP, "--component", "web", "--estate", str(estate.file), "--json", "-q"])
    result = json.loads(capsys.readouterr().out)
    assert code in (0, 1), result
    bodies = [b.decode() for b in estate.script.bodies]
    assert len(bodies) >= 2  # the model was asked, and its tool calls were answered
    tool_outputs = [
        m["content"] for b in bodies for m in json.loads(b)["messages"] if m.get("role") == "tool"
    ]
    assert len(tool_outputs) >= sum(len(r) for r in rounds)
    leaks = _leaks(files.secrets, bodies + tool_outputs)
    assert leaks == [], _where(leaks, bodies + tool_outputs)
    rows = _store_rows(estate.home)
    leaks = _leaks(files.secrets, rows)
    assert leaks == [], _where(leaks, rows)
    assert main(["runs", "show", result["run_id"]]) == 0
    story = capsys.readouterr().out
    leaks = _leaks(files.secrets, [story])
    assert leaks == [], _where(leaks, [story])
