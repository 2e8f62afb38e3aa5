"""``driftline notify``: a consumer group on the alerts topic that delivers every alert event.

The consumer loop (:class:`NotifyLoop`) decodes each alert record, routes it,
and hands one job per receiver to that receiver's worker
(:class:`streams.notify.dispatch.Dispatcher`): a receiver that is down is
retried in its own thread and delays only its own deliveries, never another
receiver's or the consumption of later alerts. Order per receiver is the
consumption order, so a firing reaches a receiver before its resolve.

At-least-once, end to end: a partition's offset is committed (synchronously,
every ``commit_interval_s`` and at shutdown) only up to its first record with
a delivery still outstanding, so a notifier killed between receiving and
acknowledging reads that record again after a restart. Each delivery carries
an idempotency key derived from the alert and the receiver; the delivery log
(append-only, fsynced) skips keys already acknowledged, and receivers that
deduplicate (the webhook's ``Idempotency-Key`` header, email ``Message-ID``,
Alertmanager's label fingerprint) absorb the one re-send a crash between
acknowledgement and logging can cause.

A receiver that is down is retried with backoff for ``retry.max_elapsed``;
after that, or on a refusal that retrying cannot fix, the alert goes to the
dead-letter topic with reason ``undeliverable`` and the receiver's last error
(produced by the worker, and flushed before the offset is committed). Alerts
muted by a silence or an inhibition (``evidence.muted_by``) are not sent.

Memory is bounded: above ``max_in_flight`` outstanding deliveries the loop
pauses its partitions (still polling, so that it stays in the group) and
resumes them once half have drained. Partitions revoked in a rebalance have
what is finished committed and the rest abandoned to their next owner.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from confluent_kafka import KafkaException, TopicPartition

from streams.events.models import AlertV1, DeadLetterV1
from streams.events.reasons import Reason
from streams.notify.channel import Notification
from streams.notify.config import NotifyConfig
from streams.notify.dedup import DeliveryLog
from streams.notify.dispatch import Dispatcher, Job, Outcome, PartitionKey, SourceRecord
from streams.notify.retry import DeliveryResult, deliver_with_retry
from streams.notify.routing import alert_labels

__all__ = ["Notifier", "NotifyLoop", "Outcome", "run", "undeliverable"]

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_alert = msgspec.json.Decoder(AlertV1).decode

_GC_INTERVAL_S = 3600.0


class Notifier:
    """The stages for one alert: route, dedup, deliver with retries, record.

    :meth:`plan` (consumer thread) turns an alert into the notifications to
    send; :meth:`deliver` (a receiver's worker) sends one. :meth:`handle`
    does both in sequence, for tools and tests that want one alert's
    outcomes without threads.

    Parameters
    ----------
    cfg
        Channels, routing, retry policy, retention.
    delivery_log
        Keys already acknowledged; shared by all workers (it is thread-safe).
    sleep
        Default wait between retries (a worker passes its own, interruptible one).
    clock
        Wall-clock epoch seconds, for the delivery log's timestamps.
    rng
        Jitter source.
    monotonic
        Monotonic seconds, for the retry budget (immune to clock steps).
    """

    def __init__(
        self,
        cfg: NotifyConfig,
        delivery_log: DeliveryLog,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.log = delivery_log
        self.sleep = sleep
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.Random()

    def plan(self, alert: Mapping[str, Any]) -> tuple[list[Notification], list[Outcome]]:
        """The notifications to send for ``alert``, and the outcomes of receivers skipped (muted, duplicate).

        Raises
        ------
        ValueError
            No idempotency key can be derived (a resolved alert without
            ``ends_at_ms``): the event is invalid.
        """
        evidence = alert.get("evidence") or {}
        receivers = self.cfg.routing.routes_for(alert_labels(alert))
        if evidence.get("muted_by"):
            return [], [Outcome(r, "muted", reason=str(evidence["muted_by"])) for r in receivers]
        send: list[Notification] = []
        skipped: list[Outcome] = []
        for receiver in receivers:
            n = Notification.for_alert(alert, receiver)
            if self.log.has(n.idempotency_key):
                skipped.append(Outcome(receiver, "duplicate"))
            else:
                send.append(n)
        return send, skipped

    def deliver(self, n: Notification, sleep: Callable[[float], None] | None = None) -> Outcome:
        """Send ``n`` with retries and record it once acknowledged; keys already logged are not re-sent.

        The log is asked again here, not only in :meth:`plan`: the same key
        may have been queued twice (the record re-read, a duplicate in the
        topic) and delivered by the first job meanwhile. What is asked and
        recorded are the per-alert keys (``n.keys``: the notification's own
        key for one alert, its members' for a group), so that an alert
        delivered once is recognised however it is grouped the next time.
        """
        keys = n.keys
        if all(self.log.has(k) for k in keys):
            return Outcome(n.receiver, "duplicate")
        res: DeliveryResult = deliver_with_retry(
            self.cfg.channels[n.receiver], n, self.cfg.retry, sleep or self.sleep, self.monotonic, self.rng
        )
        if not res.delivered:
            return Outcome(n.receiver, "undeliverable", res.attempts, res.reason)
        at_ms = int(self.clock() * 1000)
        for k in keys:
            self.log.record(k, at_ms)
        return Outcome(n.receiver, "delivered", res.attempts)

    def handle(self, alert: Mapping[str, Any]) -> list[Outcome]:
        """Route and deliver ``alert`` in this thread, one receiver after another; outcomes in route order."""
        send, skipped = self.plan(alert)
        outcomes = skipped + [self.deliver(n) for n in send]
        order = {r: i for i, r in enumerate(self.cfg.routing.routes_for(alert_labels(alert)))}
        return sorted(outcomes, key=lambda o: order.get(o.receiver, len(order)))

    def forget_old(self) -> int:
        """Drop delivery-log keys older than the retention; how many."""
        return self.log.forget_before(int(self.clock() * 1000) - self.cfg.retention_ms)


def undeliverable(
    value: bytes,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    detail: str,
    now_ms: int,
    reason: Reason = Reason.UNDELIVERABLE,
) -> bytes:
    """A dead letter for an alert record, holding its original bytes."""
    return _encode(
        DeadLetterV1(
            reason=reason.value,
            detail=detail[:2000],
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original_b64=base64.b64encode(value).decode("ascii"),
            original_size_bytes=len(value),
            received_ms=now_ms,
            source_key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
        )
    )


def _keys(partitions: list[Any]) -> list[PartitionKey]:
    return [(tp.topic, tp.partition) for tp in partitions]


class NotifyLoop:
    """The consumer side of ``driftline notify``: poll, plan, dispatch, commit, pause, rebalance.

    Separate from :func:`run` so that it runs against a fake consumer and
    producer in unit tests; everything Kafka-specific it needs is the
    confluent-kafka ``Consumer``/``Producer`` methods it calls.

    Parameters
    ----------
    consumer
        A confluent-kafka ``Consumer`` with ``enable.auto.commit`` off, not yet subscribed.
    producer
        A confluent-kafka ``Producer`` for dead letters (thread-safe: workers produce).
    notifier
        The stages for one alert.
    topic, deadletter_topic
        The alerts topic, and where undeliverable or invalid records go.
    stop
        Polled every iteration; true ends the loop.
    max_in_flight
        Outstanding deliveries above which the partitions are paused.
    commit_interval_s
        How often finished offsets are committed.
    commit_delay_s
        Fault injection: each record's offset is committed no sooner than
        this after its deliveries (see :mod:`streams.notify.dispatch`).
    poll_timeout_s
        The longest one ``poll`` blocks; bounds the commit cadence when idle.
    flush_timeout_s
        How long to wait for dead letters to be acknowledged before a commit.
    stop_timeout_s
        How long shutdown waits for sends in progress.
    clock
        Monotonic seconds (commit cadence, commit delay, log GC).
    retry_sleep
        Replaces the workers' interruptible wait between retries (tests).

    Raises
    ------
    ValueError
        A negative or non-finite interval or timeout, or ``max_in_flight`` not
        a positive int.
    """

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        notifier: Notifier,
        *,
        topic: str,
        deadletter_topic: str,
        stop: Callable[[], bool] = lambda: False,
        max_in_flight: int = 10_000,
        commit_interval_s: float = 0.5,
        commit_delay_s: float = 0.0,
        poll_timeout_s: float = 0.2,
        flush_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        retry_sleep: Callable[[float], None] | None = None,
    ) -> None:
        for name, value in (("commit_interval_s", commit_interval_s), ("poll_timeout_s", poll_timeout_s),
                            ("flush_timeout_s", flush_timeout_s), ("stop_timeout_s", stop_timeout_s)):
            if isinstance(value, bool) or not (0 <= value < float("inf")):
                raise ValueError(f"{name}: must be a finite number of seconds >= 0, got {value!r}")
        self.consumer = consumer
        self.producer = producer
        self.notifier = notifier
        self.topic = topic
        self.deadletter_topic = deadletter_topic
        self.stop = stop
        self.commit_interval_s = commit_interval_s
        self.poll_timeout_s = poll_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock
        self.dispatcher = Dispatcher(
            notifier.cfg.channels,
            notifier.deliver,
            on_outcome=self._on_outcome,
            max_in_flight=max_in_flight,
            commit_delay_s=commit_delay_s,
            clock=clock,
            sleep=retry_sleep,
            group_wait_s=notifier.cfg.group_wait_s,
            group_by=notifier.cfg.group_by,
        )
        self.paused = False
        self._repause = False
        self._closing = False

    # -- rebalance callbacks (called inside consumer.poll, in this thread) --------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # State left for a partition we get (back) is stale: its next records start a fresh count.
        self.dispatcher.forget(_keys(partitions))
        if self.paused:
            self._repause = True  # assigned after the pause: pause them too, once assigned

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        keys = _keys(partitions)
        if self._closing:
            self.dispatcher.forget(keys)
            return
        offsets = self.dispatcher.revoke(keys)
        log.info("notify: partitions revoked %s; committing %s", keys, offsets)
        self._commit(offsets)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        keys = _keys(partitions)
        log.warning("notify: partitions lost %s; their unfinished records go to the next owner", keys)
        self.dispatcher.forget(keys)

    # -- dead letters ---------------------------------------------------------------------------------------

    def _produce(self, key: bytes | None, value: bytes) -> None:
        deadline = self.clock() + self.flush_timeout_s
        while True:
            try:
                self.producer.produce(self.deadletter_topic, key=key, value=value)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                if self.clock() > deadline:
                    raise RuntimeError("notify: dead-letter queue full; broker not acknowledging") from None
                self.producer.poll(0.1)

    def _dead_letter(self, src: SourceRecord, detail: str, reason: Reason = Reason.UNDELIVERABLE) -> None:
        self._produce(
            src.key,
            undeliverable(src.value, src.key, src.topic, src.partition, src.offset, detail, src.received_ms,
                          reason),
        )

    def _on_outcome(self, job: Job, o: Outcome) -> None:
        """In a worker: dead-letter an undeliverable job before it counts as finished."""
        if o.status != "undeliverable":
            return
        fingerprint = job.notification.alert.get("fingerprint")
        log.error("notify: %s undeliverable to %s: %s", fingerprint, o.receiver, o.reason)
        self._dead_letter(job.source, f"receiver {o.receiver}: {o.reason} ({o.attempts} attempts)")

    # -- the loop -------------------------------------------------------------------------------------------

    def _handle(self, msg: Any) -> None:
        value = msg.value() or b""
        src = SourceRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), value,
                           int(self.notifier.clock() * 1000))
        last = self.dispatcher.tracker.last_offset(src.partition_key)
        if last is not None and src.offset <= last:
            log.warning("notify: %s[%d] went back from offset %d to %d; counting afresh", src.topic,
                        src.partition, last, src.offset)
            self.dispatcher.forget([src.partition_key])
        send: list[Notification] = []
        try:
            alert = msgspec.to_builtins(_decode_alert(value))
            send, _ = self.notifier.plan(alert)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self._dead_letter(src, f"not an alert: {exc}", Reason.INVALID_EVENT)
        self.dispatcher.submit(src, send)

    def _commit(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Flush dead letters, then commit ``offsets`` synchronously; failures are retried next time."""
        if not offsets:
            return
        if self.producer.flush(self.flush_timeout_s) != 0:
            raise RuntimeError("notify: dead letters not acknowledged; not committing")
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("notify: commit of %s failed (tried again next time): %s", dict(offsets), exc)
            return
        failed = {(tp.topic, tp.partition) for tp in result or [] if tp.error is not None}
        if failed:
            log.warning("notify: commit failed for %s (tried again at the next commit)", sorted(failed))
        self.dispatcher.mark_committed({k: o for k, o in offsets.items() if k not in failed})

    def _backpressure(self) -> None:
        throttled = self.dispatcher.throttled()
        if throttled == self.paused and not (throttled and self._repause):
            return
        parts = self.consumer.assignment()
        try:
            if throttled:
                if parts:
                    self.consumer.pause(parts)
                if not self.paused:
                    log.warning("notify: %d deliveries outstanding (limit %d): consumption paused",
                                self.dispatcher.in_flight, self.dispatcher.max_in_flight)
            else:
                if parts:
                    self.consumer.resume(parts)
                log.info("notify: %d deliveries outstanding: consumption resumed", self.dispatcher.in_flight)
        except KafkaException as exc:  # a partition revoked meanwhile: next iteration tries again
            log.warning("notify: pause/resume failed: %s", exc)
            return
        self.paused = throttled
        self._repause = False

    def run(self) -> None:
        """Consume until ``stop()``; then abandon retries, commit what is finished, and return.

        The consumer, producer, delivery log and channels are the caller's to close.
        """
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        last_commit_s = last_gc_s = self.clock()
        try:
            while not self.stop():
                self.dispatcher.check()
                self._backpressure()
                msg = self.consumer.poll(self.poll_timeout_s)
                if msg is not None:
                    if msg.error():
                        log.warning("notify: %s", msg.error())
                    else:
                        self._handle(msg)
                now_s = self.clock()
                if now_s - last_commit_s >= self.commit_interval_s:
                    self._commit(self.dispatcher.committable())
                    last_commit_s = now_s
                if now_s - last_gc_s >= _GC_INTERVAL_S:
                    self.notifier.forget_old()
                    last_gc_s = now_s
        finally:
            self._closing = True
            if not self.dispatcher.stop(self.stop_timeout_s):
                log.warning("notify: a send still in progress after %.0fs; its record stays uncommitted",
                            self.stop_timeout_s)
            try:
                self._commit(self.dispatcher.committable())
            except Exception:
                log.exception("notify: final commit failed; the next start re-reads from the last commit")


def run(
    settings: Any,
    cfg: NotifyConfig,
    delivery_log: DeliveryLog,
    stop: Callable[[], bool] = lambda: False,
    group: str | None = None,
    commit_delay_s: float = 0.0,
) -> None:
    """Consume the alerts topic until ``stop()``, delivering per receiver and committing finished offsets.

    ``commit_delay_s`` is fault injection for tests: it widens the window
    between a record's deliveries and its offset commit, where a crash is the
    interesting case.
    """
    from confluent_kafka import Consumer, Producer

    consumer: Any = Consumer(
        settings.kafka_client_config({
            "group.id": group or f"{settings.app_id}-notify",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
        })
    )
    producer: Any = Producer(
        settings.kafka_client_config({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    )
    try:
        NotifyLoop(
            consumer,
            producer,
            Notifier(cfg, delivery_log),
            topic=settings.topic("alerts"),
            deadletter_topic=settings.topic("deadletter"),
            stop=stop,
            max_in_flight=cfg.max_in_flight,
            commit_delay_s=commit_delay_s,
        ).run()
    finally:
        consumer.close()
        delivery_log.close()
        for ch in cfg.channels.values():
            ch.close()
