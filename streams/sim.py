"""Simulated model servers for the demo and load tests, instrumented with the SDK.

Each simulated model has numeric and categorical features, answers with a
probability, sends the true label for about half its predictions a little
later, and reports telemetry. After ``drift_after_s`` seconds, ``model-0``
drifts: its ``amount`` feature shifts up, its country mix changes and its
answers get worse (the labels stop following the score), so the demo shows
data drift, prediction drift and concept drift signals. ``garbage_every_s`` adds bursts of malformed
records from a plain Kafka producer, to show the dead-letter path.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from confluent_kafka import Producer

from streams.config import Settings

COUNTRIES = ("fr", "de", "us", "jp")
DRIFTED_COUNTRIES = ("us", "us", "us", "jp")
GARBAGE: tuple[bytes, ...] = (
    b'{"schema": "driftline.prediction/v1", "event_id": "x", "model": "fraud"',  # truncated
    b'{"schema": "driftline.prediction/v1", "event_id": "x", "model": "fraud", '
    b'"model_version": "v1", "event_time_ms": 1, "latency_ms": "fast", "status": "ok"}',
    b'{"schema": "driftline.prediction/v7", "event_id": "x"}',
    b"\xff\xfe not json",
    b"",
)


def _garbage_producer(settings: Settings) -> Producer:
    return Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True,
                     "acks": "all"})


def run_simulation(settings: Settings, models: int = 3, rate_per_s: int = 2000,
                   duration_s: float = 60.0, garbage_every_s: float = 0.0,
                   seed: int = 7, drift_after_s: float = 90.0) -> dict[str, Any]:
    """Send traffic until ``duration_s`` passes (0: forever); return SDK statistics."""
    from streams.sdk import DriftlineClient

    rng = random.Random(seed)
    names = [f"model-{i}" for i in range(models)]
    clients = [
        DriftlineClient(settings.bootstrap, model=n, model_version="v1",
                        predictions_topic=settings.topic("predictions"),
                        feedback_topic=settings.topic("feedback"),
                        telemetry_topic=settings.topic("telemetry"))
        for n in names
    ]
    for c in clients:
        c.start_telemetry(interval_s=2.0)
    garbage = _garbage_producer(settings) if garbage_every_s > 0 else None
    pending_labels: deque[tuple[float, int, str, int]] = deque()
    tick_s = 0.01
    start = next_garbage = time.monotonic()
    sent = 0
    try:
        while duration_s <= 0 or time.monotonic() - start < duration_s:
            now = time.monotonic()
            due = int((now - start) * rate_per_s) - sent
            for _ in range(max(due, 0)):
                i = rng.randrange(models)
                drifted = i == 0 and drift_after_s > 0 and now - start >= drift_after_s
                x = rng.gauss(0.0, 1.0)
                features: dict[str, float | int | str | bool | None] = {
                    "amount": abs(rng.gauss(80 if drifted else 50, 20)), "age": rng.randint(18, 90),
                            "score": x,
                            "country": rng.choice(DRIFTED_COUNTRIES if drifted else COUNTRIES),
                            "is_new": rng.random() < 0.2, "referrer": None}
                p = 1 / (1 + 2.718281828 ** (-2 * x))
                status = "error" if rng.random() < 0.01 else "ok"
                eid = clients[i].log_prediction(features, {"yes": p, "no": 1 - p},
                                                latency_ms=rng.lognormvariate(2.5, 0.4),
                                                status=status)
                if rng.random() < 0.5:
                    label = int(rng.random() < (0.5 if drifted else p))
                    pending_labels.append((now + rng.uniform(0.5, 3.0), i, eid, label))
                sent += 1
            while pending_labels and pending_labels[0][0] <= now:
                _, i, eid, label = pending_labels.popleft()
                clients[i].log_feedback(eid, "yes" if label else "no")
            if garbage is not None and now >= next_garbage:
                for value in GARBAGE:
                    garbage.produce(settings.topic("predictions"), value=value, key=b"garbage")
                garbage.poll(0)
                next_garbage = now + garbage_every_s
            time.sleep(tick_s)
    except KeyboardInterrupt:
        pass
    finally:
        if garbage is not None:
            garbage.flush(10)
        for c in clients:
            c.close()
    return {"predictions_sent": sent,
            "clients": {n: asdict(c.stats()) for n, c in zip(names, clients, strict=True)}}
