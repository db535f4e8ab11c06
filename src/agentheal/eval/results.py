"""What a drill measured: per fault, per heal run, per scenario, and the suite's figures.

Every figure here is computed from what the run observed (gaps as detection opened them, runs,
actions and LLM calls as the event store recorded them, the estate as probed afterwards).
Rates keep their counts beside them, and a figure with no data is None, never 0.
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("detected", "routed", "root_cause", "fixed", "validated")


class Stages(BaseModel):
    """Where a heal got to: detected, routed to the right persona, root cause named, fixed, validated."""

    model_config = ConfigDict(extra="forbid")

    detected: bool = False
    routed: bool = False
    root_cause: bool = False
    fixed: bool = False
    validated: bool = False

    def first_failed(self) -> str | None:
        """The first stage that did not pass, or None when all did."""
        return next((s for s in STAGES if not getattr(self, s)), None)


class RunSummary(BaseModel):
    """One heal run, as the event store recorded it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    component: str | None
    gap: str
    status: str
    persona: str | None
    source: str | None
    remediations: list[str] = Field(description="Steps that change the estate, that ran, as signatures.")
    observations: list[str] = Field(description="Read-only steps that ran.")
    failed_steps: list[str]
    diagnosis_component: str | None
    validated: bool
    validation: str | None
    reason: str | None
    llm_calls: int
    llm_tokens: int
    started_s: float = Field(description="Seconds after the drill's start.")
    finished_s: float | None


class FaultOutcome(BaseModel):
    """One injected fault, followed to its end."""

    model_config = ConfigDict(extra="forbid")

    fault: str
    component: str
    gap_component: str | None = None
    injected: bool = False
    injected_s: float | None = Field(default=None, description="Seconds after the drill's start.")
    did: list[str] = Field(default_factory=list)
    detected: bool = False
    time_to_detect_s: float | None = None
    gap: str | None = Field(default=None, description="The first gap detection opened for it.")
    healed: bool = False
    time_to_heal_s: float | None = Field(default=None, description="Injection to the validated fix.")
    run_id: str | None = None
    persona: str | None = None
    expected_personas: list[str] = Field(default_factory=list)
    diagnosis_component: str | None = None
    actions: list[str] = Field(default_factory=list, description="Remediations of the run that healed it.")
    validation: str | None = None
    stages: Stages = Field(default_factory=Stages)
    reason: str | None = None


class ScenarioResult(BaseModel):
    """One scenario's score. The first nine fields are the eval's JSON contract."""

    model_config = ConfigDict(extra="forbid")

    name: str
    detected: bool
    time_to_detect_s: float | None
    healed: bool
    time_to_heal_s: float | None
    wrong_actions: int
    actions: list[str] = Field(description="Every remediation that ran in the scenario, in order.")
    llm_calls: int
    reason: str | None
    kind: Literal["fault", "control"]
    description: str = ""
    file: str = ""
    llm_tokens: int = 0
    wrong: list[str] = Field(default_factory=list, description="The wrong actions, with why.")
    observations: int = 0
    stages: Stages = Field(default_factory=Stages)
    faults: list[FaultOutcome] = Field(default_factory=list)
    runs: list[RunSummary] = Field(default_factory=list)
    gaps: list[str] = Field(default_factory=list, description="Gaps detection opened, in order.")
    false_alarms: int = Field(default=0, description="A control: gaps opened on a healthy estate.")
    operator: list[str] = Field(default_factory=list)
    load: str | None = None
    duration_s: float = 0.0


class Suite(BaseModel):
    """The suite's figures. The first seven fields are the eval's JSON contract."""

    model_config = ConfigDict(extra="forbid")

    scenarios: int
    detection_rate: float | None = Field(description="Fault scenarios detected / fault scenarios.")
    heal_rate: float | None = Field(description="Fault scenarios healed / fault scenarios.")
    median_time_to_heal_s: float | None = Field(description="Over the healed fault scenarios.")
    p95_time_to_heal_s: float | None = Field(description="Nearest rank, over the healed fault scenarios.")
    wrong_actions: int = Field(description="Over every scenario, controls included.")
    llm_calls: int
    llm_tokens: int = 0
    fault_scenarios: int = 0
    detected: int = 0
    healed: int = 0
    control_scenarios: int = 0
    controls_clean: int = Field(default=0, description="Controls in which no remediation ran.")
    false_alarms: int = Field(default=0, description="Gaps opened in controls.")
    stages: dict[str, int] = Field(default_factory=dict, description="Fault scenarios passing each stage.")
    median_time_to_detect_s: float | None = None
    mode: str = "offline"
    duration_s: float = 0.0


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def suite_of(results: list[ScenarioResult], mode: str = "offline", duration_s: float = 0.0) -> Suite:
    """The suite's figures: rates over fault scenarios, the controls counted apart."""
    faults = [r for r in results if r.kind == "fault"]
    controls = [r for r in results if r.kind == "control"]
    heal_times = [r.time_to_heal_s for r in faults if r.healed and r.time_to_heal_s is not None]
    detect_times = [r.time_to_detect_s for r in faults if r.detected and r.time_to_detect_s is not None]
    return Suite(
        scenarios=len(results),
        detection_rate=round(sum(r.detected for r in faults) / len(faults), 3) if faults else None,
        heal_rate=round(sum(r.healed for r in faults) / len(faults), 3) if faults else None,
        median_time_to_heal_s=_rounded(statistics.median(heal_times)) if heal_times else None,
        p95_time_to_heal_s=_rounded(percentile(heal_times, 95)),
        wrong_actions=sum(r.wrong_actions for r in results),
        llm_calls=sum(r.llm_calls for r in results),
        llm_tokens=sum(r.llm_tokens for r in results),
        fault_scenarios=len(faults),
        detected=sum(r.detected for r in faults),
        healed=sum(r.healed for r in faults),
        control_scenarios=len(controls),
        controls_clean=sum(r.healed for r in controls),
        false_alarms=sum(r.false_alarms for r in controls),
        stages={s: sum(bool(getattr(r.stages, s)) for r in faults) for s in ("detected", *STAGES[1:])},
        median_time_to_detect_s=_rounded(statistics.median(detect_times)) if detect_times else None,
        mode=mode,
        duration_s=round(duration_s, 1),
    )
