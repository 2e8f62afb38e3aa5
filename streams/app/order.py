"""Admit each input partition's records in offset order, with no holes, or not at all.

The stages' replay guards are keyed on offsets: a cell skips a record at or
below the last offset it folded from that partition. That is exactly-once only
if every partition is processed in order with no holes. A record handed over
after a later one is skipped as a replay, and a hole whose offsets are
committed is lost for good.

faust-streaming 0.15 (over aiokafka 0.14) can break that order around a
rebalance. The order of events:
- it resumes the partitions before it seeks them to the committed offsets, so a
  fetch can race the seek;
- aiokafka's ``seek_to_committed`` skips partitions whose committed offset is
  missing or 0, so such a partition keeps a position that the racing fetch moved on;
- faust then clears the stream queues that held the records of that fetch;
- its commit lets a hole of one offset through (``min(acked) - committed > 1``),
  and lets any hole through while no offset is known.

Before this gate, the worker lost one input record in 2 of 17 stressed ``kill -9`` runs.

So the ingest agent asks this gate about every record:
- :attr:`Verdict.NEXT`: the offset expected; process it;
- :attr:`Verdict.BACK`: an offset already processed since the partition was last
  positioned; skip it;
- :attr:`Verdict.GAP`: a later offset; skip it, and seek the partition back to the
  expected offset (:meth:`OffsetGate.seek_due`);
- :attr:`Verdict.EARLY`: the partition was not yet positioned since its
  assignment; skip it.

The consumer (:mod:`streams.app.consumer`) positions partitions with
:meth:`OffsetGate.restart`, and commits an input partition at
:meth:`OffsetGate.committable`: past the last record the agent finished
(:meth:`OffsetGate.finish`), in order, from the last position. faust's own
bookkeeping of acknowledged offsets is not used for them.

An input partition written by idempotent, non-transactional producers (the SDK)
has no holes of its own. A hole that persists through ``accept_after_seeks``
seeks (20 s at the defaults) is taken as real: transaction markers, or records deleted by retention.
The gate then admits the record after it as :attr:`Verdict.SKIPPED_TO`, and the
caller logs an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

Part = tuple[str, int]  # (topic, partition)


class Verdict(StrEnum):
    """What to do with a record, given its offset."""

    NEXT = "next"  # the offset expected: process it
    BACK = "back"  # below the expected offset: processed already; skip
    GAP = "gap"  # above the expected offset: offsets between are missing; skip and seek back
    EARLY = "early"  # the partition is not positioned yet; skip
    SKIPPED_TO = "skipped_to"  # a hole that survived every seek: process, the hole is given up


@dataclass(slots=True)
class _Position:
    expected: int  # the next offset to process
    done: int  # the offset after the last record finished (the position, until one is)
    seeks: int = 0  # seeks made for this expected offset
    last_seek_s: float = -math.inf
    seeking: bool = False  # a seek is under way: the consumer hands over `handed` and what follows it
    handed: int = 0  # while seeking: the next offset the consumer may hand over


class OffsetGate:
    """The next offset the ingest agent needs, for each positioned input partition.

    Parameters
    ----------
    topics
        The input topics it watches.
    reseek_after_s
        How long one seek is given: meanwhile the consumer drops this partition's
        records fetched before it (:meth:`fetched`), and no other seek is made.
    accept_after_seeks
        Seeks to one offset before a hole is taken as real.
    early_for_s
        faust positions every partition it resumes; records that stay early this long
        mean it did not, and :meth:`reposition_due` asks the caller to do it.

    Examples
    --------
    >>> gate = OffsetGate(frozenset({"p"}))
    >>> gate.admit("p", 0, 7).value        # not positioned since its assignment
    'early'
    >>> gate.restart({("p", 0): 7}, now_s=90.0)  # positioned at the committed offset
    >>> [gate.admit("p", 0, o).value for o in (7, 8, 8, 10)]
    ['next', 'next', 'back', 'gap']
    >>> gate.seek_due("p", 0, now_s=100.0), gate.seek_due("p", 0, now_s=100.5)
    (9, None)
    >>> gate.fetched("p", 0, 11, now_s=100.6), gate.fetched("p", 0, 9, now_s=100.7)
    (False, True)
    >>> gate.finish("p", 0, 8); gate.committable("p", 0), gate.committable("p", 1)
    (9, None)
    """

    def __init__(self, topics: frozenset[str], *, reseek_after_s: float = 2.0,
                 accept_after_seeks: int = 10, early_for_s: float = 10.0) -> None:
        if reseek_after_s < 0:
            raise ValueError(f"reseek_after_s must be >= 0, got {reseek_after_s}")
        if accept_after_seeks < 1:
            raise ValueError(f"accept_after_seeks must be >= 1, got {accept_after_seeks}")
        self.topics = topics
        self.reseek_after_s = reseek_after_s
        self.accept_after_seeks = accept_after_seeks
        self.early_for_s = early_for_s
        self._positions: dict[Part, _Position] = {}
        self._early_since: dict[Part, float] = {}

    def watches(self, topic: str) -> bool:
        return topic in self.topics

    def restart(self, offsets: Mapping[Part, int], now_s: float) -> None:
        """The consumer positioned these partitions at these offsets (their committed offsets).

        It counts as a seek: records fetched before it may still arrive (and are dropped
        while it is under way), and the ones it asked for may have been taken already,
        while the partition was early, so :meth:`overdue` repeats it if they do not come.
        """
        for part, offset in offsets.items():
            if part[0] in self.topics:
                if offset < 0:
                    raise ValueError(f"{part[0]}:{part[1]}: offset must be >= 0, got {offset}")
                self._positions[part] = _Position(offset, offset, seeks=1, last_seek_s=now_s, seeking=True,
                                                  handed=offset)
                self._early_since.pop(part, None)

    def forget(self, parts: Iterable[Part]) -> None:
        """The partitions were revoked: records of theirs are early until they are positioned again."""
        for part in parts:
            self._positions.pop(part, None)
            self._early_since.pop(part, None)

    def admit(self, topic: str, partition: int, offset: int) -> Verdict:
        """Judge one record; a :attr:`Verdict.NEXT` (or ``SKIPPED_TO``) moves the expected offset past it."""
        pos = self._positions.get((topic, partition))
        if pos is None:
            return Verdict.EARLY
        if offset < pos.expected:
            return Verdict.BACK
        if offset == pos.expected:
            pos.expected += 1
            pos.seeks, pos.last_seek_s, pos.seeking = 0, -math.inf, False
            return Verdict.NEXT
        if pos.seeks >= self.accept_after_seeks:
            pos.expected, pos.seeks, pos.last_seek_s, pos.seeking = offset + 1, 0, -math.inf, False
            return Verdict.SKIPPED_TO
        return Verdict.GAP

    def fetched(self, topic: str, partition: int, offset: int, now_s: float) -> bool:
        """Whether the consumer hands a fetched record over at all.

        While a seek is under way, only the expected offset and the offsets that
        follow it in order are: the rest of a batch fetched before the seek would
        otherwise move faust's read offset past the records the seek asked for
        again, and faust would drop them as already read. (An offset names one
        record, so a copy fetched before the seek is that same record.) The agent
        may hold records for a while before it admits them (it takes them in
        groups), so the records after the expected one must get through before
        the agent's admission ends the seek.
        """
        pos = self._positions.get((topic, partition))
        if pos is None or not pos.seeking:
            return True
        if offset == pos.handed:
            pos.handed += 1
            return True
        if now_s - pos.last_seek_s >= self.reseek_after_s:
            pos.seeking = False  # the seek's time is up: let records through to show what it did
            return True
        return False

    def expected(self, topic: str, partition: int) -> int | None:
        pos = self._positions.get((topic, partition))
        return None if pos is None else pos.expected

    def seek_due(self, topic: str, partition: int, now_s: float) -> int | None:
        """After a :attr:`Verdict.GAP`: the offset to seek back to, if a seek is due now (and count it)."""
        pos = self._positions.get((topic, partition))
        if pos is None or now_s - pos.last_seek_s < self.reseek_after_s:
            return None
        pos.seeks += 1
        pos.last_seek_s = now_s
        pos.seeking = True
        pos.handed = pos.expected
        return pos.expected

    def overdue(self, now_s: float, end_offset: Callable[[str, int], int | None]) -> list[tuple[Part, int]]:
        """Partitions whose last seek brought nothing back: seek them again (each one counted).

        A hole is seen only when a later record arrives; when none comes after a seek
        (the end of the partition), this is what repeats the seek. Only where
        ``end_offset`` (the partition's high watermark, None if unknown) says the
        expected record exists: an idle partition is not sought over and over.
        """
        due: list[tuple[Part, int]] = []
        for part, pos in self._positions.items():
            if not pos.seeks or now_s - pos.last_seek_s < self.reseek_after_s:
                continue
            end = end_offset(*part)
            if end is not None and end <= pos.expected:
                continue
            target = self.seek_due(*part, now_s)
            if target is not None:
                due.append((part, target))
        return due

    def reposition_due(self, topic: str, partition: int, now_s: float) -> bool:
        """After a :attr:`Verdict.EARLY`: True once the partition has stayed early ``early_for_s``."""
        since = self._early_since.setdefault((topic, partition), now_s)
        if now_s - since < self.early_for_s:
            return False
        self._early_since[(topic, partition)] = now_s
        return True

    def finish(self, topic: str, partition: int, offset: int) -> None:
        """The agent finished the record at ``offset`` (admitted as NEXT or SKIPPED_TO)."""
        pos = self._positions.get((topic, partition))
        if pos is not None and offset < pos.expected:
            pos.done = max(pos.done, offset + 1)

    def committable(self, topic: str, partition: int) -> int | None:
        """The offset to commit (Kafka's next-offset convention); None while not positioned.

        Every record below it was finished, in order, since the partition was positioned
        at its committed offset: a hole the agent is still seeking back to holds it.
        """
        pos = self._positions.get((topic, partition))
        return None if pos is None else pos.done


def start_offsets(committed: Mapping[Part, int | None], earliest: Mapping[Part, int]) -> dict[Part, int]:
    """Where each partition starts reading: its committed offset, else its earliest one.

    aiokafka's ``seek_to_committed`` seeks only where the committed offset is above 0,
    so the caller seeks the rest to these offsets itself.
    """
    return {part: max(off if off is not None and off > 0 else 0, earliest.get(part, 0))
            for part, off in committed.items()}
