"""DriftlineClient end to end against a producer double (no broker)."""

from __future__ import annotations

import gc
import math
import os
import re
import threading
import time
import uuid
import weakref
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import streams.sdk as sdk
from streams.events import models as m
from streams.events.codec import Decoder
from streams.sdk import DriftlineClient, SdkStats
from streams.sdk.client import _close_at_exit

from . import FakeProducer, make_client


def decode_all(producer: FakeProducer) -> dict[str, Any]:
    """Decode every produced record; assert the worker accepts all of it."""
    out: dict[str, Any] = {"predictions": [], "feedback": [], "telemetry": []}
    decoder = Decoder()
    for rec in producer.records:
        decoded = decoder.decode(rec.value)
        assert decoded.rejected == [], decoded.rejected
        out["predictions"] += decoded.predictions
        out["feedback"] += decoded.feedback
        out["telemetry"] += decoded.telemetry
    return out


def assert_invariant(s: SdkStats) -> None:
    assert s.accepted == s.delivered + s.failed + s.pending, s


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


# -- round trip ----------------------------------------------------------------
def test_predictions_and_feedback_reach_kafka_as_valid_column_batches() -> None:
    producer = FakeProducer()
    with make_client(producer, batch_events=100) as client:
        ids = [
            client.log_prediction(
                {"age": 30 + i, "plan": "pro" if i % 2 else "free", "score": i / 10, "vip": i == 3,
                 "missing": None},
                {"yes": 0.8, "no": 0.2},
                latency_ms=1.5,
                segment={"country": "de"},
                request_id=f"req-{i}",
                event_time_ms=1_700_000_000_000 + i,
            )
            for i in range(250)
        ]
        other = client.log_prediction({"age": 1}, 0.5, latency_ms=2, model_version="v4",
                                      status="error")
        assert client.log_feedback(ids[0], 1)
        assert client.log_feedback(ids[1], "churned", event_time_ms=1_700_000_000_999)
        assert client.flush(5) == 0
        stats = client.stats()
    assert stats == SdkStats(accepted=253, dropped=0, delivered=253, failed=0, pending=0,
                             records_sent=len(producer.records))
    assert {r.key for r in producer.records} == {b"churn"}
    topics = {r.topic for r in producer.records}
    assert topics == {"driftline.predictions", "driftline.feedback"}
    got = decode_all(producer)
    v3 = [b for b in got["predictions"] if b.model_version == "v3"]
    v4 = [b for b in got["predictions"] if b.model_version == "v4"]
    assert sum(len(b) for b in v3) == 250 and max(len(b) for b in v3) <= 100
    assert [e for b in v3 for e in b.event_id] == ids  # order kept
    first = v3[0]
    assert first.features["age"][:3] == [30, 31, 32]
    assert first.features["plan"][:2] == ["free", "pro"]
    assert first.features["vip"][3] is True
    assert first.features["missing"][0] is None
    assert first.prediction is not None and first.prediction[0] == {"yes": 0.8, "no": 0.2}
    assert first.segment == {"country": ["de"] * len(first)}
    assert first.request_id is not None and first.request_id[:2] == ["req-0", "req-1"]
    assert first.event_time_ms[:2].tolist() == [1_700_000_000_000, 1_700_000_000_001]
    assert v4[0].event_id == [other] and v4[0].is_error.tolist() == [True]
    (fb,) = got["feedback"]
    assert fb.event_id == ids[:2] and fb.label == [1, "churned"]
    assert fb.event_time_ms[1] == 1_700_000_000_999


def test_event_ids_are_unique_uuid4_hex() -> None:
    with make_client() as client:
        ids = {client.log_prediction({}, latency_ms=1) for _ in range(2000)}
        assert client.log_prediction({}, latency_ms=1, event_id="mine") == "mine"
    assert len(ids) == 2000
    for event_id in list(ids)[:50]:
        assert re.fullmatch(r"[0-9a-f]{32}", event_id)
        parsed = uuid.UUID(hex=event_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_default_times_come_from_clock() -> None:
    producer = FakeProducer()
    with make_client(producer, clock_ms=lambda: 1_234_567) as client:
        client.log_prediction({"a": 1}, latency_ms=1)
        client.log_feedback("x", 0)
        client.flush(5)
    got = decode_all(producer)
    assert got["predictions"][0].event_time_ms.tolist() == [1_234_567]
    assert got["feedback"][0].event_time_ms.tolist() == [1_234_567]


def test_features_are_snapshotted() -> None:
    producer = FakeProducer()
    with make_client(producer, linger_ms=10_000) as client:
        features = {"a": 1.0}
        client.log_prediction(features, latency_ms=1)
        features["a"] = 2.0  # the server reuses its dict
        features["b"] = 3.0
        client.flush(5)
    (batch,) = decode_all(producer)["predictions"]
    assert batch.features == {"a": [1.0]}


def test_batch_events_wakes_the_thread_before_linger() -> None:
    producer = FakeProducer()
    with make_client(producer, batch_events=10, linger_ms=60_000) as client:
        for i in range(10):
            client.log_prediction({"i": i}, latency_ms=1)
        wait_for(lambda: client.stats().delivered == 10)


# -- the bound, accounting -------------------------------------------------------
def test_bound_is_exact_under_concurrent_threads() -> None:
    bound, n_threads, per_thread = 5_000, 8, 2_000
    producer = FakeProducer(deliver=False)  # nothing is ever acknowledged
    client = make_client(producer, max_buffered_events=bound, batch_events=500)
    barrier = threading.Barrier(n_threads)
    snapshots: list[SdkStats] = []
    errors: list[BaseException] = []

    def serve() -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                client.log_prediction({"x": float(i), "t": "a"}, i, latency_ms=0.5)
                if i % 500 == 0:
                    snapshots.append(client.stats())
        except BaseException as exc:  # pragma: no cover - the promise under test
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    def produced() -> int:
        return sum(len(orjson.loads(r.value)["event_id"]) for r in list(producer.records))

    wait_for(lambda: produced() == bound)  # the thread encoded and produced everything
    s = client.stats()
    assert s.accepted == bound
    assert s.dropped == n_threads * per_thread - bound
    assert s.pending == bound and s.delivered == 0 and s.failed == 0
    for snap in snapshots:
        assert_invariant(snap)
        assert snap.pending <= bound
    assert client.flush(0.05) == bound  # nothing will come: flush gives up with all pending
    client.close(timeout_s=0.1)
    s = client.stats()
    assert (s.failed, s.pending, s.accepted) == (bound, 0, bound)  # books settled at close


def test_invariant_holds_with_delivery_failures_under_concurrency() -> None:
    producer = FakeProducer(fail_every=3)
    client = make_client(producer, batch_events=50, max_buffered_events=1_000)
    stop = threading.Event()
    bad: list[SdkStats] = []

    def watch() -> None:
        while not stop.is_set():
            s = client.stats()
            if s.accepted != s.delivered + s.failed + s.pending:
                bad.append(s)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def serve(k: int) -> None:
        for i in range(3_000):
            client.log_prediction({"k": k, "i": i}, latency_ms=1.0)
            if i % 7 == 0:
                client.log_feedback(f"e{k}-{i}", i % 2)

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(10) == 0
    stop.set()
    watcher.join()
    assert bad == []
    s = client.stats()
    assert_invariant(s)
    assert s.accepted + s.dropped == 4 * (3_000 + 429)
    # failed equals exactly the events of every third record
    counts = [len(orjson.loads(r.value)["event_id"]) for r in producer.records]
    assert s.failed == sum(n for i, n in enumerate(counts, 1) if i % 3 == 0)
    assert s.delivered == sum(counts) - s.failed
    assert s.records_sent == len(producer.records)
    client.close()


def test_buffer_error_keeps_records_and_retries() -> None:
    producer = FakeProducer(buffer_errors=5)
    with make_client(producer, batch_events=10) as client:
        for i in range(95):
            client.log_prediction({"i": i}, latency_ms=1)
        assert client.flush(5) == 0
        s = client.stats()
    assert producer.buffer_errors_raised == 5
    assert (s.delivered, s.failed, s.dropped) == (95, 0, 0)
    ids = [e for b in decode_all(producer)["predictions"] for e in b.event_id]
    assert len(ids) == len(set(ids)) == 95


def test_produce_exception_counts_failed() -> None:
    producer = FakeProducer(produce_error=ValueError("Message size too large"))
    with make_client(producer) as client:
        for i in range(12):
            client.log_prediction({"i": i}, latency_ms=1)
        assert client.flush(5) == 0
        s = client.stats()
    assert (s.accepted, s.failed, s.delivered, s.records_sent) == (12, 12, 0, 0)


# -- never raise -------------------------------------------------------------------
class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


GARBAGE: list[dict[str, Any]] = [
    {"features": None},
    {"features": 42},
    {"features": "abc"},
    {"features": [("a", 1)]},  # becomes a dict: valid
    {"features": {"a": object()}},
    {"features": {1: 2.0}},
    {"features": {"a": Unprintable()}},
    {"features": {"a": math.inf}},  # JSON null: valid
    {"features": {"a": 10**30}},
    {"features": {"a": [1, 2]}},
    {"features": {"k" * 200: 1}},
    {"prediction": object()},
    {"prediction": {"a": 2.0}},  # not a probability
    {"latency_ms": "fast"},
    {"latency_ms": None},
    {"status": 3},
    {"event_id": 123},
    {"event_id": "x" * 500},
    {"event_time_ms": "now"},
    {"event_time_ms": -5},
    {"segment": 5},
    {"segment": {"k": object()}},
    {"request_id": object()},
    {"model_version": []},
    {"model_version": 7},
    {"model_version": "v" * 100},
]


def test_log_prediction_never_raises_and_garbage_never_stops_the_thread() -> None:
    producer = FakeProducer()
    client = make_client(producer, batch_events=5)
    good = 0
    for i, kw in enumerate(GARBAGE):
        args = {"features": {"ok": 1.0}, "prediction": 0.5, "latency_ms": 1.0, **kw}
        features = args.pop("features")
        prediction = args.pop("prediction")
        event_id = client.log_prediction(features, prediction, **args)
        assert isinstance(event_id, str)
        # interleave a good event after every bad one: it must still be delivered
        client.log_prediction({"ok": float(i)}, 0.5, latency_ms=1.0, event_id=f"good-{i}")
        good += 1
    assert client.log_feedback(Unprintable(), object())  # type: ignore[arg-type]
    assert client.flush(5) == 0
    s = client.stats()
    assert_invariant(s)
    assert s.dropped == 0 and s.pending == 0
    delivered_ids = [e for b in decode_all(producer)["predictions"] for e in b.event_id]
    assert {f"good-{i}" for i in range(good)} <= set(delivered_ids)
    # Four "garbage" inputs are valid after all: features None (no features),
    # [("a", 1)] (dict() makes it a mapping), inf (JSON null, a missing value) and
    # model_version [] (falsy: the client's version). Every other one, and the
    # feedback with an unencodable id, counts failed.
    assert s.delivered == good + 4
    assert s.failed == len(GARBAGE) - 4 + 1
    assert client._thread is not None and client._thread.is_alive()
    client.close()


def test_raising_clock_counts_dropped_not_raised() -> None:
    def clock() -> int:
        raise OSError("clock broke")

    with make_client(clock_ms=clock) as client:
        assert isinstance(client.log_prediction({"a": 1}, latency_ms=1), str)
        assert client.log_feedback("x", 1) is False
        s = client.stats()
    assert (s.accepted, s.dropped) == (0, 2)


# -- flush, close, lifetime ----------------------------------------------------------
def test_close_is_idempotent_and_drops_later_events() -> None:
    producer = FakeProducer()
    client = make_client(producer)
    client.log_prediction({"a": 1}, latency_ms=1)
    client.close()
    client.close()
    assert client.closed
    assert client.stats().delivered == 1
    client.log_prediction({"a": 1}, latency_ms=1)
    assert client.log_feedback("x", 1) is False
    s = client.stats()
    assert (s.accepted, s.dropped, s.pending) == (1, 2, 0)
    assert client.flush(1) == 0


def test_close_timeout_abandons_pending_as_failed() -> None:
    client = make_client(FakeProducer(deliver=False))
    for i in range(30):
        client.log_prediction({"a": i}, latency_ms=1)
    t0 = time.monotonic()
    client.close(timeout_s=0.2)
    assert time.monotonic() - t0 < 3
    s = client.stats()
    assert (s.accepted, s.failed, s.pending, s.delivered) == (30, 30, 0, 0)
    assert client._thread is not None and not client._thread.is_alive()


def test_unclosed_client_is_collected_and_its_thread_ends() -> None:
    client = make_client(FakeProducer())
    client.log_prediction({"a": 1}, latency_ms=1)
    client.flush(5)
    thread = client._thread
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None  # neither the thread nor the atexit hook keeps it alive
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()


def test_atexit_hook_closes_and_tolerates_dead_refs() -> None:
    client = make_client(FakeProducer())
    client.log_prediction({"a": 1}, latency_ms=1)
    _close_at_exit(weakref.ref(client))
    assert client.closed and client.stats().delivered == 1
    _close_at_exit(lambda: None)  # type: ignore[arg-type]


def test_fork_child_starts_afresh() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    producer = FakeProducer()
    client = make_client(producer)
    client.log_prediction({"a": 1}, latency_ms=1)
    client.flush(5)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        try:
            before = client.stats()
            producer.records.clear()
            client.log_prediction({"a": 2}, latency_ms=1)
            left = client.flush(5)
            after = client.stats()
            ok = (before.accepted == 0 and left == 0 and after.delivered == 1
                  and len(producer.records) == 1)
            os.write(write_end, b"ok" if ok else repr((before, left, after)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    message = os.read(read_end, 4096)
    os.close(read_end)
    assert message == b"ok"
    assert client.stats().accepted == 1  # the parent is untouched
    client.close()


# -- configuration -------------------------------------------------------------------
def test_producer_config_defaults_and_overrides() -> None:
    producer = FakeProducer()
    with make_client(producer, producer_config={"linger.ms": 5, "security.protocol": "SSL"},
                     client_id="svc-1") as client:
        assert client.client_id == "svc-1"
    (config,) = producer.configs
    assert config["bootstrap.servers"] == "fake:9092"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["compression.type"] == "lz4"
    assert config["message.timeout.ms"] == 300_000
    assert config["batch.size"] == 1_000_000
    assert config["linger.ms"] == 5 and config["security.protocol"] == "SSL"
    assert config["client.id"] == "svc-1"


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PREFIX", "staging.dl.")
    producer = FakeProducer()
    with DriftlineClient.from_env(model="churn", model_version="v3",
                                  producer_factory=producer.factory,
                                  registry=CollectorRegistry()) as client:
        client.log_prediction({"a": 1}, latency_ms=1)
        client.log_feedback("x", 1)
        client.log_telemetry({"host": "h", "cpu_percent": 1.0, "rss_bytes": 1,
                              "memory_percent": 1.0})
        client.flush(5)
    assert producer.configs[0]["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"
    assert {r.topic for r in producer.records} == {
        "staging.dl.predictions", "staging.dl.feedback", "staging.dl.telemetry"}


def test_from_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLINE_BOOTSTRAP", raising=False)
    monkeypatch.delenv("DRIFTLINE_TOPIC_PREFIX", raising=False)
    producer = FakeProducer()
    with DriftlineClient.from_env(model="churn", model_version="v3",
                                  producer_factory=producer.factory,
                                  registry=CollectorRegistry()) as client:
        assert client.topics[0] == "driftline.predictions"
    assert producer.configs[0]["bootstrap.servers"] == "127.0.0.1:9092"


@pytest.mark.parametrize("kw", [
    {"model": "bad name"}, {"model": ""}, {"model_version": ""}, {"model_version": "v" * 65},
    {"batch_events": 0}, {"linger_ms": 0}, {"max_buffered_events": 0},
    {"predictions_topic": ""},
])
def test_invalid_arguments_raise_at_construction(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_client(**kw)


def test_real_confluent_producer_with_unreachable_broker() -> None:
    client = DriftlineClient("127.0.0.1:1", model="churn", model_version="v3",
                             registry=CollectorRegistry(), linger_ms=5,
                             producer_config={"log_level": 0})
    for i in range(100):
        client.log_prediction({"a": i}, latency_ms=1)
    assert client.flush(0.3) == 100  # nothing can be delivered
    client.close(timeout_s=0.2)
    s = client.stats()
    assert (s.accepted, s.failed, s.pending) == (100, 100, 0)
    assert s.records_sent >= 1


# -- metrics ---------------------------------------------------------------------------
def test_prometheus_metrics_per_client() -> None:
    registry = CollectorRegistry()
    a = make_client(FakeProducer(), registry=registry, client_id="a")
    b = make_client(FakeProducer(deliver=False), registry=registry, client_id="b",
                    model="fraud", max_buffered_events=2)
    for _ in range(3):
        a.log_prediction({"x": 1}, latency_ms=1)
        b.log_prediction({"x": 1}, latency_ms=1)
    a.flush(5)
    text = generate_latest(registry).decode()
    assert "# TYPE driftline_sdk_events_accepted_total counter" in text
    assert "# HELP driftline_sdk_events_dropped_total" in text
    assert "# TYPE driftline_sdk_events_pending gauge" in text
    a_labels = '{client_id="a",model="churn",model_version="v3"}'
    b_labels = '{client_id="b",model="fraud",model_version="v3"}'
    assert f"driftline_sdk_events_delivered_total{a_labels} 3.0" in text
    assert f"driftline_sdk_events_dropped_total{b_labels} 1.0" in text
    assert f"driftline_sdk_events_pending{b_labels} 2.0" in text
    a.close()
    b.close(timeout_s=0)


def test_default_registry_tolerates_many_clients() -> None:
    producer = FakeProducer()
    clients = [DriftlineClient("x", model="churn", model_version="v3",
                               producer_factory=producer.factory) for _ in range(3)]
    for c in clients:
        c.close()


# -- module level ---------------------------------------------------------------------
def test_connect_and_module_level_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk.client, "_default_client", None)
    assert isinstance(sdk.log_prediction({"a": 1}, latency_ms=1), str)  # before connect
    assert sdk.log_feedback("x", 1) is False
    producer = FakeProducer()
    client = sdk.connect("churn", "v3", "fake:1", producer_factory=producer.factory,
                         registry=CollectorRegistry(), linger_ms=5)
    assert sdk.get_client() is client
    event_id = sdk.log_prediction({"a": 1}, 0.5, latency_ms=2.0)
    assert sdk.log_feedback(event_id, 1)
    assert sdk.log_prediction({"a": 1}, wrong_kwarg=1) == ""
    client.flush(5)
    s = client.stats()
    assert (s.delivered, s.dropped) == (2, 1)
    client.close()


def test_telemetry_through_client_uses_contract() -> None:
    producer = FakeProducer()
    with make_client(producer) as client:
        assert client.log_telemetry({"host": "h1", "cpu_percent": 5.0, "rss_bytes": 10,
                                     "memory_percent": 0.5})
        client.flush(5)
    (event,) = decode_all(producer)["telemetry"]
    assert isinstance(event, m.TelemetryV1)
    assert (event.model, event.model_version, event.host) == ("churn", "v3", "h1")
    assert event.event_time_ms > 1_600_000_000_000
