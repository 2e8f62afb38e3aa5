"""What every delivery channel shares: the notification, the channel protocol, its error.

The design follows Prometheus Alertmanager's ``notify`` package: each receiver
integration is a small object behind one interface (here :class:`Channel`,
there ``Notifier``), and the cross-cutting concerns -- retrying
(:mod:`streams.notify.retry`) and de-duplication (:mod:`streams.notify.dedup`)
-- are separate stages around it, so that an integration only knows how to
speak its protocol once and how to classify a failure.

A channel tells the retry stage *whether* a failure is worth retrying
(:class:`DeliveryError` ``retryable``) because only the integration knows its
protocol: an HTTP 503 or an SMTP 451 is transient, an HTTP 400 or an SMTP 550
is not and retrying it only delays the operator's fix.

The text helpers at the end are shared by the human-facing channels (Slack,
email) so that they describe an alert in the same words.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ENVELOPE_VERSION",
    "Channel",
    "DeliveryError",
    "Notification",
    "alert_title",
    "envelope",
    "format_ms",
    "format_number",
    "group_title",
    "idempotency_key",
    "redact",
    "runbook_link",
    "suggested_action",
]

ENVELOPE_VERSION = "driftline.notification/v2"
"""The ``version`` of the JSON envelope sent by the webhook and stdout channels."""

_KEY_DOMAIN = b"driftline.notify.idempotency/v1"
_KEY_DOMAIN_V2 = b"driftline.notify.idempotency/v2"
_GROUP_KEY_DOMAIN = b"driftline.notify.group/v1"


def idempotency_key(alert: Mapping[str, Any], receiver: str) -> str:
    """The idempotency key of one alert state change delivered to one receiver.

    The key is a BLAKE2b-128 digest (32 hex digits) of the alert's
    ``fingerprint``, ``status``, its episode (``evidence.episode``) and, when
    firing, the episode's firing count (``evidence.notification_seq``), and
    the receiver's name. Events without an episode (written by older workers
    or by hand) use ``starts_at_ms`` and, when resolved, ``ends_at_ms``
    instead. Episodes exist because those times are processing times: a worker
    that crashed after writing an event, before saving its state, writes it
    again with a later ``starts_at_ms``, but the same episode.

    The key is *derived*, never random, so that a replayed alert event (a
    consumer restarted before committing its offset, a topic re-read) yields
    the same key: the delivery log then recognises it,
    and a receiver that de-duplicates on ``Idempotency-Key`` (or an email
    client on ``Message-ID``) sees one notification however often it is sent.

    ``value``, the rest of ``evidence`` and annotations are left out on purpose: they may
    differ between two emissions of the same state change (a re-evaluation),
    which must not notify twice. A repeat (``repeat_interval``) has the next
    ``notification_seq`` and so a new key; a re-fire of the same alert after
    it resolved is a new episode and so a new key. The receiver is part of the key
    because one alert routed to two receivers is two deliveries, each to be
    acknowledged on its own.

    Parameters
    ----------
    alert
        An alert event as a ``driftline.alert/v1`` dict (``AlertV1`` fields).
    receiver
        The receiver's name.

    Returns
    -------
    str
        32 lowercase hex digits.

    Raises
    ------
    ValueError
        The alert lacks a field the key is made of, or a resolved alert has no
        ``ends_at_ms``.

    Examples
    --------
    >>> a = {"fingerprint": "9f2c4e1a7b3d5f60", "status": "firing", "starts_at_ms": 1767232800000}
    >>> k = idempotency_key(a, "ops-webhook")
    >>> len(k), k == idempotency_key(dict(a), "ops-webhook"), k == idempotency_key(a, "ops-slack")
    (32, True, False)
    """
    try:
        fingerprint = str(alert["fingerprint"])
        status = str(alert["status"])
        starts = int(alert["starts_at_ms"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"alert: cannot derive an idempotency key ({type(exc).__name__}: {exc})") from None
    evidence = alert.get("evidence") or {}
    episode, seq = evidence.get("episode"), evidence.get("notification_seq")
    if isinstance(episode, str) and episode:
        # The lifecycle's episode id is replay-stable where starts_at_ms is not (processing time).
        # A firing event is one per (episode, seq): repeats are new notifications; a resolve is
        # one per episode.
        if status == "firing" and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise ValueError("alert.evidence.notification_seq: required with evidence.episode when firing")
        which = str(seq) if status == "firing" else ""
        parts = [_KEY_DOMAIN_V2, fingerprint.encode(), status.encode(), episode.encode(), which.encode(),
                 receiver.encode("utf-8")]
        return hashlib.blake2b(b"\x00".join(parts), digest_size=16).hexdigest()
    ends = ""
    if status == "resolved":
        if alert.get("ends_at_ms") is None:
            raise ValueError("alert.ends_at_ms: required for a resolved alert's idempotency key")
        ends = str(int(alert["ends_at_ms"]))
    # NUL separates the parts: none of the alert's parts can contain one (hex, an enum,
    # integers), and the receiver, which might, comes last, so the encoding is unambiguous.
    parts = [_KEY_DOMAIN, fingerprint.encode(), status.encode(), str(starts).encode(), ends.encode(),
             receiver.encode("utf-8")]
    return hashlib.blake2b(b"\x00".join(parts), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Notification:
    """One delivery to one receiver: an alert state change, or a group of them.

    A group is what a receiver gets when several alerts of one group (one model,
    by default) change state within the receiver's ``group_wait``: one Slack
    message, one mail or one webhook call listing them all, instead of one per
    drifted feature (see :mod:`streams.notify.dispatch`).

    Attributes
    ----------
    idempotency_key
        Stable id of this delivery (see :func:`idempotency_key`); sent to the
        receiver (``Idempotency-Key`` header, email ``Message-ID``). A group's
        key is a digest of its members' keys, so a replay that regroups the
        same alerts yields the same key.
    receiver
        The receiver's name, as in the routing table.
    alert
        The (first) alert event, a ``driftline.alert/v1`` dict. Not copied:
        callers must not mutate it after building the notification. Left out of
        the hash (a dict is not hashable; the key identifies the notification).
    more
        The other alert events of a group, in arrival order; empty for one alert.
    group_key
        The group's key (:func:`streams.core.alerting.lifecycle.group_key`);
        empty for a notification built for one alert.
    member_keys
        The idempotency key of each alert in :attr:`alerts`: what the delivery
        log records once the receiver acknowledged, so that an alert already
        delivered in a group is not delivered again after a restart.
    """

    idempotency_key: str
    receiver: str
    alert: Mapping[str, Any] = field(hash=False)
    more: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    group_key: str = ""
    member_keys: tuple[str, ...] = ()

    @property
    def alerts(self) -> tuple[Mapping[str, Any], ...]:
        """Every alert event of this notification, in arrival order."""
        return (self.alert, *self.more)

    @property
    def keys(self) -> tuple[str, ...]:
        """The per-alert idempotency keys (just :attr:`idempotency_key` for a single alert)."""
        return self.member_keys or (self.idempotency_key,)

    @classmethod
    def for_alert(cls, alert: Mapping[str, Any], receiver: str) -> Notification:
        """Build the notification of ``alert`` for ``receiver``, deriving its key.

        Examples
        --------
        >>> a = {"fingerprint": "9f2c4e1a7b3d5f60", "status": "firing", "starts_at_ms": 0}
        >>> n = Notification.for_alert(a, "ops")
        >>> n.receiver, n.idempotency_key == idempotency_key(a, "ops"), n.alerts == (a,)
        ('ops', True, True)
        """
        return cls(idempotency_key(alert, receiver), receiver, alert)

    @classmethod
    def for_group(cls, members: Sequence[Notification], group_key: str) -> Notification:
        """One notification for ``members`` (single-alert notifications of one receiver).

        A group of one is that member unchanged, so a receiver sees the same key
        whether or not grouping is on.

        Raises
        ------
        ValueError
            ``members`` is empty, or its members are for different receivers.

        Examples
        --------
        >>> def one(fp):
        ...     alert = {"fingerprint": fp, "status": "firing", "starts_at_ms": 0}
        ...     return Notification.for_alert(alert, "ops")
        >>> a, b = one("aa" * 8), one("bb" * 8)
        >>> g = Notification.for_group([a, b], '{model="m"}')
        >>> len(g.alerts), g.keys == (a.idempotency_key, b.idempotency_key), g.idempotency_key not in g.keys
        (2, True, True)
        >>> Notification.for_group([b, a], '{model="m"}').idempotency_key == g.idempotency_key
        True
        """
        if not members:
            raise ValueError("members: a group needs at least one notification")
        receivers = {m.receiver for m in members}
        if len(receivers) != 1:
            raise ValueError(f"members: one receiver per group, got {sorted(receivers)}")
        if len(members) == 1:
            return members[0]
        keys = tuple(k for m in members for k in m.keys)
        digest = hashlib.blake2b(
            b"\x00".join([_GROUP_KEY_DOMAIN, *sorted(k.encode() for k in keys)]), digest_size=16
        ).hexdigest()
        alerts = [a for m in members for a in m.alerts]
        return cls(digest, members[0].receiver, alerts[0], tuple(alerts[1:]), group_key, keys)


def envelope(n: Notification) -> dict[str, Any]:
    """The JSON document of ``n`` for machine receivers (webhook, stdout): ``driftline.notification/v2``.

    >>> envelope(Notification("k1", "ops", {"status": "firing"}))["alerts"]
    [{'status': 'firing'}]
    """
    return {"version": ENVELOPE_VERSION, "idempotency_key": n.idempotency_key, "receiver": n.receiver,
            "group_key": n.group_key, "alerts": [dict(a) for a in n.alerts]}


class DeliveryError(Exception):
    """A channel could not deliver a notification.

    Parameters
    ----------
    reason
        What went wrong, for logs and the delivery result. Never contains a
        secret: channels redact URLs and credentials (see :func:`redact`).
    retryable
        Whether the same request may succeed later (a timeout, HTTP 5xx or 429,
        SMTP 4xx). False for errors only a configuration change fixes (HTTP 4xx,
        SMTP 5xx, a bad certificate): retrying those only delays giving up.
    retry_after_s
        The receiver's own hint of when to retry (HTTP ``Retry-After``), or
        None. :func:`streams.notify.retry.deliver_with_retry` waits at least
        this long, capped by its policy.
    """

    def __init__(self, reason: str, retryable: bool, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return (f"DeliveryError({self.reason!r}, retryable={self.retryable}, "
                f"retry_after_s={self.retry_after_s!r})")


@runtime_checkable
class Channel(Protocol):
    """A receiver integration: delivers one notification, synchronously.

    ``send`` returns once the receiver acknowledged the notification (HTTP 2xx,
    SMTP ``250`` after ``DATA``) and raises :class:`DeliveryError` otherwise;
    it does not retry (the retry stage does) nor remember what it sent (the
    delivery log does). ``close`` releases connections; a closed channel is not
    used again.
    """

    @property
    def name(self) -> str:
        """The receiver's name."""
        ...

    def send(self, n: Notification) -> None:
        """Deliver ``n``; raise :class:`DeliveryError` when it was not acknowledged."""
        ...

    def close(self) -> None:
        """Release the channel's resources (connections, files)."""
        ...


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``.

    For error messages built from third-party exceptions, which may quote a URL
    that carries a token (a Slack webhook URL is itself a credential).

    Examples
    --------
    >>> redact("POST https://hooks.example/T1/abc failed", "https://hooks.example/T1/abc", None)
    'POST *** failed'
    """
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def format_ms(ms: int) -> str:
    """RFC 3339 UTC time of epoch milliseconds, with milliseconds (``2026-01-01T02:00:00.000Z``).

    Examples
    --------
    >>> format_ms(1767232800000)
    '2026-01-01T02:00:00.000Z'
    """
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def format_number(v: Any) -> str:
    """A value or threshold for humans: 4 significant digits, ``n/a`` for null.

    Examples
    --------
    >>> format_number(0.31234), format_number(None), format_number(48211), format_number(1.5e-07)
    ('0.3123', 'n/a', '48211', '1.5e-07')
    """
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def alert_name(alert: Mapping[str, Any]) -> str:
    """The alert's name: its ``alertname`` label when set, else its signal."""
    labels = alert.get("labels") or {}
    return str(labels.get("alertname") or alert.get("signal", "alert"))


def model_ref(alert: Mapping[str, Any]) -> str:
    """``model@version``, or the model alone when the alert concerns no one version."""
    version = alert.get("model_version")
    return f"{alert.get('model', '?')}@{version}" if version else str(alert.get("model", "?"))


def alert_title(alert: Mapping[str, Any]) -> str:
    """``[FIRING][warning] feature_drift_psi fraud-detector@2026-01-01.3``: status, severity, name, model.

    The same line is the email subject and the Slack fallback text's start, so a
    reader can match a message to a mail by eye.

    Examples
    --------
    >>> alert_title({"status": "resolved", "severity": "critical", "signal": "p95_latency",
    ...              "model": "ranker", "model_version": None})
    '[RESOLVED][critical] p95_latency ranker'
    """
    return (f"[{str(alert.get('status', '?')).upper()}][{alert.get('severity', '?')}] "
            f"{alert_name(alert)} {model_ref(alert)}")


def group_title(alerts: Sequence[Mapping[str, Any]]) -> str:
    """``[FIRING:2 RESOLVED:1] fraud: drift, concept_drift``: the subject line of a group.

    Examples
    --------
    >>> group_title([{"status": "firing", "signal": "drift", "model": "fraud"},
    ...              {"status": "firing", "signal": "drift", "model": "fraud"},
    ...              {"status": "resolved", "signal": "concept_drift", "model": "fraud"}])
    '[FIRING:2 RESOLVED:1] fraud: drift, concept_drift'
    """
    firing = sum(1 for a in alerts if a.get("status") != "resolved")
    counts = " ".join(f"{k}:{n}" for k, n in (("FIRING", firing), ("RESOLVED", len(alerts) - firing)) if n)
    models = ", ".join(dict.fromkeys(str(a.get("model", "?")) for a in alerts))
    names = ", ".join(dict.fromkeys(alert_name(a) for a in alerts))
    return f"[{counts}] {models}: {names}"


def format_duration_ms(ms: int) -> str:
    """A window length for humans: ``1h``, ``15m``, ``90s``, ``250ms``, ``1h30m``.

    Examples
    --------
    >>> format_duration_ms(3_600_000), format_duration_ms(5_400_000), format_duration_ms(250)
    ('1h', '1h30m', '250ms')
    """
    if ms < 1000 or ms % 1000:
        return f"{ms}ms"
    out, s = "", ms // 1000
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


_FEATURE_LIST_KEYS = ("drifted_features", "top_features")


def top_features(alert: Mapping[str, Any], limit: int = 5) -> list[str]:
    """The features the alert's evidence names as drifted, most drifted first, at most ``limit``.

    Detection writes ``drifted_features`` (univariate tests, ranked by PSI) or
    ``top_features`` (the multivariate classifier's most important features),
    or a single ``feature``; an alert that concerns no feature gives ``[]``.

    Examples
    --------
    >>> top_features({"evidence": {"drifted_features": ["amount", "country", "hour"]}}, limit=2)
    ['amount', 'country']
    >>> top_features({"evidence": {"feature": "amount"}}), top_features({})
    (['amount'], [])
    """
    evidence = alert.get("evidence") or {}
    for key in _FEATURE_LIST_KEYS:
        names = evidence.get(key)
        if isinstance(names, list) and names:
            return [str(x) for x in names[:limit]]
    feature = evidence.get("feature")
    return [feature] if isinstance(feature, str) and feature else []


# First match on the signal name wins; the text is a starting point for the on-call, not a diagnosis.
_ACTIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("concept", "accuracy", "error", "f1", "mae", "rmse", "logloss"),
     "Check recent labelled outcomes for this version; compare with the previous version and roll back "
     "or retrain if the quality drop is confirmed."),
    (("drift", "psi", "shift", "domain", "auc"),
     "Compare the drifted features' current distribution with the reference profile; check upstream data "
     "pipelines for a schema or unit change before retraining."),
    (("leak", "memory", "rss"),
     "Memory grows steadily: schedule a restart of the serving process before it reaches its limit and "
     "profile the allocation."),
    (("gpu",), "GPU saturated: check batch sizes and request rate; scale out the serving replicas."),
    (("latency", "p95", "p99"),
     "Latency is high: check serving saturation, recent deploys and dependencies."),
    (("silence", "missing", "stale", "volume"),
     "Events stopped or dropped: check that the model server and its Driftline SDK are running and can "
     "reach Kafka."),
)
_DEFAULT_ACTION = "Open the model's dashboard and check the signal's recent history against its threshold."
_RESOLVED_ACTION = "No action needed: the signal is back within its threshold."


def suggested_action(alert: Mapping[str, Any]) -> str:
    """What the on-call might do first: the ``suggested_action`` annotation, else a guess from the signal.

    Examples
    --------
    >>> suggested_action({"status": "firing", "signal": "feature_drift_psi"}).startswith("Compare")
    True
    >>> suggested_action({"status": "firing", "signal": "x", "annotations": {"suggested_action": "Page Ann"}})
    'Page Ann'
    """
    annotations = alert.get("annotations") or {}
    given = annotations.get("suggested_action") or annotations.get("action")
    if given:
        return str(given)
    if alert.get("status") == "resolved":
        return _RESOLVED_ACTION
    signal = str(alert.get("signal", "")).lower()
    for words, action in _ACTIONS:
        if any(w in signal for w in words):
            return action
    return _DEFAULT_ACTION


def runbook_link(alert: Mapping[str, Any], default: str | None = None) -> str | None:
    """The alert's ``runbook_url`` annotation, else ``default``; None unless an http(s) URL.

    Only http(s) links are rendered: a ``javascript:`` or ``file:`` link in an
    annotation must not become a clickable link in a chat or a mail.

    Examples
    --------
    >>> runbook_link({"annotations": {"runbook_url": "https://wiki/drift"}}), runbook_link({}, "ftp://x")
    ('https://wiki/drift', None)
    """
    url = (alert.get("annotations") or {}).get("runbook_url") or default
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return None
    if any(c in url for c in "|<> \n"):  # would break out of a Slack <url|text> link
        return None
    return url
