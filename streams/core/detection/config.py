"""What the detection stage runs, and with which parameters (the ``detection:`` YAML section).

Plain frozen data validated on construction (``ValueError`` naming the
field); :mod:`streams.config` builds it from YAML and turns errors into
``ConfigError``. The defaults are the ones ``loadtest/bench_drift.py``
measured: they keep false alarms on stationary streams far below river's
defaults while still catching the shifts the benchmark seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from streams.core.drift.sequential import DEFAULT_ERROR_ADWIN, DEFAULT_ERROR_PH

Correction = Literal["bh", "holm", "none"]
NumericTest = Literal["ks", "mann_whitney"]


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{name}: must be positive, got {getattr(obj, name)!r}")


@dataclass(frozen=True, slots=True)
class ConceptConfig:
    """Detectors on each model version's error stream (0/1 wrong, or absolute error)."""

    adwin: bool = True
    adwin_delta: float = DEFAULT_ERROR_ADWIN.delta
    page_hinkley: bool = True
    ph_threshold: float = DEFAULT_ERROR_PH.threshold
    ph_delta: float = DEFAULT_ERROR_PH.delta
    ph_alpha: float = DEFAULT_ERROR_PH.alpha
    ph_warmup: int = DEFAULT_ERROR_PH.warmup
    grace_events: int = DEFAULT_ERROR_PH.warmup

    def __post_init__(self) -> None:
        if not 0.0 < self.adwin_delta < 1.0:
            raise ValueError(f"adwin_delta: must be in (0, 1), got {self.adwin_delta}")
        if not 0.0 < self.ph_alpha <= 1.0:
            raise ValueError(f"ph_alpha: must be in (0, 1], got {self.ph_alpha}")
        if self.ph_delta < 0:
            raise ValueError(f"ph_delta: must not be negative, got {self.ph_delta}")
        _positive(self, "ph_threshold", "ph_warmup")
        if self.grace_events < 0:
            raise ValueError(f"grace_events: must not be negative, got {self.grace_events}")


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Per-feature and prediction drift against a reference profile, in tumbling count windows."""

    enabled: bool = True
    window_events: int = 5_000
    window_ms: int = 60_000
    max_window_events: int = 100_000
    alpha: float = 0.01
    correction: Correction = "bh"
    # PSI 0.1 is the conventional "moderate shift" line, but a category doubling from 10% to 20%
    # of events scores 0.098 (bench_drift): gate at half of it; the corrected p-value keeps noise out.
    min_psi: float = 0.05
    numeric_test: NumericTest = "ks"
    auto_profile_events: int = 5_000
    sequential: bool = True
    chunk_events: int = 250
    domain_every_ms: int = 5 * 60_000
    domain_min_auc: float = 0.75
    # Above this event rate per model version the tests see a uniform, replay-stable sample: their
    # cost stays bounded under high volume while their power does not need more (two minutes of a
    # window at this rate is far beyond what KS or chi-squared need for PSI 0.05). 0: every event.
    max_events_per_s: int = 2_000
    # Each window's thresholds (window_events, window_ms) are stretched by a factor in
    # [1, 1 + window_jitter), hashed from model, version and window number: models whose traffic
    # started together would otherwise close their windows (tests, domain classifier) together.
    window_jitter: float = 0.5

    def __post_init__(self) -> None:
        _positive(self, "window_events", "chunk_events", "max_window_events")
        if not 0.0 <= self.window_jitter <= 1.0:
            raise ValueError(f"window_jitter: must be in [0, 1], got {self.window_jitter}")
        if self.max_events_per_s < 0:
            raise ValueError(f"max_events_per_s: must not be negative, got {self.max_events_per_s}")
        if self.window_ms < 0:
            raise ValueError(f"window_ms: must not be negative, got {self.window_ms}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha: must be in (0, 1), got {self.alpha}")
        if self.correction not in ("bh", "holm", "none"):
            raise ValueError(f"correction: must be bh, holm or none, got {self.correction!r}")
        if self.numeric_test not in ("ks", "mann_whitney"):
            raise ValueError(f"numeric_test: must be ks or mann_whitney, got {self.numeric_test!r}")
        if self.min_psi < 0:
            raise ValueError(f"min_psi: must not be negative, got {self.min_psi}")
        if self.auto_profile_events < 0 or self.domain_every_ms < 0:
            raise ValueError("auto_profile_events, domain_every_ms: must not be negative")
        if self.max_window_events < self.window_events:
            raise ValueError(f"max_window_events: must be at least window_events ({self.window_events})")
        if not 0.5 <= self.domain_min_auc <= 1.0:
            raise ValueError(f"domain_min_auc: must be in [0.5, 1], got {self.domain_min_auc}")


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """Half-Space Trees on telemetry rows (per host) and on latency (per model version).

    ``height`` 10 rather than the paper's 15: with ``window_size`` 250 a walk
    stops where fewer than 25 reference rows remain, a handful of levels
    down, so deeper levels never score but would cost 2**height memory per
    monitor (about 23 MB at 15, under 1 MB at 10). Scores depend on the
    height (river's normalisation) and on how many features vary: at 10, normal
    rows of a steady stream score about 0.1-0.3 and rows far from the last window
    about 0.75, hence ``threshold`` 0.6; on telemetry whose CPU % and in-flight
    requests vary as noise, normal rows score 0.7-0.9, so host monitors raise it
    to the 99th percentile of their own first window of scores
    (:mod:`streams.core.detection.hosts`).
    ``window_size`` counts telemetry rows (one per sample); serving rows
    summarise ``serving_rows_of`` predictions each and use
    ``serving_window_size``, so the serving model is warm after 5 000 events.
    """

    enabled: bool = True
    n_trees: int = 25
    height: int = 10
    window_size: int = 250
    serving_window_size: int = 50
    serving_rows_of: int = 100
    threshold: float = 0.6
    min_consecutive: int = 3

    def __post_init__(self) -> None:
        _positive(
            self,
            "n_trees",
            "height",
            "window_size",
            "min_consecutive",
            "serving_window_size",
            "serving_rows_of",
        )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold: must be in (0, 1), got {self.threshold}")


@dataclass(frozen=True, slots=True)
class OpsConfig:
    """Operational signals from telemetry and traffic: silence, invalid input, memory leak, GPU saturation."""

    silence_after_ms: int = 120_000
    invalid_window_ms: int = 60_000
    invalid_trigger_ratio: float = 0.05
    invalid_clear_ratio: float = 0.01
    invalid_min_rejected: int = 20
    leak_window_ms: int = 30 * 60_000
    leak_min_growth_bytes_per_h: float = 50 * 1024 * 1024
    gpu_util_percent: float = 95.0
    gpu_memory_fraction: float = 0.95
    gpu_sustained_ms: int = 5 * 60_000

    def __post_init__(self) -> None:
        _positive(
            self, "silence_after_ms", "leak_window_ms", "leak_min_growth_bytes_per_h", "gpu_sustained_ms",
            "invalid_window_ms", "invalid_min_rejected",
        )
        if self.invalid_window_ms % 1000:
            raise ValueError(f"invalid_window_ms: must be whole seconds, got {self.invalid_window_ms}")
        if not 0.0 < self.invalid_clear_ratio <= self.invalid_trigger_ratio <= 1.0:
            raise ValueError(
                "invalid_clear_ratio, invalid_trigger_ratio: need 0 < clear <= trigger <= 1, got "
                f"{self.invalid_clear_ratio} and {self.invalid_trigger_ratio}"
            )
        if not 0.0 < self.gpu_util_percent <= 100.0:
            raise ValueError(f"gpu_util_percent: must be in (0, 100], got {self.gpu_util_percent}")
        if not 0.0 < self.gpu_memory_fraction <= 1.0:
            raise ValueError(f"gpu_memory_fraction: must be in (0, 1], got {self.gpu_memory_fraction}")


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """The whole detection stage; ``concept_by_model`` holds per-model concept-drift parameters."""

    enabled: bool = True
    concept: ConceptConfig = field(default_factory=ConceptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    concept_by_model: Mapping[str, ConceptConfig] = field(default_factory=dict)

    def concept_for(self, model: str) -> ConceptConfig:
        return self.concept_by_model.get(model, self.concept)
