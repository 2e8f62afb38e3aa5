"""The worker's Kafka consumer is built with Driftline's fetch settings, not faust's.

faust hard-codes ``fetch_max_wait_ms=1500``; the override lives in a subclass of
faust's consumer thread, so a faust upgrade that renames what it overrides would
silently bring the 1.5 s stalls back (see :mod:`streams.app.consumer`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.app import create_app
from streams.app.consumer import FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES, GatedConsumer
from streams.config import load_settings


def test_the_worker_consumer_asks_for_short_fetch_waits_and_large_fetches(tmp_path: Path) -> None:
    s = load_settings(env={}, bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path / "w"))
    dl = create_app(s)  # never started: no broker needed

    async def build() -> object:
        consumer = dl.app.consumer
        assert isinstance(consumer, GatedConsumer)
        return consumer._thread._create_worker_consumer(dl.app.transport)

    aio = asyncio.run(build())
    assert (aio._fetch_max_wait_ms, aio._fetch_min_bytes) == (FETCH_MAX_WAIT_MS, FETCH_MIN_BYTES)  # type: ignore[attr-defined]
    assert FETCH_MAX_WAIT_MS < 1500
