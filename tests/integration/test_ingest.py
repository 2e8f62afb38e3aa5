"""SDK-less producers -> real Kafka -> worker: valid events routed, bad input dead-lettered."""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from streams.config import Settings
from tests.integration.conftest import WorkerProcess, consume_all, metric_value, producer

pytestmark = pytest.mark.integration


def prediction(i: int, **over: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "schema": "driftline.prediction/v1", "event_id": f"e{i}", "model": "fraud",
        "model_version": "v1", "event_time_ms": 1_700_000_000_000 + i, "latency_ms": 12.5,
        "status": "ok", "features": {"amount": 10.0 + i, "country": "fr", "new": False},
        "prediction": 0.8,
    }
    ev.update(over)
    return ev


def wait_metric(w: WorkerProcess, name: str, want: float, timeout_s: float = 60,
                **labels: str) -> float:
    deadline = time.monotonic() + timeout_s
    got = 0.0
    while time.monotonic() < deadline:
        got = metric_value(w.metrics_text(), name, **labels)
        if got >= want:
            return got
        time.sleep(0.3)
    return got


def test_foreign_producer_single_row_and_column_records_are_routed(
        settings: Settings, worker: WorkerProcess) -> None:
    p = producer(settings)
    topic = settings.topic("predictions")
    p.produce(topic, key=b"fraud", value=orjson.dumps(prediction(0)))
    p.produce(topic, key=b"fraud", value=orjson.dumps([prediction(i) for i in range(1, 11)]))
    cols = {"schema": "driftline.prediction-columns/v1", "model": "fraud", "model_version": "v2",
            "event_id": ["c1", "c2", "c3"], "event_time_ms": [1, 2, 3], "latency_ms": [1.0, 2.0, 3.0],
            "status": ["ok", "error", "ok"], "features": {"amount": [1.0, None, 3.5]}}
    p.produce(topic, key=b"fraud", value=orjson.dumps(cols))
    fb = {"schema": "driftline.feedback/v1", "event_id": "e1", "model": "fraud", "label": 1,
          "event_time_ms": 1_700_000_000_500}
    p.produce(settings.topic("feedback"), key=b"fraud", value=orjson.dumps(fb))
    assert p.flush(30) == 0
    assert wait_metric(worker, "driftline_events_in_total", 14, kind="prediction") == 14
    assert wait_metric(worker, "driftline_events_in_total", 1, kind="feedback") == 1
    assert metric_value(worker.metrics_text(), "driftline_events_invalid_total") == 0


def test_partly_bad_batch_keeps_good_events_and_dead_letters_the_bad_one(
        settings: Settings, worker: WorkerProcess) -> None:
    p = producer(settings)
    events = [prediction(i) for i in range(5)]
    events[2] = prediction(2, latency_ms="slow")
    p.produce(settings.topic("predictions"), key=b"fraud", value=orjson.dumps(events))
    assert p.flush(30) == 0
    assert wait_metric(worker, "driftline_events_in_total", 4, kind="prediction") == 4
    [dl] = consume_all(settings, settings.topic("deadletter"), 1)
    rec = orjson.loads(dl)
    assert rec["reason"] == "invalid_event"
    assert rec["batch_index"] == 2
    assert "latency_ms" in rec["detail"]
    assert orjson.loads(base64.b64decode(rec["original_b64"]))["latency_ms"] == "slow"
    assert rec["source_topic"] == settings.topic("predictions")
