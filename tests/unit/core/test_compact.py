"""Right-sized state cells: what a table keeps costs its length, not orjson's buffer."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest

from streams.app.state import FaustTableStore
from streams.core.compact import compact

CELLS = [
    {"k": "tiny"},
    {"x": [i / 7 for i in range(3_000)]},  # ~50 kB of JSON, the size of a detection cell
    {"rows": [[f"model-{i}", i, i * 0.5] for i in range(20_000)]},
]


def _held(make: Any) -> tuple[bytes, int]:
    """The object ``make()`` returns and the bytes allocated for it (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        obj = make()
        return obj, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("cell", CELLS, ids=["tiny", "50kB", "large"])
def test_compact_holds_its_length(cell: dict[str, Any]) -> None:
    raw = orjson.dumps(cell)
    kept, held = _held(lambda: compact(raw))
    assert kept == raw
    assert held <= len(raw) + 64  # the bytes object header, no spare buffer


class _Table:
    """The two members of a faust Table the store touches (the unit under test is the adapter)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sent: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes | None, value_serializer: str) -> None:
        assert value_serializer == "raw"
        self.sent.append((partition, key, value))


def test_table_store_keeps_right_sized_cells() -> None:
    table = _Table()
    store = FaustTableStore(table)
    raw_key = orjson.dumps(["pane", 0, "m", "v1", "", 60_000])
    raw_value = orjson.dumps(CELLS[1])
    store.put(0, raw_key, raw_value)
    ((key, value),) = table.data.items()
    assert (key, value) == (raw_key, raw_value)
    assert key is not raw_key and value is not raw_value
    assert table.sent == [(0, raw_key, raw_value)]
    store.put(0, raw_key, None)
    assert table.data == {} and table.sent[-1] == (0, raw_key, None)
    assert store.items() == []
