"""``driftline notify``: a consumer group on the alerts topic that delivers every alert event.

At-least-once, end to end: an alert record's offset is committed only after
every receiver it routes to has acknowledged it (or it was dead-lettered), so
a notifier killed between receiving and acknowledging reads the record again
after a restart. Each delivery carries an idempotency key derived from the
alert and the receiver; the delivery log (append-only, fsynced) skips keys
already acknowledged, and receivers that deduplicate (the webhook's
``Idempotency-Key`` header, email ``Message-ID``, Alertmanager's label
fingerprint) absorb the one re-send a crash between acknowledgement and
logging can cause.

A receiver that is down is retried with backoff for ``retry.max_elapsed``;
after that, or on a refusal that retrying cannot fix, the alert goes to the
dead-letter topic with reason ``undeliverable`` and the receiver's last error.
Alerts muted by a silence or an inhibition (``evidence.muted_by``) are not sent.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.events.models import AlertV1, DeadLetterV1
from streams.events.reasons import Reason
from streams.notify.channel import Notification
from streams.notify.config import NotifyConfig
from streams.notify.dedup import DeliveryLog
from streams.notify.retry import DeliveryResult, deliver_with_retry
from streams.notify.routing import alert_labels

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_alert = msgspec.json.Decoder(AlertV1).decode


@dataclass(frozen=True, slots=True)
class Outcome:
    receiver: str
    status: str  # delivered | duplicate | undeliverable | muted
    attempts: int = 0
    reason: str = ""


class Notifier:
    """Route one alert event to its receivers: dedup, deliver with retries, record (the three stages)."""

    def __init__(
        self,
        cfg: NotifyConfig,
        delivery_log: DeliveryLog,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.log = delivery_log
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()

    def handle(self, alert: Mapping[str, Any]) -> list[Outcome]:
        evidence = alert.get("evidence") or {}
        receivers = self.cfg.routing.routes_for(alert_labels(alert))
        if evidence.get("muted_by"):
            return [Outcome(r, "muted", reason=str(evidence["muted_by"])) for r in receivers]
        out = []
        for receiver in receivers:
            n = Notification.for_alert(alert, receiver)
            if self.log.has(n.idempotency_key):
                out.append(Outcome(receiver, "duplicate"))
                continue
            res: DeliveryResult = deliver_with_retry(
                self.cfg.channels[receiver], n, self.cfg.retry, self.sleep, self.clock, self.rng
            )
            if res.delivered:
                self.log.record(n.idempotency_key, int(self.clock() * 1000))
                out.append(Outcome(receiver, "delivered", res.attempts))
            else:
                out.append(Outcome(receiver, "undeliverable", res.attempts, res.reason))
        return out

    def forget_old(self) -> int:
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


def run(
    settings: Any,
    cfg: NotifyConfig,
    delivery_log: DeliveryLog,
    stop: Callable[[], bool] = lambda: False,
    group: str | None = None,
    commit_delay_s: float = 0.0,
) -> None:
    """Consume the alerts topic until ``stop()``; commit each record after its deliveries.

    ``commit_delay_s`` is fault injection for tests: it widens the window
    between a record's deliveries and its offset commit, where a crash is the
    interesting case.
    """
    from confluent_kafka import Consumer, Producer

    consumer: Any = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": group or f"{settings.app_id}-notify",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
        }
    )
    producer: Any = Producer(
        {"bootstrap.servers": settings.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    notifier = Notifier(cfg, delivery_log)
    consumer.subscribe([settings.topic("alerts")])
    deadletter_topic = settings.topic("deadletter")
    last_gc = time.monotonic()
    try:
        while not stop():
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() - last_gc > 3600:
                    notifier.forget_old()
                    last_gc = time.monotonic()
                continue
            if msg.error():
                log.warning("notify: %s", msg.error())
                continue
            value = msg.value() or b""
            now_ms = int(time.time() * 1000)
            try:
                alert = msgspec.to_builtins(_decode_alert(value))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                producer.produce(
                    deadletter_topic,
                    key=msg.key(),
                    value=undeliverable(
                        value,
                        msg.key(),
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        f"not an alert: {exc}",
                        now_ms,
                        Reason.INVALID_EVENT,
                    ),
                )
            else:
                for o in notifier.handle(alert):
                    if o.status == "undeliverable":
                        detail = f"receiver {o.receiver}: {o.reason} ({o.attempts} attempts)"
                        log.error(
                            "notify: %s undeliverable to %s: %s", alert["fingerprint"], o.receiver, o.reason
                        )
                        producer.produce(
                            deadletter_topic,
                            key=msg.key(),
                            value=undeliverable(
                                value, msg.key(), msg.topic(), msg.partition(), msg.offset(), detail, now_ms
                            ),
                        )
            if producer.flush(30) != 0:
                raise RuntimeError("notify: dead letters not acknowledged; not committing")
            if commit_delay_s:
                time.sleep(commit_delay_s)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
        delivery_log.close()
        for ch in cfg.channels.values():
            ch.close()
