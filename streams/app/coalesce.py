"""The ingest agent's waiting records per input partition, cut into groups along the persisted group log.

The agent takes what the consumer has (up to ``coalesce_records`` records, or
what arrived within ``coalesce_wait_ms``), admits each record through the
offset gate and adds it here; :meth:`Coalescer.ready` hands back the groups to
fold now (:func:`streams.core.grouping.plan`) and logs them. The logs live in
the same changelog-backed table as the stages' cells, one cell per input
partition, and are flushed *before* the stages' cells (see
:mod:`streams.core.grouping` for why that order makes replays exact).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from streams.app.metrics_stage import StateStore
from streams.core.grouping import GroupLog, plan

log = logging.getLogger(__name__)
_KIND = "i:grp"
_PREFIX = b'["i:grp",'


@dataclass(frozen=True, slots=True)
class Pending:
    """An admitted record waiting to be folded."""

    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class _Source:
    topic: str
    partition: int
    log: GroupLog
    waiting: list[Pending] = field(default_factory=list)
    waiting_since_s: float = 0.0
    dirty: bool = False


Group = tuple[str, int, list[Pending]]  # topic, partition, records in offset order


def log_key(partition: int, source: str) -> bytes:
    return orjson.dumps([_KIND, partition, source])


class Coalescer:
    """Waiting records and group logs of every input partition this worker holds.

    Parameters
    ----------
    store
        The state table (its cells are read once per partition, on first use).
    max_records
        The most records folded as one group.
    replay_wait_s
        How long a logged group waits for its last record before it is folded
        incomplete (a record deleted by retention since the crash).
    clock
        Monotonic seconds.
    """

    def __init__(self, store: StateStore, max_records: int, replay_wait_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self.store = store
        self.max_records = max_records
        self.replay_wait_s = replay_wait_s
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        self._loaded: set[int] = set()
        self._restored: dict[str, GroupLog] = {}

    def add(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """An admitted record (the gate's ``NEXT``), in offset order per partition."""
        src = self._source(topic, partition)
        if not src.waiting:
            src.waiting_since_s = self.clock()
        src.waiting.append(Pending(offset, key, value))

    def ready(self) -> list[Group]:
        """The groups to fold now, each logged; records of an incomplete logged group keep waiting."""
        out: list[Group] = []
        now = self.clock()
        for src in self._sources.values():
            if not src.waiting:
                continue
            force = now - src.waiting_since_s >= self.replay_wait_s
            ends = plan([p.offset for p in src.waiting], src.log, self.max_records, force)
            if force and ends:
                log.warning("ingest: %s:%d folded a logged group without its last record after %.0f s",
                            src.topic, src.partition, self.replay_wait_s)
            start = 0
            for end in ends:
                records = src.waiting[start:end]
                first, last = records[0].offset, records[-1].offset
                if src.log.containing(first) is None:
                    src.log.add(first, last)
                    src.dirty = True
                out.append((src.topic, src.partition, records))
                start = end
            if start:
                del src.waiting[:start]
                src.waiting_since_s = now
        return out

    def waiting(self) -> int:
        return sum(len(s.waiting) for s in self._sources.values())

    def flush_writes(self) -> None:
        """Persist the changed logs: call before any stage flushes its cells."""
        for name, src in self._sources.items():
            if src.dirty:
                self.store.put(src.partition, log_key(src.partition, name), orjson.dumps(src.log.to_json()))
                src.dirty = False

    def on_committed(self, offsets: Mapping[str, int]) -> None:
        """Offsets committed (``topic:partition`` -> next offset): their groups cannot be replayed."""
        for name, next_offset in offsets.items():
            src = self._sources.get(name)
            if src is not None and src.log.committed(next_offset):
                src.dirty = True

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked partitions: persist their logs, drop their waiting (uncommitted) records."""
        gone = set(partitions)
        self.flush_writes()
        for name in [n for n, s in self._sources.items() if s.partition in gone]:
            del self._sources[name]
        self._loaded -= gone
        self._restored = {n: g for n, g in self._restored.items() if int(n.rsplit(":", 1)[1]) not in gone}

    def _source(self, topic: str, partition: int) -> _Source:
        name = f"{topic}:{partition}"
        src = self._sources.get(name)
        if src is None:
            if partition not in self._loaded:
                self._load(partition)
            src = self._sources[name] = _Source(topic, partition, self._restored.pop(name, GroupLog()))
        return src

    def _load(self, partition: int) -> None:
        self._loaded.add(partition)
        for k, v in self.store.items():
            if not k.startswith(_PREFIX) or v is None:
                continue
            try:
                _, part, name = orjson.loads(k)
                if part != partition:
                    continue
                self._restored[str(name)] = GroupLog.from_json(orjson.loads(v))
            except (ValueError, TypeError) as exc:  # unreadable: replay groups freely, as before logs
                log.error("ingest: group log %r unreadable, ignored: %s", k[:80], exc)
