"""Using the client from asyncio code: log_* are plain sync calls that never block."""

from __future__ import annotations

import asyncio
import inspect
import time

from streams.sdk import DriftlineClient

from . import FakeProducer, make_client


def test_log_methods_are_plain_functions() -> None:
    for name in ("log_prediction", "log_feedback", "log_telemetry", "flush", "close"):
        assert not inspect.iscoroutinefunction(getattr(DriftlineClient, name))
    assert inspect.iscoroutinefunction(DriftlineClient.aflush)
    assert inspect.iscoroutinefunction(DriftlineClient.aclose)


def test_many_tasks_log_without_blocking_the_loop() -> None:
    producer = FakeProducer(deliver=False)  # a dead broker must not stall the loop

    async def main() -> tuple[int, float, int]:
        client = make_client(producer, max_buffered_events=1_000)
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async def handler(i: int) -> str:
            await asyncio.sleep(0)
            event_id = client.log_prediction({"i": i}, 0.5, latency_ms=1.0)
            client.log_feedback(event_id, i % 2)
            return event_id

        tick = asyncio.create_task(ticker())
        ids = await asyncio.gather(*(handler(i) for i in range(2_000)))
        stop.set()
        await tick
        left = await client.aflush(0.05)  # waits in a thread, not on the loop
        await client.aclose(timeout_s=0)
        return len(set(ids)), max(gaps), left

    n_ids, worst_gap, left = asyncio.run(main())
    assert n_ids == 2_000
    assert left == 1_000  # bound reached, nothing acknowledged
    s_dropped = 4_000 - 1_000
    assert s_dropped == 3_000
    # Not a benchmark: only that no call parked the loop on I/O (a second is absurd).
    assert worst_gap < 1.0


def test_async_context_manager_delivers() -> None:
    producer = FakeProducer()

    async def main() -> int:
        async with make_client(producer) as client:
            for i in range(10):
                client.log_prediction({"i": i}, latency_ms=1.0)
            assert await client.aflush(5) == 0
            return client.stats().delivered

    assert asyncio.run(main()) == 10
