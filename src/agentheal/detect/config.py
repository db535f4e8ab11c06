"""Detection settings: thresholds, intervals, horizons and the metric endpoints to scrape.

All of it has working defaults; a YAML file (`agentheal detect --config FILE`) overrides any
field, validated with `extra="forbid"` so a typo is named with its place in the file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class DetectConfigError(Exception):
    """A detection config file that cannot be used; the message names the file and the field."""


class MetricRule(BaseModel):
    """A bound on one Prometheus metric: over `max` (or under `min`) is a gap; `predict` fits a trend."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="Sample name as exposed, e.g. queue_depth or http_latency_seconds_sum.")
    labels: dict[str, str] = Field(default_factory=dict, description="Only samples with these labels.")
    max: float | None = None
    min: float | None = None
    predict: bool = Field(default=True, description="Forecast when `max` will be crossed from the trend.")
    what: str = Field(default="", description="Words for the gap, e.g. 'queue depth'; default: the name.")

    @model_validator(mode="after")
    def _bounded(self) -> MetricRule:
        if self.max is None and self.min is None:
            raise ValueError(f"metric rule for {self.metric!r} needs max or min")
        return self


class MetricsEndpoint(BaseModel):
    """A component's Prometheus endpoint (text exposition format) and the rules checked on it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://\S+$")
    rules: list[MetricRule] = Field(default_factory=list)
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class DetectConfig(BaseModel):
    """How detection decides. Times in seconds."""

    model_config = ConfigDict(extra="forbid")

    # k-of-n: a problem opens after k failing samples among the last n, so one slow answer is no incident.
    k: int = Field(default=2, ge=1, le=50)
    n: int = Field(default=3, ge=1, le=100)
    interval_s: float = Field(default=5.0, gt=0, le=3600, description="Between probe rounds in watch.")
    component_intervals: dict[str, float] = Field(
        default_factory=dict, description="Component name -> its own probe interval."
    )
    jitter: float = Field(default=0.1, ge=0, le=0.5, description="Fraction of the interval, random ±.")
    once_spacing_s: float = Field(
        default=0.5, ge=0, le=30, description="Between the n samples of a one-shot detection."
    )

    # logs
    log_spike_window_s: float = Field(default=60.0, gt=0)
    log_spike_factor: float = Field(default=3.0, gt=1, description="Window rate over the baseline rate.")
    log_spike_min: int = Field(default=5, ge=1, description="Lines in the window before a spike counts.")
    log_max_lines_once: int = Field(default=200_000, ge=1, description="A one-shot reads at most this many.")
    log_score_threshold: float = Field(
        default=0.5, ge=0, le=1, description="An error template's anomaly score that opens a gap (0..1)."
    )
    log_noise_min_windows: int = Field(
        default=5, ge=2, description="Windows with lines before a steady error template is known noise."
    )
    log_noise_min_span_s: float = Field(
        default=1800.0, gt=0, description="Span of history before a steady error template is known noise."
    )

    # trends and prediction
    horizon_s: float = Field(default=3600.0, gt=0, description="Forecasts beyond this open no gap.")
    trend_min_samples: int = Field(default=6, ge=3)
    trend_min_span_s: float = Field(
        default=5.0, ge=0, description="Time the samples of a trend must cover before it predicts a gap."
    )
    trend_window: int = Field(default=120, ge=6, description="Samples kept per series.")
    trend_min_confidence: float = Field(default=0.6, ge=0, le=1)
    latency_shift_factor: float = Field(default=1.5, gt=1, description="A change point this much slower.")
    latency_min_samples: int = Field(default=20, ge=8)
    latency_min_shift_ms: float = Field(
        default=50.0, ge=0, description="A slowdown smaller than this is noise, whatever its ratio."
    )

    # patterns
    recurring_count: int = Field(default=3, ge=2, description="Occurrences in the window to recur.")
    recurring_window_s: float = Field(default=86_400.0, gt=0)
    recurring_similarity: float = Field(default=0.6, gt=0, le=1, description="Token overlap of a cluster.")
    weakness_window_s: float = Field(default=7 * 86_400.0, gt=0)
    weakness_threshold: float = Field(default=0.6, ge=0, le=1)
    patterns_every: int = Field(default=12, ge=1, description="Rounds between pattern scans in watch.")

    # watch
    max_heals: int = Field(default=2, ge=1, le=32, description="Heals running at once.")
    heal_cooldown_s: float = Field(
        default=300.0, ge=0, description="Before a gap that did not heal is tried again."
    )

    metrics: dict[str, MetricsEndpoint] = Field(
        default_factory=dict, description="Component name -> its Prometheus endpoint."
    )

    @model_validator(mode="after")
    def _k_within_n(self) -> DetectConfig:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        return self


def load_detect_config(path: str | Path | None) -> DetectConfig:
    """The detection config from a YAML file, or the defaults when `path` is None.

    Raises:
        DetectConfigError: The file is missing, not YAML, or breaks the schema (each field named).
    """
    if path is None:
        return DetectConfig()
    from agentheal.estate.model import describe_validation_error, read_yaml_mapping

    file = Path(path).expanduser().resolve()
    data = read_yaml_mapping(file, "detection config", DetectConfigError)
    try:
        return DetectConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(describe_validation_error(exc))
        raise DetectConfigError(f"{file}: invalid detection config:\n  {problems}") from None
