"""Bad input gets an error that names the problem, exit 2, and nothing recorded is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentheal.cli import main


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTHEAL_HOME", str(tmp_path / "home"))


def _err(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def test_empty_gap(capsys: pytest.CaptureFixture[str], tiny_estate_file: Path) -> None:
    code, err = _err(capsys, "heal", "--gap", "  ", "--component", "web", "--estate", str(tiny_estate_file))
    assert code == 2 and "gap text is empty" in err


def test_malformed_gap_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_estate_file: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"gap": ')
    code, err = _err(capsys, "heal", "--gap-file", str(bad), "--estate", str(tiny_estate_file))
    assert code == 2 and "not valid JSON" in err and str(bad) in err


def test_gap_file_with_unknown_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_estate_file: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "web down", "colour": "red"}')
    code, err = _err(capsys, "heal", "--gap-file", str(bad), "--estate", str(tiny_estate_file))
    assert code == 2 and "colour" in err


def test_unknown_component(capsys: pytest.CaptureFixture[str], tiny_estate_file: Path) -> None:
    code, err = _err(
        capsys, "heal", "--gap", "x is down", "--component", "nosuch", "--estate", str(tiny_estate_file)
    )
    assert code == 2 and "nosuch" in err and "web" in err


def test_missing_estate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    code, err = _err(capsys, "heal", "--gap", "web down", "--component", "web", "--estate", str(missing))
    assert code == 2 and "none.yaml" in err


def test_broken_estate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad-estate.yaml"
    bad.write_text("name: x\ncomponents:\n  a:\n    command: 5\n    bogus_key: 1\n")
    code, err = _err(capsys, "estate", "status", str(bad))
    assert code == 2 and "bogus_key" in err and "command" in err


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _err(capsys, "heal", "--no-such-flag")
    assert code == 2


def test_approve_unknown_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _err(capsys, "approve", "deadbeef")
    assert code == 2 and "deadbeef" in err


def test_broken_persona_file_is_named_and_the_others_load(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "personas"
    extra.mkdir()
    (extra / "broken.md").write_text("---\nname: broken\ntitle: x\nrole: specialist\ncolour: red\n---\n# x\n")
    monkeypatch.setenv("AGENTHEAL_PERSONAS_DIR", str(extra))
    code = main(["personas", "list", "--json"])
    out = capsys.readouterr().out
    import json

    listed = json.loads(out)
    assert code == 0
    names = {p["name"] for p in listed["personas"]}
    assert {"availability", "configuration", "capacity", "dependencies"} <= names
    assert any("broken.md" in e and "colour" in e for e in listed["errors"])


def test_memory_import_of_a_bad_file_keeps_what_is_stored(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"gap": "disk full on db", "resolution": "cleaned tmp", "outcome": "healed"}\n')
    assert main(["memory", "import", str(good)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"gap": "x", "outcome": "maybe"}\nnot json\n')
    code, err = _err(capsys, "memory", "import", str(bad))
    assert code in (1, 2) and "line 1" in err and "line 2" in err
    assert main(["memory", "search", "disk full", "--json"]) == 0
    assert "cleaned tmp" in capsys.readouterr().out
