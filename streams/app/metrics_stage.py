"""Glue between the ingest router and the per-partition metrics engines.

One :class:`~streams.core.engine.MetricsEngine` per source partition (the
predictions and feedback topics are co-partitioned by model, so partition
``p`` of both meets in engine ``p``). After each record the engine's writes
go to the changelog-backed state table and its snapshots to the metrics
topic; a timer also advances engines so a model that went quiet still gets
its last windows closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from streams.app.ingest import RecordPos, wall_ms
from streams.core.batches import FeedbackBatch, PredictionBatch
from streams.core.engine import MatchListener, MetricsEngine
from streams.core.metrics_config import EngineConfig
from streams.observability import MetricsExporter


class StateStore(Protocol):
    """Where engine cells persist: a changelog-backed table in the worker."""

    def put(self, partition: int, key: bytes, value: bytes | None) -> None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


SnapshotSink = Callable[[bytes, bytes], None]


class MetricsStage:
    """Feeds batches to engines, persists their cells, emits their snapshots."""

    def __init__(
        self,
        cfg: EngineConfig,
        store: StateStore,
        emit: SnapshotSink,
        exporter: MetricsExporter,
        clock: Callable[[], int] = wall_ms,
        advance_every_ms: int = 250,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.emit = emit
        self.exporter = exporter
        self.clock = clock
        self.advance_every_ms = advance_every_ms
        self.engines: dict[int, MetricsEngine] = {}
        self._last_advance_ms: dict[int, int] = {}
        # Later stages that want joined labels (detection): a listener per partition's engine.
        self.match_listeners: list[Callable[[int], MatchListener]] = []
        # ... and snapshots (alerting): called with the partition and the snapshot.
        self.snapshot_listeners: list[Callable[[int, dict[str, Any]], None]] = []

    def engine(self, partition: int) -> MetricsEngine:
        eng = self.engines.get(partition)
        if eng is None:
            eng = self.engines[partition] = MetricsEngine(self.cfg, partition)
            eng.match_listeners.extend(make(partition) for make in self.match_listeners)
            cells = eng.restore(self.store.items(), self.clock())
            self.exporter.restored_cells.inc(cells)
        return eng

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop engines of revoked partitions; their state is in the table."""
        for p in partitions:
            self.engines.pop(p, None)
            self._last_advance_ms.pop(p, None)

    def on_predictions(self, batch: PredictionBatch, pos: RecordPos) -> None:
        self.engine(pos.partition).on_predictions(
            batch, pos.source, pos.offset, pos.received_ms, pos.batch_index
        )

    def on_feedback(self, batch: FeedbackBatch, pos: RecordPos) -> None:
        self.engine(pos.partition).on_feedback(
            batch, pos.source, pos.offset, pos.received_ms, pos.batch_index
        )

    def after_record(self, pos: RecordPos) -> None:
        eng = self.engines.get(pos.partition)
        if eng is None:
            return
        eng.end_record()
        now = self.clock()
        if now - self._last_advance_ms.get(pos.partition, 0) >= self.advance_every_ms:
            self._last_advance_ms[pos.partition] = now
            eng.advance(now)
            self._emit_snapshots(eng)

    def tick(self) -> None:
        """Advance every engine (timer): closes windows of idle models, emits revisions."""
        now = self.clock()
        for p, eng in list(self.engines.items()):
            self._last_advance_ms[p] = now
            eng.advance(now)
            self._emit_snapshots(eng)
        self.flush_writes()

    def on_committed(self, offsets: Mapping[str, int]) -> None:
        """Offsets faust committed (``topic:partition`` -> next offset): the engines prune replay guards."""
        for eng in self.engines.values():
            eng.committed(offsets)

    def flush_writes(self) -> None:
        """Hand every engine's pending cell writes to the store (before each offset commit).

        Cells are coalesced between flushes: a pane touched by a hundred
        records is written once, which keeps the changelog a small multiple
        of the state rather than of the input.
        """
        for p, eng in list(self.engines.items()):
            writes = eng.take_writes()
            for key, value in writes:
                self.store.put(p, key, value)
            self.exporter.state_writes.inc(len(writes))
            self.exporter.observe_engine(eng)

    def _emit_snapshots(self, eng: MetricsEngine) -> None:
        for snap in eng.take_snapshots():
            self.emit(snap["model"].encode(), orjson.dumps(snap))
            self.exporter.observe(snap)
            for listener in self.snapshot_listeners:
                listener(eng.partition, snap)
