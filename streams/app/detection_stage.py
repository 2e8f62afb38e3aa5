"""Glue between the ingest router and the per-partition detection engines.

One :class:`~streams.core.detection.engine.DetectionEngine` per source
partition, like the metrics stage. Joined labels come from the metrics
engine of the same partition (``match_listeners``). Signals go to the
signals topic, profiles built from a version's first events to the profiles
topic, and state cells to the same changelog-backed table as the metrics
cells, before every offset commit.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import orjson

from streams.app.ingest import RecordPos, wall_ms
from streams.app.metrics_stage import StateStore
from streams.app.profiles import ProfileStore, profile_key
from streams.core.batches import PredictionBatch, TelemetryBatch
from streams.core.detection.config import DetectionConfig
from streams.core.detection.engine import DetectionEngine
from streams.core.detection.inputs import InputCounts
from streams.core.join import Match
from streams.core.metrics_config import EngineConfig
from streams.events.codec import Decoded
from streams.events.models import TelemetryV1
from streams.events.reasons import Reason
from streams.observability import DetectionExporter

Sink = Callable[[bytes, bytes], None]
log = logging.getLogger(__name__)


def telemetry_batches(events: list[TelemetryV1]) -> list[TelemetryBatch]:
    """Group one record's telemetry per (model, pod or host), in event-time order."""
    groups: dict[tuple[str, str], list[TelemetryV1]] = {}
    for e in events:
        groups.setdefault((e.model, e.pod or e.host), []).append(e)
    out = []
    for (model, host), rows in groups.items():
        rows.sort(key=lambda e: e.event_time_ms)
        n = len(rows)
        gpus: dict[int, tuple[Any, Any, Any]] = {}
        for i, e in enumerate(rows):
            for g in e.gpus or ():
                cols = gpus.get(g.index)
                if cols is None:
                    cols = gpus[g.index] = (np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan))
                for col, v in zip(
                    cols, (g.utilization_percent, g.memory_used_bytes, g.memory_total_bytes), strict=True
                ):
                    if v is not None:
                        col[i] = v
        out.append(
            TelemetryBatch(
                model=model,
                host=host,
                event_time_ms=np.fromiter((e.event_time_ms for e in rows), np.int64, n),
                cpu_percent=np.fromiter((e.cpu_percent for e in rows), np.float64, n),
                rss_bytes=np.fromiter((e.rss_bytes for e in rows), np.float64, n),
                memory_percent=np.fromiter((e.memory_percent for e in rows), np.float64, n),
                inflight_requests=np.fromiter(
                    (np.nan if e.inflight_requests is None else e.inflight_requests for e in rows),
                    np.float64,
                    n,
                ),
                gpus=gpus,
            )
        )
    return out


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def model_of(key: bytes | None, decoded: Decoded) -> str | None:
    """The model a record belongs to: its key (the SDK keys by model name), else its first batch's."""
    if key:
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if _MODEL_NAME.fullmatch(name):
            return name
    for batches in (decoded.predictions, decoded.feedback, decoded.telemetry):
        if batches:
            return str(batches[0].model)
    return None


def input_counts(decoded: Decoded) -> InputCounts | None:
    """(accepted events, accepted records, refused events, refused whole records); None for neither.

    An ``internal_error`` is the worker's bug, not the producer's: it is not counted against the input.
    """
    accepted = sum(len(b) for b in decoded.predictions) + sum(len(b) for b in decoded.feedback)
    accepted += len(decoded.telemetry)
    rejected = [r for r in decoded.rejected if r.reason is not Reason.INTERNAL_ERROR]
    per_event = sum(1 for r in rejected if r.batch_index is not None)
    whole = len(rejected) - per_event
    if not (accepted or rejected):
        return None
    return accepted, int(accepted > 0), per_event, whole


class DetectionStage:
    """Feeds batches to engines, persists their cells, emits their signals and auto profiles."""

    def __init__(
        self,
        cfg: DetectionConfig,
        metrics_cfg: EngineConfig,
        store: StateStore,
        profiles: ProfileStore,
        emit_signal: Sink,
        emit_profile: Sink,
        exporter: DetectionExporter,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.cfg = cfg
        self.metrics_cfg = metrics_cfg
        self.store = store
        self.profiles = profiles
        self.emit_signal = emit_signal
        self.emit_profile = emit_profile
        self.exporter = exporter
        self.clock = clock
        self.engines: dict[int, DetectionEngine] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=12)  # for the live view
        self.signal_listeners: list[Callable[[int, dict[str, Any]], None]] = []  # alerting

    def engine(self, partition: int) -> DetectionEngine:
        eng = self.engines.get(partition)
        if eng is None:
            eng = self.engines[partition] = DetectionEngine(
                self.cfg, partition, self.profiles.get, task=lambda m: self.metrics_cfg.model(m).task
            )
            self.exporter.restored_cells.inc(eng.restore(self.store.items()))
        return eng

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.engines.pop(p, None)

    def on_predictions(self, batch: PredictionBatch, pos: RecordPos) -> None:
        eng = self.engine(pos.partition)
        eng.on_predictions(batch, pos.source, pos.offset, pos.batch_index, pos.received_ms)
        self._drain(eng)

    def on_telemetry(self, events: list[TelemetryV1], pos: RecordPos) -> None:
        eng = self.engine(pos.partition)
        for b in telemetry_batches(events):
            eng.on_telemetry(b, pos.source, pos.offset, pos.received_ms)
        self._drain(eng)

    def on_outcome(self, pos: RecordPos, key: bytes | None, decoded: Decoded) -> None:
        """A record's accepted and refused events, charged to the model of its key (invalid input)."""
        counts = input_counts(decoded)
        if counts is None:
            return
        model = model_of(key, decoded)
        if model is None:
            return
        eng = self.engine(pos.partition)
        eng.on_input(model, counts, pos.source, pos.offset, pos.received_ms)
        self._drain(eng)

    def matches_of(self, partition: int) -> Callable[[str, list[Match], str, int, int], None]:
        """The listener to register on the metrics engine of ``partition``."""

        def listen(model: str, matches: list[Match], source: str, offset: int, batch_index: int) -> None:
            eng = self.engine(partition)
            eng.on_matches(model, matches, source, offset, batch_index)
            self._drain(eng)

        return listen

    def tick(self) -> None:
        now = self.clock()
        for eng in list(self.engines.values()):
            eng.advance(now)
            self._drain(eng)
        self.flush_writes()

    def on_committed(self, offsets: Mapping[str, int]) -> None:
        """Offsets faust committed (``topic:partition`` -> next offset): engines prune label-pair guards."""
        for eng in self.engines.values():
            eng.committed(offsets)

    def flush_writes(self) -> None:
        for p, eng in list(self.engines.items()):
            writes = eng.take_writes()
            for key, value in writes:
                self.store.put(p, key, value)
            self.exporter.state_writes.inc(len(writes))
            self.exporter.observe_engine(eng)

    def _drain(self, eng: DetectionEngine) -> None:
        for monitor, message in eng.take_errors():
            self.exporter.errors.labels(monitor).inc()
            log.error("detection: %s monitor skipped a batch: %s", monitor, message)
        for model, version, _, raw in eng.take_profiles():
            self.emit_profile(profile_key(model, version), raw)
            self.exporter.profiles_built.inc()
        for sig in eng.take_signals():
            self.emit_signal(sig["model"].encode(), orjson.dumps(sig))
            self.exporter.observe_signal(sig)
            self.recent.append(sig)
            for listener in self.signal_listeners:
                listener(eng.partition, sig)
