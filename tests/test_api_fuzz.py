"""schemathesis, driven by the app's own OpenAPI schema, against the running server (uvicorn on a
loopback port, tokens configured, a real tiny estate up): no 5xx and no answer that breaks the
schema; malformed, oversized and unauthorized requests get a 4xx whose body names the problem and
change nothing (the event store's rows and memory's records are the same before and after, audit
rows of refused requests aside).

Bounded: a few examples per operation and phase, no shrinking, so the whole run stays well under a
minute on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from agentheal.event_schema import TABLES
from conftest import stop_processes_under, tiny_estate
from test_api_ops import ApiServer, estate_up

pytestmark = pytest.mark.slow

EXAMPLES = 8  # per operation and phase
# Operations that accept some schema-violating input on purpose, and why: for them a negative case
# must still get no 5xx and an answer within the schema, but may be accepted.
LENIENT = {
    # `since` is a date-time, and FastAPI (pydantic, lax mode) also takes a number as epoch seconds:
    # `?since=128196` is 1970-01-02T11:36:36Z, not an error. Harmless; the schema does not say it.
    "GET /runs": "since= takes epoch seconds too",
}
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("fuzz")
    estate = tiny_estate(root)
    # A rate limit the fuzzer never reaches (the limiter still runs); the default body limits.
    srv = ApiServer(
        root, estate, env={"AGENTHEAL_API_RATE_PER_S": "5000", "AGENTHEAL_API_RATE_BURST": "5000"}
    )
    estate_up(srv)
    yield srv
    srv.stop()
    stop_processes_under(estate.parent)


def _names_the_problem(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer carries `detail`: a sentence, or FastAPI's list of fields with what is wrong."""
    if 400 <= response.status_code < 500:
        detail = json.loads(response.content or b"{}").get("detail")
        named = (isinstance(detail, str) and len(detail) > 8) or (
            isinstance(detail, list) and detail and all(d.get("msg") and d.get("loc") for d in detail)
        )
        assert named, (
            f"{response.status_code} without a detail naming the problem: {response.content[:300]!r}"
        )
    return None


def _refused(ctx: Any, response: Any, case: Any) -> bool | None:
    assert response.status_code in (401, 403), f"expected 401/403, got {response.status_code}"
    return None


def _state(server: ApiServer) -> dict[str, int]:
    """Rows of every event-store table (audit rows of refused requests apart) and memory's records."""
    events = server.events()
    counts = {}
    for name, table in TABLES.items():
        stmt = sa.select(sa.func.count().label("n")).select_from(table)
        if name == "audit":
            stmt = stmt.where(table.c.outcome != "refused")
        counts[name] = int(events.query(stmt)[0]["n"])
    events.close()
    assert server.client("viewer").get("/metrics").status_code == 200
    probe = server.client("viewer").get("/memory/search", params={"q": "anything", "k": 100})
    counts["memory"] = len(probe.json())
    return counts


def _run(
    schema: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    checks: list[Callable[..., bool | None]],
    failures: list[str],
    skip: Callable[[Any], bool] = lambda op: False,
) -> int:
    """Each operation's cases of `mode`, sent with `headers` and validated by `checks`; what fails is
    added to `failures` (one entry per operation, so one run shows them all). Returns the cases sent."""
    session = requests.Session()
    session.trust_env = False
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if skip(operation):
            continue

        label = f"{operation.method.upper()} {operation.path}"
        used = [c for c in checks if not (c is negative_data_rejection and label in LENIENT)]

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case: Any) -> None:
            nonlocal sent
            sent += 1
            # called below, in this same iteration: `used` is this operation's
            case.call_and_validate(session=session, headers=headers, checks=used, timeout=60)  # noqa: B023

        try:
            send()
        except Unsatisfiable:
            continue  # nothing of this operation can be made invalid (no parameters, any string fits)
        except (Exception, FailureGroup) as exc:  # every operation's failure is reported, not the first only
            failures.append(f"{mode.value} {operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    return sent


def test_fuzzing_finds_no_5xx_no_schema_breach_and_bad_requests_change_nothing(fuzzed: ApiServer) -> None:
    admin = {"Authorization": f"Bearer {fuzzed.tokens['admin']}"}
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json", headers=admin, timeout=30)
    # The token is ours to send (each phase its own); extra query parameters are ignored by design.
    schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
    assert "/gaps" in schema.raw_schema["paths"] and "/memory/search" in schema.raw_schema["paths"]
    before = _state(fuzzed)

    # Malformed: schema-violating data of every operation, with a token allowed to do anything.
    failures: list[str] = []
    negative = _run(schema, GenerationMode.NEGATIVE, admin,
                    [*CONFORMANCE, negative_data_rejection, _names_the_problem], failures)  # fmt: skip
    # Unauthorized: valid data with no token, a wrong one, and a viewer's on what changes things.
    wrong = {"Authorization": "Bearer ahk_not-a-token"}
    viewer = {"Authorization": f"Bearer {fuzzed.tokens['viewer']}"}
    checks = [*CONFORMANCE, _refused, _names_the_problem]
    public, reads = (lambda op: op.path == "/healthz"), (lambda op: op.method.upper() == "GET")
    unauthorized = _run(schema, GenerationMode.POSITIVE, {}, checks, failures, skip=public)
    unauthorized += _run(schema, GenerationMode.POSITIVE, wrong, checks, failures, skip=public)
    unauthorized += _run(schema, GenerationMode.POSITIVE, viewer, checks, failures, skip=reads)
    # Oversized and not JSON at all, on every operation that takes a body.
    posts = [p for p, item in schema.raw_schema["paths"].items() if "post" in item]
    with httpx.Client(base_url=fuzzed.url, headers=admin, trust_env=False, timeout=30) as client:
        for path in posts:
            path = path.replace("{run_id}", "0123456789abcdef")
            size = (17 << 20) if path == "/memory" else (2 << 20)  # imports may be 16 MiB
            big = client.post(path, content=b'{"text": "' + b"x" * size + b'"}',
                              headers={"content-type": "application/json"})  # fmt: skip
            assert big.status_code == 413 and "bytes" in big.json()["detail"], (
                path,
                big.status_code,
                big.text,
            )
            broken = client.post(path, content=b"not json", headers={"content-type": "application/json"})
            assert 400 <= broken.status_code < 500 and broken.json()["detail"], (path, broken.text)
    after = _state(fuzzed)
    assert after == before, f"refused requests changed the stores: {before} -> {after}; {failures}"
    assert negative > 0 and unauthorized > 0

    # Valid data as an admin: whatever happens, no 5xx and every answer fits the schema.
    positive = _run(schema, GenerationMode.POSITIVE, admin, [*CONFORMANCE, _names_the_problem], failures)
    assert positive > 0
    assert not failures, "\n\n".join(failures)
    log = Path(fuzzed.log).read_text()
    assert "Traceback" not in log, log[-3000:]
