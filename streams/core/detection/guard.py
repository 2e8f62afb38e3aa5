"""Exactly-once folding over at-least-once delivery, for one detector's state.

The worker persists detector state before it commits input offsets, but a
crash between the two replays records the state already holds. Each monitor
remembers the last offset it folded per source partition (``topic:partition``)
and skips anything at or below it, so replaying never counts an event twice
and never re-detects a drift from events it already saw.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from streams.core.join import Committed, Match, record_position


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


class PairGuard:
    """Which (prediction record, label record) pairs a label-fed state has folded.

    Joined labels cannot be guarded by the record being read: a label is
    joined when the later of its two records arrives, and a replay may read
    the predictions and feedback topics in the other order (see
    :mod:`streams.core.pane`). Per (label source, prediction record) this keeps
    the position of the newest label record folded in; each topic partition is
    read in order, so one position per pair is the whole guard.

    A pair comes back only while one of its records is not yet committed (about
    a second of input): :meth:`prune` forgets the others, given the committed
    offsets. It also keeps at most the ``capacity`` most recently touched pairs,
    a bound on memory should commits stall.

    >>> g = PairGuard(capacity=2)
    >>> g.take("p:0:7:0", "f:0:3:0"), g.take("p:0:7:0", "f:0:3:0"), g.take("p:0:7:0", "f:0:2:0")
    (True, False, False)
    >>> g.take("p:0:8:0", "f:0:3:0"), g.take("p:0:9:0", "f:0:4:0"), len(g)
    (True, True, 2)
    """

    __slots__ = ("_seen", "capacity")

    def __init__(self, capacity: int = 16384) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def take(self, chunk_id: str, label_record: str) -> bool:
        """Whether the labels of ``label_record`` joined to ``chunk_id`` are new here; marks them."""
        source, offset, index = record_position(label_record)
        key, pos = (source, chunk_id), (offset, index)
        old = self._seen.get(key)
        if old is not None and old >= pos:
            return False
        self._seen[key] = pos
        self._seen.move_to_end(key)
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def prune(self, committed: Committed) -> None:
        """Forget the pairs neither of whose records a replay can bring back.

        >>> g = PairGuard()
        >>> g.take("pred:0:7:0", "fb:0:3:0"), g.take("pred:0:9:0", "fb:0:3:0")
        (True, True)
        >>> g.prune(Committed({"pred:0": 9, "fb:0": 5})); g.to_json()
        [['fb:0', 'pred:0:9:0', 3, 0]]
        """
        for key in [(source, chunk_id) for (source, chunk_id), pos in self._seen.items()
                    if committed.done(source, pos[0]) and committed.record_done(chunk_id)]:
            del self._seen[key]

    def fresh(self, matches: Iterable[Match]) -> list[Match]:
        """The matches whose pair was not folded yet (and marks those pairs)."""
        verdict: dict[tuple[str, str], bool] = {}
        out: list[Match] = []
        for m in matches:
            pair = (m.chunk_id, m.label_record)
            ok = verdict.get(pair)
            if ok is None:
                ok = verdict[pair] = self.take(*pair)
            if ok:
                out.append(m)
        return out

    def to_json(self) -> list[list[Any]]:
        return [[src, cid, off, idx] for (src, cid), (off, idx) in self._seen.items()]

    @classmethod
    def from_json(cls, raw: Any, capacity: int = 16384) -> PairGuard:
        g = cls(capacity)
        if not isinstance(raw, list):
            raise ValueError("pairs: expected a list of [label source, prediction record, offset, index]")
        for item in raw:
            if not (isinstance(item, list) and len(item) == 4 and all(isinstance(i, int) for i in item[2:])):
                raise ValueError(f"pairs: malformed entry {item!r}")
            g._seen[(str(item[0]), str(item[1]))] = (item[2], item[3])
        return g
