"""Detection against the real sample estate: injected faults are found by the right detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentheal.detect import DetectConfig, Detector
from agentheal.eval.faults import get_fault
from shopfront_estate import running_shopfront

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("fault", "component", "expected"),
    [
        # the dependency is the one root; api's errors follow it instead of healing on their own
        (
            "dependency_down",
            "inventory",
            {("inventory", "process_down", False), ("api", "probe_failed", True)},
        ),
        ("memory_leak", "api", {("api", "memory_high", False)}),
        ("data_over_budget", "api", {("api", "disk_over_budget", False)}),
    ],
)
def test_injected_faults_are_detected_by_the_right_detector(
    tmp_path: Path, fault: str, component: str, expected: set[tuple[str, str, bool]]
) -> None:
    with running_shopfront(tmp_path) as shop:
        detector = Detector(shop.settings, DetectConfig(once_spacing_s=0.2), shop.backend)
        assert detector.once() == []
        get_fault(fault).inject(shop.backend, component)
        tracked = Detector(shop.settings, DetectConfig(once_spacing_s=0.2), shop.backend).once()
        found = {(t.gap.component, t.problem, t.gap.root is not None) for t in tracked}
        assert expected <= found, [t.as_json() for t in tracked]
        roots = [t for t in tracked if t.gap.root is None]
        assert {t.gap.component for t in roots} == {component}, [t.as_json() for t in tracked]
        assert all(t.gap.evidence for t in tracked)
