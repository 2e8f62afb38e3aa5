"""An idempotent producer for faust.

faust-streaming enables ``enable_idempotence`` on its aiokafka producer only
inside transactions; Driftline's outputs (dead letters, metrics, alerts) must
not be duplicated by producer retries either, so every producer of the app
asks for idempotence with ``acks=all``.

Its flush also waits until the broker acknowledged every message sent so far:
faust commits consumer offsets right after a flush, and its own flush can
return with state writes still queued (see :meth:`IdempotentProducer.flush`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_PRE_FLUSH: weakref.WeakKeyDictionary[Any, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def on_before_flush(app: Any, hook: Callable[[], None]) -> None:
    """Run ``hook`` before every producer flush of ``app``.

    faust flushes the producer right before it commits consumer offsets, so a
    stage that buffers its state writes (coalescing many records into one
    write per cell) hands them over here and they reach Kafka before the
    offsets of the records they cover are committed.
    """
    _PRE_FLUSH.setdefault(app, []).append(hook)


def on_committed(app: Any, hook: Callable[[Mapping[str, int]], None]) -> None:
    """Call ``hook`` after each successful offset commit of ``app`` with ``{"topic:partition": offset}``.

    faust hands the committed offsets to its table manager (``tables.on_commit``)
    only once the broker accepted them; this wraps that call.
    """
    tables = app.tables
    inner = tables.on_commit

    def on_commit(offsets: Mapping[Any, int]) -> None:
        inner(offsets)
        hook({f"{tp.topic}:{tp.partition}": int(off) for tp, off in offsets.items()})

    tables.on_commit = on_commit


class Unacked:
    """The messages handed to faust's producer that the broker has not yet acknowledged.

    A message that failed (or was cancelled) makes every later :meth:`wait`
    raise: its state write is gone, so no offset may be committed past it any
    more; the worker has to restart and replay from the last commit.
    """

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[Any]] = set()
        self.failure: BaseException | None = None

    def add(self, fut: asyncio.Future[Any]) -> None:
        self._futures.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._futures.discard(fut)
        if self.failure is None:
            if fut.cancelled():
                self.failure = asyncio.CancelledError("a message was cancelled before the broker had it")
            elif fut.exception() is not None:
                self.failure = fut.exception()

    def __len__(self) -> int:
        return len(self._futures)

    async def wait(self) -> None:
        """Until every message added so far is acknowledged; raises if any message ever failed."""
        pending = list(self._futures)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.failure is not None:
            raise RuntimeError(f"a produced message was lost, offsets cannot be committed: {self.failure!r}")


class IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # faust stalls the stream (and logs "producer buffer full") past 100 pending sends; one
        # commit's coalesced state cells are routinely a few hundred, so allow one flush's worth.
        self.buffer.max_messages = 2000
        self._unacked = Unacked()

    def send_soon(self, fut: Any) -> None:
        self._unacked.add(fut)
        super().send_soon(fut)

    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}

    async def flush(self) -> None:
        for hook in _PRE_FLUSH.get(self.app, ()):
            hook()
        await super().flush()
        # faust's buffer flush returns after 0.1 s without a send (a busy event loop) and does not
        # count the message being handed to the client, so messages can still be in the buffer
        # here; the offsets faust commits next must not cover state that never reached Kafka.
        await self._unacked.wait()
