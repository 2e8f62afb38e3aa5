"""Per-receiver workers and the offset tracker: no Kafka, fake channels, waits bounded by events.

What is pinned here: a receiver that is down (hanging, or refusing and retrying)
does not delay another receiver; each receiver gets its notifications in the
order they were submitted; the offset offered for commit never passes a record
with a delivery outstanding; throttling turns on above ``max_in_flight`` and off
below half of it; revocation commits what is finished and abandons the rest.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.notify import (
    DeliveryError,
    MemoryDeliveryLog,
    Notification,
    RetryPolicy,
    RoutingTable,
)
from streams.notify.channel import Channel
from streams.notify.config import NotifyConfig
from streams.notify.dispatch import Dispatcher, Job, OffsetTracker, Outcome, SourceRecord
from streams.notify.service import Notifier

from . import FIRING, RESOLVED

WAIT_S = 5.0  # upper bound on any wait; a passing test waits milliseconds


# -- fakes ------------------------------------------------------------------------------------------------
@dataclass
class Recorder:
    """A channel that acknowledges everything, remembering what it was sent."""

    name: str
    sent: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, n: Notification) -> None:
        with self.lock:
            self.sent.append(n)

    def keys(self) -> list[str]:
        with self.lock:
            return [n.idempotency_key for n in self.sent]

    def close(self) -> None:
        pass


@dataclass
class Gate(Recorder):
    """A receiver that is down: ``send`` hangs until the gate opens (or takes a permit when counted)."""

    opened: threading.Event = field(default_factory=threading.Event)
    permits: threading.Semaphore | None = None
    entered: threading.Event = field(default_factory=threading.Event)

    def send(self, n: Notification) -> None:
        self.entered.set()
        if self.permits is not None:
            assert self.permits.acquire(timeout=WAIT_S), "gate: no permit came"
        else:
            assert self.opened.wait(WAIT_S), "gate: never opened"
        super().send(n)


@dataclass
class Refusing(Recorder):
    """A receiver that refuses with a retryable (or not) error until ``up`` is set."""

    retryable: bool = True
    up: threading.Event = field(default_factory=threading.Event)
    attempts: int = 0

    def send(self, n: Notification) -> None:
        with self.lock:
            self.attempts += 1
        if not self.up.is_set():
            raise DeliveryError("connection refused", self.retryable)
        super().send(n)


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def config(channels: Mapping[str, Channel], policy: RetryPolicy | None = None) -> NotifyConfig:
    default = next(iter(channels))
    return NotifyConfig(dict(channels), RoutingTable((), default), policy or RetryPolicy(jitter=0.0), "", 0)


def alert(i: int, status: str = "firing") -> dict[str, Any]:
    base = RESOLVED if status == "resolved" else FIRING
    return {**base, "fingerprint": f"{i:016x}"}


def note(i: int, receiver: str, status: str = "firing") -> Notification:
    return Notification.for_alert(alert(i, status), receiver)


def src(offset: int, partition: int = 0) -> SourceRecord:
    return SourceRecord("alerts", partition, offset, b"k", b"v", 0)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def dispatcher(
    channels: Mapping[str, Channel],
    *,
    policy: RetryPolicy | None = None,
    on_outcome: Callable[[Job, Outcome], None] | None = None,
    **kwargs: Any,
) -> tuple[Dispatcher, Notifier]:
    n = Notifier(config(channels, policy), MemoryDeliveryLog())
    return Dispatcher(channels, n.deliver, on_outcome=on_outcome, **kwargs), n


# -- a receiver that is down delays only itself ---------------------------------------------------------
@pytest.mark.parametrize("how", ["hangs", "refuses and retries"])
def test_a_receiver_that_is_down_does_not_delay_another(how: str) -> None:
    up = Recorder("up")
    down: Gate | Refusing = Gate("down") if how == "hangs" else Refusing("down")
    backoff = threading.Event()  # the retry wait of a refusing receiver lasts until the test ends it
    d, _ = dispatcher({"down": down, "up": up}, sleep=lambda s: backoff.wait(WAIT_S),
                      policy=RetryPolicy(jitter=0.0, max_elapsed_ms=3_600_000))
    with d:
        for i in range(5):
            d.submit(src(i), [note(i, "down"), note(i, "up")])
        wait_until(lambda: len(up.sent) == 5, "the healthy receiver's five deliveries")
        assert down.sent == []
        # Every record still waits for "down": the commit may not move past the first one.
        assert d.committable() == {("alerts", 0): 0} and d.in_flight == 5
        if isinstance(down, Gate):
            down.opened.set()
        else:
            down.up.set()
            backoff.set()
        assert d.wait_idle(WAIT_S)
        assert [n.idempotency_key for n in down.sent] == [note(i, "down").idempotency_key for i in range(5)]
        assert d.committable() == {("alerts", 0): 5} and d.in_flight == 0


def test_each_receiver_gets_its_notifications_in_submission_order() -> None:
    rng = random.Random(7)

    class Jittery(Recorder):
        def send(self, n: Notification) -> None:
            time.sleep(rng.random() / 2000)  # up to 0.5 ms: workers interleave differently every run
            super().send(n)

    channels = {name: Jittery(name) for name in ("a", "b", "c")}
    d, _ = dispatcher(channels)
    expected: dict[str, list[str]] = {name: [] for name in channels}
    with d:
        for offset in range(60):
            i, status = divmod(offset, 2)  # alert i fires, then resolves
            receivers = [r for r in channels if rng.random() < 0.7] or ["a"]
            notes = [note(i, r, "resolved" if status else "firing") for r in receivers]
            for n in notes:
                expected[n.receiver].append(n.idempotency_key)
            d.submit(src(offset, partition=offset % 3), notes)
        assert d.wait_idle(WAIT_S)
    for name, ch in channels.items():
        assert ch.keys() == expected[name], name
        statuses: dict[str, list[str]] = {}
        for n in ch.sent:
            statuses.setdefault(n.alert["fingerprint"], []).append(n.alert["status"])
        assert all(s == sorted(s) for s in statuses.values()), name  # never a resolve before its firing


def test_the_same_key_queued_twice_is_sent_once() -> None:
    ch = Recorder("ops")
    outcomes: list[Outcome] = []
    d, _ = dispatcher({"ops": ch}, on_outcome=lambda job, o: outcomes.append(o))
    with d:
        d.submit(src(0), [note(1, "ops")])
        d.submit(src(1), [note(1, "ops")])  # a duplicate record in the topic
        assert d.wait_idle(WAIT_S)
    assert len(ch.sent) == 1 and [o.status for o in outcomes] == ["delivered", "duplicate"]


# -- the offset tracker ------------------------------------------------------------------------------------
# (jobs per record at offsets 10, 11, ..., the order records' jobs finish, the offset committable after each)
TRACKER_CASES = [
    ("in order", [1, 1, 1], [0, 1, 2], [11, 12, 13]),
    ("out of order", [1, 1, 1], [2, 1, 0], [10, 10, 13]),
    ("middle first", [1, 1, 1], [1, 0, 2], [10, 12, 13]),
    ("two jobs on the first", [2, 1], [0, 1, 0], [10, 10, 12]),
    ("records without jobs are finished at once", [0, 1, 0, 1], [3, 1], [11, 14]),
    ("a record without jobs waits for the ones before", [1, 0, 0], [0], [13]),
]


@pytest.mark.parametrize(("jobs", "finish_order", "expected"), [c[1:] for c in TRACKER_CASES],
                         ids=[c[0] for c in TRACKER_CASES])
def test_committable_offset_is_the_first_unfinished_record(
    jobs: list[int], finish_order: list[int], expected: list[int]
) -> None:
    t = OffsetTracker()
    records = [t.track(("alerts", 0), 10 + i, n) for i, n in enumerate(jobs)]
    got = []
    for i in finish_order:
        assert t.finish(records[i])
        got.append(t.committable()[("alerts", 0)])
    assert got == expected
    assert t.outstanding == 0


@pytest.mark.parametrize("seed", range(25))
def test_committable_offset_never_passes_an_unfinished_record(seed: int) -> None:
    rng = random.Random(seed)
    t = OffsetTracker()
    unfinished: dict[tuple[str, int], dict[int, int]] = {("alerts", 0): {}, ("alerts", 1): {}}
    handles = []
    for part in unfinished:
        offset = rng.randrange(100)
        for _ in range(30):
            offset += rng.randrange(1, 3)  # gaps, as compaction or transaction markers leave
            n = rng.randrange(4)
            handles += [(part, offset, h) for h in [t.track(part, offset, n)] * n]
            if n:
                unfinished[part][offset] = n
    rng.shuffle(handles)
    committed: dict[tuple[str, int], int] = {}
    for part, offset, handle in handles:
        assert t.finish(handle)
        unfinished[part][offset] -= 1
        if not unfinished[part][offset]:
            del unfinished[part][offset]
        offers = t.committable()
        for p, pos in offers.items():
            assert all(pos <= o for o in unfinished[p]), (p, pos, min(unfinished[p]))
            assert pos > committed.get(p, -1)  # only forward
        t.mark_committed(offers)
        committed.update(offers)
    assert t.outstanding == 0 and t.committable() == {}


def test_commit_delay_holds_a_finished_record_back() -> None:
    clock = FakeClock()
    t = OffsetTracker(commit_delay_s=3.0, clock=clock)
    r0, r1 = t.track(("alerts", 0), 0, 1), t.track(("alerts", 0), 1, 1)
    t.finish(r0)
    clock.now_s += 2.0
    t.finish(r1)
    assert t.committable() == {("alerts", 0): 0}
    clock.now_s += 1.0  # r0 finished 3 s ago
    assert t.committable() == {("alerts", 0): 1}
    clock.now_s += 2.0
    assert t.committable() == {("alerts", 0): 2}


def test_mark_committed_stops_offering_the_same_offset() -> None:
    t = OffsetTracker()
    t.finish(t.track(("alerts", 0), 4, 1))
    assert t.committable() == {("alerts", 0): 5}
    t.mark_committed({("alerts", 0): 5, ("gone", 9): 1})  # a partition revoked meanwhile is ignored
    assert t.committable() == {}


def test_revoke_returns_what_is_finished_and_cancels_the_rest() -> None:
    t = OffsetTracker()
    p0, p1 = ("alerts", 0), ("alerts", 1)
    a, b, c = t.track(p0, 0, 1), t.track(p0, 1, 2), t.track(p0, 2, 1)
    other = t.track(p1, 7, 1)
    t.finish(a)
    t.finish(c)
    assert t.outstanding == 3
    assert t.revoke([p0, ("alerts", 5)]) == {p0: 1}  # b is unfinished: its next owner starts there
    assert b.cancelled and t.outstanding == 1 and t.partitions() == [p1]
    assert not t.finish(b)  # a late finish of a revoked record changes nothing
    assert t.outstanding == 1 and t.committable() == {p1: 7}
    t.forget([p1])
    assert other.cancelled and t.outstanding == 0 and t.committable() == {}
    t.track(p0, 0, 0)  # a partition assigned again starts afresh
    assert t.committable() == {p0: 1}


# -- throttling ----------------------------------------------------------------------------------------------
def test_throttled_above_max_in_flight_until_below_half() -> None:
    gate = Gate("ops", permits=threading.Semaphore(0))
    d, _ = dispatcher({"ops": gate}, max_in_flight=4)
    with d:
        seen = []
        for i in range(5):
            d.submit(src(i), [note(i, "ops")])
            seen.append(d.throttled())
        assert seen == [False, False, False, False, True]  # 5 outstanding > 4
        # Draining one at a time: still throttled at 4, 3 and 2 (not below half), released at 1.
        for outstanding, throttled in [(4, True), (3, True), (2, True), (1, False), (0, False)]:
            assert gate.permits is not None
            gate.permits.release()
            wait_until(lambda n=outstanding: d.in_flight == n, f"{outstanding} outstanding")  # type: ignore[misc]
            assert d.throttled() is throttled, outstanding
        d.submit(src(5), [note(5, "ops")])
        assert not d.throttled()  # not throttled again until above the limit
        gate.permits.release()


# -- revocation and shutdown abandon what is not finished ---------------------------------------------------
def test_revocation_skips_queued_jobs_and_ignores_the_send_in_progress() -> None:
    slow, fast = Gate("slow"), Recorder("fast")
    d, _ = dispatcher({"slow": slow, "fast": fast})
    p0, p1 = ("alerts", 0), ("alerts", 1)
    with d:
        d.submit(src(0, 0), [note(0, "fast")])
        d.submit(src(1, 0), [note(1, "slow")])  # being sent when revoked
        d.submit(src(2, 0), [note(2, "slow")])  # queued behind it
        d.submit(src(0, 1), [note(3, "fast")])
        assert slow.entered.wait(WAIT_S)
        wait_until(lambda: len(fast.sent) == 2, "fast deliveries")
        assert d.revoke([p0]) == {p0: 1}
        assert d.in_flight == 0
        slow.opened.set()
        assert d.wait_idle(WAIT_S)
    assert slow.keys() == [note(1, "slow").idempotency_key]  # the queued job was skipped
    assert d.committable() == {p1: 1}


@pytest.mark.parametrize("how", ["revoke", "stop"])
def test_a_job_waiting_to_retry_is_abandoned_at_once(how: str) -> None:
    down = Refusing("down")
    outcomes: list[Outcome] = []
    policy = RetryPolicy(initial_ms=60_000, max_ms=60_000, jitter=0.0, max_elapsed_ms=3_600_000)
    d, _ = dispatcher({"down": down}, policy=policy, on_outcome=lambda job, o: outcomes.append(o))
    d.submit(src(0), [note(0, "down")])
    wait_until(lambda: down.attempts == 1, "the first attempt")
    started = time.monotonic()
    if how == "revoke":
        d.revoke([("alerts", 0)])
        assert d.wait_idle(WAIT_S)
        d.stop()
    else:
        assert d.stop(WAIT_S)
    assert time.monotonic() - started < 2.0  # not the 60 s backoff
    assert down.attempts == 1 and outcomes == []  # abandoned: no outcome, so no dead letter


def test_stop_leaves_queued_jobs_unsent_and_uncommitted() -> None:
    gate = Gate("ops")
    d, _ = dispatcher({"ops": gate})
    d.submit(src(0), [note(0, "ops")])
    d.submit(src(1), [note(1, "ops")])
    assert gate.entered.wait(WAIT_S)
    stopper = threading.Thread(target=d.stop)
    stopper.start()
    gate.opened.set()  # the send in progress completes
    stopper.join(WAIT_S)
    assert gate.keys() == [note(0, "ops").idempotency_key]
    assert d.committable() == {("alerts", 0): 1}


# -- outcomes, failures and misuse ----------------------------------------------------------------------
def test_an_undeliverable_outcome_is_reported_before_its_record_counts_as_finished() -> None:
    down = Refusing("down", retryable=False)
    seen: list[tuple[str, int, dict[tuple[str, int], int]]] = []
    d: Dispatcher

    def on_outcome(job: Job, o: Outcome) -> None:
        seen.append((o.status, job.source.offset, d.committable()))

    d, _ = dispatcher({"down": down}, on_outcome=on_outcome)
    with d:
        d.submit(src(3), [note(3, "down")])
        assert d.wait_idle(WAIT_S)
        assert seen == [("undeliverable", 3, {("alerts", 0): 3})]  # not yet past 3 while dead-lettering
        assert d.committable() == {("alerts", 0): 4}


def test_a_worker_that_fails_is_reported_and_its_record_stays_uncommitted() -> None:
    def deliver(n: Notification, sleep: Callable[[float], None]) -> Outcome:
        raise OSError("No space left on device")

    with Dispatcher(["ops"], deliver) as d:
        d.submit(src(0), [note(0, "ops")])
        assert d.wait_idle(WAIT_S)
        with pytest.raises(RuntimeError, match=r"delivery worker failed.*No space left"):
            d.check()
        assert d.committable() == {("alerts", 0): 0}


def _ok(n: Notification, sleep: Callable[[float], None]) -> Outcome:
    return Outcome(n.receiver, "delivered", 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Dispatcher([], _ok), "receivers: at least one"),
        (lambda: Dispatcher(["a"], _ok, max_in_flight=0), "max_in_flight: must be a positive int, got 0"),
        (lambda: Dispatcher(["a"], _ok, max_in_flight=True), "max_in_flight: must be a positive int"),
        (lambda: Dispatcher(["a"], _ok, commit_delay_s=-1.0), "commit_delay_s: must be finite"),
        (lambda: OffsetTracker(commit_delay_s=float("nan")), "commit_delay_s: must be finite"),
    ],
    ids=["no receivers", "zero limit", "bool limit", "negative delay", "nan delay"],
)
def test_construction_errors_name_the_parameter(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        d = make()
        if isinstance(d, Dispatcher):
            d.stop()


def test_usage_errors_are_precise() -> None:
    t = OffsetTracker()
    r = t.track(("alerts", 0), 5, 1)
    with pytest.raises(ValueError, match=r"offset: alerts\[0\] offset 5 is not after the last tracked one"):
        t.track(("alerts", 0), 5, 1)
    with pytest.raises(ValueError, match="jobs: must be an int >= 0, got -1"):
        t.track(("alerts", 0), 6, -1)
    with pytest.raises(ValueError, match="offset: must be an int >= 0, got -2"):
        t.track(("alerts", 0), -2, 1)
    t.finish(r)
    with pytest.raises(ValueError, match="record: offset 5 has no delivery outstanding"):
        t.finish(r)
    d = Dispatcher(["a"], _ok)
    with pytest.raises(ValueError, match=r"notification\.receiver: no worker for receiver 'b'"):
        d.submit(src(0), [note(0, "b")])
    assert d.committable() == {}  # nothing was tracked
    d.stop()
    with pytest.raises(ValueError, match="submit: the dispatcher is stopped"):
        d.submit(src(0), [note(0, "a")])


# -- grouping -----------------------------------------------------------------------------------------------
def model_note(i: int, model: str, receiver: str = "ops") -> Notification:
    return Notification.for_alert({**alert(i), "model": model}, receiver)


def test_alerts_of_one_model_within_group_wait_are_one_notification_per_model() -> None:
    ch = Recorder("ops")
    outcomes: list[tuple[int, str]] = []
    d, log_ = dispatcher({"ops": ch}, group_wait_s=0.2,
                         on_outcome=lambda job, o: outcomes.append((job.source.offset, o.status)))
    with d:
        d.submit(src(0), [model_note(0, "fraud")])
        d.submit(src(1), [model_note(1, "churn")])
        d.submit(src(2), [model_note(2, "fraud")])
        assert d.wait_idle(WAIT_S)
        assert d.committable() == {("alerts", 0): 3}
    assert [[a["model"] for a in n.alerts] for n in ch.sent] == [["fraud", "fraud"], ["churn"]]
    fraud = ch.sent[0]
    assert fraud.group_key == '{model="fraud"}' and fraud.keys == (
        model_note(0, "fraud").idempotency_key, model_note(2, "fraud").idempotency_key)
    assert sorted(outcomes) == [(0, "delivered"), (1, "delivered"), (2, "delivered")]
    # each member is in the delivery log: the same alert is not sent again, alone or grouped
    assert all(log_.log.has(k) for n in ch.sent for k in n.keys)


def test_an_undeliverable_group_dead_letters_every_member_record() -> None:
    ch = Refusing("ops", retryable=False)
    outcomes: list[tuple[int, str]] = []
    d, _ = dispatcher({"ops": ch}, group_wait_s=0.2,
                      on_outcome=lambda job, o: outcomes.append((job.source.offset, o.status)))
    with d:
        d.submit(src(0), [model_note(0, "fraud")])
        d.submit(src(1), [model_note(1, "fraud")])
        assert d.wait_idle(WAIT_S)
        assert d.committable() == {("alerts", 0): 2}
    assert ch.attempts == 1 and sorted(outcomes) == [(0, "undeliverable"), (1, "undeliverable")]


def test_without_group_wait_every_alert_goes_alone() -> None:
    ch = Recorder("ops")
    d, _ = dispatcher({"ops": ch})
    with d:
        for i in range(3):
            d.submit(src(i), [model_note(i, "fraud")])
        assert d.wait_idle(WAIT_S)
    assert [len(n.alerts) for n in ch.sent] == [1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_wait_s": -1}, "group_wait_s"),
        ({"group_wait_s": float("inf")}, "group_wait_s"),
        ({"group_by": "model"}, "group_by"),
        ({"group_by": ["model", ""]}, "group_by"),
    ],
)
def test_bad_grouping_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Dispatcher(["ops"], lambda n, s: Outcome("ops", "delivered"), **kwargs)
