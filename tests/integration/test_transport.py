"""The worker's producer against the real broker: a flush covers every message sent before it.

faust commits consumer offsets right after a producer flush; state writes
still queued at that moment would be lost by a ``kill -9`` after the commit.
faust's own flush gives up after 0.1 s without a send, so a send slowed to
0.3 s (a busy event loop, a broker that is slow to answer) is exactly the case.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer

from streams.app.transport import IdempotentProducer
from streams.config import Settings

pytestmark = pytest.mark.integration


async def _send_then_flush(s: Settings, values: list[bytes]) -> list[Any]:
    app = faust.App(f"transport-{uuid.uuid4().hex[:8]}", broker=f"kafka://{s.bootstrap}",
                    topic_allow_declare=False, producer_acks=-1)
    app.transport.Producer = IdempotentProducer  # type: ignore[misc]
    producer = app.producer
    slow_send = producer.buffer._send_pending

    async def send_pending(fut: Any) -> None:
        await asyncio.sleep(0.3)
        await slow_send(fut)

    producer.buffer._send_pending = send_pending
    await producer.start()
    try:
        topic = app.topic(s.topic("metrics"), key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
        futures = [topic.send_soon(key=b"k", value=v) for v in values]
        await producer.flush()
        return [f.done() and f.exception() is None for f in futures]
    finally:
        await producer.stop()


def test_flush_returns_only_once_the_broker_has_every_message_sent_before_it(settings: Settings) -> None:
    values = [f"cell-{i}".encode() for i in range(5)]
    acked = asyncio.run(_send_then_flush(settings, values))
    assert acked == [True] * len(values)
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([settings.topic("metrics")])
    try:
        got = [m.value() for m in c.consume(len(values), timeout=20) if m.error() is None]
    finally:
        c.close()
    assert sorted(got) == sorted(values)
