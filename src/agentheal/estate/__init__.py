"""The system being healed: estate file, backends, actions, probes."""

from __future__ import annotations

from agentheal.estate.actions import (
    CATALOGUE,
    OBSERVATIONS,
    REMEDIATIONS,
    ActionError,
    ActionSpec,
    describe_actions,
    tool_schemas,
    validate_step,
)
from agentheal.estate.facts import FACT_NAMES, Fact
from agentheal.estate.local import LocalBackend
from agentheal.estate.model import (
    Component,
    DataDir,
    Estate,
    EstateError,
    Probe,
    estate_schema,
    export_schema,
    load_estate,
)
from agentheal.estate.probes import ComponentHealth, ProbeResult, run_probe

__all__ = [
    "CATALOGUE",
    "FACT_NAMES",
    "OBSERVATIONS",
    "REMEDIATIONS",
    "ActionError",
    "ActionSpec",
    "Component",
    "ComponentHealth",
    "DataDir",
    "Estate",
    "EstateError",
    "Fact",
    "LocalBackend",
    "Probe",
    "ProbeResult",
    "describe_actions",
    "estate_schema",
    "export_schema",
    "load_estate",
    "run_probe",
    "tool_schemas",
    "validate_step",
]
