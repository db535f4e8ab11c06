"""Evaluation: sample estates, real faults to inject into them, and (later) the runner that scores healing."""

from __future__ import annotations

from agentheal.eval.estates import materialize, sample_estates
from agentheal.eval.fault_model import ExpectedHeal, Fault, FaultError, FaultRecord, wait_broken
from agentheal.eval.faults import FAULTS, get_fault

__all__ = [
    "FAULTS",
    "ExpectedHeal",
    "Fault",
    "FaultError",
    "FaultRecord",
    "get_fault",
    "materialize",
    "sample_estates",
    "wait_broken",
]
