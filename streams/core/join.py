"""Delayed-label join: match feedback to its prediction by event id, within a horizon.

Labels arrive minutes or days after the prediction, and on a busy partition
they can even be read before it (the feedback topic is consumed alongside
the predictions topic), so both sides wait:

* predictions wait in *chunks*, one per source batch, until a label matches
  them or they fall out of the horizon;
* labels that find no prediction wait as *orphans* until it arrives or the
  horizon passes (then they are counted as unmatched).

State is bounded twice: by time (``horizon_ms`` of stream time, the largest
prediction event time seen) and by size (``max_pending`` predictions; the
oldest chunks are evicted first and counted). A :class:`JoinBudget` shared by
the joins of one partition bounds them together, oldest chunk first across
models, so a worker's join memory does not grow with its number of models.

Chunks are written once and never rewritten: a match adds the row to the
chunk's *mark* set instead, which is small. That keeps persistence per batch
(one write per chunk, one per touched mark set) rather than per event. The
first label for an event wins; later ones are counted as duplicates.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


def record_id(source: str, offset: int, batch_index: int) -> str:
    """The id of one batch of one input record: ``topic:partition:offset:batch``.

    >>> record_id("predictions:0", 7, 1), record_position("predictions:0:7:1")
    ('predictions:0:7:1', ('predictions:0', 7, 1))
    """
    return f"{source}:{offset}:{batch_index}"


def record_position(record: str) -> tuple[str, int, int]:
    """The parts of a :func:`record_id`: source, offset, batch index."""
    source, offset, index = record.rsplit(":", 2)
    return source, int(offset), int(index)


class Committed(dict[str, int]):
    """Committed offsets per source (``topic:partition`` -> the next offset to read), only rising.

    What a replay can no longer bring back: a record counts as done below
    ``committed - 1`` (Kafka's next-offset convention is not relied on to the
    last record). The label-pair guards of panes and of concept drift forget
    pairs whose two records are both done.

    >>> c = Committed(); c.advance({"p:0": 9}); c.advance({"p:0": 4}); c
    {'p:0': 9}
    >>> c.done("p:0", 7), c.done("p:0", 8), c.done("f:0", 0), c.record_done("p:0:7:1")
    (True, False, False, True)
    """

    def advance(self, offsets: Mapping[str, int]) -> None:
        for source, offset in offsets.items():
            if offset > self.get(source, -1):
                self[source] = offset

    def done(self, source: str, offset: int) -> bool:
        return offset < self.get(source, 0) - 1

    def record_done(self, record: str) -> bool:
        """:meth:`done` for a :func:`record_id`."""
        source, offset, _ = record_position(record)
        return self.done(source, offset)


@dataclass(slots=True)
class Chunk:
    """Predictions of one source batch, kept for joining."""

    chunk_id: str
    version: str
    event_id: list[str]
    event_time_ms: list[int]
    prediction: list[Any]
    segment: list[str] | None
    matched: set[int] = field(default_factory=set)
    newest_ms: int = field(init=False)
    _rows: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.newest_ms = max(self.event_time_ms)

    def row_of(self, event_id: str) -> int:
        """Row of ``event_id`` (its first occurrence); the lookup is built at the first label.

        Most chunks of a busy model get their labels in bursts or never, so the
        per-row dict is paid for only by chunks that are joined.
        """
        rows = self._rows
        if rows is None:
            n = len(self.event_id)
            # Reversed: a repeated id ends up mapped to its first row.
            rows = self._rows = dict(zip(reversed(self.event_id), range(n - 1, -1, -1), strict=True))
        return rows[event_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "id": self.event_id,
            "t": self.event_time_ms,
            "p": self.prediction,
            "s": self.segment,
        }

    @classmethod
    def from_json(cls, chunk_id: str, raw: Mapping[str, Any]) -> Chunk:
        try:
            ids, ts, preds = list(raw["id"]), [int(t) for t in raw["t"]], list(raw["p"])
            seg = None if raw.get("s") is None else [str(s) for s in raw["s"]]
            version = str(raw["v"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"join chunk {chunk_id!r}: malformed state ({exc!r})") from None
        if not (len(ids) == len(ts) == len(preds)) or (seg is not None and len(seg) != len(ids)):
            raise ValueError(f"join chunk {chunk_id!r}: columns of different lengths")
        return cls(chunk_id, version, [str(i) for i in ids], ts, preds, seg)


class Match(NamedTuple):
    """A label joined to its prediction (a named tuple: built once per label, on the hot path)."""

    version: str
    segment: str | None
    prediction_time_ms: int
    prediction: Any
    label: Any
    label_time_ms: int
    # The two records the pair came from (``source:offset:batch``): a replay after a crash may
    # join them in the other order, so the windows guard a label's count by this pair.
    chunk_id: str = ""
    label_record: str = ""


@dataclass(slots=True)
class Orphan:
    label: Any
    event_time_ms: int
    source: str  # the feedback record it came from, so a restore can rebuild it


@dataclass(slots=True)
class JoinCounters:
    matched: int = 0
    duplicate_labels: int = 0
    unmatched_expired: int = 0
    predictions_expired: int = 0
    predictions_evicted: int = 0
    duplicate_predictions: int = 0


class JoinBudget:
    """One cap on the predictions held by several joins (the models of a partition).

    Joins report what they hold and release; when the total is over
    ``max_pending`` the oldest held chunk, whichever join holds it, is
    evicted (and counted as evicted by that join). Arrival order is kept in a
    queue of chunk ids, pruned of chunks that left on their own (matched out
    of the horizon, or evicted by their join's own cap).

    >>> budget = JoinBudget(max_pending=3)
    >>> a, b = LabelJoin(60_000, 100, budget), LabelJoin(60_000, 100, budget)
    >>> _ = a.add_chunk(Chunk("p:0:1", "v1", ["x", "y"], [1, 2], [0, 1], None))
    >>> _ = b.add_chunk(Chunk("p:0:2", "v1", ["z", "w"], [3, 4], [1, 1], None))
    >>> budget.pending, list(a.chunks), list(b.chunks), a.counters.predictions_evicted
    (2, [], ['p:0:2'], 2)
    """

    def __init__(self, max_pending: int) -> None:
        if max_pending <= 0:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self.max_pending = max_pending
        self.pending = 0
        self._order: deque[tuple[LabelJoin, str]] = deque()
        self._live = 0  # chunks held; the queue may hold more entries (ones that left on their own)

    def held(self, join: LabelJoin, chunk_id: str, rows: int) -> None:
        self.pending += rows
        self._live += 1
        self._order.append((join, chunk_id))

    def released(self, rows: int) -> None:
        self.pending -= rows
        self._live -= 1

    def enforce(self) -> None:
        """Evict the oldest chunks while over the cap (the newest chunk always stays)."""
        order = self._order
        while self.pending > self.max_pending and len(order) > 1:
            join, cid = order.popleft()
            if cid in join.chunks:
                join.evict(cid)
        if len(order) > 2 * self._live + 1024:  # drop entries of chunks that are gone
            self._order = deque((j, c) for j, c in order if c in j.chunks)


class LabelJoin:
    """The join state of one model on one partition.

    Parameters
    ----------
    horizon_ms
        How long a prediction waits for its label, and a label for its
        prediction, in event time.
    max_pending
        Most predictions held; beyond it the oldest chunks are evicted.
    budget
        A cap shared with other joins (see :class:`JoinBudget`), or ``None``.

    Examples
    --------
    >>> j = LabelJoin(horizon_ms=60_000, max_pending=100)
    >>> j.add_chunk(Chunk("p:0:7", "v1", ["a", "b"], [1_000, 2_000], [1, 0], None))
    []
    >>> [(m.prediction, m.label) for m in j.add_labels(["b", "x"], [1, 1], [5_000, 5_000], "f:0:3")]
    [(0, 1)]
    >>> len(j.orphans), j.counters.matched
    (1, 1)
    """

    def __init__(self, horizon_ms: int, max_pending: int, budget: JoinBudget | None = None) -> None:
        if horizon_ms <= 0 or max_pending <= 0:
            raise ValueError(f"horizon_ms and max_pending must be positive, got {horizon_ms}, {max_pending}")
        self.horizon_ms = horizon_ms
        self.max_pending = max_pending
        self.budget = budget
        self.chunks: dict[str, Chunk] = {}  # insertion order == arrival order
        # event id -> the chunk holding it (its row: Chunk.row_of). Values are shared references,
        # so holding a prediction costs one dict slot, not a (chunk, row) tuple per event.
        self._index: dict[str, Chunk] = {}
        self.orphans: dict[str, Orphan] = {}
        self._orphan_sources: dict[str, set[str]] = {}
        self.stream_time_ms = 0
        self.counters = JoinCounters()
        # What changed since take_changes(): the engine persists exactly this.
        self._dirty_marks: set[str] = set()
        self._dropped_chunks: list[str] = []
        self._new_orphans: dict[str, dict[str, Orphan]] = {}
        self._dropped_orphan_sources: set[str] = set()

    @property
    def pending(self) -> int:
        return len(self._index)

    def add_chunk(self, chunk: Chunk) -> list[Match]:
        """Hold a batch of predictions; returns matches with labels that were waiting.

        Adding a chunk id that is already held (a replayed record) only
        matches waiting labels again, so a replay after a crash completes
        what the crash interrupted.
        """
        held = self.chunks.get(chunk.chunk_id)
        index = self._index
        if held is None:
            before = len(index)
            self.chunks[chunk.chunk_id] = chunk
            # The common case, ids new to the join and distinct within the chunk, in C: one dict
            # built and merged; the per-row loop (first id wins, duplicates counted) only otherwise.
            fresh = dict.fromkeys(chunk.event_id, chunk)
            if len(fresh) == len(chunk.event_id) and fresh.keys().isdisjoint(index.keys()):
                index.update(fresh)
            else:
                for eid in chunk.event_id:
                    if eid in index:
                        self.counters.duplicate_predictions += 1
                    else:
                        index[eid] = chunk
            if self.budget is not None:
                self.budget.held(self, chunk.chunk_id, len(index) - before)
            self.stream_time_ms = max(self.stream_time_ms, chunk.newest_ms)
        else:
            chunk = held
        matches: list[Match] = []
        if self.orphans:
            for row, eid in enumerate(chunk.event_id):
                if (eid in self.orphans and row not in chunk.matched and index.get(eid) is chunk
                        and chunk.row_of(eid) == row):
                    o = self._pop_orphan(eid)
                    chunk.matched.add(row)
                    matches.append(self._match(chunk, row, o.label, o.event_time_ms, o.source))
        if matches:
            self._dirty_marks.add(chunk.chunk_id)
        self._evict_over_capacity()
        if self.budget is not None:
            self.budget.enforce()
        return matches

    def add_labels(
        self, event_ids: list[str], labels: list[Any], event_time_ms: list[int], source: str
    ) -> list[Match]:
        """Join labels from one feedback record (``source``); unmatched ones wait as orphans."""
        matches: list[Match] = []
        index = self._index
        for eid, label, t_ms in zip(event_ids, labels, event_time_ms, strict=True):
            chunk = index.get(eid)
            if chunk is None:
                if eid in self.orphans:
                    if self.orphans[eid].source != source:
                        self.counters.duplicate_labels += 1
                    continue
                o = self.orphans[eid] = Orphan(label, t_ms, source)
                self._orphan_sources.setdefault(source, set()).add(eid)
                self._new_orphans.setdefault(source, {})[eid] = o
                continue
            row = chunk.row_of(eid)
            if row in chunk.matched:
                self.counters.duplicate_labels += 1
                continue
            chunk.matched.add(row)
            self._dirty_marks.add(chunk.chunk_id)
            matches.append(self._match(chunk, row, label, t_ms, source))
        return matches

    def _match(self, chunk: Chunk, row: int, label: Any, label_time_ms: int, label_record: str) -> Match:
        self.counters.matched += 1
        return Match(
            chunk.version,
            None if chunk.segment is None else chunk.segment[row],
            chunk.event_time_ms[row],
            chunk.prediction[row],
            label,
            label_time_ms,
            chunk.chunk_id,
            label_record,
        )

    def orphans_of(self, source: str) -> list[tuple[str, Orphan]]:
        """The labels of one feedback record still waiting for their prediction."""
        return [(eid, self.orphans[eid]) for eid in self._orphan_sources.get(source, ())]

    def _pop_orphan(self, eid: str) -> Orphan:
        o = self.orphans.pop(eid)
        left = self._orphan_sources.get(o.source)
        if left is not None:
            left.discard(eid)
            if not left:
                del self._orphan_sources[o.source]
                self._dropped_orphan_sources.add(o.source)
                self._new_orphans.pop(o.source, None)
        return o

    def expire(self) -> None:
        """Drop what fell out of the horizon (in stream time), counting what was never joined."""
        # Both maps are in arrival order, which is close to event-time order: stop at the
        # first live entry (an out-of-order straggler behind it goes a little later).
        cutoff = self.stream_time_ms - self.horizon_ms
        while self.chunks:
            cid, c = next(iter(self.chunks.items()))
            if c.newest_ms >= cutoff:
                break
            self._drop(cid, expired=True)
        while self.orphans:
            eid, o = next(iter(self.orphans.items()))
            if o.event_time_ms >= cutoff:
                break
            self._pop_orphan(eid)
            self.counters.unmatched_expired += 1

    def _evict_over_capacity(self) -> None:
        while len(self._index) > self.max_pending and len(self.chunks) > 1:
            self._drop(next(iter(self.chunks)), expired=False)

    def evict(self, chunk_id: str) -> None:
        """Drop a held chunk to make room (counted as evicted); the budget's way in."""
        self._drop(chunk_id, expired=False)

    def _drop(self, chunk_id: str, expired: bool) -> None:
        chunk = self.chunks.pop(chunk_id)
        unlabelled = 0
        index = self._index
        before = len(index)
        for row, eid in enumerate(chunk.event_id):
            if index.get(eid) is chunk:  # rows in order: a repeated id is deleted at its first row
                del index[eid]
                unlabelled += row not in chunk.matched
        if self.budget is not None:
            self.budget.released(before - len(index))
        if expired:
            self.counters.predictions_expired += unlabelled
        else:
            self.counters.predictions_evicted += unlabelled
        self._dirty_marks.discard(chunk_id)
        self._dropped_chunks.append(chunk_id)

    def take_changes(self) -> JoinChanges:
        """What to persist since the last call: mark sets, new orphans, deletions."""
        out = JoinChanges(
            marks={cid: sorted(self.chunks[cid].matched) for cid in self._dirty_marks},
            dropped_chunks=self._dropped_chunks,
            new_orphans=self._new_orphans,
            dropped_orphan_sources=sorted(self._dropped_orphan_sources),
        )
        self._dirty_marks, self._dropped_chunks = set(), []
        self._new_orphans, self._dropped_orphan_sources = {}, set()
        return out

    def restore(self, chunks: Iterable[Chunk], orphans: Iterable[tuple[str, Orphan]]) -> None:
        """Rebuild from persisted chunks (with their marks) and orphans.

        An orphan whose prediction row is marked was consumed before the
        restart and is dropped; one whose prediction is held but unmarked is
        kept, so the replayed prediction record matches it again.
        """
        for chunk in sorted(chunks, key=lambda c: c.newest_ms):
            self.chunks[chunk.chunk_id] = chunk
            before = len(self._index)
            for eid in chunk.event_id:
                self._index.setdefault(eid, chunk)
            if self.budget is not None:
                self.budget.held(self, chunk.chunk_id, len(self._index) - before)
            self.stream_time_ms = max(self.stream_time_ms, chunk.newest_ms)
        for eid, o in orphans:
            held = self._index.get(eid)
            if held is None or held.row_of(eid) not in held.matched:
                self.orphans[eid] = o
                self._orphan_sources.setdefault(o.source, set()).add(eid)


@dataclass(slots=True)
class JoinChanges:
    marks: dict[str, list[int]]
    dropped_chunks: list[str]
    new_orphans: dict[str, dict[str, Orphan]]
    dropped_orphan_sources: list[str]
