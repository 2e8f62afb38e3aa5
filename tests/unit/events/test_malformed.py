"""The malformed-input suite: every hostile record gets a reason, never an exception."""

from __future__ import annotations

import orjson
import pytest

from streams.events.codec import Decoder
from streams.events.reasons import Reason


def good(i: int = 0, **over: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "schema": "driftline.prediction/v1", "event_id": f"e{i}", "model": "fraud",
        "model_version": "v1", "event_time_ms": 1_700_000_000_000, "latency_ms": 3.0,
        "status": "ok", "features": {"x": 1.0},
    }
    ev.update(over)
    return ev


J = orjson.dumps
CASES: list[tuple[str, bytes, Reason]] = [
    ("empty record", b"", Reason.EMPTY),
    ("truncated json", J(good())[:-7], Reason.UNDECODABLE),
    ("non-utf8", b'{"schema": "\xff\xfe"}', Reason.UNDECODABLE),
    ("binary garbage", bytes(range(256)), Reason.UNDECODABLE),
    ("NaN literal", J(good())[:-1] + b', "prediction": NaN}', Reason.UNDECODABLE),
    ("Infinity literal", J(good()).replace(b"3.0", b"Infinity"), Reason.UNDECODABLE),
    ("overflowing number", J(good()).replace(b"3.0", b"1e400"), Reason.INVALID_EVENT),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, Reason.INVALID_EVENT),
    ("deep nesting in features", J(good())[:-2] + b', "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
     Reason.INVALID_EVENT),
    ("wrong type latency", J(good(latency_ms="3")), Reason.INVALID_EVENT),
    ("wrong type status", J(good(status=1)), Reason.INVALID_EVENT),
    ("bool as number", J(good(latency_ms=True)), Reason.INVALID_EVENT),
    ("negative latency", J(good(latency_ms=-1)), Reason.INVALID_EVENT),
    ("missing field", J({k: v for k, v in good().items() if k != "model"}), Reason.INVALID_EVENT),
    ("unknown field", J(good(colour="red")), Reason.INVALID_EVENT),
    ("huge string", J(good(request_id="x" * 1_000_000)), Reason.INVALID_EVENT),
    ("huge event id", J(good(event_id="e" * 129)), Reason.INVALID_EVENT),
    ("nested feature", J(good(features={"x": {"y": 1}})), Reason.INVALID_EVENT),
    ("bad model name", J(good(model="../etc/passwd")), Reason.INVALID_EVENT),
    ("unknown schema version", J(good(schema="driftline.prediction/v9")), Reason.UNKNOWN_SCHEMA),
    ("no schema", J({k: v for k, v in good().items() if k != "schema"}), Reason.INVALID_EVENT),
    ("scalar record", b"42", Reason.INVALID_EVENT),
    ("string record", b'"hello"', Reason.INVALID_EVENT),
    ("null record", b"null", Reason.INVALID_EVENT),
    ("empty array", b"[]", Reason.INVALID_BATCH),
    ("ragged columns", J({"schema": "driftline.prediction-columns/v1", "model": "m",
                          "model_version": "1", "event_id": ["a", "b"], "event_time_ms": [1],
                          "latency_ms": [1, 2], "status": ["ok", "ok"]}), Reason.INVALID_BATCH),
]


@pytest.mark.parametrize(("name", "data", "reason"), CASES, ids=[c[0] for c in CASES])
def test_hostile_record_is_rejected_with_reason(name: str, data: bytes, reason: Reason) -> None:
    out = Decoder().decode(data)
    assert out.n_valid == 0
    assert [r.reason for r in out.rejected] == [reason]
    assert out.rejected[0].original == data
    assert out.rejected[0].detail


def test_oversized_record_is_rejected_before_parsing() -> None:
    data = J([good(i) for i in range(200)])
    out = Decoder(max_record_bytes=1024).decode(data)
    assert [r.reason for r in out.rejected] == [Reason.OVERSIZED]
    assert out.rejected[0].original == data


def test_duplicate_event_ids_in_one_record_keep_the_first() -> None:
    out = Decoder().decode(J([good(1), good(2), good(1, latency_ms=9.0)]))
    assert out.predictions[0].event_id == ["e1", "e2"]
    assert out.predictions[0].latency_ms.tolist() == [3.0, 3.0]
    [dup] = out.rejected
    assert dup.reason is Reason.DUPLICATE_EVENT_ID and dup.batch_index == 2
    assert orjson.loads(dup.original)["latency_ms"] == 9.0


@pytest.mark.parametrize("bad_at", [0, 3, 7])
def test_one_bad_event_in_a_row_batch_does_not_sink_the_rest(bad_at: int) -> None:
    events = [good(i) for i in range(8)]
    events[bad_at] = good(bad_at, latency_ms="NaN")
    out = Decoder().decode(J(events))
    assert out.n_valid == 7
    assert [(r.reason, r.batch_index) for r in out.rejected] == [(Reason.INVALID_EVENT, bad_at)]
    assert orjson.loads(out.rejected[0].original) == events[bad_at]


def test_one_bad_event_in_a_column_batch_does_not_sink_the_rest() -> None:
    cols = {"schema": "driftline.prediction-columns/v1", "model": "m", "model_version": "1",
            "event_id": ["a", "b", "c"], "event_time_ms": [1, 2, 3], "latency_ms": [1, -2, 3],
            "status": ["ok", "ok", "error"], "features": {"f": [1, "x", None]}}
    out = Decoder().decode(J(cols))
    [batch] = out.predictions
    assert batch.event_id == ["a", "c"]
    assert batch.is_error.tolist() == [False, True]
    assert batch.features == {"f": [1.0, None]}
    [rej] = out.rejected
    assert (rej.reason, rej.batch_index) == (Reason.INVALID_EVENT, 1)
    assert orjson.loads(rej.original)["event_id"] == "b"


def test_mixed_kinds_in_one_row_batch_are_grouped() -> None:
    fb = {"schema": "driftline.feedback/v1", "event_id": "e1", "model": "fraud", "label": "yes",
          "event_time_ms": 5}
    tel = {"schema": "driftline.telemetry/v1", "host": "h1", "model": "fraud", "event_time_ms": 5,
           "cpu_percent": 50.0, "rss_bytes": 1000, "memory_percent": 1.5}
    out = Decoder().decode(J([good(1), good(2, model_version="v2"), fb, tel]))
    assert sorted((b.model_version, len(b)) for b in out.predictions) == [("v1", 1), ("v2", 1)]
    assert out.feedback[0].label == ["yes"]
    assert out.telemetry[0].host == "h1"
    assert not out.rejected


def test_decoder_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        Decoder(max_record_bytes=0)
