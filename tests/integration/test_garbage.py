"""10,000 garbage records -> 10,000 dead letters, and the worker keeps processing good events."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.config import Settings
from tests.integration.conftest import WorkerProcess, consume_all, metric_value, producer
from tests.integration.test_ingest import prediction, wait_metric

pytestmark = pytest.mark.integration

N_GARBAGE = 10_000


def garbage(rng: random.Random, i: int) -> bytes:
    kind = i % 6
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 1:
        return orjson.dumps(prediction(i))[: rng.randrange(1, 40)]
    if kind == 2:
        return orjson.dumps(prediction(i, latency_ms="x"))
    if kind == 3:
        return orjson.dumps(prediction(i, schema="driftline.prediction/v99"))
    if kind == 4:
        return b""
    return b"[" * 3000 + b"]" * 3000


def test_garbage_flood_is_dead_lettered_one_for_one(settings: Settings, worker: WorkerProcess) -> None:
    rng = random.Random(1)
    p = producer(settings)
    topic = settings.topic("predictions")
    for i in range(N_GARBAGE):
        p.produce(topic, key=b"g", value=garbage(rng, i))
        if i % 1000 == 0:
            p.produce(topic, key=b"fraud", value=orjson.dumps(prediction(i)))
            p.poll(0)
    assert p.flush(60) == 0
    dead = consume_all(settings, settings.topic("deadletter"), N_GARBAGE, timeout_s=120)
    assert len(dead) == N_GARBAGE
    reasons = {orjson.loads(d)["reason"] for d in dead}
    assert reasons == {"undecodable", "invalid_event", "unknown_schema", "empty"}
    assert wait_metric(worker, "driftline_events_in_total", 10, kind="prediction") == 10
    # still alive and still processing good input after the flood
    p.produce(topic, key=b"fraud", value=orjson.dumps([prediction(100_000 + i) for i in range(50)]))
    assert p.flush(30) == 0
    assert wait_metric(worker, "driftline_events_in_total", 60, kind="prediction") == 60
    assert worker.proc.poll() is None
    text = worker.metrics_text()
    assert metric_value(text, "driftline_deadletter_records_total") == N_GARBAGE
