"""Delivering alert events to people and systems: webhook, Slack, email, Alertmanager, stdout.

Modelled on Prometheus Alertmanager's ``notify`` package. An alert event
(``driftline.alert/v1``) becomes one :class:`Notification` per receiver that
:class:`RoutingTable` picks for it; each goes through three independent
stages:

1. de-duplication -- :class:`DeliveryLog` ``has(key)``: skip what a receiver
   already acknowledged (an alert event replayed by Kafka);
2. delivery with retries -- :func:`deliver_with_retry` around the receiver's
   :class:`Channel`, backing off with jitter within a time budget;
3. recording -- :class:`DeliveryLog` ``record(key)``, only after the receiver
   acknowledged, so a crash re-sends (same ``Idempotency-Key``) rather than
   loses (see :mod:`streams.notify.dedup`).

Channels are synchronous and hold no retry or dedup logic; time, sleeping and
randomness are passed in, so every stage is testable without waiting.
Credentials are :class:`Secret` values, never printed.
"""

from streams.notify.alertmanager import AlertmanagerChannel, postable_alert
from streams.notify.channel import Channel, DeliveryError, Notification, idempotency_key
from streams.notify.dedup import DeliveryLog, FileDeliveryLog, MemoryDeliveryLog
from streams.notify.email import EmailChannel
from streams.notify.retry import DeliveryResult, RetryPolicy, deliver_with_retry
from streams.notify.routing import Route, RoutingTable, alert_labels, parse_routing
from streams.notify.secrets import Secret, resolve_secret
from streams.notify.slack import SlackChannel, slack_payload
from streams.notify.stdout import StdoutChannel
from streams.notify.webhook import WebhookChannel, sign, verify_signature

__all__ = [
    "AlertmanagerChannel",
    "Channel",
    "DeliveryError",
    "DeliveryLog",
    "DeliveryResult",
    "EmailChannel",
    "FileDeliveryLog",
    "MemoryDeliveryLog",
    "Notification",
    "RetryPolicy",
    "Route",
    "RoutingTable",
    "Secret",
    "SlackChannel",
    "StdoutChannel",
    "WebhookChannel",
    "alert_labels",
    "deliver_with_retry",
    "idempotency_key",
    "parse_routing",
    "postable_alert",
    "resolve_secret",
    "sign",
    "slack_payload",
    "verify_signature",
]
