"""Scenario files: an estate, the faults to inject and when, an operator's steps, a load, what must follow.

A scenario is YAML validated by pydantic with `extra="forbid"`, so a typo is named with its place
in the file (`faults.0.at_s: Input should be greater than or equal to 0`). A scenario with no
faults is a *control*: the estate is healthy (under load, or restarted by its operator) and any
remediation agentheal runs is a false one. The JSON Schema is published as
`eval/scenario.schema.json` (`export_schema`), and a test keeps it current.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,99}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_*?\[\]]+\([A-Za-z0-9_.*?\[\]-]+\)$")


class ScenarioError(Exception):
    """A scenario file that cannot be used; the message names the file and the field."""


class FaultStep(BaseModel):
    """One fault to inject, and when."""

    model_config = ConfigDict(extra="forbid")

    fault: str = Field(description="A fault from `agentheal fault list`, e.g. process_killed.")
    component: str = Field(description="The component to break.")
    at_s: float = Field(default=0.0, ge=0, le=600, description="Seconds after `after`.")
    after: Literal["start", "heal_started"] = Field(
        default="start",
        description="start: the scenario's start (the estate healthy and watched); heal_started: the "
        "first heal run of the scenario starting (a fault during a heal).",
    )
    personas: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Personas that count as routed right; default: the one the fault expects.",
    )

    @field_validator("fault")
    @classmethod
    def _known_fault(cls, v: str) -> str:
        from agentheal.eval.faults import FAULTS

        if v not in FAULTS:
            raise ValueError(f"unknown fault {v!r} (known: {', '.join(FAULTS)})")
        return v


class OperatorStep(BaseModel):
    """Something a person does to the estate on purpose, outside agentheal."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["restart"] = Field(
        description="restart: stop the component's process group and start it again, as a deploy "
        "script or `agentheal estate` would, without asking agentheal."
    )
    component: str
    at_s: float = Field(default=0.0, ge=0, le=600, description="Seconds after the scenario's start.")


class Request(BaseModel):
    """One request of a load loop."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST"] = "GET"
    path: str = Field(pattern=r"^/\S*$", description="Path on the component's HTTP address.")
    json_body: dict[str, Any] | None = Field(default=None, description="JSON body of a POST.")


class LoadSpec(BaseModel):
    """A bounded request loop on loopback: `rate_per_s` requests for `duration_s`, round-robin."""

    model_config = ConfigDict(extra="forbid")

    component: str = Field(description="The component whose first HTTP probe gives the address.")
    requests: list[Request] = Field(min_length=1)
    rate_per_s: float = Field(default=20.0, gt=0, le=500)
    duration_s: float = Field(default=8.0, gt=0, le=300)
    concurrency: int = Field(default=2, ge=1, le=16)
    at_s: float = Field(default=0.0, ge=0, le=600)


class Expect(BaseModel):
    """What must follow. Times count from each fault's injection; they are also the deadlines."""

    model_config = ConfigDict(extra="forbid")

    detect_within_s: float = Field(default=15.0, gt=0, le=600, description="A gap must open by then.")
    heal_within_s: float = Field(
        default=30.0, gt=0, le=900, description="Healed, validated and verified by then."
    )
    forbid: list[str] = Field(
        default_factory=list,
        description='Remediations that must not run, as signatures with globs: "restart(api)", "*(api)". '
        "Remediations on a component no fault of the scenario needs are wrong in any case.",
    )
    quiet_s: float = Field(
        default=4.0,
        ge=0,
        le=120,
        description="Keep watching this long after the last heal: late actions count.",
    )
    observe_s: float = Field(
        default=12.0, gt=0, le=600, description="A control: how long the estate is watched."
    )

    @field_validator("forbid")
    @classmethod
    def _signatures(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not _SIGNATURE.match(s)]
        if bad:
            raise ValueError(f"{bad}: write action(component), globs allowed, e.g. restart(api) or *(api)")
        return v

    @model_validator(mode="after")
    def _order(self) -> Expect:
        if self.heal_within_s < self.detect_within_s:
            raise ValueError(
                f"heal_within_s ({self.heal_within_s:g}) is shorter than detect_within_s "
                f"({self.detect_within_s:g}): a heal comes after detection"
            )
        return self


class Scenario(BaseModel):
    """One eval scenario."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Lower-case letters, digits, '_', '.', '-'; unique in a suite.")
    description: str = Field(min_length=1)
    estate: str = Field(
        default="shopfront",
        description="A sample estate (eval/estates/NAME), or an estate file relative to the scenario file.",
    )
    faults: list[FaultStep] = Field(default_factory=list, description="None: a control scenario.")
    operator: list[OperatorStep] = Field(default_factory=list)
    load: LoadSpec | None = None
    expect: Expect = Field(default_factory=Expect)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"scenario name {v!r}: use lower-case letters, digits, '_', '.', '+', '-'")
        return v

    @model_validator(mode="after")
    def _triggers(self) -> Scenario:
        if any(f.after == "heal_started" for f in self.faults) and not any(
            f.after == "start" for f in self.faults
        ):
            raise ValueError("a fault injected after heal_started needs a fault injected after start first")
        return self

    @property
    def control(self) -> bool:
        """No fault: any remediation is a false one."""
        return not self.faults

    def forbidden(self, signature: str) -> bool:
        """Does a remediation signature (`restart(api)`) match one of `expect.forbid`?"""
        return any(fnmatch.fnmatchcase(signature, pattern) for pattern in self.expect.forbid)


class LoadedScenario(BaseModel):
    """A scenario with the file it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    scenario: Scenario


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate one scenario file.

    Raises:
        ScenarioError: The file is missing, not YAML, or breaks the schema (each field named).
    """
    from agentheal.estate.model import describe_validation_error, read_yaml_mapping

    file = Path(path).expanduser().resolve()
    data = read_yaml_mapping(file, "scenario file", ScenarioError)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(describe_validation_error(exc))
        raise ScenarioError(f"{file}: invalid scenario:\n  {problems}") from None
    return LoadedScenario(path=file, scenario=scenario)


def find_scenarios(path: str | Path) -> list[LoadedScenario]:
    """The scenarios of a file, or of a folder (its `*.yaml` files, recursively; a folder holding a
    `scenarios/` folder, like `eval`, means that one), sorted by path.

    Raises:
        ScenarioError: Nothing found, a broken file (all broken files are named), or two scenarios
            with one name.
    """
    root = Path(path).expanduser().resolve()
    if root.is_dir() and (root / "scenarios").is_dir():
        root = root / "scenarios"
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    else:
        raise ScenarioError(f"{root}: no such scenario file or folder")
    if not files:
        raise ScenarioError(f"{root}: no scenario files (*.yaml) in it")
    loaded, problems = [], []
    for file in files:
        try:
            loaded.append(load_scenario(file))
        except ScenarioError as exc:
            problems.append(str(exc))
    if problems:
        raise ScenarioError("\n".join(problems))
    seen: dict[str, Path] = {}
    for item in loaded:
        name = item.scenario.name
        if name in seen:
            raise ScenarioError(f"{item.path}: scenario name {name!r} is also used by {seen[name]}")
        seen[name] = item.path
    return loaded


def check_against_estate(item: LoadedScenario, estate: Any) -> None:
    """Check the components a scenario names against its estate, and that each fault applies.

    Raises:
        ScenarioError: naming the field, e.g. `faults.1.component`.
    """
    from agentheal.eval.faults import get_fault

    scenario, problems = item.scenario, []
    known = ", ".join(sorted(estate.components))
    for i, step in enumerate(scenario.faults):
        if step.component not in estate.components:
            problems.append(f"faults.{i}.component: unknown component {step.component!r} (known: {known})")
            continue
        fault = get_fault(step.fault)
        if step.component not in fault.applies_to(estate):
            where = ", ".join(fault.applies_to(estate)) or "no component"
            problems.append(
                f"faults.{i}: {step.fault} does not apply to {step.component}: it needs {fault.needs} "
                f"(applies to: {where})"
            )
    for i, op in enumerate(scenario.operator):
        if op.component not in estate.components:
            problems.append(f"operator.{i}.component: unknown component {op.component!r} (known: {known})")
    if scenario.load is not None and scenario.load.component not in estate.components:
        problems.append(f"load.component: unknown component {scenario.load.component!r} (known: {known})")
    if problems:
        raise ScenarioError(
            f"{item.path}: scenario does not fit estate {estate.name!r}:\n  " + "\n  ".join(problems)
        )


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentheal eval scenario"
    return schema


def export_schema(path: str | Path) -> None:
    """Write the scenario file's JSON Schema to `path` (pretty-printed, stable key order)."""
    Path(path).write_text(json.dumps(scenario_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
