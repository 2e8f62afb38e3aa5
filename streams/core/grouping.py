"""Groups of consecutive input records folded as one, and the log that lets a replay form them again.

Why groups. The stages' cost is mostly per batch, not per event: a few numpy
calls per feature and per statistic, whatever the batch's length. A 500-event
record pays them in full; ten records of one model folded as one batch pay
them once (``loadtest/benchmark.py --batch 5000``: the worker's rate doubled
against 500-event records). So the worker takes the records waiting for it,
groups the consecutive records of each input partition, and folds each group
as one *virtual record* at the offset of the group's last record.

Why a log. Every replay guard in the stages is keyed on a record's position
(``source:offset:batch``): a cell skips positions at or below the last it
folded, a label join recognises a replayed chunk by its id. Those guards are
exact only if a replay presents the same positions as the first run, so a
replay after a crash must form the same groups. A group is logged (first and
last offset) before it is folded, the log is persisted ahead of the cells in
every flush (the changelog keeps that order: a crash persists a prefix, so no
cell can hold a group whose log entry was lost), and entries are dropped once
their offsets are committed. On restart, :func:`plan` cuts the replayed
records exactly along the logged groups, and waits for a logged group's last
record before folding it; records beyond the log are grouped freely.

Nothing here reads Kafka or a clock: the app layer (:mod:`streams.app.coalesce`)
feeds offsets in and persists :meth:`GroupLog.to_json`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class GroupLog:
    """The groups of one input partition folded since its last commit: ``(first, last)`` offsets, ascending.

    Examples
    --------
    >>> log = GroupLog()
    >>> log.add(10, 14); log.add(15, 15); log.add(16, 30)
    >>> log.containing(12), log.containing(15), log.containing(31)
    ((10, 14), (15, 15), None)
    >>> log.committed(16)  # the next offset to read is 16: the first two groups cannot come back
    True
    >>> log.groups, GroupLog.from_json(log.to_json()) == log
    ([(16, 30)], True)
    """

    groups: list[tuple[int, int]] = field(default_factory=list)

    def add(self, first: int, last: int) -> None:
        """Log a group about to be folded; groups come in offset order and do not overlap."""
        if first > last:
            raise ValueError(f"group first offset {first} is after its last {last}")
        if self.groups and first <= self.groups[-1][1]:
            raise ValueError(f"group ({first}, {last}) overlaps the logged {self.groups[-1]}")
        self.groups.append((first, last))

    def containing(self, offset: int) -> tuple[int, int] | None:
        """The logged group whose offsets span ``offset``, if any."""
        i = bisect_right(self.groups, (offset, float("inf"))) - 1
        if i >= 0 and self.groups[i][0] <= offset <= self.groups[i][1]:
            return self.groups[i]
        return None

    def next_first(self, offset: int) -> int | None:
        """The first offset of the first logged group that starts after ``offset``."""
        i = bisect_right(self.groups, (offset, float("inf")))
        return self.groups[i][0] if i < len(self.groups) else None

    def committed(self, next_offset: int) -> bool:
        """Forget the groups a replay cannot bring back (Kafka's next-offset convention); True if any."""
        keep = [g for g in self.groups if g[1] >= next_offset]
        changed = len(keep) != len(self.groups)
        self.groups = keep
        return changed

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "groups": [list(g) for g in self.groups]}

    @classmethod
    def from_json(cls, raw: Any) -> GroupLog:
        if not isinstance(raw, dict) or raw.get("v") != 1 or not isinstance(raw.get("groups"), list):
            raise ValueError("group log: expected {'v': 1, 'groups': [[first, last], ...]}")
        log = cls()
        for g in raw["groups"]:
            if not (isinstance(g, list) and len(g) == 2 and all(type(x) is int for x in g)):
                raise ValueError(f"group log: bad group {g!r}")
            log.add(g[0], g[1])
        return log


def plan(offsets: Sequence[int], log: GroupLog, max_records: int, force: bool = False) -> list[int]:
    """Cut waiting records (their offsets, ascending) into groups to fold now.

    Returns the end index (exclusive) of each group, in order; records after
    the last end wait for more input. A record inside a logged group belongs
    to exactly that group's records, which are folded together once the
    group's last offset has arrived (``force`` folds an incomplete one: the
    caller gave up waiting for it); other records form groups of at most
    ``max_records`` that stop short of a logged group.

    Examples
    --------
    >>> plan([5, 6, 7, 8, 9], GroupLog(), max_records=2)
    [2, 4, 5]
    >>> log = GroupLog([(3, 6)])
    >>> plan([3, 4, 5], log, max_records=10)  # the logged group (3, 6) is not complete: wait
    []
    >>> plan([3, 4, 5, 6, 7, 8], log, max_records=10)  # exactly (3, 6), then the rest freely
    [4, 6]
    >>> plan([1, 2, 3, 4], log, max_records=10)  # free records stop short of a logged group
    [2]
    """
    if max_records < 1:
        raise ValueError(f"max_records must be >= 1, got {max_records}")
    ends: list[int] = []
    i, n = 0, len(offsets)
    while i < n:
        logged = log.containing(offsets[i])
        if logged is not None:
            j = i
            while j < n and offsets[j] <= logged[1]:
                j += 1
            if j == n and offsets[-1] < logged[1] and not force:
                break  # its last record has not arrived yet
            ends.append(j)
            i = j
            continue
        stop = log.next_first(offsets[i])
        j = i
        while j < n and j - i < max_records and (stop is None or offsets[j] < stop):
            j += 1
        ends.append(j)
        i = j
    return ends
