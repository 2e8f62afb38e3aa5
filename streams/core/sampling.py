"""Which events of a batch feed the costly feature statistics, and with what weight.

Sampling is deterministic: the generator is seeded from the record's source
position, so a record replayed after a crash samples the same rows and the
restarted worker reaches the same numbers. Each sampled row carries the
weight ``1 / p`` of its inclusion probability ``p`` (Horvitz and Thompson,
*A generalization of sampling without replacement from a finite universe*,
JASA 1952), so counts in the snapshot are unbiased estimates of the totals.

``stratified`` allocates the expected sample equally over the strata present
in the batch (``stratify_by``: ``"prediction"`` or a segment key), so a rare
class is described as well as a frequent one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.batches import PredictionBatch, top_class
from streams.core.metrics_config import ModelConfig


def _strata(b: PredictionBatch, by: str) -> list[Any] | None:
    if by == "prediction":
        if b.prediction is None:
            return None
        return [top_class(p) if isinstance(p, dict) else p for p in b.prediction]
    if b.segment and by in b.segment:
        return list(b.segment[by])
    return None


def feature_sample(
    b: PredictionBatch, cfg: ModelConfig, seed: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, sampled mask) for the rows of ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> b = PredictionBatch("m", "v", list("abcd"), np.zeros(4, dtype=np.int64), np.zeros(4),
    ...                     np.zeros(4, dtype=bool))
    >>> w, keep = feature_sample(b, ModelConfig(), seed=(0, 1))
    >>> w.tolist(), keep.tolist()
    ([1.0, 1.0, 1.0, 1.0], [True, True, True, True])
    """
    n = len(b)
    if cfg.sample_rate >= 1.0:
        return np.ones(n), np.ones(n, dtype=bool)
    rng = np.random.default_rng(list(seed))
    u = rng.random(n)
    p = np.full(n, cfg.sample_rate)
    strata = _strata(b, cfg.stratify_by) if cfg.strategy == "stratified" else None
    if strata is not None:
        keys = np.asarray([str(s) for s in strata], dtype=object)
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        per_stratum = cfg.sample_rate * n / len(uniq)  # expected sample size of each stratum
        p = np.minimum(1.0, per_stratum / counts)[inverse]
    keep = u < p
    weights = np.where(keep, 1.0 / p, 0.0)
    return weights, keep
