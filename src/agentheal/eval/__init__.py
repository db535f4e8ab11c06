"""Evaluation: sample estates, real faults to inject into them, and the runner that scores healing."""

from __future__ import annotations

from agentheal.eval.estates import materialize, sample_estates
from agentheal.eval.fault_model import ExpectedHeal, Fault, FaultError, FaultRecord, wait_broken
from agentheal.eval.faults import FAULTS, get_fault
from agentheal.eval.runner import run_suite
from agentheal.eval.scenario import Scenario, ScenarioError, find_scenarios, load_scenario

__all__ = [
    "FAULTS",
    "ExpectedHeal",
    "Fault",
    "FaultError",
    "FaultRecord",
    "Scenario",
    "ScenarioError",
    "find_scenarios",
    "get_fault",
    "load_scenario",
    "materialize",
    "run_suite",
    "sample_estates",
    "wait_broken",
]
