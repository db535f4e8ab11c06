"""The committed openapi.json is the schema the app serves; it names every route and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentheal.api import openapi

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_schema_is_what_the_app_serves() -> None:
    committed = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    current = openapi.schema()
    changed = openapi.differences(committed, current)
    assert not changed, f"openapi.json is out of date: {changed}; run `python -m agentheal.api.openapi`"
    assert committed == current


def test_check_names_what_drifted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    del stale["paths"]["/memory/search"]
    stale["paths"]["/gone"] = {"get": {"responses": {}}}
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(stale))
    assert openapi.main(["--check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "added GET /memory/search" in err and "removed GET /gone" in err
    assert openapi.main([str(path)]) == 0 and openapi.main(["--check", str(path)]) == 0


def test_every_route_documents_the_answers_the_middleware_gives() -> None:
    paths = openapi.schema()["paths"]
    for route in ("/gaps", "/runs", "/memory/search", "/memory", "/agents", "/estate", "/faults",
                  "/alerts/alertmanager", "/feedback", "/readyz", "/metrics", "/healthz"):  # fmt: skip
        assert route in paths, route
    for route, item in paths.items():
        for method, op in item.items():
            codes = set(op["responses"])
            if route != "/healthz":
                assert {"401", "403", "429"} <= codes, (method, route, codes)
            if method == "post":
                assert {"400", "413"} <= codes, (method, route, codes)
