"""The SDK's bounded event buffer, its exact accounting, and the record encoder.

Why a plain list behind one lock: the serving path must pay only for an
append (about a microsecond all told), so it neither encodes nor validates.
Everything else (grouping, encoding to the column batch schemas, validating,
splitting records that are too large) happens later, on the SDK's own
background thread, in :class:`RecordEncoder`.

Accounting is exact, not sampled, so that an operator can trust it:

* ``accepted`` counts events taken into the buffer,
* ``dropped`` counts events refused at the door (buffer full, client closed,
  or arguments that could not even be recorded),
* ``delivered`` counts events in records the broker acknowledged,
* ``failed`` counts accepted events that will never be delivered: they could
  not be encoded, broke the event contract, their record failed delivery, or
  they were still pending when :meth:`EventBuffer.abandon` settled the books.
* ``pending`` is ``accepted - delivered - failed``: events in memory, in
  encoded records waiting to be produced, or in records awaiting the broker's
  acknowledgement.

The bound applies to ``pending``, not just to the in-memory list, so that a
broker outage cannot make the SDK hold more than ``max_pending`` events in any
form (librdkafka's queue included).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import msgspec
import orjson

from streams.events import models as m

# Event tuples, built on the serving path; the first item says which kind.
#   prediction: (KIND_PREDICTION, model_version, event_id, event_time_ms, latency_ms,
#                status, features, prediction, segment, request_id)
#   feedback:   (KIND_FEEDBACK, None, event_id, label, event_time_ms)
#   telemetry:  (KIND_TELEMETRY, None, fields)
KIND_PREDICTION: Final = 0
KIND_FEEDBACK: Final = 1
KIND_TELEMETRY: Final = 2

Event = tuple[Any, ...]

DEFAULT_MAX_RECORD_BYTES: Final = 900_000
"""Below librdkafka's default ``message.max.bytes`` (1,000,000) with room for framing."""


@dataclass(frozen=True, slots=True)
class SdkStats:
    """A consistent snapshot of the client's counters.

    ``accepted == delivered + failed + pending`` holds in every snapshot.
    ``records_sent`` counts records handed to the Kafka producer.
    """

    accepted: int
    dropped: int
    delivered: int
    failed: int
    pending: int
    records_sent: int


class EventBuffer:
    """A bounded, thread-safe list of events with exact delivery accounting.

    Parameters
    ----------
    max_pending
        Most events that may be accepted but not yet settled (delivered or
        failed). An event offered while this many are pending is dropped.
    """

    __slots__ = (
        "_books_closed",
        "_cond",
        "_delivered",
        "_dropped",
        "_events",
        "_failed",
        "_flush_waiters",
        "_limit",
        "_lock",
        "_max_pending",
        "_pending",
        "_records_sent",
    )

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._max_pending = max_pending
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events: list[Event] = []
        # accepted is not stored: it is pending + delivered + failed, so the
        # serving path updates one counter, and the invariant holds by construction.
        self._dropped = 0
        self._delivered = 0
        self._failed = 0
        self._pending = 0
        self._records_sent = 0
        self._limit = self._max_pending  # -1 once closed: one comparison refuses both
        self._books_closed = False
        self._flush_waiters = 0

    def reset_after_fork(self) -> None:
        """Start afresh in a forked child.

        The parent's events and counters belong to the parent (it will deliver
        them); the lock may have been held by a thread that does not exist here.
        """
        self._init_state()

    # -- serving path ----------------------------------------------------------
    def offer(self, event: Event) -> int:
        """Append ``event`` unless the bound is reached; never blocks on I/O.

        Returns
        -------
        int
            The number of buffered events after the append, or 0 when the
            event was dropped (and counted in ``dropped``).
        """
        # acquire/try/finally rather than ``with``: about half the cost on 3.11,
        # and this is most of what the serving path pays.
        lock = self._lock
        lock.acquire()
        try:
            if self._pending < self._limit:
                events = self._events
                events.append(event)
                self._pending += 1
                return len(events)
            self._dropped += 1
            return 0
        finally:
            lock.release()

    def count_dropped(self, n: int = 1) -> None:
        """Count events refused before they could be offered (unrecordable arguments)."""
        with self._lock:
            self._dropped += n

    # -- background thread -----------------------------------------------------
    def take(self) -> list[Event]:
        """Remove and return every buffered event (they stay ``pending``)."""
        with self._lock:
            events = self._events
            if events:
                self._events = []
            return events

    def settle(self, n: int, *, ok: bool) -> None:
        """Move ``n`` pending events to ``delivered`` (``ok``) or ``failed``."""
        if n <= 0:
            return
        with self._lock:
            if self._books_closed:  # a late report after close(): already counted failed
                return
            n = min(n, self._pending)
            self._pending -= n
            if ok:
                self._delivered += n
            else:
                self._failed += n
            if self._flush_waiters:
                self._cond.notify_all()

    def count_record_sent(self) -> None:
        with self._lock:
            self._records_sent += 1

    def refuse_new(self) -> None:
        """Drop every event offered from now on (the client is closing)."""
        with self._lock:
            self._limit = -1

    def abandon(self) -> int:
        """Settle the books for good: every pending event becomes ``failed``.

        Called when the client closes and its timeout has passed; delivery
        reports that arrive later are ignored so that no event counts twice.

        Returns
        -------
        int
            How many events were abandoned.
        """
        with self._lock:
            n = self._pending
            self._failed += n
            self._pending = 0
            self._events = []
            self._limit = -1
            self._books_closed = True
            self._cond.notify_all()
            return n

    # -- flush support ---------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    @property
    def buffered(self) -> int:
        return len(self._events)

    @property
    def flush_waiters(self) -> int:
        return self._flush_waiters

    def wait_settled(self, timeout_s: float, on_start: Callable[[], None] | None = None) -> int:
        """Block until nothing is pending or ``timeout_s`` passes.

        ``on_start`` runs once the caller is registered as a waiter (so the
        background thread sees the waiter when it wakes and hurries).

        Returns
        -------
        int
            Events still pending.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            self._flush_waiters += 1
        try:
            if on_start is not None:
                on_start()
            with self._lock:
                while self._pending > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                return self._pending
        finally:
            with self._lock:
                self._flush_waiters -= 1

    def stats(self) -> SdkStats:
        with self._lock:
            return SdkStats(
                accepted=self._pending + self._delivered + self._failed,
                dropped=self._dropped,
                delivered=self._delivered,
                failed=self._failed,
                pending=self._pending,
                records_sent=self._records_sent,
            )


# -- encoding --------------------------------------------------------------------
_ORJSON_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY


class RecordTooLarge(ValueError):
    """An encoded record exceeds ``max_record_bytes``."""


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """One Kafka record value and how many events it carries."""

    kind: int
    value: bytes
    n_events: int


@dataclass(slots=True)
class EncodeResult:
    """What :meth:`RecordEncoder.encode` made of a list of events."""

    records: list[EncodedRecord]
    failed: int = 0
    first_error: str = ""


class RecordEncoder:
    """Turns buffered events of one model into column batch records.

    Why column batches: the worker decodes a whole record into numpy arrays
    without one dict per event, and the repeated field names of row JSON are
    gone, so records are several times smaller before compression.

    Events of one kind and model version that cannot be encoded together are
    split in halves until the culprits stand alone; a lone event that cannot
    be encoded (a value JSON cannot express, such as an arbitrary object or a
    non-string key), that breaks the event contract (when ``validate``), or
    that alone makes a record larger than ``max_record_bytes`` is counted
    failed. The other events of its batch are still sent.

    Parameters
    ----------
    model
        The model name every record carries (and the Kafka key).
    validate
        Decode each record with the worker's msgspec contract before sending,
        so that what the SDK calls delivered is also accepted by the worker.
        Costs roughly one extra microsecond per event on the background
        thread; without it, invalid events are dead-lettered by the worker.
    max_record_bytes
        Largest record value to produce.
    """

    def __init__(self, model: str, *, validate: bool = True,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if max_record_bytes < 1024:
            raise ValueError(f"max_record_bytes must be at least 1024, got {max_record_bytes}")
        self.model = model
        self.validate = validate
        self.max_record_bytes = max_record_bytes
        self._checkers: dict[int, msgspec.json.Decoder[Any]] = {
            KIND_PREDICTION: msgspec.json.Decoder(m.PredictionColumnsV1),
            KIND_FEEDBACK: msgspec.json.Decoder(m.FeedbackColumnsV1),
            KIND_TELEMETRY: msgspec.json.Decoder(m.TelemetryV1),
        }

    def encode(self, kind: int, model_version: str | None, events: list[Event]) -> EncodeResult:
        """Encode ``events`` (all of ``kind`` and ``model_version``) into records."""
        result = EncodeResult(records=[])
        if kind == KIND_TELEMETRY:  # one record each: telemetry is rare and single-event
            for event in events:
                value = self._try(kind, model_version, [event], result)
                if value is not None:
                    result.records.append(EncodedRecord(kind, value, 1))
            return result
        # Depth-first halving, first half first, so records keep the event order.
        parts: list[tuple[list[Event], bytes]] = []
        stack = [events]
        while stack:
            part = stack.pop()
            value = self._try(kind, model_version, part, result)
            if value is not None:
                parts.append((part, value))
            elif len(part) > 1:
                mid = len(part) // 2
                stack.append(part[mid:])
                stack.append(part[:mid])
        if result.failed and len(parts) > 1:
            # The culprits are out: send the rest as one record again rather than
            # the fragments the halving left, unless together they are too large.
            merged = [event for part, _ in parts for event in part]
            value = self._try(kind, model_version, merged, result)
            if value is not None:
                parts = [(merged, value)]
        result.records.extend(EncodedRecord(kind, value, len(part)) for part, value in parts)
        return result

    def _try(self, kind: int, version: str | None, part: list[Event],
             result: EncodeResult) -> bytes | None:
        """The record value of ``part``, or None; a lone event that fails counts failed."""
        try:
            value = self.build(kind, version, part)
            if len(value) > self.max_record_bytes:
                raise RecordTooLarge(
                    f"record of {len(part)} events is {len(value)} bytes,"
                    f" limit {self.max_record_bytes}"
                )
            if self.validate:
                self._checkers[kind].decode(value)
        except Exception as exc:
            if len(part) == 1:
                result.failed += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            return None
        return value

    def build(self, kind: int, model_version: str | None, events: list[Event]) -> bytes:
        """Encode ``events`` into one record value, raising if JSON cannot express them."""
        if kind == KIND_PREDICTION:
            obj = self._prediction_columns(model_version, events)
        elif kind == KIND_FEEDBACK:
            obj = {
                "schema": m.FEEDBACK_COLUMNS_V1,
                "model": self.model,
                "event_id": [e[2] for e in events],
                "label": [e[3] for e in events],
                "event_time_ms": [e[4] for e in events],
            }
        elif kind == KIND_TELEMETRY:
            (event,) = events
            obj = {**event[2], "schema": m.TELEMETRY_V1}
        else:
            raise ValueError(f"unknown event kind {kind!r}")
        return orjson.dumps(obj, option=_ORJSON_OPTS)

    def _prediction_columns(self, version: str | None, events: list[Event]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "schema": m.PREDICTION_COLUMNS_V1,
            "model": self.model,
            "model_version": version,
            "event_id": [e[2] for e in events],
            "event_time_ms": [e[3] for e in events],
            "latency_ms": [e[4] for e in events],
            "status": [e[5] for e in events],
        }
        features = _columns([e[6] for e in events], "features")
        if features:
            obj["features"] = features
        predictions = [e[7] for e in events]
        if any(p is not None for p in predictions):
            obj["prediction"] = predictions
        segments = [e[8] for e in events]
        if any(s is not None for s in segments):
            obj["segment"] = _columns(segments, "segment")
        request_ids = [e[9] for e in events]
        if any(r is not None for r in request_ids):
            obj["request_id"] = request_ids
        return obj


_EMPTY: dict[str, Any] = {}


def _columns(rows: list[Any], what: str) -> dict[Any, list[Any]]:
    """Transpose per-event mappings into columns; a key an event lacks becomes null.

    Null for a missing key matches what the worker builds from row events,
    so both wire forms mean the same thing. The usual case, every event with
    the same keys, runs in C (``itemgetter`` and ``zip``): about a third of
    the cost of one ``dict.get`` per cell.
    """
    if None in rows:
        rows = [_EMPTY if r is None else r for r in rows]
    if set(map(type, rows)) != {dict}:
        bad = next(r for r in rows if type(r) is not dict)
        raise TypeError(f"{what} must be a mapping, got {type(bad).__name__}")
    first = rows[0]
    if first and len(set(map(len, rows))) == 1:
        getter = itemgetter(*first)
        try:
            values = list(map(getter, rows))
        except KeyError:  # same sizes, different keys: take the general path
            pass
        else:
            if len(first) == 1:
                return {next(iter(first)): values}
            return dict(zip(first, map(list, zip(*values, strict=True)), strict=True))
    names = dict.fromkeys(chain.from_iterable(rows))
    return {k: [r.get(k) for r in rows] for k in names}
