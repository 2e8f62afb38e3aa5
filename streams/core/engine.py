"""The windowed metrics engine of one source partition.

Feed it decoded batches with their source position; it folds them into
panes, joins labels, closes windows as stream time advances and hands back
two things: *snapshots* for the metrics topic and *writes* (cell key ->
value or ``None`` to delete) for the changelog-backed state table. It never
touches Kafka, faust or the clock: the caller passes ``now_ms`` (processing
time, used only to close windows of a model that went quiet).

Exactly-once results from at-least-once delivery: every cell records the
last offset it folded in per source partition, and for joined labels the
newest label record per prediction record (:mod:`streams.core.pane`); a
replayed record skips the cells that already hold it, whatever order the
replay reads the two topics in. A flush's writes come out closed windows
first, then accumulators, panes, and join marks last, and the changelog keeps
that order, so a crash persists a prefix in which nothing is deleted before
what absorbed it and no mark (this label was counted) precedes its pane.
``tests/unit/core/test_engine_crash.py`` checks this against seeded crash
histories.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.core.batches import FeedbackBatch, PredictionBatch
from streams.core.join import (
    Chunk,
    Committed,
    JoinBudget,
    LabelJoin,
    Match,
    Orphan,
    record_id,
    record_position,
)
from streams.core.metrics_config import EngineConfig, ModelConfig
from streams.core.outcomes import fold_matches
from streams.core.pane import PaneState, pane_chunk
from streams.core.sampling import feature_sample
from streams.core.series import Accumulator, ClosedWindow, Series, SeriesKey
from streams.core.snapshot import METRICS_V1, base_result, label_result, versus_result
from streams.core.versus import VersusBuffer

Cell = tuple[bytes, bytes | None]
MatchListener = Callable[[str, list[Match], str, int, int], None]  # (model, matches, source, offset, batch)
_KINDS = frozenset({"pane", "win", "acc", "meta", "jc", "jm", "jo", "vw"})
_JOIN_KINDS = (b"jc", b"jm", b"jo", b"vw")  # the first two letters of a key's kind, after '["'


def _label_position(pair: tuple[tuple[str, str], list[Match]]) -> tuple[str, int, int]:
    return record_position(pair[0][1])


def _phase(key: bytes) -> int:
    """Where a cell goes in a flush (see :meth:`MetricsEngine.take_writes`); ``key`` starts with '["kind'."""
    kind = key[2:5]
    return 0 if kind == b"win" else 1 if kind == b"acc" else 3 if kind[:2] in _JOIN_KINDS else 2


@dataclass(slots=True)
class ModelState:
    name: str
    join: LabelJoin
    series: dict[SeriesKey, Series] = field(default_factory=dict)
    stream_time_ms: int = 0
    last_seen_ms: int = 0
    late_expired: int = 0
    segments: set[str] = field(default_factory=set)
    versus: VersusBuffer | None = None


class MetricsEngine:
    """All metric state of one source partition (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.batches import PredictionBatch
    >>> from streams.core.windows import WindowSpec
    >>> eng = MetricsEngine(EngineConfig(windows=(WindowSpec(60_000, 60_000),), allowed_lateness_ms=0), 0)
    >>> b = PredictionBatch("m", "v1", ["a", "b"], np.array([1_000, 2_000]), np.array([5.0, 7.0]),
    ...                     np.array([False, True]))
    >>> eng.on_predictions(b, "p:0", 0, now_ms=0)
    >>> eng.on_predictions(PredictionBatch("m", "v1", ["c"], np.array([61_000]), np.array([1.0]),
    ...                    np.array([False])), "p:0", 1, now_ms=0)
    >>> eng.advance(now_ms=0)
    >>> [(s["window_start_ms"], s["serving"]["count"], s["serving"]["error_rate"])
    ...  for s in eng.take_snapshots()]
    [(0, 2, 0.5)]
    """

    def __init__(self, cfg: EngineConfig, partition: int) -> None:
        self.cfg = cfg
        self.partition = partition
        self.pane_ms = cfg.pane_ms
        self.models: dict[str, ModelState] = {}
        # One cap on waiting predictions for all models of the partition: memory per worker does
        # not grow with the number of models (an evicted chunk is persisted at the next advance).
        self.join_budget = JoinBudget(cfg.max_pending_labels)
        self._writes: dict[bytes, Any] = {}
        self._committed = Committed()  # see committed()
        self._snapshots: list[dict[str, Any]] = []
        self._revised: dict[tuple[SeriesKey, str, int], ClosedWindow] = {}
        # The record being folded: which cells may take it (decided once per cell), and what it touched.
        self._source, self._offset = "", -1
        self._decided: dict[int, bool] = {}
        self._touched_panes: dict[tuple[SeriesKey, int], PaneState] = {}
        self._touched_closed: dict[tuple[SeriesKey, str, int], ClosedWindow] = {}
        self._chunks: list[tuple[ModelState, Chunk]] = []
        self._record_models: dict[str, ModelState] = {}
        # Who else wants joined labels (the concept-drift detectors): called once per batch with the
        # new matches, which a replayed record produces again (listeners keep their own offset guard).
        self.match_listeners: list[MatchListener] = []

    # -- input -------------------------------------------------------------------------------

    def on_predictions(
        self, batch: PredictionBatch, source: str, offset: int, now_ms: int, batch_index: int = 0
    ) -> None:
        """Fold one batch of predictions read at ``source`` (``topic:partition``) ``offset``."""
        ms = self._model(batch.model, now_ms)
        mcfg = self.cfg.model(batch.model)
        closed_before = ms.stream_time_ms - self.cfg.allowed_lateness_ms
        self._begin(source, offset)
        seg_col = self._segment_labels(ms, batch)
        # Sampled once per batch: an event in the sample of its segment is in the overall one too.
        weights, sampled = feature_sample(batch, mcfg, seed=(self.partition, offset, batch_index))
        for seg, rows in self._segment_rows(seg_col):
            key = (batch.model, batch.model_version, seg)
            if rows is None:
                self._fold_serving(ms, key, batch, weights, sampled, closed_before)
            else:
                self._fold_serving(ms, key, batch.take(rows), weights[rows], sampled[rows], closed_before)
        chunk = Chunk(
            record_id(source, offset, batch_index),
            batch.model_version,
            batch.event_id,
            batch.event_time_ms.tolist(),
            batch.prediction if batch.prediction is not None else [None] * len(batch),
            seg_col,
        )
        matches = ms.join.add_chunk(chunk)
        self._fold_matches(ms, matches, mcfg, closed_before)
        self._tell(ms.name, matches, source, offset, batch_index)
        if mcfg.champion is not None and batch.request_id is not None and batch.prediction is not None:
            self._fold_versus(ms, batch, mcfg, source, offset, closed_before)
        self._chunks.append((ms, chunk))
        ms.stream_time_ms = max(ms.stream_time_ms, int(batch.event_time_ms.max()))

    def on_feedback(
        self, batch: FeedbackBatch, source: str, offset: int, now_ms: int, batch_index: int = 0
    ) -> None:
        """Join one batch of labels and fold the matches into their predictions' windows."""
        ms = self._model(batch.model, now_ms)
        closed_before = ms.stream_time_ms - self.cfg.allowed_lateness_ms
        self._begin(source, offset)
        matches = ms.join.add_labels(
            batch.event_id, batch.label, batch.event_time_ms.tolist(), record_id(source, offset, batch_index)
        )
        self._fold_matches(ms, matches, self.cfg.model(batch.model), closed_before)
        self._tell(ms.name, matches, source, offset, batch_index)
        self._record_models[ms.name] = ms

    def _tell(self, model: str, matches: list[Match], source: str, offset: int, batch_index: int) -> None:
        if matches:
            for listener in self.match_listeners:
                listener(model, matches, source, offset, batch_index)

    # -- the record being folded ---------------------------------------------------------------

    def _begin(self, source: str, offset: int) -> None:
        if (source, offset) != (self._source, self._offset):
            self.end_record()
            self._source, self._offset = source, offset

    def _may_apply(self, cell: PaneState) -> bool:
        """Whether ``cell`` has not yet folded the current record (decided at first touch)."""
        ok = self._decided.get(id(cell))
        if ok is None:
            ok = self._decided[id(cell)] = not cell.has_applied(self._source, self._offset)
        return ok

    def _pane(self, key: SeriesKey, ps: int, pane: PaneState | None) -> PaneState | None:
        if pane is None or not self._may_apply(pane):
            return None
        self._touched_panes[(key, ps)] = pane
        return pane

    def _closed(self, key: SeriesKey, cw: ClosedWindow) -> bool:
        if not self._may_apply(cw.labels):
            return False
        self._touched_closed[(key, cw.window.spec.name, cw.window.start_ms)] = cw
        return True

    def end_record(self) -> None:
        """Mark what the current record touched and queue its writes: cells first, join state last.

        Called implicitly when the next record starts, by :meth:`advance` and
        by :meth:`take_writes`.
        """
        for (key, ps), pane in self._touched_panes.items():
            pane.mark_applied(self._source, self._offset)
            self._put(("pane", *key, ps), pane)
        for (key, name, start), cw in self._touched_closed.items():
            cw.labels.mark_applied(self._source, self._offset)
            cw.pending = True
            self._revised[(key, name, start)] = cw
            self._put(("win", *key, name, start), cw)
        for ms, chunk in self._chunks:
            self._put(("jc", ms.name, chunk.chunk_id), chunk)
            self._record_models[ms.name] = ms
        for ms in self._record_models.values():
            self._persist_join(ms)
            self._put_meta(ms)
        self._touched_panes.clear()
        self._touched_closed.clear()
        self._decided.clear()
        self._chunks.clear()
        self._record_models.clear()
        self._source, self._offset = "", -1

    # -- time --------------------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Close due windows, emit revisions, expire old state. Call after each record and on a timer."""
        self.end_record()
        for ms in self.models.values():
            idle = now_ms - ms.last_seen_ms >= self.cfg.idle_close_ms
            closed_before = None if idle else ms.stream_time_ms - self.cfg.allowed_lateness_ms
            self._close(ms, closed_before, now_ms, "idle" if idle else "closed")
            self._expire(ms)
        for (key, name, start), cw in self._revised.items():
            cw.revision += 1
            cw.pending = False
            self._put(("win", *key, name, start), cw)
            self._emit(key, cw, "revised", self.models[key[0]])
        self._revised.clear()

    def _close(self, ms: ModelState, closed_before: int | None, now_ms: int, reason: str) -> None:
        specs = self.cfg.windows
        due = {key: s.closable(specs, closed_before) for key, s in ms.series.items()}
        merged = {
            (key, w.spec.name, w.start_ms): ms.series[key].merged(w, self.pane_ms, self._new_pane)
            for key, wins in due.items()
            for w in wins
        }
        for key, wins in due.items():
            series = ms.series[key]
            mcfg = self.cfg.model(key[0])
            for w in wins:
                acc = merged[(key, w.spec.name, w.start_ms)]
                base = base_result(acc, w, mcfg.sample_rate, mcfg.strategy)
                cw = ClosedWindow(w, base, acc.labels_only())
                series.closed[(w.spec.name, w.start_ms)] = cw
                self._put(("win", *key, w.spec.name, w.start_ms), cw)
                if series.accs.pop((w.spec.name, w.start_ms), None) is not None:
                    self._put(("acc", *key, w.spec.name, w.start_ms), None)
                self._emit(key, cw, reason, ms)
            if not wins:
                continue
            for ps in series.droppable_panes(specs):
                del series.panes[ps]
                self._put(("pane", *key, ps), None)
            folded, accs = series.fold_panes(specs, self.pane_ms, self._new_pane)
            for a in accs:
                self._put(("acc", *key, a.window.spec.name, a.window.start_ms), a)
            for ps in folded:
                self._put(("pane", *key, ps), None)

    def _expire(self, ms: ModelState) -> None:
        horizon = ms.stream_time_ms - self.cfg.label_horizon_ms
        for key, series in list(ms.series.items()):
            while series.closed:  # closed in end order: stop at the first one still needed
                wk, cw = next(iter(series.closed.items()))
                if cw.window.end_ms >= horizon:
                    break
                del series.closed[wk]
                self._put(("win", *key, *wk), None)
            if not series.closed and not series.panes and not series.accs:
                del ms.series[key]
        ms.join.expire()
        self._persist_join(ms)

    # -- output ------------------------------------------------------------------------------

    def take_snapshots(self) -> list[dict[str, Any]]:
        out, self._snapshots = self._snapshots, []
        return out

    def take_writes(self) -> list[Cell]:
        """Cell writes since the last call, coalesced (one per cell): windows, accumulators, panes, join.

        The order matters, as a crash may persist any prefix of one flush (the
        changelog keeps its order): a pane or an accumulator is deleted only
        once the windows (or accumulator) that absorbed it are persisted, and a
        join mark (this label was counted) never precedes the pane that counted
        it. Coalescing moves a cell to its last write, so the order is by kind,
        not by time; what a restore finds twice, it drops (``Series.drop_stale``).
        """
        self.end_record()
        pending, self._writes = self._writes, {}
        out: list[Cell] = []
        for k, v in sorted(pending.items(), key=lambda kv: _phase(kv[0])):  # stable: write order kept
            if v is None:
                out.append((k, None))
            else:
                self._prune(v)
                raw = v.to_json() if hasattr(v, "to_json") else v
                out.append((k, orjson.dumps(raw, option=orjson.OPT_SERIALIZE_NUMPY)))
        return out

    def committed(self, offsets: Mapping[str, int]) -> None:
        """Offsets committed per source (``topic:partition``, the next offset to read).

        Records below them are never replayed, so the label-pair guards of the
        cells written from now on forget the pairs they cover: a busy pane
        keeps the pairs of about one commit interval, not of its whole minute.
        """
        self._committed.advance(offsets)

    def _prune(self, cell: Any) -> None:
        if not self._committed:
            return
        if isinstance(cell, PaneState):
            cell.prune_pairs(self._committed)
        elif isinstance(cell, ClosedWindow):
            cell.labels.prune_pairs(self._committed)
        elif isinstance(cell, Accumulator):
            cell.state.prune_pairs(self._committed)

    def _emit(self, key: SeriesKey, cw: ClosedWindow, reason: str, ms: ModelState) -> None:
        w = cw.window
        snap: dict[str, Any] = {
            "schema": METRICS_V1,
            "model": key[0],
            "model_version": key[1],
            "segment": key[2] or None,
            "window": w.spec.name,
            "window_start_ms": w.start_ms,
            "window_end_ms": w.end_ms,
            "revision": cw.revision,
            "reason": reason,
            "late_events": cw.late_events,
        }
        snap.update(cw.base)
        snap["labels"] = label_result(cw.labels, cw.late_events)
        snap["champion"] = None
        mcfg = self.cfg.model(key[0])
        if mcfg.champion is not None and key[1] in mcfg.challengers:
            # Computed at every emission, so a revision of the challenger uses the champion's
            # newest label metrics for the same window.
            champ_series = ms.series.get((key[0], mcfg.champion, key[2]))
            champ = None if champ_series is None else champ_series.closed.get((w.spec.name, w.start_ms))
            champ_labels = None if champ is None else champ.labels
            snap["champion"] = versus_result(cw.labels, champ_labels, mcfg.champion)
        # The nested results of ``cw.base`` are shared, not copied: nothing mutates them after the close.
        self._snapshots.append(snap)

    # -- folding -----------------------------------------------------------------------------

    def _fold_serving(
        self,
        ms: ModelState,
        key: SeriesKey,
        b: PredictionBatch,
        weights_all: np.ndarray,
        sampled: np.ndarray,
        closed_before: int,
    ) -> None:
        """Serving metrics and (sampled) feature statistics of one series into its panes."""
        series = self._series(ms, key)
        panes = b.event_time_ms - b.event_time_ms % self.pane_ms
        uniq, inverse = np.unique(panes, return_inverse=True)
        for i, ps in enumerate(uniq.tolist()):
            rows = np.flatnonzero(inverse == i) if len(uniq) > 1 else None
            pane, closed, gone = series.route(self.cfg.windows, ps, closed_before, self._new_pane)
            n = len(b) if rows is None else len(rows)
            self._count_late(ms, key, closed, gone, n)
            pane = self._pane(key, ps, pane)
            if pane is None:
                continue
            sub = b if rows is None else b.take(rows)
            pane.add_serving(sub.event_time_ms, sub.latency_ms, sub.is_error, sub.prediction)
            keep = sampled if rows is None else sampled[rows]
            if keep.all():
                pane.add_features(sub.features, weights_all if rows is None else weights_all[rows])
            elif keep.any():
                feats = {k: [v[j] for j in np.flatnonzero(keep).tolist()] for k, v in sub.features.items()}
                w = weights_all if rows is None else weights_all[rows]
                pane.add_features(feats, w[keep])

    def _count_late(
        self, ms: ModelState, key: SeriesKey, closed: list[ClosedWindow], gone: int, n: int
    ) -> None:
        for cw in closed:
            if self._closed(key, cw):
                cw.late_events += n
        if gone:
            ms.late_expired += n

    def _fold_matches(
        self,
        ms: ModelState,
        matches: list[Match],
        mcfg: ModelConfig,
        closed_before: int,
    ) -> None:
        groups: dict[tuple[SeriesKey, int], dict[tuple[str, str], list[Match]]] = {}
        for m in matches:
            ps = m.prediction_time_ms - m.prediction_time_ms % self.pane_ms
            pair = (m.chunk_id, m.label_record)
            groups.setdefault(((ms.name, m.version, ""), ps), {}).setdefault(pair, []).append(m)
            if m.segment is not None:
                groups.setdefault(((ms.name, m.version, m.segment), ps), {}).setdefault(pair, []).append(m)
        for (key, ps), pairs in groups.items():
            series = self._series(ms, key)
            pane, closed, _ = series.route(self.cfg.windows, ps, closed_before, self._new_pane)
            # Guarded by (prediction record, label record), not by the record being read: see
            # streams.core.pane. A cell that took labels is written at the end of the record.
            if pane is not None and self._fold_pairs(pane, ps, pairs, mcfg):
                self._touched_panes[(key, ps)] = pane
            for cw in closed:
                if self._fold_pairs(cw.labels, ps, pairs, mcfg):
                    self._touched_closed[(key, cw.window.spec.name, cw.window.start_ms)] = cw

    @staticmethod
    def _fold_pairs(
        cell: PaneState, ps: int, pairs: dict[tuple[str, str], list[Match]], mcfg: ModelConfig
    ) -> bool:
        """Fold each (prediction record, label record) pair of pane ``ps`` the cell has not taken.

        The cell's guard keeps one label position per prediction record, pane
        (a closed window spans several: :func:`streams.core.pane.pane_chunk`)
        and label source, so the pairs must come in label-record order: labels
        read before their predictions wait as orphans, and a chunk that arrives
        later matches the orphans of several label records at once, in the
        chunk's row order.
        """
        took = False
        for (chunk_id, label_record), group in sorted(pairs.items(), key=_label_position):
            if cell.take_pair(pane_chunk(chunk_id, ps), label_record):
                fold_matches(cell, group, mcfg.task)
                took = True
        return took

    def _fold_versus(
        self,
        ms: ModelState,
        b: PredictionBatch,
        mcfg: ModelConfig,
        source: str,
        offset: int,
        closed_before: int,
    ) -> None:
        if ms.versus is None:
            ms.versus = VersusBuffer(horizon_ms=max(w.size_ms for w in self.cfg.windows))
        assert b.request_id is not None and b.prediction is not None and mcfg.champion is not None
        pairs = ms.versus.add(
            b.model_version,
            mcfg.champion,
            mcfg.challengers,
            b.request_id,
            b.prediction,
            b.event_time_ms.tolist(),
            source,
            offset,
        )
        by_pane: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for challenger, t_ms, champ_value, chall_value in pairs:
            ps = t_ms - t_ms % self.pane_ms
            by_pane.setdefault((challenger, ps), []).append((champ_value, chall_value))
        for (challenger, ps), vals in by_pane.items():
            key = (ms.name, challenger, "")
            series = self._series(ms, key)
            pane, closed, _ = series.route(self.cfg.windows, ps, closed_before, self._new_pane)
            arr = np.asarray(vals, dtype=np.float64)
            target = self._pane(key, ps, pane)
            if target is not None:
                target.versus_metrics().add(arr[:, 0], arr[:, 1])
            for cw in closed:
                if self._closed(key, cw):
                    cw.labels.versus_metrics().add(arr[:, 0], arr[:, 1])
        ms.versus.expire(ms.stream_time_ms)
        self._put(("vw", ms.name), ms.versus.to_json())

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _series(ms: ModelState, key: SeriesKey) -> Series:
        series = ms.series.get(key)
        if series is None:
            series = ms.series[key] = Series(key)
        return series

    def _new_pane(self) -> PaneState:
        c = self.cfg
        return PaneState(c.max_features, c.top_k, c.max_classes)

    def _model(self, name: str, now_ms: int) -> ModelState:
        ms = self.models.get(name)
        if ms is None:
            ms = self.models[name] = ModelState(
                name, LabelJoin(self.cfg.label_horizon_ms, self.cfg.max_pending_labels, self.join_budget)
            )
        ms.last_seen_ms = now_ms
        return ms

    def _segment_labels(self, ms: ModelState, b: PredictionBatch) -> list[str] | None:
        """``key=value`` of the first configured segment key, per row (bounded per model)."""
        if not self.cfg.segment_by or not b.segment:
            return None
        for k in self.cfg.segment_by:
            col = b.segment.get(k)
            if col is None:
                continue
            names: dict[str | None, str] = {}  # per distinct value, not per event
            for v in dict.fromkeys(col):
                label = f"{k}={'__missing__' if v is None else v}"
                if label not in ms.segments:
                    if len(ms.segments) >= self.cfg.max_segments:
                        label = f"{k}=__other__"
                    ms.segments.add(label)
                names[v] = label
            return [names[v] for v in col]
        return None

    @staticmethod
    def _segment_rows(labels: list[str] | None) -> Iterable[tuple[str, np.ndarray | None]]:
        yield "", None
        if labels is None:
            return
        arr = np.asarray(labels, dtype=object)
        for seg in sorted(set(labels)):
            yield seg, np.flatnonzero(arr == seg)

    def _put(self, key: tuple[Any, ...], value: Any) -> None:
        """Queue a cell write; the value (an object with ``to_json`` or JSON data) is encoded at flush."""
        k = orjson.dumps([key[0], self.partition, *key[1:]])
        self._writes.pop(k, None)  # re-insert at the end: the changelog keeps write order
        self._writes[k] = value

    def _put_meta(self, ms: ModelState) -> None:
        self._put(
            ("meta", ms.name),
            {"t": ms.stream_time_ms, "late_expired": ms.late_expired, "segments": sorted(ms.segments)},
        )

    def _persist_join(self, ms: ModelState) -> None:
        ch = ms.join.take_changes()
        for cid in ch.dropped_chunks:
            self._put(("jc", ms.name, cid), None)
            self._put(("jm", ms.name, cid), None)
        for src in ch.dropped_orphan_sources:
            self._put(("jo", ms.name, src), None)
        for src in ch.new_orphans:
            live = {e: [o.label, o.event_time_ms] for e, o in ms.join.orphans_of(src)}
            self._put(("jo", ms.name, src), {"o": live} if live else None)
        for cid, rows in ch.marks.items():
            self._put(("jm", ms.name, cid), rows)

    # -- restore -----------------------------------------------------------------------------

    def restore(self, cells: Iterable[tuple[bytes, bytes]], now_ms: int) -> int:
        """Rebuild from this partition's persisted cells; returns how many were read."""
        chunks: dict[str, dict[str, Chunk]] = {}
        marks: dict[tuple[str, str], list[int]] = {}
        orphans: dict[str, list[tuple[str, Orphan]]] = {}
        n = 0
        for k, v in cells:
            key = orjson.loads(k)
            if key[0] not in _KINDS or key[1] != self.partition or v is None:
                continue  # other partitions, deletions, and other stages' cells
            n += 1
            kind, model, rest, raw = key[0], key[2], key[3:], orjson.loads(v)
            ms = self._model(model, now_ms)
            if kind == "pane":
                pkey: SeriesKey = (model, str(rest[0]), str(rest[1]))
                ms.series.setdefault(pkey, Series(pkey)).panes[int(rest[2])] = PaneState.from_json(raw)
            elif kind == "win":
                wkey: SeriesKey = (model, str(rest[0]), str(rest[1]))
                cw = ClosedWindow.from_json(raw)
                ms.series.setdefault(wkey, Series(wkey)).closed[(str(rest[2]), int(rest[3]))] = cw
            elif kind == "acc":
                akey: SeriesKey = (model, str(rest[0]), str(rest[1]))
                acc = Accumulator.from_json(raw)
                ms.series.setdefault(akey, Series(akey)).accs[(str(rest[2]), int(rest[3]))] = acc
            elif kind == "meta":
                ms.stream_time_ms = max(ms.stream_time_ms, int(raw["t"]))
                ms.late_expired = int(raw["late_expired"])
                ms.segments.update(raw["segments"])
            elif kind == "jc":
                chunks.setdefault(model, {})[rest[0]] = Chunk.from_json(rest[0], raw)
            elif kind == "jm":
                marks[(model, rest[0])] = [int(r) for r in raw]
            elif kind == "jo":
                orphans.setdefault(model, []).extend(
                    (eid, Orphan(o[0], int(o[1]), rest[0])) for eid, o in raw["o"].items()
                )
            elif kind == "vw":
                ms.versus = VersusBuffer.from_json(raw)
        for model in set(chunks) | set(orphans):
            by_id = chunks.get(model, {})
            for cid, chunk in by_id.items():
                chunk.matched.update(marks.get((model, cid), ()))
            self.models[model].join.restore(by_id.values(), orphans.get(model, []))
        for ms in self.models.values():
            for key, series in ms.series.items():
                series.closed = dict(sorted(series.closed.items(), key=lambda kv: kv[1].window.end_ms))
                panes, accs = series.drop_stale(self.cfg.windows)
                for ps in panes:
                    self._put(("pane", *key, ps), None)
                for name, start in accs:
                    self._put(("acc", *key, name, start), None)
                for (name, start), cw in series.closed.items():
                    if cw.pending:  # a revision persisted but maybe not emitted: emit it again
                        self._revised[(key, name, start)] = cw
        return n
