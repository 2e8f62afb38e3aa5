"""Anomalies in how a model version serves: latency and errors, scored with Half-Space Trees.

Scoring every prediction would cost more than decoding it, and one slow
request is not an incident. The monitor cuts the stream into consecutive
groups of ``serving_rows_of`` events (independent of how producers batched them) and
scores one row per group: log median latency, log 95th-percentile latency and
error fraction. Logs, because latency is heavy-tailed and Half-Space Trees
split ranges in halves. The leftover of a group waits, persisted, for the
next batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.anomaly.hst import HalfSpaceTrees
from streams.core.batches import PredictionBatch
from streams.core.detection.config import AnomalyConfig
from streams.core.detection.guard import OffsetGuard
from streams.core.detection.hysteresis import Hysteresis
from streams.core.detection.signals import make_signal

FEATURES = ("log_latency_p50", "log_latency_p95", "error_fraction")
_LOG_MAX = float(np.log1p(600_000.0))  # ten minutes: anything slower saturates the range
LIMITS = {
    "log_latency_p50": (0.0, _LOG_MAX),
    "log_latency_p95": (0.0, _LOG_MAX),
    "error_fraction": (0.0, 1.0),
}


def _new_hst(cfg: AnomalyConfig, seed: int) -> HalfSpaceTrees:
    return HalfSpaceTrees(
        FEATURES,
        n_trees=cfg.n_trees,
        height=cfg.height,
        window_size=cfg.serving_window_size,
        limits=LIMITS,
        seed=seed,
    )


class LatencyMonitor:
    """Half-Space Trees over per-group serving summaries of one (model, version)."""

    def __init__(self, cfg: AnomalyConfig, model: str, version: str) -> None:
        self.cfg = cfg
        self.model = model
        self.version = version
        self.hst = _new_hst(cfg, seed=0)
        self.gate = Hysteresis(cfg.threshold, cfg.min_consecutive)
        self.guard = OffsetGuard()
        self.pending_latency: list[float] = []
        self.pending_error: list[bool] = []
        self.pending_start_ms = 0
        self.last_score = 0.0
        self.rows = 0

    def add(self, batch: PredictionBatch, source: str, offset: int, batch_index: int) -> list[dict[str, Any]]:
        if not self.guard.admit(source, offset, batch_index):
            return []
        self.guard.mark(source, offset, batch_index)
        if not self.pending_latency:
            self.pending_start_ms = int(batch.event_time_ms[0])
        lat = np.concatenate([np.asarray(self.pending_latency), batch.latency_ms])
        err = np.concatenate([np.asarray(self.pending_error, dtype=bool), batch.is_error])
        times = batch.event_time_ms
        rows_of = self.cfg.serving_rows_of
        n_rows = len(lat) // rows_of
        if n_rows == 0:
            self.pending_latency, self.pending_error = lat.tolist(), err.tolist()
            return []
        used = n_rows * rows_of
        groups = np.log1p(lat[:used].reshape(n_rows, rows_of))
        x = np.column_stack(
            [
                np.median(groups, axis=1),
                np.quantile(groups, 0.95, axis=1),
                err[:used].reshape(n_rows, rows_of).mean(axis=1),
            ]
        )
        scores = self.hst.score_learn_many(x)
        self.pending_latency, self.pending_error = lat[used:].tolist(), err[used:].tolist()
        self.rows += n_rows
        self.last_score = float(scores[-1])
        out: list[dict[str, Any]] = []
        end_ms = int(times.max())
        for i, score in enumerate(scores.tolist()):
            t = self.gate.update(score, end_ms)
            if t is None:
                continue
            out.append(
                make_signal(
                    kind="anomaly",
                    detector="half_space_trees",
                    model=self.model,
                    model_version=self.version,
                    active=t.active,
                    score=t.peak if t.active else score,
                    threshold=self.cfg.threshold,
                    window_start_ms=t.since_ms,
                    window_end_ms=end_ms,
                    detected_at_ms=end_ms,
                    since_ms=t.since_ms,
                    position=(source, offset, batch_index, "latency", i),
                    evidence={
                        "subject": "serving",
                        "features": list(FEATURES),
                        "latency_p50_ms": float(np.expm1(x[i, 0])),
                        "latency_p95_ms": float(np.expm1(x[i, 1])),
                        "error_fraction": float(x[i, 2]),
                        "rows_scored": self.rows,
                    },
                    labels={"subject": "serving"},
                )
            )
        if not self.pending_latency:
            self.pending_start_ms = 0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "applied": self.guard.to_json(),
            "hst": self.hst.to_state(),
            "gate": self.gate.to_json(),
            "lat": self.pending_latency,
            "err": self.pending_error,
            "start": self.pending_start_ms,
            "score": self.last_score,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], cfg: AnomalyConfig, model: str, version: str) -> LatencyMonitor:
        if raw.get("v") != 1:
            raise ValueError(f"latency monitor state: unknown version {raw.get('v')!r}")
        m = cls(cfg, model, version)
        m.guard = OffsetGuard.from_json(raw["applied"])
        m.hst = HalfSpaceTrees.from_state(raw["hst"])
        m.gate = Hysteresis.from_json(raw["gate"], cfg.threshold, cfg.min_consecutive)
        m.pending_latency = [float(v) for v in raw["lat"]]
        m.pending_error = [bool(v) for v in raw["err"]]
        m.pending_start_ms, m.last_score, m.rows = int(raw["start"]), float(raw["score"]), int(raw["rows"])
        return m
