"""The metrics snapshot of one closed window: what goes on the metrics topic.

The snapshot is plain data (JSON-able) in the shape of
``schemas/metrics.v1.json``. It is self-contained: a late label
re-emits the whole snapshot with ``revision`` increased, so a consumer keeps
the highest revision per (model, version, segment, window, start) and never
has to apply deltas.
"""

from __future__ import annotations

from typing import Any

from streams.core.pane import PaneState
from streams.core.windows import Window

METRICS_V1 = "driftline.metrics/v1"
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _sketch_summary(sketch: Any) -> dict[str, Any]:
    p50, p90, p95, p99 = sketch.quantiles(QUANTILES)
    return {
        "p50": p50,
        "p90": p90,
        "p95": p95,
        "p99": p99,
        "max": sketch.max if sketch.count else None,
        "mean": sketch.mean if sketch.count else None,
        "relative_accuracy": sketch.relative_accuracy,
    }


def base_result(pane: PaneState, window: Window, sample_rate: float, strategy: str) -> dict[str, Any]:
    """Serving metrics and feature statistics: fixed once the window closes."""
    n = pane.count
    duration_s = window.spec.size_ms / 1000
    return {
        "serving": {
            "count": n,
            "rate_per_s": n / duration_s,
            "errors": pane.errors,
            "error_rate": pane.errors / n if n else None,
            "first_event_ms": pane.first_ms,
            "last_event_ms": pane.last_ms,
            "latency_ms": _sketch_summary(pane.latency),
        },
        "predictions": pane.predictions.result().get("prediction"),
        "features": pane.features.result(),
        "sampling": {
            "rate": sample_rate,
            "strategy": strategy,
            "sampled_events": pane.sampled,
            "estimated_events": pane.feature_weight,
        },
    }


def label_result(pane: PaneState, late_events: int = 0) -> dict[str, Any]:
    """Label-dependent metrics: revised whenever a late label lands.

    Coverage counts late events too (they can be labelled), so it stays in [0, 1].
    """
    n = pane.count + late_events
    return {
        "labelled": pane.labelled,
        "coverage": pane.labelled / n if n else None,
        "delay_ms": _sketch_summary(pane.label_delay),
        "classification": None if pane.classification is None else pane.classification.result(),
        "regression": None if pane.regression is None else pane.regression.result(),
    }


def versus_result(challenger: PaneState, champion: PaneState | None, champion_version: str) -> dict[str, Any]:
    """Champion/challenger difference for one window (challenger minus champion)."""
    out: dict[str, Any] = {
        "champion_version": champion_version,
        "paired": None if challenger.versus is None else challenger.versus.result(),
    }
    if champion is None or champion.count == 0 or challenger.count == 0:
        out.update(error_rate_diff=None, accuracy_diff=None, rmse_diff=None)
        return out
    out["error_rate_diff"] = challenger.errors / challenger.count - champion.errors / champion.count

    def metric(p: PaneState, kind: str, name: str) -> float | None:
        m = getattr(p, kind)
        v = None if m is None else m.result().get(name)
        return None if v is None else float(v)

    for key, kind, name in (
        ("accuracy_diff", "classification", "accuracy"),
        ("rmse_diff", "regression", "rmse"),
    ):
        a, b = metric(challenger, kind, name), metric(champion, kind, name)
        out[key] = None if a is None or b is None else a - b
    return out
