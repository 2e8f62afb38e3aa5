"""Attribution of a record's outcome to a model, for the invalid-input monitor."""

from __future__ import annotations

import orjson
import pytest

from streams.app.detection_stage import input_counts, model_of
from streams.events.codec import Decoder


def rows(n: int, bad: int = 0, model: str = "fraud") -> bytes:
    good = [
        {"schema": "driftline.prediction/v1", "event_id": f"e{i}", "model": model, "model_version": "v1",
         "event_time_ms": 1_800_000_000_000 + i, "latency_ms": 3.0, "status": "ok", "prediction": 0.5,
         "features": {}}
        for i in range(n)
    ]
    return orjson.dumps(good + [{"schema": "driftline.prediction/v1", "event_id": "x"}] * bad)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (rows(5), (5, 1, 0, 0)),
        (rows(5, bad=2), (5, 1, 2, 0)),
        (b"\xff not json", (0, 0, 0, 1)),
        (b"", (0, 0, 0, 1)),
    ],
)
def test_counts(value: bytes, want: tuple[int, int, int, int]) -> None:
    assert input_counts(Decoder(1 << 20).decode(value)) == want


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [
        (b"fraud", b"garbage", "fraud"),  # the SDK keys by model: garbage is still charged to it
        (None, rows(1, model="churn"), "churn"),  # no key: the first batch's model
        (b"\xff\xfe", rows(1, model="churn"), "churn"),  # a key that is no model name
        (b"has space", b"garbage", None),  # nothing to charge it to
        (None, b"garbage", None),
    ],
)
def test_model_of(key: bytes | None, value: bytes, want: str | None) -> None:
    assert model_of(key, Decoder(1 << 20).decode(value)) == want
