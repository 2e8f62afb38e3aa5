"""The model-server SDK against the real broker: end to end, and through a broker outage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from streams.broker.admin import create_topics
from streams.broker.local import LocalBroker
from streams.config import Settings, load_settings
from streams.events.codec import Decoder
from streams.sdk import DriftlineClient
from tests.integration.conftest import WorkerProcess, free_port, metric_value
from tests.integration.test_ingest import wait_metric

pytestmark = pytest.mark.integration

N_FEATURES = 20


def features(i: int) -> dict[str, float | int | str | bool | None]:
    out: dict[str, float | int | str | bool | None] = {
        f"f{j:02d}": float(i % 97) + j / 10 for j in range(N_FEATURES - 4)
    }
    out.update(country=("fr", "de", "us")[i % 3], clicks=i % 13, new=i % 2 == 0,
               referrer=None if i % 5 else "ads")
    return out


def client_for(s: Settings, **kwargs: Any) -> DriftlineClient:
    return DriftlineClient(
        s.bootstrap, model="churn", model_version="v1",
        predictions_topic=s.topic("predictions"), feedback_topic=s.topic("feedback"),
        telemetry_topic=s.topic("telemetry"), registry=CollectorRegistry(), **kwargs,
    )


# -- 1. SDK -> Kafka -> worker ---------------------------------------------------------
N_PREDICTIONS = 2_000
N_FEEDBACK = 500


def test_sdk_events_reach_the_worker_exactly(settings: Settings, worker: WorkerProcess) -> None:
    client = client_for(settings)
    try:
        ids = [
            client.log_prediction(features(i), 0.01 * (i % 100), latency_ms=1.0 + i % 7,
                                  model_version="v1" if i % 2 else "v2",
                                  segment={"region": "eu" if i % 3 else "us"})
            for i in range(N_PREDICTIONS)
        ]
        assert len(set(ids)) == N_PREDICTIONS
        assert all(client.log_feedback(ids[i], i % 2) for i in range(N_FEEDBACK))
        reporter = client.start_telemetry(interval_s=3600, gpu_probe=False)
        assert reporter.report_once()
        assert client.flush(30) == 0
        st = client.stats()
        logged = N_PREDICTIONS + N_FEEDBACK + 1
        assert (st.accepted, st.delivered, st.dropped, st.failed, st.pending) == (
            logged, logged, 0, 0, 0)
    finally:
        client.close()

    for kind, want in (("prediction", N_PREDICTIONS), ("feedback", N_FEEDBACK), ("telemetry", 1)):
        assert wait_metric(worker, "driftline_events_in_total", want, kind=kind) == want, kind
    time.sleep(1.0)  # anything counted twice would show up by now
    text = worker.metrics_text()
    assert metric_value(text, "driftline_events_in_total", kind="prediction") == N_PREDICTIONS
    assert metric_value(text, "driftline_events_in_total", kind="feedback") == N_FEEDBACK
    assert metric_value(text, "driftline_events_in_total", kind="telemetry") == 1
    assert metric_value(text, "driftline_events_invalid_total") == 0


# -- 2. broker down, then back ------------------------------------------------------------
MAX_BUFFERED = 5_000
OVERFLOW = 1_234


@pytest.fixture()
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, so that stopping it disturbs no other test."""
    defaults = Settings()
    port = controller_port = free_port()
    while controller_port == port:  # two listeners on one port: the broker refuses to format
        controller_port = free_port()
    broker = LocalBroker(version=defaults.kafka_version, cache_dir=Path(defaults.kafka_cache_dir),
                         data_dir=tmp_path / "kafka", port=port, controller_port=controller_port)
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


def count_events(bootstrap: str, topic: str, timeout_s: float = 30) -> tuple[int, int]:
    """(records, events) in partition 0 of ``topic``, read from the start to the high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    decoder = Decoder()
    records = events = 0
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        last = -1
        deadline = time.monotonic() + timeout_s
        while last < high - 1 and time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    continue
                decoded = decoder.decode(msg.value())
                assert not decoded.rejected, decoded.rejected[0]
                records += 1
                events += decoded.n_valid
                offset = msg.offset()
                assert offset is not None
                last = offset
        assert last == high - 1, f"read up to offset {last}, high watermark {high}"
    finally:
        c.close()
    return records, events


def test_broker_outage_drops_the_overflow_and_delivers_the_rest(own_broker: LocalBroker) -> None:
    s = load_settings(env={}, bootstrap_servers=own_broker.bootstrap,
                      topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=1)
    create_topics(s)
    client = client_for(s, max_buffered_events=MAX_BUFFERED)
    try:
        assert own_broker.down()
        row = features(1)
        durations: list[float] = []
        clock = time.perf_counter
        for i in range(MAX_BUFFERED + OVERFLOW):
            t0 = clock()
            client.log_prediction(row, 0.5, latency_ms=2.0, request_id=f"r{i}")
            durations.append(clock() - t0)
        # Never blocks on the dead broker (librdkafka would wait for seconds per send); the
        # latency figures themselves are measured in loadtest/bench_sdk.py, not asserted here.
        assert sum(durations) < 10.0, f"log_prediction blocked: {max(durations) * 1e3:.1f} ms at worst"
        st = client.stats()
        assert (st.dropped, st.pending, st.delivered, st.failed) == (
            OVERFLOW, MAX_BUFFERED, 0, 0), st

        own_broker.up()  # same data dir: already formatted, topics kept
        assert client.flush(75) == 0, client.stats()
        st = client.stats()
        assert (st.accepted, st.delivered, st.failed, st.pending, st.dropped) == (
            MAX_BUFFERED, MAX_BUFFERED, 0, 0, OVERFLOW), st
        records, events = count_events(s.bootstrap, s.topic("predictions"))
        assert events == MAX_BUFFERED
        assert records == st.records_sent
    finally:
        client.close(timeout_s=1)
