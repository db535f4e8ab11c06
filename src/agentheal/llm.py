"""The one door to an LLM: an OpenAI-compatible client with structured output, a tool loop,
retries, redaction and token accounting.

Everything agentheal sends to a model goes through `LLM`, so three promises hold in one
place: secrets are redacted before they leave the host, replies are validated into a
pydantic model before anyone acts on them, and every HTTP call is counted.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import threading
import time
import weakref
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from agentheal.llm_endpoint import Structured, profiles_at, refused_part
from agentheal.models import LLMUsage
from agentheal.redaction import REDACTED as REDACTED
from agentheal.redaction import cut as cut
from agentheal.redaction import redact as redact
from agentheal.replies import parse_reply as parse_reply
from agentheal.replies import response_schema as response_schema

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionMessage

    from agentheal.config import Settings

T = TypeVar("T", bound=BaseModel)


class LLMNotConfigured(Exception):
    """No LLM endpoint is configured; the graph turns this into offline behaviour."""


class LLMError(Exception):
    """The LLM endpoint failed (after retries, or at once on a client error)."""


class LLMInvalidOutput(LLMError):
    """The reply was unparsable or schema-invalid, also after one retry with the error."""

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class LLMTimeout(LLMError):
    """The endpoint did not answer within the call's time-out, or the run's LLM time is spent.

    Not retried: a slow model is as slow the second time, and the run's budget is better spent
    escalating with what is known.
    """


class ToolLoopExhausted(LLMError):
    """The tool loop hit its iteration cap; `findings` keeps what the tools returned."""

    def __init__(self, message: str, findings: list[str]) -> None:
        super().__init__(message)
        self.findings = findings


class LLMCallRecord(BaseModel):
    """One HTTP call to the model, as the event store records it."""

    model_config = ConfigDict(extra="forbid")

    model: str
    purpose: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_known: bool = True
    duration_s: float = 0.0
    ok: bool = True
    error: str = ""


def _retry_after(response: Any) -> float | None:
    if response is None:
        return None
    headers = response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


# The openai clients made over a shared HTTP client, per endpoint: a process that drives many runs
# (each with an LLM door of its own) makes one, not one a run (~0.3 ms each, a heal's tenth of its
# LLM path). The client is safe to share between threads, as its HTTP client is.
_CLIENTS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, float], openai.OpenAI]] = (
    weakref.WeakKeyDictionary()
)
_CLIENTS_LOCK = threading.Lock()


def _openai_client(http: Any, base_url: str, key: str, timeout_s: float) -> openai.OpenAI:
    import openai

    with _CLIENTS_LOCK:
        made = _CLIENTS.setdefault(http, {})
        client = made.get((base_url, key, timeout_s))
        if client is None:
            client = made[base_url, key, timeout_s] = openai.OpenAI(
                base_url=base_url,
                api_key=key or "unused",
                timeout=timeout_s,
                max_retries=0,  # our own retry counts and records every attempt
                http_client=http,
            )
        return client


class LLM:
    """A model behind an OpenAI-compatible endpoint; one object per heal run.

    Raises `LLMNotConfigured` from the constructor (not at the first call) when
    `settings.llm_base_url` is unset, so a caller learns it before building prompts.

    Args:
        settings: agentheal settings (endpoint, model, key, retries, budgets).
        on_call: Called after every HTTP call, failed ones too, with its record.
        on_note: Called with (purpose, text) when the door refuses a reply or learns what the
            endpoint does not support; the heal graph records it in the run's story.
        backoff_s: Base delay of the exponential backoff between retries.
        max_backoff_s: Cap on any single wait, Retry-After included.
        sleep: How to wait; tests pass a recorder.
    """

    def __init__(
        self,
        settings: Settings,
        on_call: Callable[[LLMCallRecord], None] | None = None,
        *,
        on_note: Callable[[str, str], None] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        http_client: Any = None,
    ) -> None:
        if settings.llm_base_url is None:
            raise LLMNotConfigured(
                "no LLM configured (set AGENTHEAL_LLM_BASE_URL, e.g. http://127.0.0.1:11434/v1, "
                "or llm_base_url in agentheal.toml)"
            )
        import httpx

        self.settings = settings
        self.usage = LLMUsage()
        self._on_call, self._on_note = on_call, on_note
        self.profile = profiles_at(settings.llm_endpoints_path).get(settings.llm_base_url, settings.llm_model)
        if not settings.llm_json_schema and self.profile.structured is Structured.json_schema:
            self.profile = self.profile.model_copy(update={"structured": Structured.prompt})
        self._timeout_s = settings.llm_timeout_s
        self._spent_s = 0.0  # wall time spent on this run's LLM calls and back-off
        self._backoff_s, self._max_backoff_s, self._sleep = backoff_s, max_backoff_s, sleep
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        # The key joins the values `redact` removes everywhere (prompts, tool outputs, stored events).
        from agentheal.redaction import register_secrets

        register_secrets([key])
        # openai 3 defaults to httpx2, which respx (our test boundary) does not patch; it still
        # accepts an httpx client, so tests and production run the same transport.
        # A process that drives many runs passes one shared client: building one costs ~15 ms (TLS context).
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=settings.llm_timeout_s)
        self._client = _openai_client(self._http, settings.llm_base_url, key, settings.llm_timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool, if this object made it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def structured(self, purpose: str, system: str, user: str, schema: type[T]) -> T:
        """Ask once and validate the answer into `schema` (one retry with the error).

        Args:
            purpose: What the call is for ("diagnose", "plan"), recorded with it.
            system: The system prompt.
            user: The user prompt.
            schema: The pydantic model the reply must validate into.

        Returns:
            The validated reply.

        Raises:
            LLMError: The endpoint failed after retries, or refused the request.
            LLMInvalidOutput: The reply stayed invalid after one retry.
        """
        messages = self._start(system, user, schema)
        message = self._chat(purpose, messages, schema)
        return self._final(purpose, messages, message, schema, tools=None)

    def tool_loop(
        self,
        purpose: str,
        system: str,
        user: str,
        tools: list[dict[str, Any]],
        call_tool: Callable[[str, dict[str, Any]], str],
        schema: type[T],
        max_iterations: int | None = None,
    ) -> T:
        """Let the model call read-only tools until it answers, then validate the answer.

        Tool outputs are redacted, then cut to `settings.llm_tool_output_chars`. Unknown
        tools and bad arguments are answered with an error message, never executed.

        Args:
            purpose: What the loop is for, recorded with each call.
            system: The system prompt.
            user: The user prompt.
            tools: OpenAI function-tool JSON.
            call_tool: Runs a tool by name with its parsed arguments and returns its text.
            schema: The pydantic model the final answer must validate into.
            max_iterations: Model calls allowed; default `settings.llm_max_tool_iterations`.

        Returns:
            The validated final answer.

        Raises:
            ToolLoopExhausted: The model still called tools at the cap; `.findings` has the outputs.
            LLMError: The endpoint failed after retries.
            LLMInvalidOutput: The final answer stayed invalid after one retry.
        """
        cap = max_iterations or self.settings.llm_max_tool_iterations
        known = {t["function"]["name"] for t in tools if t.get("type") == "function" and "function" in t}
        messages = self._start(system, user, schema)
        findings: list[str] = []
        for _ in range(cap):
            offered = tools if self.profile.tools != "unsupported" else None
            if offered is None and not findings:
                # The endpoint does not do tool calls: the diagnosis rests on what the prompt holds.
                self._note(purpose, "the endpoint does not do tool calls; answering from the prompt alone")
            message = self._chat(purpose, messages, schema, tools=offered, tool_choice="auto")
            if not message.tool_calls:
                if (
                    offered is not None
                    and self._answered_tools_in_text(message, known)
                    and parse_reply(message.content, schema)[0] is None
                ):
                    self._learn(
                        purpose,
                        tools="unsupported",
                        note="answered a request with tools in plain text, without tool calls",
                    )
                return self._final(purpose, messages, message, schema, tools=offered)
            if self.profile.tools != "native":
                self._learn(purpose, tools="native", note="answered with tool calls")
            messages.append(message.model_dump(include={"role", "content", "tool_calls"}, exclude_none=True))
            for call in message.tool_calls:
                output, finding = self._run_tool(call, known, call_tool)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
                if finding:
                    findings.append(finding)
        raise ToolLoopExhausted(
            f"{purpose}: the model still called tools after {cap} rounds; "
            f"{len(findings)} tool outputs gathered",
            findings,
        )

    # ------------------------------------------------------------ internals

    def _redact(self, text: str) -> str:
        return redact(text)  # the one function everything leaving the host goes through

    def _start(self, system: str, user: str, schema: type[BaseModel]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _note(self, purpose: str, text: str) -> None:
        if self._on_note is not None:
            self._on_note(purpose, text)

    def _learn(self, purpose: str, note: str, **change: Any) -> None:
        """Remember what the endpoint was seen to support (and say so in the run's story)."""
        profile = self.profile.model_copy(update=change)
        now = ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in change.items())
        profile.learn(f"{purpose}: {note} -> {now}")
        self.profile = profile
        profiles_at(self.settings.llm_endpoints_path).save(profile)
        self._note(purpose, f"endpoint {profile.model}@{profile.base_url}: {note}; from now on {now}")

    @staticmethod
    def _answered_tools_in_text(message: ChatCompletionMessage, known: set[str]) -> bool:
        """Whether a reply without tool calls spells a tool call out as text.

        That is how a server that does not do tool calls answers a request with tools (llama.cpp's
        default chat format does): the model saw the tools only as prompt text. Prose that
        names no tool is just a poor answer, which the parse-and-retry path handles.
        """
        text = message.content or ""
        return bool(text) and any(re.search(rf"\b{re.escape(name)}\b", text) for name in known)

    def _run_tool(
        self, call: Any, known: set[str], call_tool: Callable[[str, dict[str, Any]], str]
    ) -> tuple[str, str | None]:
        """Run one tool call: (tool message text, finding or None when not executed)."""
        function = getattr(call, "function", None)
        if function is None:
            return f"error: only function tools exist here; available: {', '.join(sorted(known))}", None
        name = function.name
        if name not in known:
            return f"error: unknown tool '{name}'; available: {', '.join(sorted(known))}", None
        try:
            args = json.loads(function.arguments or "{}")
        except json.JSONDecodeError as err:
            return f"error: the arguments of {name} are not valid JSON ({err.msg}); call it again", None
        if not isinstance(args, dict):
            return f"error: the arguments of {name} must be a JSON object", None
        try:
            output = str(call_tool(name, args))
        except Exception as err:  # the model must hear about a failed observation, not the run crash
            output = f"error: {name} failed: {type(err).__name__}: {err}"
        # Redact before cutting: a cut through a secret could leave a half no pattern matches.
        output = cut(self._redact(output), self.settings.llm_tool_output_chars)
        return output, f"{name}({json.dumps(args, sort_keys=True)}): {output}"

    def _final(
        self,
        purpose: str,
        messages: list[dict[str, Any]],
        message: ChatCompletionMessage,
        schema: type[T],
        tools: list[dict[str, Any]] | None,
    ) -> T:
        value, problem = parse_reply(message.content, schema)
        if value is not None:
            return value
        if message.refusal:
            problem = f"the model refused: {message.refusal}"
        self._note(purpose, f"refused the model's reply (asking once more): {problem}")
        messages.append({"role": "assistant", "content": message.content or ""})
        messages.append(
            {
                "role": "user",
                "content": f"Your reply could not be used: {problem}. Reply again with only the JSON "
                f"object that matches the {schema.__name__} schema, nothing else.",
            }
        )
        # With tools, tool_choice "none" makes this retry an answer, not another observation round.
        again = self._chat(purpose, messages, schema, tools=tools, tool_choice="none" if tools else None)
        value, problem = parse_reply(again.content, schema)
        if value is None:
            self._note(purpose, f"refused the model's reply again: {problem}")
            raise LLMInvalidOutput(
                f"{purpose}: the LLM's reply is not a valid {schema.__name__} after one retry: {problem}",
                reply=again.content,
            )
        return value

    def _chat(
        self,
        purpose: str,
        messages: list[dict[str, Any]],
        schema: type[BaseModel],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatCompletionMessage:
        """One answer from the endpoint: refusals of a request part step down, outages retry."""
        import openai

        url = self.settings.llm_base_url
        attempts = self.settings.llm_max_retries + 1
        failures = 0
        last = ""
        while True:
            if tools is not None and self.profile.tools == "unsupported":
                tools = None
            request = self._request(messages, schema, tools, tool_choice)
            self._timeout_s = self._call_timeout(purpose)
            started = time.monotonic()
            response = None
            try:
                completion = self._complete(request)
            except openai.APITimeoutError as err:
                self._spent_s += time.monotonic() - started
                last = f"no answer within {self._timeout_s:.3g} s"
                self._record(purpose, started, None, error=last)
                raise LLMTimeout(
                    f"LLM endpoint {url} gave no answer to {purpose} within {self._timeout_s:.3g} s; "
                    "not asked again, a slow model stays slow (raise AGENTHEAL_LLM_TIMEOUT_S, or use "
                    "a faster model)"
                ) from err
            except openai.APIStatusError as err:
                self._spent_s += time.monotonic() - started
                last = f"HTTP {err.status_code}: {_error_text(err)}"
                self._record(purpose, started, None, error=last)
                part = refused_part(
                    err.status_code,
                    _error_text(err),
                    "response_format" in request,
                    "tools" in request,
                    self.profile.token_cap in request,
                )
                if part == "token_cap":
                    step_cap = "max_completion_tokens" if self.profile.token_cap == "max_tokens" else "none"
                    self._learn(
                        purpose, note=f"refused {self.profile.token_cap} ({_short(last)})", token_cap=step_cap
                    )
                    continue
                if part == "response_format" and (step := self.profile.step_down()) is not None:
                    self._learn(
                        purpose,
                        note=f"refused response_format as {self.profile.structured.value} ({_short(last)})",
                        structured=step,
                    )
                    continue  # a refusal is an answer, not an outage: ask the next way at once
                if part == "tools":
                    self._learn(
                        purpose, note=f"refused a request with tools ({_short(last)})", tools="unsupported"
                    )
                    continue
                if not _retryable(err):
                    raise LLMError(f"LLM endpoint {url} answered {last}") from err
                response = err.response
            except openai.APIConnectionError as err:
                self._spent_s += time.monotonic() - started
                last = f"{type(err).__name__}: {err}"
                self._record(purpose, started, None, error=last)
            except openai.OpenAIError as err:
                self._spent_s += time.monotonic() - started
                self._record(purpose, started, None, error=str(err))
                raise LLMError(f"LLM endpoint {url}: {err}") from err
            else:
                self._spent_s += time.monotonic() - started
                self._record(purpose, started, completion)
                if not completion.choices:
                    raise LLMError(f"LLM endpoint {url} returned no choices")
                return completion.choices[0].message
            failures += 1
            if failures >= attempts:
                raise LLMError(f"LLM endpoint {url} failed after {attempts} attempts: {last}")
            wait = min(self._wait(failures - 1, response), self._left_s())
            self._sleep(wait)
            self._spent_s += wait

    def _request(
        self,
        messages: list[dict[str, Any]],
        schema: type[BaseModel],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | None,
    ) -> dict[str, Any]:
        """The request body, shaped to what the endpoint was seen to take; every text redacted."""
        sent = [
            {**m, "content": self._redact(m["content"])} if isinstance(m.get("content"), str) else m
            for m in messages
        ]
        mode = self.profile.structured
        if mode is not Structured.json_schema and sent and sent[0].get("role") == "system":
            # Without a JSON-schema format the model reads the schema; constraining (llama.cpp's
            # json_object + schema) or parse-and-retry does the rest.
            sent[0] = {**sent[0], "content": sent[0]["content"] + _schema_instruction(schema)}
        request: dict[str, Any] = {"model": self.settings.llm_model, "messages": sent}
        if mode is Structured.json_schema:
            body, strict = response_schema(schema)
            name = re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64]
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": body, "strict": strict},
            }
        elif mode is Structured.json_object_schema:
            request["response_format"] = {"type": "json_object", "schema": schema.model_json_schema()}
        elif mode is Structured.json_object:
            request["response_format"] = {"type": "json_object"}
        if tools:
            request["tools"] = tools
            request["tool_choice"] = tool_choice or "auto"
        if self.settings.llm_max_tokens and self.profile.token_cap != "none":
            request[self.profile.token_cap] = self.settings.llm_max_tokens
        return request

    def _left_s(self) -> float:
        return max(self.settings.llm_run_budget_s - self._spent_s, 0.0)

    def _call_timeout(self, purpose: str) -> float:
        """This call's time-out: the configured one, cut to what the run's budget has left."""
        left = self._left_s()
        if left < 1.0:
            raise LLMTimeout(
                f"{purpose}: this run's LLM time budget of {self.settings.llm_run_budget_s:.0f} s is "
                f"spent ({self.usage.calls} calls); raise AGENTHEAL_LLM_RUN_BUDGET_S for a slow model"
            )
        return min(self.settings.llm_timeout_s, left)

    def _complete(self, request: dict[str, Any]) -> ChatCompletion:
        """One chat-completions exchange with the endpoint: the only place a request leaves."""
        from openai.types.chat import ChatCompletion

        # `post` is the client's documented door for raw requests: the same auth, errors and
        # parsing as `chat.completions.create`, without its walk that re-types every nested dict
        # of the request (messages, tool schemas) — 2 ms a call, for a body already plain JSON.
        return self._client.post(
            "/chat/completions", body=request, cast_to=ChatCompletion, options={"timeout": self._timeout_s}
        )

    def _wait(self, attempt: int, response: Any) -> float:
        # Exponential backoff with jitter so parallel runs do not retry in lock-step.
        delay = self._backoff_s * 2.0**attempt * random.uniform(0.5, 1.0)
        after = _retry_after(response)
        if after is not None:
            delay = max(delay, after)
        return min(delay, self._max_backoff_s)

    def _record(
        self, purpose: str, started: float, completion: ChatCompletion | None, error: str = ""
    ) -> None:
        usage = completion.usage if completion is not None else None
        prompt = usage.prompt_tokens if usage else 0
        done = usage.completion_tokens if usage else 0
        known = usage is not None or completion is None  # a failed call spent no tokens
        if completion is not None and self.profile.usage == "unknown":
            self.profile = self.profile.model_copy(update={"usage": "reported" if usage else "absent"})
        self.usage = self.usage.add(
            LLMUsage(
                calls=1, prompt_tokens=prompt, completion_tokens=done, unknown_usage_calls=int(not known)
            )
        )
        if self._on_call is not None:
            self._on_call(
                LLMCallRecord(
                    model=self.settings.llm_model,
                    purpose=purpose,
                    prompt_tokens=prompt,
                    completion_tokens=done,
                    usage_known=known,
                    duration_s=time.monotonic() - started,
                    ok=completion is not None,
                    error=error,
                )
            )


def _error_text(err: Any) -> str:
    """What a refusal says: the body's message when it has one, else the client's text."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
    return str(err.message)


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@functools.cache
def _schema_instruction(schema: type[BaseModel]) -> str:
    return (
        "\n\nAnswer with one JSON object and nothing else (no prose, no code fences). "
        f"It must match this JSON Schema:\n{json.dumps(schema.model_json_schema())}"
    )


def _retryable(err: Any) -> bool:
    """429 (unless the quota is gone), 408 and 5xx are worth another try; other 4xx are not."""
    status: int = err.status_code
    if status == 429:
        body = err.body if isinstance(err.body, dict) else {}
        return "insufficient_quota" not in (str(body.get("code")), str(body.get("type")))
    return status == 408 or status >= 500
