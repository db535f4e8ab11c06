"""Detection: signals from probes, logs, metrics, alerts, feedback, trends and history become gaps.

`Detector` runs the detectors over an estate (and any log files) and keeps the open gaps in a
`GapBook`; `Watch` runs detection and healing continuously. Heavy libraries (drain3, scipy,
ruptures, prometheus_client) are imported where they are used.
"""

from __future__ import annotations

from agentheal.detect.alerts import AlertError, alert_signals, feedback_signal, parse_webhook
from agentheal.detect.config import (
    DetectConfig,
    DetectConfigError,
    MetricRule,
    MetricsEndpoint,
    load_detect_config,
)
from agentheal.detect.detector import Detector
from agentheal.detect.gaps import AVAILABILITY, GapBook, TrackedGap, problem, recovered
from agentheal.detect.logs import LogMiner, LogReadError, LogTail
from agentheal.detect.monitor import KofN, Monitor
from agentheal.detect.patterns import rank_components, recurring_signals, scan_history, weakness_signals
from agentheal.detect.predict import Forecast, Sample, TrendBook, forecast, latency_shift

__all__ = [
    "AVAILABILITY",
    "AlertError",
    "DetectConfig",
    "DetectConfigError",
    "Detector",
    "Forecast",
    "GapBook",
    "KofN",
    "LogMiner",
    "LogReadError",
    "LogTail",
    "MetricRule",
    "MetricsEndpoint",
    "Monitor",
    "Sample",
    "TrackedGap",
    "TrendBook",
    "alert_signals",
    "feedback_signal",
    "forecast",
    "latency_shift",
    "load_detect_config",
    "parse_webhook",
    "problem",
    "rank_components",
    "recovered",
    "recurring_signals",
    "scan_history",
    "weakness_signals",
]
