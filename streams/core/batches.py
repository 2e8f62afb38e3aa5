"""Column-oriented batches of events, the unit every core stage works on.

A batch holds the events of one model version (predictions) or one model
(feedback) as parallel columns. Numeric columns are numpy arrays; feature
columns stay as the decoded lists and are converted on demand, so that a
stage that does not look at features does not pay for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.core.columns import FeatureColumns

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def top_class(probabilities: Mapping[str, float]) -> str:
    """The most likely class of a probability map; a tie goes to the larger name (deterministic).

    >>> top_class({"a": 0.2, "b": 0.8}), top_class({"x": 0.5, "y": 0.5})
    ('b', 'y')
    """
    return max(probabilities.items(), key=lambda kv: (kv[1], kv[0]))[0]


@dataclass(slots=True)
class PredictionBatch:
    """Predictions of one (model, model_version)."""

    model: str
    model_version: str
    event_id: list[str]
    event_time_ms: IntArray
    latency_ms: FloatArray
    is_error: BoolArray
    #: Feature name -> column; a :class:`FeatureColumns` (conversions shared by the stages) from the codec.
    features: dict[str, list[Any]] = field(default_factory=dict)
    prediction: list[Any] | None = None
    segment: dict[str, list[str | None]] | None = None
    request_id: list[str | None] | None = None
    #: Lengths of the records folded into this batch (:func:`concat_predictions`), else None.
    parts: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.event_id)

    def slice(self, start: int, stop: int) -> PredictionBatch:
        """Rows ``start:stop`` as a new batch (list slices, no per-row work); ``parts`` cut to match.

        >>> def rows(ids):
        ...     n = len(ids)
        ...     return PredictionBatch("m", "v1", ids, np.arange(n), np.ones(n), np.zeros(n, dtype=bool))
        >>> b = concat_predictions([rows(["a", "b"]), rows(["c", "d", "e"])])
        >>> b.parts, b.slice(1, 4).parts, b.slice(2, 5).event_id
        ((2, 3), (1, 2), ['c', 'd', 'e'])
        """
        parts = None
        if self.parts is not None:
            ends = np.cumsum((0, *self.parts))
            inner = [int(e) for e in ends if start < e < stop]
            bounds = [start, *inner, stop]
            parts = tuple(b - a for a, b in pairwise(bounds))
        return PredictionBatch(
            model=self.model,
            model_version=self.model_version,
            event_id=self.event_id[start:stop],
            event_time_ms=self.event_time_ms[start:stop],
            latency_ms=self.latency_ms[start:stop],
            is_error=self.is_error[start:stop],
            features=_columns(self.features).slice(start, stop),
            prediction=None if self.prediction is None else self.prediction[start:stop],
            segment=None if self.segment is None else {k: v[start:stop] for k, v in self.segment.items()},
            request_id=None if self.request_id is None else self.request_id[start:stop],
            parts=parts,
        )

    def take(self, index: npt.NDArray[np.intp]) -> PredictionBatch:
        """Return the rows at ``index`` (in that order) as a new batch."""
        idx = index.tolist()

        def pick(col: list[Any]) -> list[Any]:
            return list(map(col.__getitem__, idx))

        return PredictionBatch(
            model=self.model,
            model_version=self.model_version,
            event_id=pick(self.event_id),
            event_time_ms=self.event_time_ms[index],
            latency_ms=self.latency_ms[index],
            is_error=self.is_error[index],
            features=_columns(self.features).take(idx),
            prediction=None if self.prediction is None else pick(self.prediction),
            segment=None if self.segment is None else {k: pick(v) for k, v in self.segment.items()},
            request_id=None if self.request_id is None else pick(self.request_id),
        )


@dataclass(slots=True)
class FeedbackBatch:
    """Ground-truth labels of one model."""

    model: str
    event_id: list[str]
    label: list[Any]
    event_time_ms: IntArray

    def __len__(self) -> int:
        return len(self.event_id)

    def take(self, index: npt.NDArray[np.intp]) -> FeedbackBatch:
        idx = index.tolist()
        return FeedbackBatch(
            model=self.model,
            event_id=[self.event_id[i] for i in idx],
            label=[self.label[i] for i in idx],
            event_time_ms=self.event_time_ms[index],
        )


def _columns(features: Mapping[str, list[Any]]) -> FeatureColumns:
    return features if isinstance(features, FeatureColumns) else FeatureColumns(features)


def first_occurrences(ids: Sequence[str]) -> tuple[npt.NDArray[np.intp], list[int]]:
    """Split positions into first occurrences of each id and later duplicates.

    Used to drop duplicate event ids inside one record (a retried send can
    repeat an event); duplicates across records are the join stage's concern.
    """
    if len(set(ids)) == len(ids):  # the common case, all distinct: one set built in C
        return np.arange(len(ids), dtype=np.intp), []
    seen: set[str] = set()
    keep: list[int] = []
    dup: list[int] = []
    for i, e in enumerate(ids):
        if e in seen:
            dup.append(i)
        else:
            seen.add(e)
            keep.append(i)
    return np.asarray(keep, dtype=np.intp), dup


@dataclass(slots=True)
class TelemetryBatch:
    """Telemetry samples of one model-server process (``host``, or its pod when given), in time order.

    ``gpus`` maps a GPU index to its (utilization percent, memory used bytes,
    memory total bytes) columns, NaN where a sample did not report it.
    """

    model: str
    host: str
    event_time_ms: IntArray
    cpu_percent: FloatArray
    rss_bytes: FloatArray
    memory_percent: FloatArray
    inflight_requests: FloatArray
    gpus: dict[int, tuple[FloatArray, FloatArray, FloatArray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.event_time_ms)


def _concat_optional(cols: Sequence[list[Any] | None], sizes: Sequence[int]) -> list[Any] | None:
    """Concatenate optional columns; a batch without the column contributes ``None`` per row."""
    if all(c is None for c in cols):
        return None
    out: list[Any] = []
    for col, n in zip(cols, sizes, strict=True):
        out.extend([None] * n if col is None else col)
    return out


def _concat_named(
    maps: Sequence[Mapping[str, list[Any]] | None], sizes: Sequence[int]
) -> dict[str, list[Any]]:
    """Concatenate name -> column maps; a name a batch lacks is ``None`` for that batch's rows."""
    names: dict[str, None] = {}
    for mp in maps:
        names.update(dict.fromkeys(mp or ()))
    return {name: _concat_optional([None if mp is None else mp.get(name) for mp in maps], sizes) or []
            for name in names}


def concat_predictions(batches: Sequence[PredictionBatch]) -> PredictionBatch:
    """One batch holding the rows of ``batches`` (all of one model version), in order.

    The worker coalesces the batches of consecutive records before folding
    them (:mod:`streams.core.grouping`): the stages' cost is mostly per batch
    (numpy calls per feature), so ten 500-event batches as one cost little
    more than one. Columns a batch lacks (a feature, predictions, segments,
    request ids) are ``None`` for its rows, as the codec does for rows of one
    record.

    >>> import numpy as np
    >>> a = PredictionBatch("m", "v1", ["a"], np.array([1]), np.array([5.0]), np.array([False]),
    ...                     {"x": [1.0]})
    >>> b = PredictionBatch("m", "v1", ["b", "c"], np.array([2, 3]), np.array([6.0, 7.0]),
    ...                     np.array([True, False]), {"y": ["u", "v"]}, prediction=[0, 1])
    >>> c = concat_predictions([a, b])
    >>> c.event_id, c.latency_ms.tolist(), dict(c.features), c.prediction
    (['a', 'b', 'c'], [5.0, 6.0, 7.0], {'x': [1.0, None, None], 'y': [None, 'u', 'v']}, [None, 0, 1])
    """
    if not batches:
        raise ValueError("concat_predictions: no batches")
    first = batches[0]
    if len(batches) == 1:
        return first
    for b in batches[1:]:
        if (b.model, b.model_version) != (first.model, first.model_version):
            raise ValueError(f"concat_predictions: {b.model}/{b.model_version} mixed with "
                             f"{first.model}/{first.model_version}")
    sizes = [len(b) for b in batches]
    segments = [b.segment for b in batches]
    return PredictionBatch(
        model=first.model,
        model_version=first.model_version,
        event_id=list(chain.from_iterable(b.event_id for b in batches)),
        event_time_ms=np.concatenate([b.event_time_ms for b in batches]),
        latency_ms=np.concatenate([b.latency_ms for b in batches]),
        is_error=np.concatenate([b.is_error for b in batches]),
        features=FeatureColumns(_concat_named([b.features for b in batches], sizes)),
        prediction=_concat_optional([b.prediction for b in batches], sizes),
        segment=None if all(s is None for s in segments) else _concat_named(segments, sizes),
        request_id=_concat_optional([b.request_id for b in batches], sizes),
        parts=tuple(p for b in batches for p in (b.parts or (len(b),))),
    )


def concat_feedback(batches: Sequence[FeedbackBatch]) -> FeedbackBatch:
    """One batch holding the labels of ``batches`` (all of one model), in order.

    >>> import numpy as np
    >>> f = concat_feedback([FeedbackBatch("m", ["a"], [1], np.array([5])),
    ...                      FeedbackBatch("m", ["b"], [0], np.array([6]))])
    >>> f.event_id, f.label, f.event_time_ms.tolist()
    (['a', 'b'], [1, 0], [5, 6])
    """
    if not batches:
        raise ValueError("concat_feedback: no batches")
    first = batches[0]
    if len(batches) == 1:
        return first
    for b in batches[1:]:
        if b.model != first.model:
            raise ValueError(f"concat_feedback: {b.model} mixed with {first.model}")
    return FeedbackBatch(
        model=first.model,
        event_id=list(chain.from_iterable(b.event_id for b in batches)),
        label=list(chain.from_iterable(b.label for b in batches)),
        event_time_ms=np.concatenate([b.event_time_ms for b in batches]),
    )
