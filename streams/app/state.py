"""The metrics engine's cells in a faust table (memory store, changelog in Kafka).

Writes name their partition explicitly: the engine's cells belong to the
source partition they were computed from, and a timer (which has no current
event for faust to take the partition from) closes windows too. faust
restores the table from its changelog before the agent sees a record, so an
engine restored from :meth:`FaustTableStore.items` holds everything written
before a crash or ``kill -9``. The cells it keeps are right-sized copies of the
serialised values (:mod:`streams.core.compact`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.core.compact import compact


class FaustTableStore:
    """:class:`streams.app.metrics_stage.StateStore` over a faust ``Table`` with raw bytes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        data = self.table.data
        if value is None:
            data.pop(key, None)
        else:
            # Cells live in the table until overwritten: keep right-sized copies (orjson's
            # output holds its whole buffer, 4x to 10x the length; see streams.core.compact).
            key, value = compact(key), compact(value)
            data[key] = value
        self.table.send_changelog(partition, key, value, value_serializer="raw")

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.table.data.items())
