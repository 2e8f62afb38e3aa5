"""The aggregate of one pane (or of a whole window, once panes are merged).

A :class:`PaneState` is a fold over explicit state, in the shape of
quix-streams' window aggregations: ``PaneState()`` initialises it, the
``add_*`` methods fold a batch in, :meth:`PaneState.merge` combines two
panes (so a window is the merge of its panes, and partitions could merge
too), and :mod:`streams.core.snapshot` reads the result.

Every pane carries ``applied``: the last source offset folded in, per source
partition. Replaying a record after a crash (at-least-once delivery) then
skips the panes that already hold it, so a restarted worker ends with the same
numbers as one that never stopped.

That guard suits what one record brings by itself (its predictions), not joined
labels: a label is counted when the later of its prediction and its feedback
record arrives, and a replay may read the two topics in the other order, so the
same count would come under the other record's guard and be skipped (lost) or
taken twice. Label counts are guarded by ``label_pairs`` instead: per (prediction
record *and pane*, label source) the position of the newest label record whose
matches were folded in. Each topic partition is read in order, so when the
matches of one pair were folded into a pane, those of every earlier label record
with the same prediction record had been folded into it too: one position per
pair is the whole guard, and it sits in the same cell as the counts it guards.

Why per pane (:func:`pane_chunk`). A window over several panes merges their
guards, and one prediction record (one label record) can hold events of two
panes. Keyed by the prediction record alone, the second pane's share of a pair
that reaches a closed window would be refused as already taken, and a window
merged from panes that a crash persisted at different label records would take
the newer pane's position for both, refusing the older pane's replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from streams.core.batches import top_class
from streams.core.features import FeatureStats
from streams.core.join import Committed, record_position
from streams.core.labels import ClassificationMetrics, RegressionMetrics
from streams.core.sketch import DDSketch

SKETCH_ACCURACY = 0.01


def predicted_values(predictions: list[Any]) -> list[Any]:
    """Predictions as feature values: a probability map becomes its most likely class.

    >>> predicted_values([0.3, {"a": 0.2, "b": 0.8}, "c", None])
    [0.3, 'b', 'c', None]
    """
    if not any(type(p) is dict for p in predictions):
        return predictions
    return [top_class(p) if type(p) is dict else p for p in predictions]


def pane_chunk(chunk_id: str, pane_start_ms: int) -> str:
    """The label-pair guard's name for the events of prediction record ``chunk_id`` in one pane.

    >>> pane_chunk("pred:0:7:0", 60_000)
    'pred:0:7:0@60000'
    """
    return f"{chunk_id}@{pane_start_ms}"


def chunk_of(guard_id: str) -> str:
    """The prediction record a label-pair guard entry names (:func:`pane_chunk` undone).

    >>> chunk_of(pane_chunk("pred:0:7:0", 60_000)), chunk_of("pred:0:7:0")
    ('pred:0:7:0', 'pred:0:7:0')
    """
    return guard_id.partition("@")[0]


class PaneState:
    """Counts, sketches and label metrics of one (model, version, segment, pane)."""

    __slots__ = (
        "applied",
        "classification",
        "count",
        "errors",
        "feature_weight",
        "features",
        "first_ms",
        "gen",
        "label_delay",
        "label_pairs",
        "labelled",
        "last_ms",
        "late_events",
        "latency",
        "max_classes",
        "max_features",
        "predictions",
        "regression",
        "sampled",
        "top_k",
        "versus",
    )

    def __init__(self, max_features: int = 100, top_k: int = 20, max_classes: int = 64) -> None:
        self.max_features, self.top_k, self.max_classes = max_features, top_k, max_classes
        self.count = 0
        self.errors = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.latency = DDSketch(SKETCH_ACCURACY)
        self.predictions = FeatureStats(max_features=1, top_k=top_k)
        self.features = FeatureStats(max_features=max_features, top_k=top_k)
        self.sampled = 0
        self.feature_weight = 0.0
        self.classification: ClassificationMetrics | None = None
        self.regression: RegressionMetrics | None = None
        self.labelled = 0
        self.label_delay = DDSketch(SKETCH_ACCURACY)
        self.versus: RegressionMetrics | None = None  # challenger minus champion, paired by request
        self.late_events = 0
        self.applied: dict[str, int] = {}
        # label source ("topic:partition") -> prediction record id -> [offset, batch index]
        self.label_pairs: dict[str, dict[str, list[int]]] = {}
        self.gen = 0  # panes of this start folded into an accumulator before this one (streams.core.series)

    def add_serving(
        self,
        event_time_ms: np.ndarray,
        latency_ms: np.ndarray,
        is_error: np.ndarray,
        predictions: list[Any] | None,
    ) -> None:
        n = len(event_time_ms)
        if n == 0:
            return
        self.count += n
        self.errors += int(np.count_nonzero(is_error))
        lo, hi = int(event_time_ms.min()), int(event_time_ms.max())
        self.first_ms = lo if self.first_ms is None else min(self.first_ms, lo)
        self.last_ms = hi if self.last_ms is None else max(self.last_ms, hi)
        self.latency.add(latency_ms)
        if predictions is not None:
            self.predictions.add({"prediction": predicted_values(predictions)})

    def add_features(self, features: Mapping[str, list[Any]], weights: np.ndarray) -> None:
        if len(weights) == 0:
            return
        self.sampled += len(weights)
        self.feature_weight += float(weights.sum())
        self.features.add(features, weights)

    def classification_metrics(self, positive_label: str | None) -> ClassificationMetrics:
        if self.classification is None:
            self.classification = ClassificationMetrics(self.max_classes, positive_label)
        return self.classification

    def regression_metrics(self) -> RegressionMetrics:
        if self.regression is None:
            self.regression = RegressionMetrics()
        return self.regression

    def versus_metrics(self) -> RegressionMetrics:
        if self.versus is None:
            self.versus = RegressionMetrics()
        return self.versus

    def mark_applied(self, source: str, offset: int) -> None:
        if self.applied.get(source, -1) < offset:
            self.applied[source] = offset

    def has_applied(self, source: str, offset: int) -> bool:
        return self.applied.get(source, -1) >= offset

    def take_pair(self, chunk_id: str, label_record: str) -> bool:
        """Whether the labels of ``label_record`` joined to ``chunk_id`` are new to this cell; marks them.

        ``label_record`` is ``source:offset:batch``; ``chunk_id`` names the
        prediction record, for the engine with its pane (:func:`pane_chunk`).

        >>> p = PaneState()
        >>> p.take_pair("pred:0:7:0", "fb:0:3:0"), p.take_pair("pred:0:7:0", "fb:0:3:0")
        (True, False)
        >>> p.take_pair("pred:0:7:0", "fb:0:2:0"), p.take_pair("pred:0:7:0", "fb:0:4:0")
        (False, True)
        """
        source, offset, index = record_position(label_record)
        pos = [offset, index]
        seen = self.label_pairs.setdefault(source, {})
        old = seen.get(chunk_id)
        if old is not None and old >= pos:
            return False
        seen[chunk_id] = pos
        return True

    def prune_pairs(self, committed: Committed) -> None:
        """Forget the pairs neither of whose records a replay can bring back.

        >>> p = PaneState()
        >>> p.take_pair("pred:0:7:0", "fb:0:3:0"), p.take_pair("pred:0:9:0", "fb:0:3:0")
        (True, True)
        >>> p.prune_pairs(Committed({"pred:0": 9, "fb:0": 5})); p.label_pairs
        {'fb:0': {'pred:0:9:0': [3, 0]}}
        """
        for source, seen in list(self.label_pairs.items()):
            for chunk_id, pos in list(seen.items()):
                if committed.done(source, pos[0]) and committed.record_done(chunk_of(chunk_id)):
                    del seen[chunk_id]
            if not seen:
                del self.label_pairs[source]

    def merge(self, other: PaneState) -> None:
        """Fold ``other`` into this pane (exact for counts and sums, sketches merged)."""
        self.count += other.count
        self.errors += other.errors
        for attr, pick in (("first_ms", min), ("last_ms", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        self.latency.merge(other.latency)
        self.predictions.merge(other.predictions)
        self.features.merge(other.features)
        self.sampled += other.sampled
        self.feature_weight += other.feature_weight
        if other.classification is not None:
            self.classification_metrics(other.classification.positive_label).merge(other.classification)
        if other.regression is not None:
            self.regression_metrics().merge(other.regression)
        if other.versus is not None:
            self.versus_metrics().merge(other.versus)
        self.labelled += other.labelled
        self.label_delay.merge(other.label_delay)
        self.late_events += other.late_events
        self.merge_guards(other)

    def merge_guards(self, other: PaneState) -> None:
        """Take over what ``other`` has applied (both replay guards), as if its records were folded here."""
        for src, off in other.applied.items():
            self.mark_applied(src, off)
        for src, theirs in other.label_pairs.items():
            mine = self.label_pairs.setdefault(src, {})
            for cid, pos in theirs.items():
                if cid not in mine or mine[cid] < pos:
                    mine[cid] = pos

    def labels_only(self) -> PaneState:
        """A copy holding what late labels can still change (and the count, for coverage)."""
        p = PaneState(self.max_features, self.top_k, self.max_classes)
        p.count, p.errors = self.count, self.errors
        p.classification, p.regression, p.versus = self.classification, self.regression, self.versus
        p.labelled, p.label_delay, p.applied = self.labelled, self.label_delay, dict(self.applied)
        p.label_pairs = {src: dict(seen) for src, seen in self.label_pairs.items()}
        return p

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "err": self.errors,
            "t0": self.first_ms,
            "t1": self.last_ms,
            "lat": self.latency.to_json(),
            "pred": self.predictions.to_json(),
            "feat": self.features.to_json(),
            "smp": self.sampled,
            "fw": self.feature_weight,
            "cls": None if self.classification is None else self.classification.to_json(),
            "reg": None if self.regression is None else self.regression.to_json(),
            "vs": None if self.versus is None else self.versus.to_json(),
            "lab": self.labelled,
            "delay": self.label_delay.to_json(),
            "late": self.late_events,
            "applied": self.applied,
            "pairs": self.label_pairs,
            "gen": self.gen,
            "cfg": [self.max_features, self.top_k, self.max_classes],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PaneState:
        """Rebuild a pane from :meth:`to_json` output; ``ValueError`` on malformed state."""
        try:
            p = cls(*[int(v) for v in raw["cfg"]])
            p.count, p.errors = int(raw["n"]), int(raw["err"])
            p.first_ms = None if raw["t0"] is None else int(raw["t0"])
            p.last_ms = None if raw["t1"] is None else int(raw["t1"])
            p.latency = DDSketch.from_json(raw["lat"])
            p.predictions = FeatureStats.from_json(raw["pred"])
            p.features = FeatureStats.from_json(raw["feat"])
            p.sampled, p.feature_weight = int(raw["smp"]), float(raw["fw"])
            p.classification = None if raw["cls"] is None else ClassificationMetrics.from_json(raw["cls"])
            p.regression = None if raw["reg"] is None else RegressionMetrics.from_json(raw["reg"])
            p.versus = None if raw["vs"] is None else RegressionMetrics.from_json(raw["vs"])
            p.labelled = int(raw["lab"])
            p.label_delay = DDSketch.from_json(raw["delay"])
            p.late_events = int(raw["late"])
            p.applied = {str(k): int(v) for k, v in dict(raw["applied"]).items()}
            p.label_pairs = {  # absent in state written before the pair guard
                str(src): {str(cid): [int(pos[0]), int(pos[1])] for cid, pos in dict(seen).items()}
                for src, seen in dict(raw.get("pairs") or {}).items()
            }
            p.gen = int(raw.get("gen", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed pane state: {exc!r}") from None
        return p
