"""What the metrics engine computes: windows, lateness, join horizon, sampling, per-model tasks.

Plain frozen data, validated on construction (``ValueError`` naming the
field); :mod:`streams.config` builds it from the ``metrics:`` and ``models:``
sections of the YAML file and turns errors into ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from streams.core.outcomes import TaskConfig
from streams.core.windows import WindowSpec, pane_ms_for

Strategy = Literal["random", "stratified"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Per-model choices.

    ``sample_rate`` applies to feature statistics only (the costly part):
    serving metrics and label metrics always see every event. ``stratified``
    sampling allocates the sample equally over the strata of ``stratify_by``
    (``"prediction"`` or a segment key), so rare classes keep their share.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    sample_rate: float = 1.0
    strategy: Strategy = "random"
    stratify_by: str = "prediction"
    champion: str | None = None
    challengers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate: must be in (0, 1], got {self.sample_rate}")
        if self.strategy not in ("random", "stratified"):
            raise ValueError(f"strategy: must be 'random' or 'stratified', got {self.strategy!r}")
        if self.challengers and self.champion is None:
            raise ValueError("challengers: needs a champion version")
        if self.champion is not None and self.champion in self.challengers:
            raise ValueError(f"challengers: {self.champion!r} is also the champion")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings of the windowed metrics engine (see the README's "Metrics" section)."""

    enabled: bool = True
    windows: tuple[WindowSpec, ...] = (
        WindowSpec(60_000, 60_000),
        WindowSpec(300_000, 60_000),
        WindowSpec(3_600_000, 3_600_000),
    )
    allowed_lateness_ms: int = 30_000
    idle_close_ms: int = 60_000
    label_horizon_ms: int = 24 * 3_600_000
    #: Predictions waiting for their label, per partition across its models (oldest evicted first,
    #: counted): about 330 bytes each in a worker, so 1M is about 330 MB per partition.
    max_pending_labels: int = 1_000_000
    segment_by: tuple[str, ...] = ()
    max_segments: int = 20
    max_features: int = 100
    top_k: int = 20
    max_classes: int = 64
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    default_model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("windows: at least one window is needed")
        if len({w.name for w in self.windows}) != len(self.windows):
            raise ValueError("windows: duplicates")
        for name in ("allowed_lateness_ms", "idle_close_ms", "label_horizon_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        for name in ("max_pending_labels", "max_segments", "max_features", "top_k", "max_classes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")

    @property
    def pane_ms(self) -> int:
        return pane_ms_for(self.windows)

    def model(self, name: str) -> ModelConfig:
        return self.models.get(name, self.default_model)
