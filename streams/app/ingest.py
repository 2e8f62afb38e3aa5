"""The ingest stage: decode a record, route valid batches onward, dead-letter the rest.

Kept free of faust so it can be driven directly in tests; the agent in
:mod:`streams.app.factory` only feeds it records and sends what it returns.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from streams.core.batches import FeedbackBatch, PredictionBatch, concat_feedback, concat_predictions
from streams.events.codec import Decoded, Decoder, Rejected
from streams.events.models import DeadLetterV1, TelemetryV1
from streams.events.reasons import Reason
from streams.observability import PipelineMetrics


def wall_ms() -> int:
    """Processing time in epoch ms: the app layer's one wall clock (core takes time as an argument)."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class RecordPos:
    """Where a batch was read: stages key their idempotence on it.

    ``batch_index`` numbers the batches of one record in routing order
    (predictions, then feedback), so a record holding several batches of one
    model is still replayed batch by batch exactly once.
    """

    topic: str
    partition: int
    offset: int
    received_ms: int
    batch_index: int = 0

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


PredictionHandler = Callable[[PredictionBatch, RecordPos], None]
FeedbackHandler = Callable[[FeedbackBatch, RecordPos], None]
TelemetryHandler = Callable[[list[TelemetryV1], RecordPos], None]
RecordHandler = Callable[[RecordPos], None]
#: After each record: its position, its Kafka key, and what decoding made of it (rejects included).
OutcomeHandler = Callable[[RecordPos, bytes | None, Decoded], None]

_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Router:
    """Where valid batches go next. Later stages (metrics, drift, alerts) register here."""

    on_predictions: list[PredictionHandler] = field(default_factory=list)
    on_feedback: list[FeedbackHandler] = field(default_factory=list)
    on_telemetry: list[TelemetryHandler] = field(default_factory=list)
    after_record: list[RecordHandler] = field(default_factory=list)

    def route(self, decoded: Decoded, pos: RecordPos) -> None:
        index = 0
        for pb in decoded.predictions:
            at = RecordPos(pos.topic, pos.partition, pos.offset, pos.received_ms, index)
            index += 1
            for ph in self.on_predictions:
                ph(pb, at)
        for fb in decoded.feedback:
            at = RecordPos(pos.topic, pos.partition, pos.offset, pos.received_ms, index)
            index += 1
            for fh in self.on_feedback:
                fh(fb, at)
        if decoded.telemetry:
            for th in self.on_telemetry:
                th(decoded.telemetry, pos)
        for rh in self.after_record:
            rh(pos)


def merge(decoded: Sequence[Decoded]) -> Decoded:
    """The valid batches of several records as one record's: one batch per model version (per model
    for feedback), concatenated in record order; telemetry events in record order. Rejects stay with
    their records."""
    if len(decoded) == 1:
        d = decoded[0]
        return Decoded(d.predictions, d.feedback, d.telemetry)
    preds: dict[tuple[str, str], list[PredictionBatch]] = {}
    labels: dict[str, list[FeedbackBatch]] = {}
    telemetry: list[TelemetryV1] = []
    for d in decoded:
        for pb in d.predictions:
            preds.setdefault((pb.model, pb.model_version), []).append(pb)
        for fb in d.feedback:
            labels.setdefault(fb.model, []).append(fb)
        telemetry.extend(d.telemetry)
    return Decoded([concat_predictions(b) for b in preds.values()],
                   [concat_feedback(b) for b in labels.values()], telemetry)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record ready to send: key and encoded ``DeadLetterV1`` value."""

    key: bytes | None
    value: bytes
    reason: str


def dead_letter(rej: Rejected, topic: str, partition: int, offset: int, key: bytes | None,
                received_ms: int) -> DeadLetter:
    value = _encode(DeadLetterV1(
        reason=rej.reason.value,
        detail=rej.detail,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_b64=base64.b64encode(rej.original).decode("ascii"),
        original_size_bytes=len(rej.original),
        received_ms=received_ms,
        batch_index=rej.batch_index,
        source_key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
    ))
    return DeadLetter(key=key, value=value, reason=rej.reason.value)


class IngestStage:
    """Decode -> route -> collect dead letters, with metrics; never raises on input."""

    def __init__(self, decoder: Decoder, router: Router, metrics: PipelineMetrics,
                 wall_ms: Callable[[], int] = wall_ms) -> None:
        self.decoder = decoder
        self.router = router
        self.metrics = metrics
        self.wall_ms = wall_ms
        self.outcome_listeners: list[OutcomeHandler] = []

    def process(self, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None) -> list[DeadLetter]:
        """Decode and route one record; returns its dead letters."""
        return self.process_group(topic, partition, [(offset, key, value)])

    def process_group(self, topic: str, partition: int,
                      records: Sequence[tuple[int, bytes | None, bytes | None]]) -> list[DeadLetter]:
        """Decode consecutive records of one partition and route them as one record at the last offset.

        Each record is decoded, counted and dead-lettered on its own; the valid
        batches of one model version (of one model, for feedback) are
        concatenated in offset order, so the stages fold the group once
        (:mod:`streams.core.grouping`). The outcome listeners hear each record
        at its own offset, before the group is routed (an internal error while
        routing is not the input's fault and is not counted against it).
        """
        if not records:
            raise ValueError("process_group: no records")
        m = self.metrics
        decoded: list[Decoded] = []
        for _, _, value in records:
            m.records_in.labels(topic).inc()
            m.bytes_in.labels(topic).inc(len(value or b""))
            t0 = time.perf_counter()
            decoded.append(self.decoder.decode(value))
            m.decode_seconds.observe(time.perf_counter() - t0)
        now_ms = self.wall_ms()
        for d in decoded:
            self._count(d, now_ms)
        # Each record's outcome (invalid input) before the group's batches: a bad record is
        # reported before what the records after it in the group make the detectors say.
        for (offset, key, _), d in zip(records, decoded, strict=True):
            pos = RecordPos(topic, partition, offset, now_ms)
            for listener in self.outcome_listeners:
                try:
                    listener(pos, key, d)
                except Exception as exc:  # bookkeeping must not lose the record's dead letters
                    logging.getLogger(__name__).error("ingest: outcome listener failed: %r", exc)
        try:
            self.router.route(merge(decoded), RecordPos(topic, partition, records[-1][0], now_ms))
        except Exception as exc:  # a stage bug must not stop ingest; the input is kept
            for (_, _, value), d in zip(records, decoded, strict=True):
                d.rejected.append(Rejected(Reason.INTERNAL_ERROR, repr(exc)[:500], value or b""))
        out: list[DeadLetter] = []
        for (offset, key, _), d in zip(records, decoded, strict=True):
            letters = [dead_letter(r, topic, partition, offset, key, now_ms) for r in d.rejected]
            for dl in letters:
                m.events_invalid.labels(dl.reason).inc()
            out.extend(letters)
        return out

    def _count(self, d: Decoded, now_ms: int) -> None:
        m = self.metrics
        if d.predictions:
            m.events_in.labels("prediction").inc(sum(len(b) for b in d.predictions))
            newest = max(int(b.event_time_ms.max()) for b in d.predictions)
            m.event_lag_seconds.labels("prediction").set((now_ms - newest) / 1000)
        if d.feedback:
            m.events_in.labels("feedback").inc(sum(len(b) for b in d.feedback))
            newest = max(int(b.event_time_ms.max()) for b in d.feedback)
            m.event_lag_seconds.labels("feedback").set((now_ms - newest) / 1000)
        if d.telemetry:
            m.events_in.labels("telemetry").inc(len(d.telemetry))
            newest = max(t.event_time_ms for t in d.telemetry)
            m.event_lag_seconds.labels("telemetry").set((now_ms - newest) / 1000)
