"""The notifier's consumer loop against a fake consumer and producer: commits, dead letters, pause, rebalance.

The fakes speak the few confluent-kafka methods :class:`NotifyLoop` calls; the
loop's ``stop`` callback drives each scenario (it runs once per iteration) and
ends it after a bounded real time, so a regression fails instead of hanging.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.notify import MemoryDeliveryLog, Notification, RetryPolicy, Route, RoutingTable
from streams.notify.channel import Channel, idempotency_key
from streams.notify.config import NotifyConfig
from streams.notify.service import Notifier, NotifyLoop, Outcome

from . import FIRING
from .test_dispatch import WAIT_S, FakeClock, Gate, Recorder, Refusing

TOPIC, DLQ = "t.alerts", "t.deadletter"
P0, P1 = (TOPIC, 0), (TOPIC, 1)


def alert(i: int, **extra: Any) -> dict[str, Any]:
    return {**FIRING, "fingerprint": f"{i:016x}", **extra}


@dataclass
class Message:
    partition_: int
    offset_: int
    value_: bytes
    key_: bytes | None = b"key"

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes:
        return self.value_

    def error(self) -> None:
        return None


def records(*alerts: tuple[int, dict[str, Any] | bytes]) -> list[Message]:
    """Messages for ``(partition, alert or raw bytes)``, offsets counted per partition from 0."""
    next_offset: dict[int, int] = {}
    out = []
    for partition, a in alerts:
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + 1
        out.append(Message(partition, offset, a if isinstance(a, bytes) else orjson.dumps(a)))
    return out


@dataclass
class FakeConsumer:
    """Returns its messages from unpaused partitions, one per poll; assigns both partitions on the first."""

    messages: list[Message]
    events: list[tuple[Any, ...]]
    partitions: tuple[int, ...] = (0, 1)
    pending: deque[Message] = field(init=False)
    callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = field(default_factory=dict)
    assigned: list[int] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    polls: int = 0
    on_poll: Callable[[FakeConsumer], None] | None = None

    def __post_init__(self) -> None:
        self.pending = deque(self.messages)

    def subscribe(self, topics: list[str], *, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        assert topics == [TOPIC]
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def tps(self, partitions: list[int]) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in partitions]

    def revoke(self, partitions: list[int]) -> None:
        self.callbacks["revoke"](self, self.tps(partitions))
        self.assigned = [p for p in self.assigned if p not in partitions]
        self.paused -= set(partitions)
        self.pending = deque(m for m in self.pending if m.partition() not in partitions)

    def poll(self, timeout: float) -> Message | None:
        if self.polls == 0:
            self.callbacks["assign"](self, self.tps(list(self.partitions)))
            self.assigned = list(self.partitions)
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self)
        for m in list(self.pending):
            if m.partition() in self.assigned and m.partition() not in self.paused:
                self.pending.remove(m)
                return m
        time.sleep(0.001)
        return None

    def assignment(self) -> list[TopicPartition]:
        return self.tps(self.assigned)

    def pause(self, parts: list[TopicPartition]) -> None:
        self.events.append(("pause", sorted(tp.partition for tp in parts), self.polls))
        self.paused |= {tp.partition for tp in parts}

    def resume(self, parts: list[TopicPartition]) -> None:
        self.events.append(("resume", sorted(tp.partition for tp in parts), self.polls))
        self.paused -= {tp.partition for tp in parts}

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        self.events.append(("commit", {(tp.topic, tp.partition): tp.offset for tp in offsets}))
        return offsets

    def committed(self) -> dict[tuple[str, int], int]:
        """The last offset committed per partition."""
        out: dict[tuple[str, int], int] = {}
        for e in self.events:
            if e[0] == "commit":
                out.update(e[1])
        return out


@dataclass
class FakeProducer:
    events: list[tuple[Any, ...]]

    def produce(self, topic: str, *, key: bytes | None, value: bytes) -> None:
        self.events.append(("produce", topic, msgspec.json.decode(value)))

    def flush(self, timeout: float) -> int:
        self.events.append(("flush",))
        return 0

    def poll(self, timeout: float) -> int:
        return 0


def notifier(channels: Mapping[str, Channel], routes: tuple[Route, ...] = (),
             policy: RetryPolicy | None = None) -> Notifier:
    cfg = NotifyConfig(dict(channels), RoutingTable(routes, next(iter(channels))),
                       policy or RetryPolicy(jitter=0.0), "", 0)
    return Notifier(cfg, MemoryDeliveryLog())


def run_loop(
    messages: list[Message],
    n: Notifier,
    until: Callable[[FakeConsumer], bool],
    **kwargs: Any,
) -> tuple[FakeConsumer, list[tuple[Any, ...]]]:
    """Run a loop (commit every iteration unless told otherwise) until ``until`` holds; fail after WAIT_S."""
    events: list[tuple[Any, ...]] = []
    consumer = FakeConsumer(messages, events, on_poll=kwargs.pop("on_poll", None))
    deadline = time.monotonic() + WAIT_S
    timed_out: list[bool] = []

    def stop() -> bool:
        if until(consumer):
            return True
        if time.monotonic() > deadline:
            timed_out.append(True)
            return True
        return False

    kwargs.setdefault("commit_interval_s", 0.0)
    loop = NotifyLoop(consumer, FakeProducer(events), n, topic=TOPIC, deadletter_topic=DLQ, stop=stop,
                      **kwargs)
    loop.run()
    assert not timed_out, f"scenario did not finish; events: {events[-10:]}"
    return consumer, events


# -- delivery and commits ------------------------------------------------------------------------------
def test_every_record_is_delivered_and_its_offset_committed() -> None:
    ch = Recorder("ops")
    msgs = records((0, alert(1)), (1, alert(2)), (0, alert(3)))
    run_loop(msgs, notifier({"ops": ch}), lambda c: c.committed() == {P0: 2, P1: 1})
    assert sorted(n.alert["fingerprint"] for n in ch.sent) == [alert(i)["fingerprint"] for i in (1, 2, 3)]


def test_a_receiver_that_is_down_holds_back_only_the_commit_not_the_other_receivers() -> None:
    down, up = Gate("down"), Recorder("up")
    n = notifier({"down": down, "up": up}, (Route("down", continue_=True), Route("up")))
    msgs = records(*((0, alert(i)) for i in range(4)))
    polls_when_all_up: list[int] = []

    def until(c: FakeConsumer) -> bool:
        if len(up.sent) == 4 and not polls_when_all_up:
            polls_when_all_up.append(c.polls)
        if polls_when_all_up and c.polls == polls_when_all_up[0] + 20:
            assert c.committed().get(P0, 0) == 0  # still waiting for "down": nothing committed past 0
            down.opened.set()
        return c.committed().get(P0) == 4

    run_loop(msgs, n, until)
    assert len(down.sent) == 4


def test_invalid_and_undeliverable_records_are_dead_lettered_and_flushed_before_their_commit() -> None:
    refusing = Refusing("am", retryable=False)
    msgs = records((0, b"{not json"), (0, alert(1)), (0, alert(2, status="resolved")))
    _, events = run_loop(msgs, notifier({"am": refusing}), lambda c: c.committed().get(P0) == 3)
    produced = sorted((e for e in events if e[0] == "produce"), key=lambda e: int(e[2]["source_offset"]))
    assert [(e[1], e[2]["reason"], e[2]["source_offset"]) for e in produced] == [
        (DLQ, "invalid_event", 0),        # not an alert
        (DLQ, "undeliverable", 1),        # refused
        (DLQ, "invalid_event", 2),        # resolved without ends_at_ms: no idempotency key
    ]
    assert "receiver am: not retryable: connection refused (1 attempts)" in produced[1][2]["detail"]
    assert base64.b64decode(produced[0][2]["original_b64"]) == b"{not json"
    for e in produced:  # each dead letter is flushed before a commit covers its offset
        i = events.index(e)
        first_commit = next(j for j, c in enumerate(events)
                            if c[0] == "commit" and c[1].get(P0, 0) > e[2]["source_offset"])
        assert any(x == ("flush",) for x in events[i:first_commit])


def test_muted_and_already_delivered_alerts_are_not_sent_but_committed() -> None:
    ch = Recorder("ops")
    n = notifier({"ops": ch})
    n.log.record(idempotency_key(alert(2), "ops"), 1)
    msgs = records((0, alert(1, evidence={"muted_by": ["silence:s1"]})), (0, alert(2)), (0, alert(3)))
    run_loop(msgs, n, lambda c: c.committed().get(P0) == 3)
    assert [x.alert["fingerprint"] for x in ch.sent] == [alert(3)["fingerprint"]]


def test_commit_delay_widens_the_window_between_delivery_and_commit() -> None:
    ch = Recorder("ops")
    clock = FakeClock()
    seen_delivered: list[int] = []

    def until(c: FakeConsumer) -> bool:
        if ch.sent and not seen_delivered:
            seen_delivered.append(c.polls)
        if seen_delivered and c.polls == seen_delivered[0] + 20:
            assert c.committed().get(P0, 0) == 0  # delivered, and 20 iterations later still not committed
            clock.now_s += 3.0
        return c.committed().get(P0) == 1

    run_loop(records((0, alert(1))), notifier({"ops": ch}), until, commit_delay_s=3.0, clock=clock)


# -- backpressure ------------------------------------------------------------------------------------------
def test_consumption_pauses_above_max_in_flight_keeps_polling_and_resumes_below_half() -> None:
    gate = Gate("ops")
    msgs = records(*((i % 2, alert(i)) for i in range(12)))
    paused_at: list[int] = []

    def until(c: FakeConsumer) -> bool:
        if c.paused and not paused_at:
            paused_at.append(c.polls)
            assert len(c.pending) == 7  # 5 consumed (> 4), then paused
        if paused_at and c.polls == paused_at[0] + 20:
            assert len(c.pending) == 7  # polled 20 more times, consumed nothing
            gate.opened.set()
        return c.committed() == {P0: 6, P1: 6}

    _, events = run_loop(msgs, notifier({"ops": gate}), until, max_in_flight=4)
    flow = [e for e in events if e[0] in ("pause", "resume")]
    # Paused, resumed once drained; with the gate open it may pause again, but always alternately.
    assert [(e[0], e[1]) for e in flow[:2]] == [("pause", [0, 1]), ("resume", [0, 1])]
    assert [e[0] for e in flow] == ["pause", "resume"] * (len(flow) // 2) + ["pause"] * (len(flow) % 2)
    assert len(gate.sent) == 12


def test_partitions_assigned_while_paused_are_paused_too() -> None:
    gate = Gate("ops")
    events: list[tuple[Any, ...]] = []
    consumer = FakeConsumer(records((0, alert(1)), (0, alert(2)), (1, alert(3))), events, partitions=(0,))
    ticks = [0]

    def stop() -> bool:
        ticks[0] += 1
        if ticks[0] == 30:
            assert consumer.paused == {0}
            consumer.callbacks["assign"](consumer, consumer.tps([1]))  # a rebalance gives us partition 1
            consumer.assigned.append(1)
        if ticks[0] == 60:
            assert consumer.paused == {0, 1} and len(consumer.pending) == 1
            gate.opened.set()
        return consumer.committed() == {P0: 2, P1: 1} or ticks[0] > 5000

    loop = NotifyLoop(consumer, FakeProducer(events), notifier({"ops": gate}), topic=TOPIC,
                      deadletter_topic=DLQ, stop=stop, max_in_flight=1, commit_interval_s=0.0)
    loop.run()
    assert consumer.committed() == {P0: 2, P1: 1}


# -- rebalance ------------------------------------------------------------------------------------------
def test_revocation_commits_what_is_finished_and_abandons_the_rest() -> None:
    slow, fast = Gate("slow"), Recorder("fast")
    n = notifier({"fast": fast, "slow": slow}, (Route("slow", match={"team": "slow"}),))
    slow_team = {"labels": {"team": "slow"}}
    msgs = records((0, alert(0)), (0, alert(1, **slow_team)), (0, alert(2, **slow_team)), (1, alert(3)),
                   (1, alert(4)))
    revoked: list[int] = []

    def on_poll(c: FakeConsumer) -> None:
        if not revoked and slow.entered.is_set() and len(fast.sent) == 3:
            revoked.append(c.polls)
            c.revoke([0])
            slow.opened.set()  # the send in progress completes after the revocation

    _, events = run_loop(msgs, n, lambda c: bool(revoked) and c.committed().get(P1) == 2, on_poll=on_poll)
    commits = [e[1] for e in events if e[0] == "commit"]
    assert max(c.get(P0, 0) for c in commits) == 1  # alert 1 was unfinished: the next owner starts there
    assert [x.alert["fingerprint"] for x in slow.sent] == [alert(1)["fingerprint"]]  # alert 2 never sent


def test_shutdown_commits_what_is_finished_and_abandons_retries_at_once() -> None:
    down, up = Refusing("down"), Recorder("up")
    n = notifier({"up": up, "down": down}, (Route("down", match={"team": "down"}),),
                 policy=RetryPolicy(initial_ms=60_000, max_ms=60_000, jitter=0.0, max_elapsed_ms=3_600_000))
    msgs = records((0, alert(1)), (0, alert(2, labels={"team": "down"})), (0, alert(3)))
    started = time.monotonic()
    consumer, events = run_loop(msgs, n, lambda c: len(up.sent) == 2 and down.attempts == 1,
                                commit_interval_s=3600.0)
    assert time.monotonic() - started < 2.0  # did not wait out the 60 s backoff
    assert consumer.committed() == {P0: 1}  # the final commit: alert 2 is retried by the next start
    assert not [e for e in events if e[0] == "produce"]  # abandoned, not dead-lettered


def test_loop_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="commit_interval_s: must be a finite number of seconds >= 0, got -"):
        NotifyLoop(None, None, notifier({"ops": Recorder("ops")}), topic=TOPIC, deadletter_topic=DLQ,
                   commit_interval_s=-1)


# -- Notifier.handle: the stages in one thread ---------------------------------------------------------------
def test_handle_gives_one_outcome_per_routed_receiver_in_route_order() -> None:
    a, b, c = Recorder("a"), Refusing("b", retryable=False), Recorder("c")
    n = notifier({"a": a, "b": b, "c": c},
                 (Route("c", continue_=True), Route("b", continue_=True), Route("a")))
    n.log.record(idempotency_key(alert(1), "b"), 1)
    assert n.handle(alert(1)) == [Outcome("c", "delivered", 1), Outcome("b", "duplicate"),
                                  Outcome("a", "delivered", 1)]
    assert n.handle(alert(2)) == [Outcome("c", "delivered", 1),
                                  Outcome("b", "undeliverable", 1, "not retryable: connection refused"),
                                  Outcome("a", "delivered", 1)]
    assert n.handle(alert(1)) == [Outcome(r, "duplicate") for r in ("c", "b", "a")]
    muted = alert(3, evidence={"muted_by": ["silence:x"]})
    assert [o.status for o in n.handle(muted)] == ["muted"] * 3


def test_deliver_uses_the_given_sleep_between_attempts() -> None:
    down = Refusing("ops")
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 2:
            down.up.set()

    n = notifier({"ops": down}, policy=RetryPolicy(initial_ms=100, jitter=0.0))
    note = Notification.for_alert(alert(1), "ops")
    assert n.deliver(note, sleep) == Outcome("ops", "delivered", 3)
    assert waits == [0.1, 0.2]
    assert n.log.has(note.idempotency_key)
