"""The ``notify:`` section: receivers (channels with their secrets), routes, retries, the delivery log.

```yaml
notify:
  receivers:
    ops-hook: {type: webhook, url: "https://ops.example/hooks/driftline", secret: env:DRIFTLINE_HOOK_SECRET}
    risk-slack: {type: slack, url: file:/run/secrets/slack_url}
    oncall: {type: email, host: smtp.example.com, port: 587, security: starttls, from: driftline@example.com,
             to: [oncall@example.com], username: driftline, password: env:SMTP_PASSWORD}
    am: {type: alertmanager, url: "http://alertmanager:9093"}   # firing_ttl: 4h15m by default
    console: {type: stdout}
  routes:
    - {receiver: risk-slack, match_re: {model: "fraud-.*"}, continue: true}
  default_receiver: console
  retry: {initial: 500ms, max: 60s, multiplier: 2, jitter: 0.2, max_elapsed: 15m}
  delivery_log: .driftline/notify/delivered.jsonl
  retention: 7d
  max_in_flight: 10000
  group_by: [model]      # alerts of one group that change within group_wait go out as one notification
  group_wait: 5s         # 0: every alert on its own
```

Every error names its field (``notify.receivers.oncall.port: ...``) and is
raised at start-up; secrets are resolved then (``env:``/``file:``) and never
printed.

``max_in_flight`` bounds the deliveries waiting in the receivers' queues
(one worker per receiver, see :mod:`streams.notify.dispatch`): above it the
notifier pauses consumption until half have drained, so that a receiver down
for hours cannot make it buffer the whole alerts topic in memory.

An Alertmanager receiver's ``firing_ttl`` (``endsAt`` of a firing alert,
counted from each post) defaults to :data:`DEFAULT_ALERTMANAGER_FIRING_TTL_MS`,
Driftline's repeat interval plus a grace, so that Alertmanager keeps a firing
alert active from one repeat to the next and resolves it by itself when the
repeats stop; ``firing_ttl: null`` leaves ``endsAt`` to Alertmanager's
``resolve_timeout`` (see :mod:`streams.notify.alertmanager`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.alerting.lifecycle import DEFAULT_REPEAT_INTERVAL_MS
from streams.core.windows import parse_duration_ms
from streams.notify.alertmanager import AlertmanagerChannel
from streams.notify.channel import Channel
from streams.notify.dispatch import DEFAULT_GROUP_BY, DEFAULT_GROUP_WAIT_S, DEFAULT_MAX_IN_FLIGHT
from streams.notify.email import EmailChannel
from streams.notify.retry import RetryPolicy
from streams.notify.routing import RoutingTable, parse_routing
from streams.notify.secrets import Secret, resolve_secret
from streams.notify.slack import SlackChannel
from streams.notify.stdout import StdoutChannel
from streams.notify.webhook import WebhookChannel

_KEYS = {
    "webhook": {"type", "url", "secret", "timeout"},
    "slack": {"type", "url", "runbook_url", "timeout"},
    "email": {
        "type",
        "host",
        "port",
        "security",
        "from",
        "to",
        "username",
        "password",
        "timeout",
        "runbook_url",
    },
    "alertmanager": {"type", "url", "generator_url", "bearer_token", "firing_ttl", "timeout"},
    "stdout": {"type"},
}
_TOP = {"receivers", "routes", "default_receiver", "retry", "delivery_log", "retention", "max_in_flight",
        "group_by", "group_wait"}
_DEFAULT_LOG = ".driftline/notify/delivered.jsonl"

ALERTMANAGER_FIRING_TTL_GRACE_MS = 15 * 60_000
"""How long past a missed repeat Alertmanager keeps a Driftline alert firing: a worker restart, a slow
partition or a notifier retrying for its ``retry.max_elapsed`` (15 minutes by default) must not resolve it."""

DEFAULT_ALERTMANAGER_FIRING_TTL_MS = DEFAULT_REPEAT_INTERVAL_MS + ALERTMANAGER_FIRING_TTL_GRACE_MS
"""4h15m: the lifecycle's repeat interval (a still-firing alert is re-emitted every 4 h) plus the grace."""


@dataclass(frozen=True)
class NotifyConfig:
    """The validated ``notify:`` section.

    Attributes
    ----------
    channels
        Receiver name to its channel.
    routing
        Which receivers get which alert.
    retry
        Backoff and budget of each delivery.
    delivery_log
        Path of the delivery log (acknowledged idempotency keys).
    retention_ms
        How long delivery-log keys are kept.
    max_in_flight
        Outstanding deliveries above which consumption pauses.
    group_wait_s, group_by
        Grouping of each receiver's notifications (see :mod:`streams.notify.dispatch`); the YAML
        default is :data:`~streams.notify.dispatch.DEFAULT_GROUP_WAIT_S`, the dataclass's 0 (none).
    """

    channels: Mapping[str, Channel]
    routing: RoutingTable
    retry: RetryPolicy
    delivery_log: str
    retention_ms: int
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    group_wait_s: float = 0.0
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _duration_s(raw: Any, where: str) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    try:
        return parse_duration_ms(str(raw)) / 1000
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _str(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{where}: expected a non-empty string")
    return raw


def _url(raw: Any, where: str, env: Mapping[str, str] | None) -> str | Secret:
    """A URL, or a secret reference to one (a Slack webhook URL is itself a credential)."""
    text = _str(raw, where)
    return resolve_secret(text, where, env) if text.startswith(("env:", "file:")) else text


def build_channel(name: str, raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Channel:
    where = f"notify.receivers.{name}"
    kind = raw.get("type")
    if kind not in _KEYS:
        raise ValueError(f"{where}.type: must be one of {', '.join(sorted(_KEYS))}, got {kind!r}")
    unknown = sorted(set(raw) - _KEYS[kind])
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key for a {kind} receiver")
    timeout_s = _duration_s(raw.get("timeout", 10), f"{where}.timeout")
    try:
        if kind == "webhook":
            secret = (
                None if raw.get("secret") is None else resolve_secret(raw["secret"], f"{where}.secret", env)
            )
            return WebhookChannel(
                name, _url(raw.get("url"), f"{where}.url", env), secret=secret, read_timeout_s=timeout_s
            )
        if kind == "slack":
            return SlackChannel(
                name,
                _url(raw.get("url"), f"{where}.url", env),
                runbook_url=raw.get("runbook_url"),
                read_timeout_s=timeout_s,
            )
        if kind == "alertmanager":
            token = raw.get("bearer_token")
            # Absent: the default; an explicit null: no endsAt (Alertmanager's resolve_timeout applies).
            ttl = raw.get("firing_ttl", DEFAULT_ALERTMANAGER_FIRING_TTL_MS / 1000)
            return AlertmanagerChannel(
                name,
                _url(raw.get("url"), f"{where}.url", env),
                generator_url=raw.get("generator_url"),
                bearer_token=None if token is None else resolve_secret(token, f"{where}.bearer_token", env),
                firing_ttl_s=None if ttl is None else _duration_s(ttl, f"{where}.firing_ttl"),
                read_timeout_s=timeout_s,
            )
        if kind == "email":
            to = raw.get("to")
            if isinstance(to, str):
                to = [to]
            if not isinstance(to, list) or not to or not all(isinstance(t, str) for t in to):
                raise ValueError(f"{where}.to: expected one or more addresses")
            port = raw.get("port")
            if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
                raise ValueError(f"{where}.port: expected an integer")
            password = raw.get("password")
            return EmailChannel(
                name,
                host=_str(raw.get("host"), f"{where}.host"),
                sender=_str(raw.get("from"), f"{where}.from"),
                recipients=to,
                port=port,
                security=raw.get("security", "starttls"),
                username=raw.get("username"),
                password=None if password is None else resolve_secret(password, f"{where}.password", env),
                timeout_s=timeout_s,
                runbook_url=raw.get("runbook_url"),
            )
        return StdoutChannel(name)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def notify_config(raw: Any, env: Mapping[str, str] | None = None) -> NotifyConfig:
    """Validate the ``notify:`` section and build its channels; without one, everything goes to stdout."""
    raw = _mapping(
        raw or {"receivers": {"stdout": {"type": "stdout"}}, "default_receiver": "stdout"}, "notify"
    )
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ValueError(f"notify.{unknown[0]}: unknown key (known: {', '.join(sorted(_TOP))})")
    receivers = _mapping(raw.get("receivers"), "notify.receivers")
    if not receivers:
        raise ValueError("notify.receivers: at least one receiver is needed")
    channels = {
        str(n): build_channel(str(n), _mapping(r, f"notify.receivers.{n}"), env) for n, r in receivers.items()
    }
    routing = parse_routing(
        {k: raw[k] for k in ("routes", "default_receiver") if k in raw}, receivers=channels.keys()
    )
    r = _mapping(raw.get("retry", {}), "notify.retry")
    kwargs: dict[str, float] = {}
    for key, field in (("initial", "initial_ms"), ("max", "max_ms"), ("max_elapsed", "max_elapsed_ms")):
        if key in r:
            kwargs[field] = _duration_s(r[key], f"notify.retry.{key}") * 1000
    for key in ("multiplier", "jitter"):
        if key in r:
            if isinstance(r[key], bool) or not isinstance(r[key], int | float):
                raise ValueError(f"notify.retry.{key}: expected a number")
            kwargs[key] = float(r[key])
    if unknown := sorted(set(r) - {"initial", "max", "max_elapsed", "multiplier", "jitter"}):
        raise ValueError(f"notify.retry.{unknown[0]}: unknown key")
    try:
        policy = RetryPolicy(**kwargs)
    except ValueError as exc:
        raise ValueError(f"notify.retry: {exc}") from None
    retention_ms = int(_duration_s(raw.get("retention", "7d"), "notify.retention") * 1000)
    log_path = _str(raw.get("delivery_log", _DEFAULT_LOG), "notify.delivery_log")
    max_in_flight = raw.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValueError(f"notify.max_in_flight: expected a positive integer, got {max_in_flight!r}")
    wait = raw.get("group_wait", DEFAULT_GROUP_WAIT_S)
    group_wait_s = 0.0 if wait in (0, "0", "0s") else _duration_s(wait, "notify.group_wait")
    if group_wait_s < 0:
        raise ValueError(f"notify.group_wait: must not be negative, got {raw.get('group_wait')!r}")
    group_by = raw.get("group_by", list(DEFAULT_GROUP_BY))
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        raise ValueError(f"notify.group_by: expected a list of label names, got {group_by!r}")
    return NotifyConfig(channels, routing, policy, log_path, retention_ms, max_in_flight, group_wait_s,
                        tuple(group_by))
