"""Builders of core batches shared by the core tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.batches import PredictionBatch


def prediction_batch(
    ids: list[str],
    times: list[int],
    *,
    model: str = "m",
    version: str = "v1",
    prediction: list[Any] | None = None,
    features: dict[str, list[Any]] | None = None,
    errors: list[bool] | None = None,
    latency: list[float] | None = None,
    segment: dict[str, list[str | None]] | None = None,
    request_id: list[str | None] | None = None,
) -> PredictionBatch:
    n = len(ids)
    return PredictionBatch(
        model,
        version,
        ids,
        np.asarray(times, dtype=np.int64),
        np.asarray(latency if latency is not None else np.linspace(0.5, 250.0, n), dtype=np.float64),
        np.asarray(errors if errors is not None else [i % 7 == 0 for i in range(n)], dtype=bool),
        features if features is not None else {},
        prediction,
        segment,
        request_id,
    )
