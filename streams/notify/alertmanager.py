"""Prometheus Alertmanager: post the alert to ``/api/v2/alerts`` and let Alertmanager notify.

For teams that already route, silence, inhibit and group alerts in
Alertmanager, Driftline is one more alert source: each state change is posted
as one *postable alert* (Alertmanager API v2, ``POST /api/v2/alerts``, a JSON
list)::

    [{"labels": {"alertname": "feature_drift_psi", "model": "fraud-detector",
                 "model_version": "2026-01-01.3", "severity": "warning",
                 "driftline_fingerprint": "9f2c4e1a7b3d5f60", "team": "risk"},
      "annotations": {"summary": "...", "value": "0.31", "threshold": "0.2"},
      "startsAt": "2026-01-01T02:00:00.000Z",
      "endsAt": "2026-01-01T03:00:00.000Z",          # resolved only
      "generatorURL": "https://driftline.example/"}]  # when configured

Labels are the routing labels (:func:`streams.notify.routing.alert_labels`)
plus ``driftline_fingerprint``. Alertmanager identifies an alert by its label
set and de-duplicates on it, so re-posting the same state change (a retry, a
replay) is harmless; the fingerprint label keeps that identity one-to-one with
Driftline's, so that two Driftline alerts whose other labels coincide (two
drifted features of one model, say) stay two Alertmanager alerts, and a
resolution resolves exactly the alert it belongs to. Label names Alertmanager
before 0.27 would reject (anything but ``[A-Za-z_][A-Za-z0-9_]*``) are
rewritten with ``_``; empty values are dropped (Prometheus semantics: an empty
label is an absent one).

``endsAt``: a resolved alert carries ``ends_at_ms``. A firing one carries
``endsAt = now + firing_ttl_s`` when ``firing_ttl_s`` is set, and none
otherwise; without one, Alertmanager considers it resolved after its
``resolve_timeout`` (5 minutes by default) unless it is posted again, which is
how Prometheus works (it re-sends every evaluation). Driftline does not
heartbeat: its worker emits state changes, plus one repeat ``firing`` event of
a still-firing alert every lifecycle repeat interval
(``DEFAULT_REPEAT_INTERVAL_MS`` in :mod:`streams.core.alerting.lifecycle`,
4 h), and each repeat reaches this channel as a new notification (a new
idempotency key), so it is posted again and pushes ``endsAt`` forward. The
``notify:`` configuration (:mod:`streams.notify.config`) therefore defaults
an Alertmanager receiver's ``firing_ttl`` to the repeat interval plus a grace,
**4h15m**: Alertmanager keeps a firing Driftline alert active from one repeat
to the next -- the grace covers a late repeat (a worker restart, a notifier
still retrying) -- and, if Driftline stops reporting it altogether (the
worker gone, the alert forgotten), resolves it by itself at most 4h15m after
the last post instead of keeping it firing forever. The ``resolved`` event,
when it comes, ends it at once with its own ``endsAt``. Set ``firing_ttl`` to
match a changed repeat interval (keep it longer than the interval, or the
alert flaps resolved between repeats), or to ``null`` to post no ``endsAt``.
The class itself defaults to None (no ``endsAt``) for callers that re-post on
their own schedule.

HTTP semantics are the webhook's: 2xx ok; 400 (a validation error, quoted
from the body) not retryable; 408, 429, 5xx and network errors retryable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from streams.notify.channel import Notification, format_ms, format_number
from streams.notify.routing import alert_labels
from streams.notify.secrets import Secret
from streams.notify.webhook import (
    HttpChannel,
    check_url,
    encode_json,
    make_client,
    post_json,
    register_log_secret,
)

__all__ = ["AlertmanagerChannel", "postable_alert"]

_BAD_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")


def _label_name(name: str) -> str:
    out = _BAD_LABEL_CHARS.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


def postable_alert(
    alert: Mapping[str, Any],
    *,
    generator_url: str | None = None,
    now_ms: int | None = None,
    firing_ttl_s: float | None = None,
) -> dict[str, Any]:
    """The Alertmanager v2 postable alert of one Driftline alert event.

    Parameters
    ----------
    alert
        The ``driftline.alert/v1`` event.
    generator_url
        ``generatorURL``: a link back to where the alert came from.
    now_ms, firing_ttl_s
        When both are given and the alert is firing, ``endsAt`` is
        ``now_ms + firing_ttl_s``; otherwise a firing alert has no ``endsAt``.

    Examples
    --------
    >>> p = postable_alert({"fingerprint": "9f2c4e1a7b3d5f60", "status": "resolved", "severity": "warning",
    ...                     "model": "fraud", "signal": "psi", "value": 0.1, "threshold": 0.2,
    ...                     "starts_at_ms": 0, "ends_at_ms": 60000, "labels": {"team.name": "risk"}})
    >>> p["labels"]["alertname"], p["labels"]["team_name"], p["startsAt"], p["endsAt"]
    ('psi', 'risk', '1970-01-01T00:00:00.000Z', '1970-01-01T00:01:00.000Z')
    """
    labels: dict[str, str] = {}
    for k, v in alert_labels(alert).items():
        if v:
            labels[_label_name(k)] = v
    labels["driftline_fingerprint"] = str(alert["fingerprint"])
    annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
    annotations.setdefault("value", format_number(alert.get("value")))
    annotations.setdefault("threshold", format_number(alert.get("threshold")))
    starts_ms = int(alert["starts_at_ms"])
    if now_ms is not None:
        # Alertmanager refuses startsAt after endsAt, and gives a firing alert endsAt = now + its
        # resolve_timeout: an alert stamped with a producer's event time from a fast clock would be
        # refused for good. Its true start is kept in the annotations.
        if starts_ms > now_ms:
            annotations.setdefault("driftline_starts_at_ms", str(starts_ms))
        starts_ms = min(starts_ms, now_ms)
    out: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": format_ms(starts_ms)}
    if alert.get("status") == "resolved" and alert.get("ends_at_ms") is not None:
        out["endsAt"] = format_ms(max(int(alert["ends_at_ms"]), starts_ms))
    elif firing_ttl_s is not None and now_ms is not None:
        out["endsAt"] = format_ms(now_ms + round(firing_ttl_s * 1000))
    if generator_url:
        out["generatorURL"] = generator_url
    return out


class AlertmanagerChannel(HttpChannel):
    """Post each notification to an Alertmanager as one postable alert.

    Parameters
    ----------
    name
        The receiver's name.
    url
        The Alertmanager's base URL (``http://alertmanager:9093``, or with a
        path prefix behind a proxy); ``/api/v2/alerts`` is appended.
    generator_url
        ``generatorURL`` of every alert (Driftline's dashboard, say).
    firing_ttl_s
        When set, firing alerts carry ``endsAt = now + firing_ttl_s`` (see the
        module documentation); None leaves ``endsAt`` to Alertmanager.
    bearer_token
        ``Authorization: Bearer`` for an authenticating proxy in front.
    connect_timeout_s, read_timeout_s
        Per-attempt limits.
    clock
        Unix seconds (for ``endsAt`` with ``firing_ttl_s``, and ``Retry-After``).
    transport
        An httpx transport for tests; None for the network.

    Raises
    ------
    ValueError
        ``url`` is not an http(s) URL, or ``firing_ttl_s`` is not positive.
    """

    def __init__(
        self,
        name: str,
        url: str | Secret,
        *,
        generator_url: str | None = None,
        firing_ttl_s: float | None = None,
        bearer_token: Secret | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if firing_ttl_s is not None and not firing_ttl_s > 0:
            raise ValueError(f"alertmanager {name}: firing_ttl_s: must be positive, got {firing_ttl_s!r}")
        base, self._url_secret = check_url(url, f"alertmanager {name}")
        self._name = name
        self._url = base.rstrip("/") + "/api/v2/alerts"
        if self._url_secret is not None:
            self._url_secret = base.rstrip("/")
        register_log_secret(self._url_secret)
        self._generator_url = generator_url
        self._firing_ttl_s = firing_ttl_s
        self._token = bearer_token
        self._clock = clock
        self._client = make_client(connect_timeout_s, read_timeout_s, transport)

    def send(self, n: Notification) -> None:
        """POST one postable alert per alert of ``n``; return on a 2xx, else raise :class:`DeliveryError`."""
        what = f"alertmanager {self._name}"
        now = self._clock()
        body = encode_json([postable_alert(a, generator_url=self._generator_url, now_ms=int(now * 1000),
                                           firing_ttl_s=self._firing_ttl_s) for a in n.alerts], what)
        headers = {"Content-Type": "application/json"}
        token = self._token.reveal() if self._token is not None else None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        post_json(self._client, self._url, body, headers, what, now, self._url_secret, token)

