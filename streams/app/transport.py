"""An idempotent producer for faust.

faust-streaming enables ``enable_idempotence`` on its aiokafka producer only
inside transactions; Driftline's outputs (dead letters, metrics, alerts) must
not be duplicated by producer retries either, so every producer of the app
asks for idempotence with ``acks=all``.
"""

from __future__ import annotations

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


class IdempotentProducer(faust_aiokafka.Producer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # faust stalls the stream (and logs "producer buffer full") past 100 pending sends; one
        # commit's coalesced state cells are routinely a few hundred, so allow one flush's worth.
        self.buffer.max_messages = 2000

    def _settings_extra(self) -> Mapping[str, Any]:
        return {"acks": "all", "enable_idempotence": True}

    async def flush(self) -> None:
        for hook in _PRE_FLUSH.get(self.app, ()):
            hook()
        await super().flush()
