"""Dispatch stage: one worker per receiver, and offsets committed only below the first unfinished record.

Why per-receiver workers
------------------------
Delivering each alert record to its receivers one after the other means a
receiver that is down holds up *every* receiver, and every later alert, for
as long as the retry stage keeps trying it (``retry.max_elapsed``, 15 minutes
by default): one dead webhook would silence the pager. So each receiver gets
its own thread and its own FIFO queue (:class:`Dispatcher`). A receiver that
is down only delays its own queue; the others keep delivering. Within one
receiver the queue keeps the order the records were consumed in, so a
``firing`` is delivered before the ``resolved`` that follows it (both come
from one partition, in order, because the alerts topic is keyed by the alert's
fingerprint).

Why commit the lowest unfinished offset
---------------------------------------
Deliveries now finish out of order, but a Kafka commit is one offset per
partition that means "everything before this is done". Committing the offset
of the last record seen would, after a crash, skip records whose deliveries
were still queued behind a slow receiver: alerts lost. :class:`OffsetTracker`
therefore counts, per record, the deliveries still outstanding and commits,
per partition, the lowest offset whose record is not finished (or one past
the last record when all are). A crash re-reads from there; records already
delivered on the way are recognised by the delivery log (and by receivers
that de-duplicate on the idempotency key), so the price of committing
conservatively is a re-check, not a re-page.

Bounded memory
--------------
Jobs wait in the queues while their receiver is down, so the queues would
grow with the alerts topic. :meth:`Dispatcher.throttled` says when the
outstanding jobs exceed ``max_in_flight`` (and stays true until they drained
below half of it, so consumption does not flap around the limit); the
consumer then pauses its partitions while still polling, so that its group
membership stays alive.

Revocation and shutdown
-----------------------
When partitions move to another notifier, :meth:`Dispatcher.revoke` returns
what is finished for them (to be committed) and cancels the rest: queued jobs
are skipped and a job waiting between retries gives up at once. The new owner
re-reads the unfinished records and delivers them; an idempotency key absorbs
the one re-send of a delivery that was in flight at that moment (at least
once, never lost). :meth:`Dispatcher.stop` likewise abandons queued jobs and
retries, lets a send in progress finish, and leaves the unfinished records
uncommitted for the next start.

Grouping
--------
A drift that hits twenty features of one model is twenty alerts, written in
the same millisecond by the worker; twenty pages for one incident is a storm.
A receiver's worker therefore waits ``group_wait_s`` after the first job it
takes, collecting whatever else arrives, then sends one notification per
group (:func:`streams.core.alerting.lifecycle.group_key` of ``group_by``
labels, the model by default), in order of each group's first job, as
Alertmanager does with its ``group_wait``. Each member job still finishes on
its own (its record's offset, its dead letter), and the delivery log records
each member's key, so an alert delivered inside a group is known as
delivered however it is grouped after a restart. ``group_wait_s = 0`` sends
every alert on its own.

Fault injection
---------------
``commit_delay_s`` keeps a finished record from being committed until that
long after its last delivery, so that a test can kill the process in the
window between delivery and commit -- the window in which at-least-once is
decided. It is 0 in production.

Time is injected: ``clock`` (monotonic seconds) times the commit delay, and
``sleep`` (when given) replaces the interruptible wait between retries, so
that unit tests run without waiting.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streams.core.alerting.lifecycle import group_key
from streams.notify.channel import Notification
from streams.notify.routing import alert_labels

__all__ = [
    "Deliver",
    "Dispatcher",
    "Job",
    "OffsetTracker",
    "Outcome",
    "PartitionKey",
    "SourceRecord",
    "TrackedRecord",
]

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]
"""A partition as ``(topic, partition)``: hashable and free of Kafka client types."""

DEFAULT_MAX_IN_FLIGHT = 10_000
DEFAULT_GROUP_WAIT_S = 5.0
DEFAULT_GROUP_BY: tuple[str, ...] = ("model",)
MAX_GROUP_ALERTS = 100  # per notification: a bigger burst becomes several notifications


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one alert for one receiver.

    Attributes
    ----------
    receiver
        The receiver's name.
    status
        ``delivered``, ``duplicate`` (already in the delivery log),
        ``undeliverable`` (given up: dead-lettered) or ``muted`` (silenced or
        inhibited: not sent).
    attempts
        How many sends were made.
    reason
        Why it was given up, or what muted it; empty otherwise.
    """

    receiver: str
    status: str
    attempts: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """The consumed record a job belongs to: where it was read, and its bytes for a dead letter.

    Attributes
    ----------
    topic, partition, offset
        Where the record was read.
    key, value
        Its key and value, as read (a dead letter keeps the original bytes).
    received_ms
        Wall-clock epoch milliseconds when it was consumed.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""
    received_ms: int = 0

    @property
    def partition_key(self) -> PartitionKey:
        """``(topic, partition)``."""
        return (self.topic, self.partition)


class TrackedRecord:
    """One consumed record in an :class:`OffsetTracker`: its deliveries still outstanding.

    A handle returned by :meth:`OffsetTracker.track` and passed back to
    :meth:`OffsetTracker.finish`; only the tracker changes it, under its lock.
    ``cancelled`` becomes true when the record's partition was revoked or
    forgotten: its remaining jobs are then skipped.
    """

    __slots__ = ("cancelled", "done_at_s", "offset", "pending")

    def __init__(self, offset: int, pending: int) -> None:
        self.offset = offset
        self.pending = pending
        self.done_at_s: float | None = None
        self.cancelled = False

    def __repr__(self) -> str:
        return (f"TrackedRecord(offset={self.offset}, pending={self.pending}, "
                f"done_at_s={self.done_at_s}, cancelled={self.cancelled})")


@dataclass(slots=True)
class _Partition:
    records: deque[TrackedRecord] = field(default_factory=deque)
    last_offset: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Which consumed records still have deliveries outstanding, and so which offsets may be committed.

    Thread-safe: the consumer thread tracks records and asks what to commit;
    receiver workers finish deliveries.

    Parameters
    ----------
    commit_delay_s
        A finished record becomes committable only this long after its last
        delivery finished (fault injection for tests; 0 in production).
    clock
        Monotonic seconds (:func:`time.monotonic`; a fake in tests).

    Raises
    ------
    ValueError
        ``commit_delay_s`` negative or not finite.

    Examples
    --------
    >>> t = OffsetTracker()
    >>> r5, r6, r7 = (t.track(("alerts", 0), o, 1) for o in (5, 6, 7))
    >>> t.finish(r6), t.committable()        # 5 is unfinished: the commit stays at 5
    (True, {('alerts', 0): 5})
    >>> t.mark_committed({("alerts", 0): 5})
    >>> t.finish(r5), t.committable()        # 5 and 6 done: commit 7, the first unfinished
    (True, {('alerts', 0): 7})
    >>> t.finish(r7), t.committable(), t.outstanding
    (True, {('alerts', 0): 8}, 0)
    """

    def __init__(self, *, commit_delay_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(commit_delay_s, bool) or not (math.isfinite(commit_delay_s) and commit_delay_s >= 0):
            raise ValueError(f"commit_delay_s: must be finite seconds >= 0, got {commit_delay_s!r}")
        self._delay_s = float(commit_delay_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._parts: dict[PartitionKey, _Partition] = {}
        self._outstanding = 0

    @property
    def outstanding(self) -> int:
        """Deliveries tracked and not finished (cancelled ones excluded)."""
        with self._lock:
            return self._outstanding

    def partitions(self) -> list[PartitionKey]:
        """The partitions with tracking state, sorted."""
        with self._lock:
            return sorted(self._parts)

    def last_offset(self, partition: PartitionKey) -> int | None:
        """The offset of the last record tracked on ``partition``; None when it has no state."""
        with self._lock:
            p = self._parts.get(partition)
            return None if p is None else p.last_offset

    def track(self, partition: PartitionKey, offset: int, jobs: int) -> TrackedRecord:
        """Start tracking the record at ``offset`` of ``partition`` with ``jobs`` deliveries to make.

        A record with no jobs (muted, already delivered, dead-lettered at
        once) is finished at once, but still holds back commits until the
        records before it are finished.

        Raises
        ------
        ValueError
            ``offset`` or ``jobs`` negative, or ``offset`` not after the last
            offset tracked on the partition (a consumer that went back must
            :meth:`forget` the partition first).
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset: must be an int >= 0, got {offset!r}")
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
            raise ValueError(f"jobs: must be an int >= 0, got {jobs!r}")
        with self._lock:
            p = self._parts.setdefault(partition, _Partition())
            if p.last_offset is not None and offset <= p.last_offset:
                raise ValueError(
                    f"offset: {partition[0]}[{partition[1]}] offset {offset} is not after the last tracked "
                    f"one ({p.last_offset}); forget the partition before re-reading it"
                )
            record = TrackedRecord(offset, jobs)
            if jobs == 0:
                record.done_at_s = self._clock()
            p.records.append(record)
            p.last_offset = offset
            self._outstanding += jobs
            return record

    def finish(self, record: TrackedRecord) -> bool:
        """Count one of ``record``'s deliveries as finished; False (and nothing changes) if it was cancelled.

        Raises
        ------
        ValueError
            ``record`` has no delivery outstanding: finished more often than
            it had jobs.
        """
        with self._lock:
            if record.cancelled:
                return False
            if record.pending <= 0:
                raise ValueError(f"record: offset {record.offset} has no delivery outstanding to finish")
            record.pending -= 1
            self._outstanding -= 1
            if record.pending == 0:
                record.done_at_s = self._clock()
            return True

    def _position(self, p: _Partition, now_s: float) -> int | None:
        """Retire the finished head of ``p``; return its first unfinished offset, or one past the last."""
        while p.records:
            head = p.records[0]
            if head.pending or head.done_at_s is None or now_s - head.done_at_s < self._delay_s:
                return head.offset
            p.records.popleft()
        return None if p.last_offset is None else p.last_offset + 1

    def committable(self) -> dict[PartitionKey, int]:
        """Per partition, the offset to commit now, where it moved past what :meth:`mark_committed` saw.

        The offset is the first record not finished (or not yet past the
        commit delay), or one past the last record when every one is: Kafka's
        "next offset to read", so a restart resumes at the first record that
        may still need a delivery.
        """
        out: dict[PartitionKey, int] = {}
        with self._lock:
            now_s = self._clock()
            for key, p in self._parts.items():
                pos = self._position(p, now_s)
                if pos is not None and (p.committed is None or pos > p.committed):
                    out[key] = pos
        return out

    def mark_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Remember that ``offsets`` were committed, so :meth:`committable` does not offer them again.

        Partitions no longer tracked (revoked meanwhile) are ignored.
        """
        with self._lock:
            for key, offset in offsets.items():
                p = self._parts.get(key)
                if p is not None:
                    p.committed = offset if p.committed is None else max(p.committed, offset)

    def _drop(self, partitions: Iterable[PartitionKey], now_s: float) -> dict[PartitionKey, int]:
        out: dict[PartitionKey, int] = {}
        for key in partitions:
            p = self._parts.pop(key, None)
            if p is None:
                continue
            pos = self._position(p, now_s)
            if pos is not None and (p.committed is None or pos > p.committed):
                out[key] = pos
            for record in p.records:
                if not record.cancelled:
                    record.cancelled = True
                    self._outstanding -= record.pending
        return out

    def revoke(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        """Stop tracking ``partitions``; return the offsets to commit for them (as :meth:`committable`).

        Their unfinished records are cancelled: the partition's next owner
        re-reads them from the returned offset.
        """
        with self._lock:
            return self._drop(partitions, self._clock())

    def forget(self, partitions: Iterable[PartitionKey]) -> None:
        """Stop tracking ``partitions`` without committing (lost partitions, a consumer that went back)."""
        with self._lock:
            self._drop(partitions, self._clock())


@dataclass(frozen=True, slots=True)
class Job:
    """One notification to deliver, with the record it came from and that record's tracking handle."""

    notification: Notification
    source: SourceRecord
    record: TrackedRecord


Deliver = Callable[[Notification, Callable[[float], None]], Outcome]
"""Deliver one notification, sleeping between attempts with the given function (which may raise to abort)."""


class _Abandoned(Exception):
    """Raised in a worker's wait between retries: its job was revoked, or the dispatcher is stopping."""


class Dispatcher:
    """A worker thread and FIFO queue per receiver, and the :class:`OffsetTracker` of the jobs' records.

    Parameters
    ----------
    receivers
        The receivers' names; one worker each, started at once.
    deliver
        Delivers one notification (dedup check, retries, delivery-log
        record: :meth:`streams.notify.service.Notifier.deliver`), called in
        the receiver's worker thread.
    on_outcome
        Called in the worker thread with each finished job's outcome,
        *before* the job counts as finished: a dead letter produced here is
        produced before its record's offset can be committed.
    max_in_flight
        Outstanding jobs above which :meth:`throttled` turns true (it turns
        false again below half of it).
    commit_delay_s
        Fault injection: see :class:`OffsetTracker`.
    clock
        Monotonic seconds, for the commit delay.
    sleep
        Waits between retries; None waits on a condition that :meth:`stop`
        and :meth:`revoke` cut short. Whichever it is, a job whose record was
        cancelled, or a dispatcher that is stopping, abandons the job after it.
    group_wait_s
        How long a receiver's worker collects jobs after the first before
        sending them, grouped (see the module docstring); 0 sends each alone.
    group_by
        The labels whose values make a group.

    Raises
    ------
    ValueError
        No receivers, or ``max_in_flight`` not a positive int, or
        ``commit_delay_s`` invalid.

    Examples
    --------
    >>> from streams.notify.channel import Notification
    >>> sent = []
    >>> def deliver(n, sleep):
    ...     sent.append(n.idempotency_key)
    ...     return Outcome(n.receiver, "delivered", 1)
    >>> with Dispatcher(["ops"], deliver) as d:
    ...     _ = d.submit(SourceRecord("alerts", 0, 41), [Notification("k41", "ops", {})])
    ...     d.wait_idle(5.0)
    ...     sent, d.committable()
    True
    (['k41'], {('alerts', 0): 42})
    """

    def __init__(
        self,
        receivers: Iterable[str],
        deliver: Deliver,
        *,
        on_outcome: Callable[[Job, Outcome], None] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        commit_delay_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        group_wait_s: float = 0.0,
        group_by: Sequence[str] = DEFAULT_GROUP_BY,
    ) -> None:
        names = list(dict.fromkeys(receivers))
        if not names:
            raise ValueError("receivers: at least one receiver is needed")
        if isinstance(group_wait_s, bool) or not isinstance(group_wait_s, int | float) or not (
            0.0 <= group_wait_s < math.inf
        ):
            raise ValueError(f"group_wait_s: must be a finite number >= 0, got {group_wait_s!r}")
        if isinstance(group_by, str) or not all(isinstance(g, str) and g for g in group_by):
            raise ValueError(f"group_by: must be a list of label names, got {group_by!r}")
        self.group_wait_s = float(group_wait_s)
        self.group_by = tuple(group_by)
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight: must be a positive int, got {max_in_flight!r}")
        self.tracker = OffsetTracker(commit_delay_s=commit_delay_s, clock=clock)
        self.max_in_flight = max_in_flight
        self._deliver = deliver
        self._on_outcome = on_outcome
        self._sleep = sleep
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._idle = threading.Condition()
        self._unprocessed = 0  # jobs queued or being delivered, cancelled ones included (for wait_idle)
        self._failure: BaseException | None = None
        self._throttled = False
        self._queues: dict[str, queue.SimpleQueue[Job | None]] = {r: queue.SimpleQueue() for r in names}
        self._threads = {
            r: threading.Thread(target=self._work, args=(r,), name=f"notify-{r}", daemon=True) for r in names
        }
        for t in self._threads.values():
            t.start()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def receivers(self) -> list[str]:
        """The receivers' names, in the order given."""
        return list(self._queues)

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished (queued, being delivered, or waiting to retry)."""
        return self.tracker.outstanding

    def submit(self, source: SourceRecord, notifications: Sequence[Notification]) -> TrackedRecord:
        """Track ``source`` and queue one job per notification, each on its receiver's queue.

        An empty ``notifications`` (muted, all duplicates, dead-lettered)
        still tracks the record, finished at once, so that its offset is
        committed in turn.

        Raises
        ------
        ValueError
            A notification for a receiver without a worker, the dispatcher
            stopped, or ``source.offset`` not after the partition's last (see
            :meth:`OffsetTracker.track`).
        """
        if self._stopping.is_set():
            raise ValueError("submit: the dispatcher is stopped")
        for n in notifications:
            if n.receiver not in self._queues:
                raise ValueError(f"notification.receiver: no worker for receiver {n.receiver!r} "
                                 f"(receivers: {', '.join(self._queues)})")
        record = self.tracker.track(source.partition_key, source.offset, len(notifications))
        with self._idle:
            self._unprocessed += len(notifications)
        for n in notifications:
            self._queues[n.receiver].put(Job(n, source, record))
        return record

    def throttled(self) -> bool:
        """Whether consumption should pause: true above ``max_in_flight`` jobs until below half of it."""
        n = self.tracker.outstanding
        if self._throttled:
            if 2 * n < self.max_in_flight:
                self._throttled = False
        elif n > self.max_in_flight:
            self._throttled = True
        return self._throttled

    def committable(self) -> dict[PartitionKey, int]:
        """The offsets to commit now (see :meth:`OffsetTracker.committable`)."""
        return self.tracker.committable()

    def mark_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Record a successful commit (see :meth:`OffsetTracker.mark_committed`)."""
        self.tracker.mark_committed(offsets)

    def revoke(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        """Drop ``partitions``: return what to commit for them; their unfinished jobs are abandoned."""
        out = self.tracker.revoke(partitions)
        self._interrupt()
        return out

    def forget(self, partitions: Iterable[PartitionKey]) -> None:
        """Drop ``partitions`` without committing anything (lost partitions); abandon their jobs."""
        self.tracker.forget(partitions)
        self._interrupt()

    def check(self) -> None:
        """Raise if a worker died of an unexpected error (a delivery log that cannot write, a bug).

        Raises
        ------
        RuntimeError
            From the worker's exception. The consumer loop calls this so that
            such an error stops the notifier, as it did when deliveries ran in
            the loop itself, rather than leaving a receiver silently unserved.
        """
        if self._failure is not None:
            raise RuntimeError(f"notify: a delivery worker failed: {self._failure!r}") from self._failure

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (real time) until no job is queued or running; whether that happened within ``timeout_s``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unprocessed == 0, timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the workers: queued jobs and retries are abandoned, a send in progress may finish.

        Returns whether every worker exited within ``timeout_s`` (real time);
        one stuck in a send is left behind (a daemon thread), and its record
        stays uncommitted.
        """
        self._stopping.set()
        self._interrupt()
        for q in self._queues.values():
            q.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads.values())

    def _interrupt(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _abandoned(self, job: Job | _GroupJob) -> bool:
        return self._stopping.is_set() or job.record.cancelled

    def _between_attempts(self, seconds: float, *, job: Job | _GroupJob) -> None:
        if self._abandoned(job):
            raise _Abandoned
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            with self._wake:
                self._wake.wait_for(lambda: self._abandoned(job), timeout=seconds)
        if self._abandoned(job):
            raise _Abandoned

    def _work(self, receiver: str) -> None:
        q = self._queues[receiver]
        while True:
            job = q.get()
            if job is None or self._stopping.is_set():
                return
            batch, stop_after = self._collect(q, job)
            for jobs in self._groups(batch):
                self._deliver_jobs(receiver, jobs)
            if stop_after or self._failure is not None:
                return

    def _collect(self, q: queue.SimpleQueue[Job | None], first: Job) -> tuple[list[Job], bool]:
        """``first`` and what else arrives within ``group_wait_s`` (real time); whether a stop came."""
        batch = [first]
        if self.group_wait_s <= 0:
            return batch, False
        deadline = time.monotonic() + self.group_wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return batch, False
            try:
                nxt = q.get(timeout=left)
            except queue.Empty:
                return batch, False
            if nxt is None:
                return batch, True
            batch.append(nxt)

    def _groups(self, batch: list[Job]) -> list[list[Job]]:
        """``batch`` split by group key, groups in order of their first job, at most MAX_GROUP_ALERTS each."""
        if len(batch) == 1:
            return [batch]
        groups: dict[str, list[Job]] = {}
        for job in batch:
            groups.setdefault(group_key(alert_labels(job.notification.alert), self.group_by), []).append(job)
        return [jobs[i : i + MAX_GROUP_ALERTS] for jobs in groups.values()
                for i in range(0, len(jobs), MAX_GROUP_ALERTS)]

    def _deliver_jobs(self, receiver: str, jobs: list[Job]) -> None:
        """Deliver ``jobs`` (one group) as one notification; each job finishes on its own."""
        try:
            live = [j for j in jobs if not j.record.cancelled]
            if not live or self._stopping.is_set():
                return
            key = group_key(alert_labels(live[0].notification.alert), self.group_by)
            n = Notification.for_group([j.notification for j in live], key)
            lead = live[0] if len(live) == 1 else _GroupJob(n, live)
            outcome = self._deliver(n, functools.partial(self._between_attempts, job=lead))
            for j in live:
                if self._on_outcome is not None:
                    self._on_outcome(j, outcome)
                self.tracker.finish(j.record)
        except _Abandoned:
            log.info("%s: delivery of %s abandoned (partition revoked or stopping)", receiver,
                     ", ".join(j.notification.idempotency_key for j in jobs))
        except BaseException as exc:
            log.exception("%s: delivery worker failed", receiver)
            self._failure = exc
        finally:
            with self._idle:
                self._unprocessed -= len(jobs)
                self._idle.notify_all()


class _GroupRecord:
    """Cancelled when every member's record is: a group is given up only when none of it is wanted."""

    def __init__(self, members: list[Job]) -> None:
        self._members = members

    @property
    def cancelled(self) -> bool:
        return all(j.record.cancelled for j in self._members)


class _GroupJob:
    """The job a group's retries are waited on behalf of (see :meth:`Dispatcher._between_attempts`)."""

    def __init__(self, n: Notification, members: list[Job]) -> None:
        self.notification = n
        self.record = _GroupRecord(members)
