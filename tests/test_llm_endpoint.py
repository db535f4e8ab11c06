"""The LLM door learns what an endpoint supports from its answers (respx fakes the endpoint).

Each fake answer below is what a real server was seen to answer: llama.cpp's server refuses
a JSON-schema response format with a 500 naming `response_format`, and answers a request with
`tools` in plain text.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.config import Settings
from agentheal.events import EventStore
from agentheal.llm import LLM, LLMCallRecord, LLMError, LLMTimeout
from agentheal.llm_endpoint import EndpointProfiles, Structured, refused_part
from agentheal.models import DiagnosisReply
from fake_llm import (
    BASE_URL,
    completion,
    content_reply,
    error_reply,
    fake_endpoint,
    sent_bodies,
    tool_call,
    tool_reply,
)

DIAGNOSIS = {"hypothesis": "db is down", "root_component": "db", "facts": ["process_down: db"]}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "tail_logs",
            "description": "the last lines of a component's logs",
            "parameters": {"type": "object", "properties": {"component": {"type": "string"}}},
        },
    }
]
LLAMA_CPP_REFUSAL = (
    "Traceback (most recent call last): ... ValueError: response_format type 'json_schema' is not "
    "supported; use 'json_object' with a 'schema'"
)


def make_llm(home: Path, **over: Any) -> tuple[LLM, list[LLMCallRecord], list[str], list[float]]:
    values: dict[str, Any] = {"home": home, "llm_base_url": BASE_URL, "llm_max_retries": 3} | over
    records: list[LLMCallRecord] = []
    notes: list[str] = []
    sleeps: list[float] = []
    llm = LLM(
        Settings(**values),
        on_call=records.append,
        on_note=lambda purpose, text: notes.append(f"{purpose}: {text}"),
        backoff_s=0.0,
        sleep=sleeps.append,
    )
    return llm, records, notes, sleeps


def test_a_refused_response_format_steps_down_at_once_and_is_remembered(tmp_path: Path) -> None:
    llm, records, notes, sleeps = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(
            side_effect=[error_reply(500, LLAMA_CPP_REFUSAL), content_reply(DIAGNOSIS)]
        )
        assert llm.structured("diagnose", "sys", "user", DiagnosisReply).root_component == "db"
    first, second = sent_bodies(route)
    assert first["response_format"]["type"] == "json_schema"
    assert second["response_format"] == {
        "type": "json_object",
        "schema": DiagnosisReply.model_json_schema(),
    }
    assert '"root_component"' in second["messages"][0]["content"]  # the model reads the schema too
    assert sleeps == []  # a refusal is an answer, not an outage
    assert [r.ok for r in records] == [False, True] and "response_format" in records[0].error
    assert any("refused response_format as json_schema" in n for n in notes)
    saved = json.loads((tmp_path / "llm-endpoints.json").read_text())
    assert saved[f"{BASE_URL}|gpt-4o-mini"]["structured"] == "json_object_schema"

    # A new run (a new process reads the file) asks the supported way from the start.
    fresh = EndpointProfiles(tmp_path / "llm-endpoints.json").get(BASE_URL, "gpt-4o-mini")
    assert fresh.structured is Structured.json_object_schema and fresh.notes
    again, _, _, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(side_effect=[content_reply(DIAGNOSIS)])
        again.structured("diagnose", "sys", "user", DiagnosisReply)
    assert sent_bodies(route)[0]["response_format"]["type"] == "json_object"


def test_every_format_refused_ends_with_the_schema_in_the_prompt(tmp_path: Path) -> None:
    llm, records, _, _ = make_llm(tmp_path)
    refusals = [error_reply(400, f"unsupported response_format ({n})") for n in range(3)]
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(side_effect=[*refusals, content_reply(DIAGNOSIS)])
        assert llm.structured("diagnose", "sys", "user", DiagnosisReply).hypothesis == "db is down"
    formats = [b.get("response_format", {}).get("type") for b in sent_bodies(route)]
    assert formats == ["json_schema", "json_object", "json_object", None]
    assert llm.profile.structured is Structured.prompt and len(records) == 4


def test_a_refusal_at_the_weakest_step_is_an_error_not_a_loop(tmp_path: Path) -> None:
    llm, _, _, _ = make_llm(tmp_path, llm_json_schema=False, llm_max_retries=0)
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(
            side_effect=[error_reply(400, "bad schema in request")] * 5
        )
        with pytest.raises(LLMError, match="HTTP 400"):
            llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert route.call_count == 1 and "response_format" not in sent_bodies(route)[0]


def test_a_refusal_of_tools_drops_them_and_the_loop_answers(tmp_path: Path) -> None:
    llm, _, notes, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(
            side_effect=[error_reply(400, "this model does not support tools"), content_reply(DIAGNOSIS)]
        )
        reply = llm.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: "", DiagnosisReply)
    assert reply.root_component == "db"
    first, second = sent_bodies(route)
    assert "tools" in first and "tools" not in second and "tool_choice" not in second
    assert llm.profile.tools == "unsupported" and any("refused a request with tools" in n for n in notes)


def test_tools_answered_in_plain_text_are_not_offered_again(tmp_path: Path) -> None:
    llm, _, notes, _ = make_llm(tmp_path)
    spelt_out = 'I will call tail_logs: {"name": "tail_logs", "arguments": {"component": "db"}}'
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(
            side_effect=[content_reply(spelt_out), content_reply(DIAGNOSIS)]
        )
        llm.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: "", DiagnosisReply)
    assert "tools" in sent_bodies(route)[0] and "tools" not in sent_bodies(route)[1]
    assert any("in plain text" in n for n in notes)
    # the next run of the same endpoint does not offer tools, and says so in the story
    again, _, notes, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(side_effect=[content_reply(DIAGNOSIS)])
        again.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: "", DiagnosisReply)
    assert "tools" not in sent_bodies(route)[0]
    assert any("does not do tool calls" in n for n in notes)


def test_tool_calls_mark_the_endpoint_native(tmp_path: Path) -> None:
    llm, _, _, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        router.post("/chat/completions").mock(
            side_effect=[tool_reply(tool_call("tail_logs", {"component": "db"})), content_reply(DIAGNOSIS)]
        )
        llm.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: "db: exited", DiagnosisReply)
    assert llm.profile.tools == "native"


def test_a_reply_without_usage_counts_as_unknown_not_zero(tmp_path: Path) -> None:
    llm, records, _, _ = make_llm(tmp_path)
    body = completion({"role": "assistant", "content": json.dumps(DIAGNOSIS)})
    del body["usage"]
    with fake_endpoint() as router:
        router.post("/chat/completions").mock(side_effect=[httpx.Response(200, json=body)])
        llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert records[0].usage_known is False and records[0].prompt_tokens == 0
    assert llm.usage.unknown_usage_calls == 1 and llm.profile.usage == "absent"


def test_the_run_budget_cuts_time_outs_and_then_stops_asking(tmp_path: Path) -> None:
    llm, _, _, sleeps = make_llm(tmp_path, llm_timeout_s=60, llm_run_budget_s=5, llm_max_retries=5)
    timeouts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        return error_reply(503, "loading model")

    llm._spent_s = 2.0  # as if two seconds of this run went on earlier calls
    with fake_endpoint() as router:
        router.post("/chat/completions").mock(side_effect=answer)
        with pytest.raises(LLMTimeout, match="LLM time budget of 5 s is spent"):
            llm._backoff_s = 1.0
            llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert timeouts[0] == pytest.approx(3.0, abs=0.2)  # cut to what the budget had left
    assert sum(sleeps) <= 3.0 and len(timeouts) < 6


def test_a_refused_token_cap_is_asked_by_its_other_name(tmp_path: Path) -> None:
    llm, _, _, sleeps = make_llm(tmp_path, llm_max_tokens=300)
    refusal = error_reply(
        400,
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'.",
    )
    with fake_endpoint() as router:
        route = router.post("/chat/completions").mock(side_effect=[refusal, content_reply(DIAGNOSIS)])
        llm.structured("diagnose", "sys", "user", DiagnosisReply)
    first, second = sent_bodies(route)
    assert first["max_tokens"] == 300 and "max_tokens" not in second
    assert second["max_completion_tokens"] == 300 and sleeps == []
    assert second["response_format"]["type"] == "json_schema"  # the format was not what it refused


def test_raw_newlines_inside_strings_are_read_as_a_constrained_local_model_writes_them() -> None:
    from agentheal.replies import parse_reply

    # what SmolLM2 under llama.cpp's JSON grammar wrote: a tab and a newline inside a string
    raw = '{"hypothesis": "the greeting\tis stale\nafter the edit", "root_component": "web", "facts": []}'
    value, problem = parse_reply(raw, DiagnosisReply)
    assert value is not None, problem
    assert value.hypothesis == "the greeting\tis stale\nafter the edit"


def test_refused_part_reads_what_the_server_names() -> None:
    assert refused_part(500, LLAMA_CPP_REFUSAL, True, True) == "response_format"
    assert refused_part(400, "tool_choice is not supported", True, True) == "tools"
    assert refused_part(400, "tool_choice is not supported", True, False) is None
    assert refused_part(503, "model loading", True, True) is None
    assert refused_part(429, "response_format rate limit", True, True) is None
    assert refused_part(404, "model 'x' not found", True, True) is None


def test_an_older_event_store_gains_the_new_llm_call_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE llm_calls (id INTEGER PRIMARY KEY, run_id VARCHAR(64) NOT NULL, model VARCHAR(200) "
        "NOT NULL, purpose VARCHAR(100) NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens "
        "INTEGER NOT NULL, duration_s FLOAT NOT NULL, ok BOOLEAN NOT NULL, at DATETIME NOT NULL)"
    )
    db.execute("INSERT INTO llm_calls VALUES (1, 'old', 'm', 'plan', 3, 4, 0.5, 1, '2026-01-01 00:00:00')")
    db.commit()
    db.close()
    store = EventStore(f"sqlite:///{path}")
    try:
        rows = sqlite3.connect(path).execute("SELECT run_id, usage_known, error FROM llm_calls").fetchall()
        assert rows == [("old", 1, "")]  # the old row kept, with the defaults
        usage = store.llm_usage("old")
        assert (usage.calls, usage.prompt_tokens, usage.unknown_usage_calls) == (1, 3, 0)
    finally:
        store.close()
