"""Exactly-once folding over at-least-once delivery, for one detector's state.

The worker persists detector state before it commits input offsets, but a
crash between the two replays records the state already holds. Each monitor
remembers the last offset it folded per source partition (``topic:partition``)
and skips anything at or below it, so replaying never counts an event twice
and never re-detects a drift from events it already saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OffsetGuard:
    """Last applied position (offset, batch index within the record) per source partition.

    >>> g = OffsetGuard()
    >>> g.admit("predictions:0", 5), g.admit("predictions:0", 5), g.admit("predictions:0", 6)
    (True, True, True)
    >>> g.mark("predictions:0", 6); g.admit("predictions:0", 6), g.admit("predictions:0", 6, 1)
    (False, True)
    >>> g.admit("feedback:0", 1)
    True
    """

    __slots__ = ("applied",)

    def __init__(self, applied: Mapping[str, tuple[int, int]] | None = None) -> None:
        self.applied: dict[str, tuple[int, int]] = dict(applied or {})

    def admit(self, source: str, offset: int, index: int = 0) -> bool:
        """Whether batch ``index`` of the record at ``offset`` of ``source`` is new to this state."""
        return (offset, index) > self.applied.get(source, (-1, -1))

    def mark(self, source: str, offset: int, index: int = 0) -> None:
        if (offset, index) > self.applied.get(source, (-1, -1)):
            self.applied[source] = (offset, index)

    def to_json(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.applied.items()}

    @classmethod
    def from_json(cls, raw: Any) -> OffsetGuard:
        if not isinstance(raw, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) for i in v) for v in raw.values()
        ):
            raise ValueError("applied: expected a mapping of source to [offset, batch index]")
        return cls({str(k): (v[0], v[1]) for k, v in raw.items()})
