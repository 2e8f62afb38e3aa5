"""Decode Kafka record values into validated column batches.

A record value is one of:

* a single event object (``{"schema": "driftline.prediction/v1", ...}``),
* a row batch: a JSON array of single events (any mix of kinds),
* a column batch (``driftline.prediction-columns/v1``, ``...feedback-columns/v1``).

The fast path decodes and validates the whole record in one msgspec call. Only
when that fails does the slow path split the record, so that one bad event is
dead-lettered on its own and the good ones in the same record still count.
The decoder never raises on input: everything it cannot accept comes back as
:class:`Rejected` with a :class:`Reason`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from streams.core.batches import FeedbackBatch, PredictionBatch, first_occurrences
from streams.core.columns import FeatureColumns
from streams.events import models as m
from streams.events.reasons import Reason

DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that was not accepted, with the exact bytes to dead-letter."""

    reason: Reason
    detail: str
    original: bytes
    batch_index: int | None = None


@dataclass(slots=True)
class Decoded:
    """Everything one record yielded: valid batches by kind, and rejects."""

    predictions: list[PredictionBatch] = field(default_factory=list)
    feedback: list[FeedbackBatch] = field(default_factory=list)
    telemetry: list[m.TelemetryV1] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def n_valid(self) -> int:
        return (
            sum(len(b) for b in self.predictions)
            + sum(len(b) for b in self.feedback)
            + len(self.telemetry)
        )


_RowBatch = Annotated[list[m.SingleEvent], msgspec.Meta(min_length=1, max_length=m.MAX_BATCH_EVENTS)]
_record_decoder = msgspec.json.Decoder(m.SingleEvent | m.ColumnBatch | _RowBatch)
_single_decoder = msgspec.json.Decoder(m.SingleEvent)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_dict_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

# Optional columns a batch may send as null ("no such column"), like omitting them.
_OPTIONAL_COLUMNS = frozenset({"prediction", "segment", "request_id"})
_ROW_FIELDS_FROM_BATCH = {
    m.PREDICTION_COLUMNS_V1: (m.PREDICTION_V1, ("model", "model_version")),
    m.FEEDBACK_COLUMNS_V1: (m.FEEDBACK_V1, ("model",)),
}


class Decoder:
    """Stateless record decoder; one per worker is enough.

    Parameters
    ----------
    max_record_bytes
        Records larger than this are rejected as ``oversized`` before parsing,
        which bounds the memory and time one hostile record can take.
    """

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if max_record_bytes <= 0:
            raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
        self.max_record_bytes = max_record_bytes

    def decode(self, data: bytes | None) -> Decoded:
        out = Decoded()
        if not data:
            out.rejected.append(Rejected(Reason.EMPTY, "record value is empty", data or b""))
            return out
        if len(data) > self.max_record_bytes:
            detail = f"record is {len(data)} bytes, limit is {self.max_record_bytes}"
            out.rejected.append(Rejected(Reason.OVERSIZED, detail, data))
            return out
        try:
            self._decode_into(data, out)
        except Exception as exc:  # never let input crash the worker
            out = Decoded(rejected=[Rejected(Reason.INTERNAL_ERROR, repr(exc)[:500], data)])
        return out

    # -- fast path -------------------------------------------------------------
    def _decode_into(self, data: bytes, out: Decoded) -> None:
        try:
            obj = _record_decoder.decode(data)
        except msgspec.ValidationError as exc:
            self._slow_path(data, out, exc)
            return
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            out.rejected.append(Rejected(Reason.UNDECODABLE, _short(exc), data))
            return
        if isinstance(obj, list):
            _add_rows(obj, list(range(len(obj))), out)
        elif isinstance(obj, m.PredictionColumnsV1):
            _add_prediction_columns(obj, data, out)
        elif isinstance(obj, m.FeedbackColumnsV1):
            _add_feedback_columns(obj, data, out)
        else:
            _add_rows([obj], [None], out, originals=[data])

    # -- slow path: find the bad events ---------------------------------------
    def _slow_path(self, data: bytes, out: Decoded, error: msgspec.ValidationError) -> None:
        # Split structurally first (Raw pieces are not parsed), so that one event
        # the untyped parser cannot hold (a number beyond float64, nesting deeper
        # than the interpreter allows) is rejected alone, not with its record.
        try:
            raws = _raw_list_decoder.decode(data)
        except msgspec.ValidationError:
            raws = None
        except RecursionError:  # well-formed (the typed pass validated it) but absurdly deep
            out.rejected.append(Rejected(Reason.INVALID_EVENT, _short(error), data))
            return
        except msgspec.DecodeError as exc:
            out.rejected.append(Rejected(Reason.UNDECODABLE, _short(exc), data))
            return
        if raws is not None:
            if not 0 < len(raws) <= m.MAX_BATCH_EVENTS:
                detail = f"row batch must hold 1 to {m.MAX_BATCH_EVENTS} events, got {len(raws)}"
                out.rejected.append(Rejected(Reason.INVALID_BATCH, detail, data))
                return
            self._split_rows(raws, out)
            return
        try:
            fields = _raw_dict_decoder.decode(data)
        except msgspec.ValidationError:
            detail = "record must be a JSON object or array"
            out.rejected.append(Rejected(Reason.INVALID_EVENT, detail, data))
            return
        except RecursionError:
            out.rejected.append(Rejected(Reason.INVALID_EVENT, _short(error), data))
            return
        except msgspec.DecodeError as exc:
            out.rejected.append(Rejected(Reason.UNDECODABLE, _short(exc), data))
            return
        tag = _loose(fields.get("schema", msgspec.Raw(b"null")))
        if tag in _ROW_FIELDS_FROM_BATCH:
            _split_columns(fields, data, out)
            return
        try:
            loose = _any_decoder.decode(data)
        except (msgspec.DecodeError, RecursionError):
            out.rejected.append(Rejected(Reason.INVALID_EVENT, _short(error), data))
            return
        out.rejected.append(_reject_single(loose, data))

    def _split_rows(self, raws: list[msgspec.Raw], out: Decoded) -> None:
        good: list[m.SingleEvent] = []
        where: list[int | None] = []
        pieces: list[bytes | None] = []
        for i, raw in enumerate(raws):
            piece = bytes(raw)
            try:
                good.append(_single_decoder.decode(piece))
                where.append(i)
                pieces.append(piece)
            except msgspec.ValidationError as exc:
                try:
                    rejected = _reject_single(_any_decoder.decode(piece), piece, i)
                except (msgspec.DecodeError, RecursionError):
                    rejected = Rejected(Reason.INVALID_EVENT, _short(exc), piece, i)
                out.rejected.append(rejected)
        _add_rows(good, where, out, originals=pieces)


class _Unparseable:
    """Stands in for a value the untyped parser cannot hold; fails any validation."""

    def __repr__(self) -> str:
        return "<number or nesting beyond what JSON decoding can represent>"


def _loose(raw: msgspec.Raw) -> Any:
    try:
        return _any_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _Unparseable()


def _loose_column(raw: msgspec.Raw) -> Any:
    """Decode one column; an unparseable element spoils only its own row."""
    value = _loose(raw)
    if not isinstance(value, _Unparseable):
        return value
    try:
        items = _raw_list_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        try:
            sub = _raw_dict_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return value
        return {k: _loose_column(v) for k, v in sub.items()}
    return [_loose(x) for x in items]


def _short(exc: BaseException) -> str:
    return str(exc)[:500] or type(exc).__name__


def _reject_single(obj: Any, original: bytes, index: int | None = None) -> Rejected:
    """Explain why ``obj`` is not a valid single event."""
    if not isinstance(obj, dict):
        detail = f"event must be a JSON object, got {type(obj).__name__}"
        return Rejected(Reason.INVALID_EVENT, detail, original, index)
    tag = obj.get("schema")
    if not isinstance(tag, str):
        return Rejected(Reason.INVALID_EVENT, "missing or non-string `schema`", original, index)
    if tag not in m.KNOWN_SCHEMAS:
        return Rejected(Reason.UNKNOWN_SCHEMA, f"unknown schema {tag[:100]!r}", original, index)
    try:
        msgspec.convert(obj, m.SingleEvent | m.ColumnBatch)
    except msgspec.ValidationError as exc:
        return Rejected(Reason.INVALID_EVENT, _short(exc), original, index)
    # Valid alone yet rejected in its record: a column batch inside a row batch.
    return Rejected(Reason.INVALID_EVENT, "column batches cannot nest in a row batch", original, index)


def _split_columns(fields: dict[str, msgspec.Raw], data: bytes, out: Decoded) -> None:
    """Validate a column batch row by row, after checking its shape."""
    obj = {k: (_loose(v) if k == "schema" else _loose_column(v)) for k, v in fields.items()}
    row_tag, shared = _ROW_FIELDS_FROM_BATCH[obj["schema"]]
    n, problem = _column_shape(obj, shared)
    if problem:
        out.rejected.append(Rejected(Reason.INVALID_BATCH, problem, data))
        return
    good: list[m.SingleEvent] = []
    where: list[int] = []
    for i in range(n):
        row = _row_of(obj, i, row_tag, shared)
        try:
            good.append(msgspec.convert(row, m.SingleEvent))
            where.append(i)
        except (msgspec.ValidationError, TypeError) as exc:
            out.rejected.append(Rejected(Reason.INVALID_EVENT, _short(exc), _encode_row(row), i))
    _add_rows(good, where, out)


def _encode_row(row: dict[str, Any]) -> bytes:
    try:
        return _encoder.encode(row)
    except TypeError:  # an _Unparseable inside: keep what can be shown
        return _encoder.encode({k: (repr(v) if isinstance(v, _Unparseable) else v)
                                for k, v in row.items()})


def _column_shape(obj: dict[str, Any], shared: tuple[str, ...]) -> tuple[int, str]:
    ids = obj.get("event_id")
    if not isinstance(ids, list) or not ids:
        return 0, "`event_id` must be a non-empty array"
    n = len(ids)
    if n > m.MAX_BATCH_EVENTS:
        return 0, f"batch has {n} events, limit is {m.MAX_BATCH_EVENTS}"
    for key, value in obj.items():
        if key == "schema" or key in shared or (value is None and key in _OPTIONAL_COLUMNS):
            continue
        cols = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, col in cols:
            name = key if sub is None else f"{key}.{sub}"
            if not isinstance(col, list):
                return 0, f"`{name}` must be an array"
            if len(col) != n:
                return 0, f"`{name}` has {len(col)} entries, `event_id` has {n}"
    return n, ""


def _row_of(obj: dict[str, Any], i: int, row_tag: str, shared: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"schema": row_tag}
    for key, value in obj.items():
        if key == "schema" or (value is None and key in _OPTIONAL_COLUMNS):
            continue
        if key in shared:
            row[key] = value
        elif isinstance(value, dict):
            # A column batch marks "no segment tag for this event" with null;
            # the single-event form simply omits the tag.
            row[key] = {k: col[i] for k, col in value.items()
                        if not (key == "segment" and col[i] is None)}
        else:
            row[key] = value[i]
    return row


# -- building batches ----------------------------------------------------------
def _dedup_rows(events: list[m.SingleEvent], where: list[int | None], originals: list[bytes | None],
                out: Decoded) -> list[m.SingleEvent]:
    # Duplicates are per kind: a label shares its prediction's event id by design.
    ids = [f"{type(e).__name__}\0{e.event_id}" if not isinstance(e, m.TelemetryV1) else f"\0t{i}"
           for i, e in enumerate(events)]
    keep, dup = first_occurrences(ids)
    for j in dup:
        original = originals[j]
        raw = original if original is not None else _encoder.encode(events[j])
        detail = f"event_id {ids[j].split(chr(0))[1]!r} repeats in this record"
        out.rejected.append(Rejected(Reason.DUPLICATE_EVENT_ID, detail, raw, where[j]))
    return [events[i] for i in keep.tolist()]


def _add_rows(events: list[Any], where: list[Any], out: Decoded,
              originals: list[bytes | None] | None = None) -> None:
    """Group single events into column batches by kind and model (version)."""
    if originals is None:
        originals = [None] * len(events)
    events = _dedup_rows(events, where, originals, out)
    preds: dict[tuple[str, str], list[m.PredictionV1]] = defaultdict(list)
    labels: dict[str, list[m.FeedbackV1]] = defaultdict(list)
    for e in events:
        if isinstance(e, m.PredictionV1):
            preds[(e.model, e.model_version)].append(e)
        elif isinstance(e, m.FeedbackV1):
            labels[e.model].append(e)
        else:
            out.telemetry.append(e)
    for (model, version), rows in preds.items():
        out.predictions.append(_prediction_batch_from_rows(model, version, rows))
    for model, fb_rows in labels.items():
        out.feedback.append(
            FeedbackBatch(
                model=model,
                event_id=[r.event_id for r in fb_rows],
                label=[r.label for r in fb_rows],
                event_time_ms=np.array([r.event_time_ms for r in fb_rows], dtype=np.int64),
            )
        )


def _prediction_batch_from_rows(model: str, version: str, rows: list[m.PredictionV1]) -> PredictionBatch:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r.features))
    segment_keys: dict[str, None] = {}
    for r in rows:
        if r.segment:
            segment_keys.update(dict.fromkeys(r.segment))
    any_pred = any(r.prediction is not None for r in rows)
    any_req = any(r.request_id is not None for r in rows)
    return PredictionBatch(
        model=model,
        model_version=version,
        event_id=[r.event_id for r in rows],
        event_time_ms=np.array([r.event_time_ms for r in rows], dtype=np.int64),
        latency_ms=np.array([r.latency_ms for r in rows], dtype=np.float64),
        is_error=np.array([r.status == "error" for r in rows], dtype=np.bool_),
        features=FeatureColumns({k: [r.features.get(k) for r in rows] for k in names}),
        prediction=[r.prediction for r in rows] if any_pred else None,
        segment={k: [(r.segment or {}).get(k) for r in rows] for k in segment_keys}
        if segment_keys
        else None,
        request_id=[r.request_id for r in rows] if any_req else None,
    )


def _add_prediction_columns(b: m.PredictionColumnsV1, data: bytes, out: Decoded) -> None:
    _, problem = _struct_shape(b, ("event_time_ms", "latency_ms", "status"),
                               ("features", "segment"), ("prediction", "request_id"))
    if problem:
        out.rejected.append(Rejected(Reason.INVALID_BATCH, problem, data))
        return
    batch = PredictionBatch(
        model=b.model,
        model_version=b.model_version,
        event_id=b.event_id,
        event_time_ms=np.asarray(b.event_time_ms, dtype=np.int64),
        latency_ms=np.asarray(b.latency_ms, dtype=np.float64),
        is_error=np.asarray(b.status) == "error",
        features=FeatureColumns(b.features),
        prediction=b.prediction,
        segment=b.segment,
        request_id=b.request_id,
    )
    keep = _reject_column_duplicates(b.event_id, data, m.PREDICTION_COLUMNS_V1, out)
    out.predictions.append(batch if keep is None else batch.take(keep))


def _add_feedback_columns(b: m.FeedbackColumnsV1, data: bytes, out: Decoded) -> None:
    _, problem = _struct_shape(b, ("label", "event_time_ms"), (), ())
    if problem:
        out.rejected.append(Rejected(Reason.INVALID_BATCH, problem, data))
        return
    batch = FeedbackBatch(
        model=b.model,
        event_id=b.event_id,
        label=b.label,
        event_time_ms=np.asarray(b.event_time_ms, dtype=np.int64),
    )
    keep = _reject_column_duplicates(b.event_id, data, m.FEEDBACK_COLUMNS_V1, out)
    out.feedback.append(batch if keep is None else batch.take(keep))


def _reject_column_duplicates(ids: list[str], data: bytes, tag: str,
                              out: Decoded) -> npt.NDArray[np.intp] | None:
    """Dead-letter repeated event ids of a column batch; return the rows to keep (None: all)."""
    keep, dup = first_occurrences(ids)
    if not dup:
        return None
    row_tag, shared = _ROW_FIELDS_FROM_BATCH[tag]
    full = _any_decoder.decode(data)
    for j in dup:
        row = _row_of(full, j, row_tag, shared)
        detail = f"event_id {ids[j]!r} repeats in this record"
        out.rejected.append(Rejected(Reason.DUPLICATE_EVENT_ID, detail, _encoder.encode(row), j))
    return keep


def _struct_shape(b: Any, required: tuple[str, ...], nested: tuple[str, ...],
                  optional: tuple[str, ...]) -> tuple[int, str]:
    n = len(b.event_id)
    checks: list[tuple[str, Any]] = [(f, getattr(b, f)) for f in required]
    checks += [(f, getattr(b, f)) for f in optional if getattr(b, f) is not None]
    for f in nested:
        cols = getattr(b, f) or {}
        checks += [(f"{f}.{k}", v) for k, v in cols.items()]
    for name, col in checks:
        if len(col) != n:
            return 0, f"`{name}` has {len(col)} entries, `event_id` has {n}"
    return n, ""
