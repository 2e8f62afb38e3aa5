"""EventBuffer accounting and RecordEncoder output, without any thread or producer."""

from __future__ import annotations

import threading

import msgspec
import numpy as np
import orjson
import pytest

from streams.events import models as m
from streams.events.codec import Decoder
from streams.sdk.buffer import (
    KIND_FEEDBACK,
    KIND_PREDICTION,
    KIND_TELEMETRY,
    EventBuffer,
    RecordEncoder,
    _columns,
)


def pred(i: int, features: object = None, **kw: object) -> tuple[object, ...]:
    """A prediction event tuple as the client builds it."""
    return (
        KIND_PREDICTION,
        kw.get("version", "v1"),
        kw.get("event_id", f"id-{i}"),
        kw.get("event_time_ms", 1_700_000_000_000 + i),
        kw.get("latency_ms", 1.5 + i),
        kw.get("status", "ok"),
        {"x": float(i), "c": "a" if i % 2 else "b"} if features is None else features,
        kw.get("prediction", 0.25),
        kw.get("segment"),
        kw.get("request_id"),
    )


def invariant(buf: EventBuffer) -> None:
    s = buf.stats()
    assert s.accepted == s.delivered + s.failed + s.pending


# -- EventBuffer ---------------------------------------------------------------
def test_bound_and_exact_drop_count() -> None:
    buf = EventBuffer(3)
    assert [buf.offer((i,)) for i in range(5)] == [1, 2, 3, 0, 0]
    s = buf.stats()
    assert (s.accepted, s.dropped, s.pending) == (3, 2, 3)
    # Taking events out of the buffer does not free room: they are still pending.
    assert len(buf.take()) == 3
    assert buf.offer((9,)) == 0
    buf.settle(2, ok=True)
    assert buf.offer((10,)) == 1
    s = buf.stats()
    assert (s.accepted, s.dropped, s.delivered, s.pending) == (4, 3, 2, 2)
    invariant(buf)


def test_concurrent_offers_respect_bound_exactly() -> None:
    bound, threads, per_thread = 10_000, 8, 5_000
    buf = EventBuffer(bound)
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for i in range(per_thread):
            buf.offer((i,))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    s = buf.stats()
    assert s.accepted == bound
    assert s.dropped == threads * per_thread - bound
    assert len(buf.take()) == bound
    invariant(buf)


def test_settle_and_abandon() -> None:
    buf = EventBuffer(100)
    for i in range(10):
        buf.offer((i,))
    buf.settle(4, ok=True)
    buf.settle(1, ok=False)
    assert buf.abandon() == 5
    s = buf.stats()
    assert (s.accepted, s.delivered, s.failed, s.pending) == (10, 4, 6, 0)
    buf.settle(3, ok=True)  # a late delivery report after the books closed
    assert buf.stats() == s
    assert buf.offer((1,)) == 0
    assert buf.stats().dropped == 1


def test_refuse_new_and_wait_settled_timeout() -> None:
    buf = EventBuffer(10)
    buf.offer((1,))
    assert buf.wait_settled(0.05) == 1
    threading.Timer(0.05, lambda: buf.settle(1, ok=True)).start()
    assert buf.wait_settled(5.0) == 0
    buf.refuse_new()
    assert buf.offer((2,)) == 0


def test_reset_after_fork_starts_afresh() -> None:
    buf = EventBuffer(10)
    buf.offer((1,))
    buf.count_dropped()
    buf.reset_after_fork()
    assert buf.stats().accepted == 0 and buf.stats().dropped == 0
    assert buf.offer((1,)) == 1


def test_invalid_bound() -> None:
    with pytest.raises(ValueError):
        EventBuffer(0)


# -- columns -----------------------------------------------------------------------
def test_columns_same_keys_any_order() -> None:
    rows = [{"a": 1, "b": 2}, {"b": 20, "a": 10}, {"a": 100, "b": 200}]
    assert _columns(rows, "f") == {"a": [1, 10, 100], "b": [2, 20, 200]}


def test_columns_missing_keys_become_null() -> None:
    rows = [{"a": 1}, None, {"b": 2}, {}]
    assert _columns(rows, "f") == {"a": [1, None, None, None], "b": [None, None, 2, None]}


def test_columns_single_key_and_empty() -> None:
    assert _columns([{"a": 1}, {"a": 2}], "f") == {"a": [1, 2]}
    assert _columns([None, {}], "f") == {}


def test_columns_rejects_non_mapping() -> None:
    with pytest.raises(TypeError, match="features must be a mapping"):
        _columns([{"a": 1}, "abc"], "features")


# -- RecordEncoder -------------------------------------------------------------------
def test_prediction_record_decodes_without_rejects() -> None:
    events = [pred(i, segment={"country": "de"} if i == 1 else None,
                   request_id="r-2" if i == 2 else None,
                   prediction={"yes": 0.75, "no": 0.25} if i == 0 else "yes")
              for i in range(5)]
    result = RecordEncoder("churn").encode(KIND_PREDICTION, "v1", events)
    assert result.failed == 0
    (record,) = result.records
    assert record.n_events == 5
    decoded = Decoder().decode(record.value)
    assert decoded.rejected == []
    (batch,) = decoded.predictions
    assert (batch.model, batch.model_version) == ("churn", "v1")
    assert batch.event_id == [f"id-{i}" for i in range(5)]
    assert batch.event_time_ms.tolist() == [1_700_000_000_000 + i for i in range(5)]
    assert batch.latency_ms.tolist() == [1.5 + i for i in range(5)]
    assert batch.features == {"x": [0.0, 1.0, 2.0, 3.0, 4.0], "c": ["b", "a", "b", "a", "b"]}
    assert batch.prediction == [{"yes": 0.75, "no": 0.25}, "yes", "yes", "yes", "yes"]
    assert batch.segment == {"country": [None, "de", None, None, None]}
    assert batch.request_id == [None, None, "r-2", None, None]


def test_optional_columns_left_out_when_all_null() -> None:
    events = [pred(i, prediction=None) for i in range(3)]
    (record,) = RecordEncoder("churn").encode(KIND_PREDICTION, "v1", events).records
    obj = orjson.loads(record.value)
    assert obj["schema"] == m.PREDICTION_COLUMNS_V1
    assert not {"prediction", "segment", "request_id"} & obj.keys()


def test_numpy_scalars_and_nan() -> None:
    features = {"f32": np.float32(1.5), "i64": np.int64(7), "b": np.bool_(True),
                "nan": float("nan"), "f64": np.float64(2.5)}
    (record,) = RecordEncoder("churn").encode(
        KIND_PREDICTION, "v1", [pred(0, features, latency_ms=np.float32(3.0))]
    ).records
    (batch,) = Decoder().decode(record.value).predictions
    assert batch.features == {"f32": [1.5], "i64": [7], "b": [True], "nan": [None], "f64": [2.5]}
    assert batch.latency_ms.tolist() == [3.0]


@pytest.mark.parametrize("bad", [
    {"x": object()},           # not JSON at all
    {1: 2.0},                  # non-string key
    {"x": 2**70},              # beyond 64-bit integers
    "not a mapping",
])
def test_unencodable_event_fails_alone(bad: object) -> None:
    events = [pred(i) for i in range(7)]
    events.insert(3, pred(99, bad))
    result = RecordEncoder("churn").encode(KIND_PREDICTION, "v1", events)
    assert result.failed == 1
    assert result.first_error
    # the culprit is out, and the seven good events travel together again
    assert [r.n_events for r in result.records] == [7]
    decoded = Decoder().decode(result.records[0].value)
    assert decoded.rejected == [] and decoded.n_valid == 7


@pytest.mark.parametrize("kw", [
    {"status": "maybe"},
    {"latency_ms": -1.0},
    {"event_id": ""},
    {"event_time_ms": "yesterday"},
    {"segment": {"k": 5}},
    {"request_id": "r" * 300},
])
def test_contract_violations_fail_when_validating(kw: dict[str, object]) -> None:
    events = [pred(0), pred(1, **kw), pred(2)]
    result = RecordEncoder("churn").encode(KIND_PREDICTION, "v1", events)
    assert result.failed == 1
    assert sum(r.n_events for r in result.records) == 2
    for r in result.records:
        assert Decoder().decode(r.value).rejected == []
    if "segment" in kw:
        # The worker's slow path turns the other rows' null segment cells into
        # {"k": null}, which the row contract refuses: a codec matter, not the SDK's.
        return
    # Without validation it is sent, and the worker dead-letters just that event.
    (record,) = RecordEncoder("churn", validate=False).encode(
        KIND_PREDICTION, "v1", events).records
    decoded = Decoder().decode(record.value)
    assert decoded.n_valid == 2 and len(decoded.rejected) == 1


def test_large_groups_are_split_by_size() -> None:
    enc = RecordEncoder("churn", max_record_bytes=4096)
    events = [pred(i, {"text": "x" * 300}) for i in range(40)]
    result = enc.encode(KIND_PREDICTION, "v1", events)
    assert result.failed == 0
    assert len(result.records) > 1
    assert all(len(r.value) <= 4096 for r in result.records)
    ids = [e for r in result.records for e in Decoder().decode(r.value).predictions[0].event_id]
    assert ids == [f"id-{i}" for i in range(40)]  # order kept
    # a single event larger than the limit fails alone
    huge = enc.encode(KIND_PREDICTION, "v1", [pred(0, {f"k{i}": "y" * 1000 for i in range(5)})])
    assert huge.failed == 1 and huge.records == []
    assert "RecordTooLarge" in huge.first_error


def test_feedback_record() -> None:
    events = [(KIND_FEEDBACK, None, "a", 1, 1_700_000_000_000),
              (KIND_FEEDBACK, None, "b", "churned", 1_700_000_000_001),
              (KIND_FEEDBACK, None, "c", 0.5, 1_700_000_000_002)]
    (record,) = RecordEncoder("churn").encode(KIND_FEEDBACK, None, events).records
    (batch,) = Decoder().decode(record.value).feedback
    assert batch.model == "churn"
    assert batch.event_id == ["a", "b", "c"]
    assert batch.label == [1, "churned", 0.5]
    assert batch.event_time_ms.tolist() == [1_700_000_000_000 + i for i in range(3)]


def test_feedback_bool_label_is_invalid() -> None:
    events = [(KIND_FEEDBACK, None, "a", True, 1_700_000_000_000)]
    assert RecordEncoder("churn").encode(KIND_FEEDBACK, None, events).failed == 1


def test_telemetry_records_are_single_events() -> None:
    fields = {"host": "h1", "model": "churn", "event_time_ms": 1_700_000_000_000,
              "cpu_percent": 12.5, "rss_bytes": 123, "memory_percent": 1.5}
    bad = {**fields, "cpu_percent": -1.0}
    result = RecordEncoder("churn").encode(
        KIND_TELEMETRY, None, [(KIND_TELEMETRY, None, fields), (KIND_TELEMETRY, None, bad),
                               (KIND_TELEMETRY, None, fields)])
    assert result.failed == 1
    assert [r.n_events for r in result.records] == [1, 1]
    event = msgspec.json.decode(result.records[0].value, type=m.TelemetryV1)
    assert event.host == "h1" and event.rss_bytes == 123
    assert len(Decoder().decode(result.records[0].value).telemetry) == 1


def test_encoder_rejects_tiny_record_limit() -> None:
    with pytest.raises(ValueError):
        RecordEncoder("m", max_record_bytes=10)
