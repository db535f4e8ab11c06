"""The eval runner: each scenario on a fresh copy of its estate, under a fresh home, watched and scored.

Every scenario gets its own working folder: a copy of the estate on free ports, started, and an
agentheal home of its own (event store, memory, checkpoints, pid records) with the built-in
policy. So no scenario inherits another's learned playbooks, rate-limit counts, open gaps or a
fault it failed to heal; the copy costs a few milliseconds and the start about a second.
Scenarios run one after another; the JSON file is rewritten after each one, so an interrupted
suite still leaves the scenarios it finished.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agentheal.eval.results import ScenarioResult, Stages, Suite, suite_of
from agentheal.eval.scenario import LoadedScenario, ScenarioError, check_against_estate

Say = Callable[[str], None]


def check_estates(items: list[LoadedScenario]) -> None:
    """Check every scenario against its estate before anything starts.

    Raises:
        ScenarioError: A scenario names an unknown estate or component, or a fault that does not apply.
    """
    from agentheal.estate.model import EstateError, load_estate
    from agentheal.eval.estates import estates_root, sample_estates

    problems = []
    for item in items:
        name = item.scenario.estate
        if "/" not in name and not name.endswith((".yaml", ".yml")):
            if name not in sample_estates():
                known = ", ".join(sample_estates()) or "none"
                problems.append(f"{item.path}: estate: no sample estate {name!r} (known: {known})")
                continue
            file = estates_root() / name / "estate.yaml"
        else:
            file = item.path.parent / name
        try:
            check_against_estate(item, load_estate(file))
        except EstateError as exc:
            problems.append(f"{item.path}: estate: {exc}")
        except ScenarioError as exc:
            problems.append(str(exc))
    if problems:
        raise ScenarioError("\n".join(problems))


def run_scenario(item: LoadedScenario, folder: Path, llm_url: str | None, say: Say) -> ScenarioResult:
    """Run one scenario in `folder` (created); the estate is stopped whatever happens."""
    from agentheal.eval.drill import Drill
    from agentheal.eval.observer import Observer
    from agentheal.eval.score import score
    from agentheal.eval.session import EstateSession, SessionError

    scenario = item.scenario
    began = time.time()
    session = None
    try:
        session = EstateSession(folder, scenario.estate, item.path.parent, llm_url=llm_url, policy=None)
        session.start()
        observer = Observer(session)
        try:
            observer.start()
            drill = Drill(
                observer, session, scenario.faults, scenario.expect, scenario.operator, scenario.load, say
            ).run()
            observer.stop()  # running heals finish first; what they do still counts
            return score(drill.collect(), scenario, str(item.path))
        finally:
            observer.close()
    except SessionError as exc:
        return _not_run(item, f"the estate did not start: {exc}", time.time() - began)
    finally:
        if session is not None:
            leftovers = session.stop()
            if leftovers:
                say(f"killed {len(leftovers)} process(es) left running: {leftovers[0]}")


def _not_run(item: LoadedScenario, reason: str, took: float) -> ScenarioResult:
    s = item.scenario
    return ScenarioResult(
        name=s.name, detected=False, time_to_detect_s=None, healed=False, time_to_heal_s=None,
        wrong_actions=0, actions=[], llm_calls=0, reason=reason, kind="control" if s.control else "fault",
        description=s.description, file=str(item.path), stages=Stages(), duration_s=round(took, 1),
    )  # fmt: skip


def document(results: list[ScenarioResult], mode: str, llm_url: str | None, began: float) -> dict[str, Any]:
    """The JSON document: `suite` and `scenarios` (the contract), and when and how it ran."""
    suite: Suite = suite_of(results, mode, time.time() - began)
    return {
        "suite": suite.model_dump(mode="json"),
        "scenarios": [r.model_dump(mode="json") for r in results],
        "run": {
            "started": datetime.fromtimestamp(began).astimezone().isoformat(timespec="seconds"),
            "mode": mode,
            "llm": llm_url,
        },
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write the document atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_suite(
    items: list[LoadedScenario],
    llm_url: str | None = None,
    json_path: Path | None = None,
    say: Say = lambda line: None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the scenarios one after another; the JSON document (also written to `json_path` after
    each scenario). The working folder is removed at the end unless it was given."""
    mode = "llm" if llm_url else "offline"
    began = time.time()
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="agentheal-eval-")) if workdir is None else workdir
    results: list[ScenarioResult] = []
    try:
        for i, item in enumerate(items, 1):
            say(f"[{i}/{len(items)}] {item.scenario.name}: {item.scenario.description}")
            result = run_scenario(item, root / f"{i:02d}-{item.scenario.name}", llm_url, say)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if json_path is not None:
                write_json(json_path, document(results, mode, llm_url, began))
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return document(results, mode, llm_url, began)
