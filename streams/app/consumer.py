"""faust's aiokafka consumer, held to the ingest agent's offset order.

Four changes, all serving :class:`~streams.app.order.OffsetGate` (whose
docstring explains the faust and aiokafka behaviours they work around):

- ``seek_to_committed`` positions the gate at the committed offsets (the earliest
  ones where none is committed, or 0), then seeks the watched partitions there
  again: aiokafka leaves a partition with no committed offset wherever an earlier
  fetch moved it, and records fetched before the gate was positioned were dropped.
- a revoked partition is forgotten by the gate until it is positioned again;
- a watched partition is committed where the gate says the agent finished, in
  order. faust's acknowledged offsets are not used there: its commit lets a
  one-offset hole through, and it stalls for good once the gate gives up a real hole;
- ``getmany`` hands over only what the gate lets through while it seeks a watched
  partition back, and it keeps faust's read-offset filter off those partitions.
  The gate orders them itself. faust's filter drops a record below the highest
  offset read so far, and that is exactly what a seek back re-reads.

Two settings serve latency (:data:`FETCH_MAX_WAIT_MS`, :data:`FETCH_MIN_BYTES`).
faust hard-codes a 1,500 ms fetch wait. aiokafka keeps one fetch in flight per
broker, and once a partition's fetched records have waited for the agent longer
than its 100 ms prefetch backoff, it sends the next fetch without that partition.
When every partition left in that fetch is idle (the feedback and telemetry
topics, say), the broker holds it for the whole wait, while records pile up on the
busy partition, which cannot be fetched until it returns. With 8 models at 24k
events/s (a worker about 60 % busy) records reached the agent 1.0-1.8 s after they
were produced, and event-to-alert p50 was 1.6 s. A 100 ms wait alone brought p50
to 0.1 s but cost a third more CPU: many small fetches, each crossing between
faust's consumer thread and its event loop. Asking for 1 MiB per fetch as well
keeps the fetches few and large under load, and the wait bounds what that costs
in latency when traffic is light (README, Performance: "Event-to-alert latency").
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.app.order import OffsetGate, start_offsets

_GATES: weakref.WeakKeyDictionary[Any, OffsetGate] = weakref.WeakKeyDictionary()


def use_gate(app: Any, gate: OffsetGate) -> None:
    """Make ``app``'s consumer (:class:`GatedConsumer`) position and commit by ``gate``."""
    _GATES[app] = gate


#: The longest the broker holds a fetch that has less than :data:`FETCH_MIN_BYTES` to
#: return: the most a record waits at the broker for the worker to ask for it.
FETCH_MAX_WAIT_MS = 100
#: The broker answers a fetch as soon as it has this much (or the wait is over).
FETCH_MIN_BYTES = 1024 * 1024


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer


class GatedConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def gate(self) -> OffsetGate | None:
        return _GATES.get(self.app)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = dict(await super().seek_to_committed())
        gate = self.gate
        if gate is None:
            return committed
        watched = {(tp.topic, tp.partition): tp for tp in committed if gate.watches(tp.topic)}
        unset = [tp for tp in watched.values() if not committed[tp] or committed[tp] <= 0]
        earliest = await self.earliest_offsets(*unset) if unset else {}
        starts = start_offsets({part: committed[tp] for part, tp in watched.items()},
                               {(tp.topic, tp.partition): off for tp, off in earliest.items()})
        gate.restart(starts, time.monotonic())
        # Seek every watched partition again, now that the gate is positioned: aiokafka seeks
        # only where something is committed, and what was fetched since its seek reached the
        # agent while the partition was still early, and was dropped there.
        for part, tp in watched.items():
            committed[tp] = starts[part]
            await self.seek(tp, starts[part])
        return committed

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        try:
            await super().on_partitions_revoked(revoked)
        finally:
            # After the revocation's own commit (at the gate's offsets), not before it.
            gate = self.gate
            if gate is not None:
                gate.forget((tp.topic, tp.partition) for tp in revoked)

    def _filter_committable_offsets(self, tps: Iterable[Any]) -> dict[Any, int]:
        gate = self.gate
        if gate is None:
            return dict(super()._filter_committable_offsets(tps))
        tps = list(tps)
        out: dict[Any, int] = dict(super()._filter_committable_offsets(
            [tp for tp in tps if not gate.watches(tp.topic)]))
        for tp in tps:
            if gate.watches(tp.topic):
                offset = gate.committable(tp.topic, tp.partition)
                if offset is None:
                    continue
                if self._should_commit(tp, offset):
                    out[tp] = offset
                # faust's list of acknowledged offsets is not read for this partition: keep it short
                acked = self._acked.get(tp)
                if acked:
                    acked[:] = [o for o in acked if o >= offset]
                    self._acked_index[tp].intersection_update(acked)
        return out

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        gate = self.gate
        read_offset = self._read_offset
        async for tp, message in super().getmany(timeout):
            if gate is not None and gate.watches(tp.topic):
                if not gate.fetched(tp.topic, tp.partition, message.offset, time.monotonic()):
                    continue
                read_offset[tp] = None
            yield tp, message
