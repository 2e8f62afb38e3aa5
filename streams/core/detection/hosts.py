"""Everything Driftline watches on one model-server process: anomalies, memory leak, GPU saturation.

**The anomaly threshold is calibrated per host.** Half-Space Trees scores are
relative: how high a normal row scores depends on how many features vary and
how noisily (river's normalisation divides by the mass a row would have if
nothing varied). On a host whose CPU % and in-flight requests both vary as
noise, normal rows score 0.7-0.9, above the fixed ``threshold`` 0.6, and the
host would be flagged forever once its first window is learned (the scenario
run measured exactly that: 11 false alerts). So the first ``window_size``
scored rows of each host calibrate its gate
(:class:`~streams.core.detection.hysteresis.Hysteresis` with
``calibrate_rows``): its threshold is the larger of the configured one and the
:data:`CALIBRATION_QUANTILE` of its own scores, and ``min_consecutive`` rows
above it are still needed. A host is therefore silent for two windows (one to
build the trees, one to calibrate).

Telemetry arrives every few seconds per process, so the per-sample cost here
is irrelevant next to predictions; what matters is that each condition is
reported once when it starts and once when it ends (the detectors in
:mod:`streams.core.ops` and :class:`~streams.core.detection.hysteresis.Hysteresis`
take care of that).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.anomaly.hst import HalfSpaceTrees
from streams.core.batches import TelemetryBatch
from streams.core.detection.config import DetectionConfig
from streams.core.detection.guard import OffsetGuard
from streams.core.detection.hysteresis import Hysteresis
from streams.core.detection.signals import condition_signal, make_signal
from streams.core.ops.gpu import GpuSaturation
from streams.core.ops.leak import LeakDetector

FEATURES = ("cpu_percent", "memory_percent", "log_rss_bytes", "inflight_requests", "gpu_utilization_percent")
# Physical bounds where they exist; CPU percent (above 100 on several cores) and in-flight requests have
# none, so those two are scaled by their running min/max.
LIMITS = {
    "memory_percent": (0.0, 100.0),
    "log_rss_bytes": (0.0, 45.0),
    "gpu_utilization_percent": (0.0, 100.0),
}


CALIBRATION_QUANTILE = 0.99


class HostMonitor:
    """Detectors of one (model, host): Half-Space Trees on its samples, leak trend, GPU saturation."""

    def __init__(self, cfg: DetectionConfig, model: str, host: str) -> None:
        self.cfg = cfg
        self.model = model
        self.host = host
        a = cfg.anomaly
        self.hst = HalfSpaceTrees(
            FEATURES, n_trees=a.n_trees, height=a.height, window_size=a.window_size, limits=LIMITS, seed=0
        )
        self.gate = Hysteresis(a.threshold, a.min_consecutive, a.window_size, CALIBRATION_QUANTILE)
        self.leak = LeakDetector(
            window_ms=cfg.ops.leak_window_ms, min_growth_bytes_per_h=cfg.ops.leak_min_growth_bytes_per_h
        )
        self.gpus: dict[int, GpuSaturation] = {}
        self.guard = OffsetGuard()
        self.last_score = 0.0

    def _gpu(self, index: int) -> GpuSaturation:
        g = self.gpus.get(index)
        if g is None:
            o = self.cfg.ops
            g = self.gpus[index] = GpuSaturation(
                util_threshold_percent=o.gpu_util_percent,
                memory_threshold=o.gpu_memory_fraction,
                sustained_ms=o.gpu_sustained_ms,
            )
        return g

    def add(self, b: TelemetryBatch, source: str, offset: int) -> list[dict[str, Any]]:
        if len(b) == 0 or not self.guard.admit(source, offset):
            return []
        self.guard.mark(source, offset)
        out: list[dict[str, Any]] = []
        pos = (source, offset, self.host)
        labels = {"host": self.host}
        if self.cfg.anomaly.enabled:
            out.extend(self._anomaly(b, pos, labels))
        cond = self.leak.update(b.event_time_ms, b.rss_bytes)
        if cond is not None:
            out.append(self._condition("memory_leak", "theil_sen", cond, b, pos, labels))
        for index, (util, used, total) in sorted(b.gpus.items()):
            cond = self._gpu(index).update(b.event_time_ms, util, used, total)
            if cond is not None:
                out.append(
                    self._condition(
                        "gpu_saturation",
                        "gpu_saturation",
                        cond,
                        b,
                        (*pos, index),
                        {**labels, "gpu": str(index)},
                    )
                )
        return out

    def _anomaly(
        self, b: TelemetryBatch, pos: tuple[Any, ...], labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        gpu_util = np.zeros(len(b))
        if b.gpus:
            utils = np.vstack([u for u, _, _ in b.gpus.values()])
            gpu_util = np.nan_to_num(np.nanmean(np.where(np.isnan(utils), 0.0, utils), axis=0))
        x = np.column_stack(
            [
                b.cpu_percent,
                b.memory_percent,
                np.log1p(b.rss_bytes),
                np.nan_to_num(b.inflight_requests),
                gpu_util,
            ]
        )
        scores = self.hst.score_learn_many(x)
        self.last_score = float(scores[-1])
        out = []
        for i, score in enumerate(scores.tolist()):
            at = int(b.event_time_ms[i])
            t = self.gate.update(score, at)
            if t is None:
                continue
            out.append(
                make_signal(
                    kind="anomaly",
                    detector="half_space_trees",
                    model=self.model,
                    active=t.active,
                    score=t.peak if t.active else score,
                    threshold=self.gate.threshold,
                    window_start_ms=t.since_ms,
                    window_end_ms=at,
                    detected_at_ms=at,
                    since_ms=t.since_ms,
                    position=(*pos, "hst", i),
                    labels=labels,
                    evidence={
                        "subject": "telemetry",
                        **{f: float(v) for f, v in zip(FEATURES, x[i], strict=True)},
                    },
                )
            )
        return out

    @property
    def threshold(self) -> float | None:
        """The calibrated anomaly threshold; None while the host is still calibrating."""
        return self.gate.threshold if self.gate.calibrated else None

    @property
    def calibration(self) -> list[float]:
        """Scores collected so far for the calibration (empty once calibrated)."""
        return self.gate.calibration

    def _condition(
        self,
        kind: Any,
        detector: str,
        cond: Any,
        b: TelemetryBatch,
        pos: tuple[Any, ...],
        labels: dict[str, str],
    ) -> dict[str, Any]:
        return condition_signal(
            cond,
            kind=kind,
            detector=detector,
            model=self.model,
            at_ms=int(b.event_time_ms[-1]),
            position=(*pos, kind),
            labels=labels,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "applied": self.guard.to_json(),
            "hst": self.hst.to_state(),
            "gate": self.gate.to_json(),
            "leak": self.leak.to_state(),
            "gpus": {str(i): g.to_state() for i, g in self.gpus.items()},
            "score": self.last_score,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], cfg: DetectionConfig, model: str, host: str) -> HostMonitor:
        if raw.get("v") != 1:
            raise ValueError(f"host monitor state: unknown version {raw.get('v')!r}")
        m = cls(cfg, model, host)
        m.guard = OffsetGuard.from_json(raw["applied"])
        m.hst = HalfSpaceTrees.from_state(raw["hst"])
        a = cfg.anomaly
        m.gate = Hysteresis.from_json(raw["gate"], a.threshold, a.min_consecutive, a.window_size,
                                      CALIBRATION_QUANTILE)
        m.leak = LeakDetector.from_state(raw["leak"])
        m.gpus = {int(i): GpuSaturation.from_state(s) for i, s in raw["gpus"].items()}
        m.last_score = float(raw["score"])
        return m
