"""The LLM door against a fake OpenAI endpoint (respx): the real `openai` client runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentheal.config import Settings
from agentheal.llm import (
    LLM,
    LLMCallRecord,
    LLMError,
    LLMInvalidOutput,
    LLMNotConfigured,
    LLMTimeout,
    ToolLoopExhausted,
    cut,
    redact,
    response_schema,
)
from agentheal.models import DiagnosisReply, PlanReply
from fake_llm import (
    BASE_URL,
    content_reply,
    error_reply,
    fake_endpoint,
    sent_bodies,
    sent_text,
    tool_call,
    tool_reply,
)

DIAGNOSIS = {"hypothesis": "db is down", "root_component": "db", "facts": ["process_down: db"]}
PLAN = {
    "hypothesis": "db is down",
    "steps": [{"action": "start", "component": "db", "args": {}, "why": "bring db back"}],
    "rollback": [],
    "checks": [{"component": "web", "kind": "probes", "settle_s": 0.5, "deadline_s": 10}],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} of a component",
            "parameters": {
                "type": "object",
                "properties": {"component": {"type": "string", "enum": ["web", "db"]}},
                "required": ["component"],
            },
        },
    }
    for name in ("tail_logs", "probe")
]


def make_llm(tmp_path: Path, **over: Any) -> tuple[LLM, list[LLMCallRecord], list[float]]:
    values: dict[str, Any] = {"home": tmp_path, "llm_base_url": BASE_URL, "llm_max_retries": 2} | over
    records: list[LLMCallRecord] = []
    sleeps: list[float] = []
    llm = LLM(Settings(**values), on_call=records.append, backoff_s=0.0, sleep=sleeps.append)
    return llm, records, sleeps


def chat_route(router: Any, *replies: Any) -> Any:
    return router.post("/chat/completions").mock(side_effect=list(replies))


def test_structured_output_is_parsed_and_counted(tmp_path: Path) -> None:
    llm, records, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = chat_route(router, content_reply(DIAGNOSIS, prompt_tokens=42, completion_tokens=7))
        reply = llm.structured("diagnose", "you are an SRE", "web is down", DiagnosisReply)
    assert reply == DiagnosisReply.model_validate(DIAGNOSIS)
    assert (llm.usage.calls, llm.usage.prompt_tokens, llm.usage.completion_tokens) == (1, 42, 7)
    assert [(r.purpose, r.ok, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("diagnose", True, 42, 7)
    ]
    body = sent_bodies(route)[0]
    assert body["model"] == "gpt-4o-mini"
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "DiagnosisReply"
    # DiagnosisReply can be closed for strict mode: every field required, no extra keys.
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert sorted(fmt["json_schema"]["schema"]["required"]) == ["facts", "hypothesis", "root_component"]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_free_form_args_fall_back_to_non_strict_schema() -> None:
    schema, strict = response_schema(PlanReply)
    assert strict is False  # Step.args is a free-form object, which strict mode cannot express
    assert schema == PlanReply.model_json_schema()


def test_malformed_json_then_good_reply_is_retried_once(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = chat_route(router, content_reply("sure! {hypothesis: db"), content_reply(DIAGNOSIS))
        reply = llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert reply.root_component == "db"
    assert llm.usage.calls == 2
    retry = sent_bodies(route)[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "sure! {hypothesis: db"}
    assert retry[-1]["role"] == "user" and "not JSON" in retry[-1]["content"]


def test_schema_invalid_twice_names_the_field(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path)
    bad = {"hypothesis": "x", "steps": [{"component": "db"}]}
    with fake_endpoint() as router:
        route = chat_route(router, content_reply(bad), content_reply(bad))
        with pytest.raises(LLMInvalidOutput, match=r"steps\.0\.action") as info:
            llm.structured("plan", "sys", "user", PlanReply)
    assert "PlanReply" in str(info.value) and info.value.reply == json.dumps(bad)
    assert route.call_count == 2 and llm.usage.calls == 2
    assert "steps.0.action" in sent_bodies(route)[1]["messages"][-1]["content"]


def test_rate_limit_is_retried_honouring_retry_after(tmp_path: Path) -> None:
    llm, records, sleeps = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = chat_route(
            router, error_reply(429, "slow down", {"retry-after": "7"}), content_reply(DIAGNOSIS)
        )
        reply = llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert reply.hypothesis == "db is down"
    assert route.call_count == 2 and llm.usage.calls == 2
    assert sleeps == [7.0]
    assert [r.ok for r in records] == [False, True] and "429" in records[0].error


def test_server_errors_give_up_after_the_retries(tmp_path: Path) -> None:
    llm, records, sleeps = make_llm(tmp_path, llm_max_retries=2)
    with fake_endpoint() as router:
        route = chat_route(router, *[error_reply(500, "boom")] * 3)
        with pytest.raises(LLMError, match="failed after 3 attempts: HTTP 500"):
            llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert route.call_count == 3 and llm.usage.calls == 3 and len(sleeps) == 2
    assert not any(r.ok for r in records)


def test_connection_errors_are_retried(tmp_path: Path) -> None:
    llm, _, sleeps = make_llm(tmp_path, llm_max_retries=2)
    with fake_endpoint() as router:
        route = chat_route(
            router, httpx.ConnectError("refused"), httpx.ConnectError("refused"), content_reply(DIAGNOSIS)
        )
        assert llm.structured("diagnose", "sys", "user", DiagnosisReply).root_component == "db"
    assert route.call_count == 3 and llm.usage.calls == 3 and len(sleeps) == 2


def test_a_timeout_is_not_asked_again(tmp_path: Path) -> None:
    llm, records, sleeps = make_llm(tmp_path, llm_max_retries=2, llm_timeout_s=5)
    with fake_endpoint() as router:
        route = chat_route(router, httpx.ReadTimeout("too slow"), content_reply(DIAGNOSIS))
        with pytest.raises(LLMTimeout, match="no answer to diagnose within 5 s; not asked again"):
            llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert route.call_count == 1 and sleeps == []
    assert records[0].error == "no answer within 5 s" and not records[0].ok


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error_reply(400, "model 'nope' does not exist"), "HTTP 400: .*does not exist"),
        (
            httpx.Response(
                429, json={"error": {"message": "quota", "type": "x", "code": "insufficient_quota"}}
            ),
            "HTTP 429",
        ),
    ],
)
def test_client_errors_fail_at_once(tmp_path: Path, reply: httpx.Response, expected: str) -> None:
    llm, _, sleeps = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = chat_route(router, reply, content_reply(DIAGNOSIS))
        with pytest.raises(LLMError, match=expected):
            llm.structured("diagnose", "sys", "user", DiagnosisReply)
    assert route.call_count == 1 and llm.usage.calls == 1 and sleeps == []


def test_not_configured(tmp_path: Path) -> None:
    with pytest.raises(LLMNotConfigured, match="AGENTHEAL_LLM_BASE_URL"):
        LLM(Settings(home=tmp_path, llm_base_url=None))


def test_without_json_schema_support_the_schema_goes_in_the_prompt(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path, llm_json_schema=False)
    fenced = "```json\n" + json.dumps(DIAGNOSIS) + "\n```"
    with fake_endpoint() as router:
        route = chat_route(router, content_reply(fenced))
        assert llm.structured("diagnose", "sys", "user", DiagnosisReply).facts == ["process_down: db"]
    body = sent_bodies(route)[0]
    assert "response_format" not in body
    assert '"root_component"' in body["messages"][0]["content"]


def test_tool_loop_runs_tools_and_cuts_outputs(tmp_path: Path) -> None:
    llm, records, _ = make_llm(tmp_path, llm_tool_output_chars=400)
    raw_log = "HEAD " + "x" * 3000 + " MIDDLE-OF-THE-LOG " + "y" * 3000 + " TAIL"
    calls: list[tuple[str, dict[str, Any]]] = []

    def call_tool(name: str, args: dict[str, Any]) -> str:
        calls.append((name, args))
        return raw_log if name == "tail_logs" else "probe http://web/ -> 502"

    with fake_endpoint() as router:
        route = chat_route(
            router,
            tool_reply(
                tool_call("tail_logs", {"component": "web"}, "c1"),
                tool_call("probe", {"component": "db"}, "c2"),
                prompt_tokens=11,
                completion_tokens=3,
            ),
            content_reply(DIAGNOSIS, prompt_tokens=13, completion_tokens=4),
        )
        reply = llm.tool_loop("diagnose", "sys", "web is down", TOOLS, call_tool, DiagnosisReply)
    assert reply.root_component == "db"
    assert calls == [("tail_logs", {"component": "web"}), ("probe", {"component": "db"})]
    assert (llm.usage.calls, llm.usage.prompt_tokens, llm.usage.completion_tokens) == (2, 24, 7)
    assert len(records) == 2
    first, second = sent_bodies(route)
    assert first["tool_choice"] == "auto" and [t["function"]["name"] for t in first["tools"]] == [
        "tail_logs",
        "probe",
    ]
    assistant, log_msg, probe_msg = second["messages"][2:5]
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert (log_msg["role"], log_msg["tool_call_id"], probe_msg["tool_call_id"]) == ("tool", "c1", "c2")
    assert "chars cut" in log_msg["content"] and len(log_msg["content"]) <= 400
    assert log_msg["content"].startswith("HEAD") and log_msg["content"].endswith("TAIL")
    assert "MIDDLE-OF-THE-LOG" not in sent_text(route)
    assert probe_msg["content"] == "probe http://web/ -> 502"


def test_tool_loop_cap_raises_with_findings(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path)
    replies = [tool_reply(tool_call("probe", {"component": "web"})) for _ in range(3)]
    outputs = iter(["probe 1 failed", "probe 2 failed", "probe 3 failed"])
    with fake_endpoint() as router:
        route = chat_route(router, *replies)
        with pytest.raises(ToolLoopExhausted, match="after 3 rounds") as info:
            llm.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: next(outputs), DiagnosisReply, 3)
    assert route.call_count == 3
    assert info.value.findings == [f'probe({{"component": "web"}}): probe {i} failed' for i in (1, 2, 3)]


def test_bad_tool_calls_are_answered_with_errors_not_run(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path)
    ran: list[str] = []

    def call_tool(name: str, args: dict[str, Any]) -> str:
        ran.append(name)
        raise RuntimeError("log file vanished")

    with fake_endpoint() as router:
        route = chat_route(
            router,
            tool_reply(
                tool_call("rm_rf", {"component": "web"}, "c1"),
                tool_call("probe", "{not json", "c2"),
                tool_call("tail_logs", {"component": "web"}, "c3"),
            ),
            content_reply(DIAGNOSIS),
        )
        llm.tool_loop("diagnose", "sys", "user", TOOLS, call_tool, DiagnosisReply)
    assert ran == ["tail_logs"]  # only the known tool with valid arguments was run
    tool_msgs = {
        m["tool_call_id"]: m["content"] for m in sent_bodies(route)[1]["messages"] if m["role"] == "tool"
    }
    assert tool_msgs["c1"].startswith("error: unknown tool 'rm_rf'") and "probe" in tool_msgs["c1"]
    assert "not valid JSON" in tool_msgs["c2"]
    assert tool_msgs["c3"] == "error: tail_logs failed: RuntimeError: log file vanished"


def test_plain_text_final_answer_is_asked_for_json_once(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path)
    with fake_endpoint() as router:
        route = chat_route(router, content_reply("The database is down."), content_reply(DIAGNOSIS))
        reply = llm.tool_loop("diagnose", "sys", "user", TOOLS, lambda n, a: "", DiagnosisReply)
    assert reply.root_component == "db"
    retry = sent_bodies(route)[1]
    assert retry["tool_choice"] == "none" and "not JSON" in retry["messages"][-1]["content"]


def test_secrets_never_leave_the_host(tmp_path: Path) -> None:
    llm, _, _ = make_llm(tmp_path, llm_api_key="configured-key-1234567890")
    secrets = {
        "openai": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx",
        "password": "hunter2-very-secret",
        "url": "s3cr3t-url-pass",
        "aws": "AKIAIOSFODNN7EXAMPLE",
        "key body": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "github": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "configured": "configured-key-1234567890",
    }
    user = (
        f"web logs: auth with {secrets['openai']} failed; db_password={secrets['password']}; "
        f"dsn postgres://app:{secrets['url']}@db:5432/app; key {secrets['configured']}"
    )
    tool_output = (
        f"aws key {secrets['aws']}\n-----BEGIN RSA PRIVATE KEY-----\n{secrets['key body']}\n"
        f"-----END RSA PRIVATE KEY-----\nAuthorization: Bearer {secrets['github']}"
    )
    with fake_endpoint() as router:
        route = chat_route(
            router, tool_reply(tool_call("tail_logs", {"component": "web"})), content_reply(DIAGNOSIS)
        )
        llm.tool_loop("diagnose", "sys", user, TOOLS, lambda n, a: tool_output, DiagnosisReply)
    text = sent_text(route)
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert leaked == []
    assert "postgres://app:[REDACTED]@db:5432/app" in text and "Bearer [REDACTED]" in text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("key sk-abcdefghijklmnopqrstuvwx used", "sk-abcdefghijklmnopqrstuvwx"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("token github_pat_11ABCDEFG0123456789_abcdefghijkl", "github_pat_11ABCDEFG0123456789_abcdefghijkl"),
        ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
        ("curl -H 'authorization: Basic dXNlcjpwYXNz'", "dXNlcjpwYXNz"),
        ("sent bearer abc.def-ghi to api", "abc.def-ghi"),
        ("redis://:p4ssw0rd@cache:6379", "p4ssw0rd"),
        ("https://deploy:tok3n@git.example.com/repo", "tok3n"),
        ('{"password": "pa ss"}', "pa ss"),
        ("passwd: letmein", "letmein"),
        ("SECRET=abc123 next", "abc123"),
        ("X-Api-Key: 0123abcd", "0123abcd"),
        ("api_key=qwerty", "qwerty"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n(cut off", "b3BlbnNzaC1rZXk"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    clean = redact(text)
    assert secret not in clean and "[REDACTED]" in clean
    assert redact(clean) == clean


def test_redact_keeps_ordinary_text() -> None:
    text = "GET /health 200 in 12 ms; user alice logged in from https://example.com/login"
    assert redact(text) == text


def test_cut_keeps_head_and_tail() -> None:
    assert cut("short", 100) == "short"
    out = cut("a" * 500 + "b" * 500, 200)
    assert len(out) <= 200 and out.startswith("a") and out.endswith("b")
    assert "[… 830 chars cut …]" in out
