"""Slack incoming webhook: a readable message per alert state change.

An incoming-webhook URL (``https://hooks.slack.com/services/T.../B.../...``)
is itself the credential -- anyone holding it can post to the channel -- so it
is taken as a :class:`~streams.notify.secrets.Secret` and never appears in an
error reason or a log line.

The message (`Block Kit <https://api.slack.com/block-kit>`_) has a ``text``
fallback, shown in notifications and by clients that do not render blocks,
and blocks: a header (status, alert, model), the summary annotation, fields
(model, version, severity, value, threshold, window, start and end), the top
drifted features from the evidence, a suggested action, a runbook link and a
context line with the fingerprint and labels. Texts are truncated to Slack's
block limits (header 150 characters, field 2000, section 3000) so that a long
annotation cannot get the whole message rejected with ``invalid_blocks``.

Slack answers ``200 ok``; errors come as 4xx with a word in the body
(``invalid_payload``, ``channel_not_found``, ``no_active_hooks``) and are not
retryable, a 429 carries ``Retry-After`` (seconds), which is passed on as the
error's ``retry_after_s`` hint, and a 5xx is retryable. Incoming webhooks do not
de-duplicate: a notification re-sent after a crash between Slack's ``ok`` and
the delivery log's record shows twice (see :mod:`streams.notify.dedup`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from streams.notify.channel import (
    Notification,
    alert_name,
    alert_title,
    format_duration_ms,
    format_ms,
    format_number,
    group_title,
    model_ref,
    runbook_link,
    suggested_action,
    top_features,
)
from streams.notify.secrets import Secret
from streams.notify.webhook import (
    HttpChannel,
    check_url,
    encode_json,
    make_client,
    post_json,
    register_log_secret,
)

__all__ = ["SlackChannel", "slack_payload"]

_HEADER_MAX = 150
_FIELD_MAX = 2000
_SECTION_MAX = 3000

_SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
                   "info": ":large_blue_circle:"}



def _esc(text: str) -> str:
    """Escape Slack mrkdwn control characters (``&``, ``<``, ``>``), as Slack requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(mrkdwn, _SECTION_MAX)}}


def slack_payload(alert: Mapping[str, Any], *, runbook_url: str | None = None, max_features: int = 5
                  ) -> dict[str, Any]:
    """The incoming-webhook JSON for one alert: ``text`` fallback and ``blocks``.

    Parameters
    ----------
    alert
        The ``driftline.alert/v1`` event.
    runbook_url
        Link used when the alert has no ``runbook_url`` annotation.
    max_features
        How many drifted features to list.

    Examples
    --------
    >>> p = slack_payload({"status": "firing", "severity": "warning", "signal": "feature_drift_psi",
    ...                    "model": "fraud", "model_version": "3", "value": 0.31, "threshold": 0.2,
    ...                    "window_ms": 3600000, "starts_at_ms": 0, "fingerprint": "9f2c4e1a7b3d5f60",
    ...                    "evidence": {"drifted_features": ["amount"]}})
    >>> p["text"]
    '[FIRING][warning] feature_drift_psi fraud@3: value 0.31, threshold 0.2'
    >>> [b["type"] for b in p["blocks"]]
    ['header', 'section', 'section', 'section', 'context']
    """
    firing = alert.get("status") != "resolved"
    annotations = alert.get("annotations") or {}
    value, threshold = format_number(alert.get("value")), format_number(alert.get("threshold"))
    summary = str(annotations.get("summary") or annotations.get("description") or "")
    text = f"{alert_title(alert)}: value {value}, threshold {threshold}" + (f". {summary}" if summary else "")

    emoji = _SEVERITY_EMOJI.get(str(alert.get("severity")), ":bell:") if firing else ":white_check_mark:"
    header = f"{emoji} {'FIRING' if firing else 'RESOLVED'}: {alert_name(alert)} on {model_ref(alert)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(header, _HEADER_MAX), "emoji": True}}
    ]
    if summary:
        blocks.append(_section(_esc(summary)))

    fields = [
        ("Model", f"`{alert.get('model', '?')}`"),
        ("Version", f"`{alert['model_version']}`" if alert.get("model_version") else "all versions"),
        ("Severity", str(alert.get("severity", "?"))),
        ("Value", value),
        ("Threshold", threshold),
    ]
    if isinstance(alert.get("window_ms"), int):
        fields.append(("Window", format_duration_ms(alert["window_ms"])))
    if isinstance(alert.get("starts_at_ms"), int):
        fields.append(("Started", format_ms(alert["starts_at_ms"])))
    if not firing and isinstance(alert.get("ends_at_ms"), int):
        fields.append(("Ended", format_ms(alert["ends_at_ms"])))
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": _cut(f"*{name}*\n{_esc(v)}", _FIELD_MAX)} for name, v in fields[:10]
    ]})

    features = top_features(alert, max_features)
    if features:
        lines = "\n".join(f"{i}. `{_esc(f)}`" for i, f in enumerate(features, 1))
        blocks.append(_section(f"*Top drifted features*\n{lines}"))

    action = f"*Suggested action*\n{_esc(suggested_action(alert))}"
    runbook = runbook_link(alert, runbook_url)
    if runbook:
        action += f"\n<{_esc(runbook)}|Runbook>"
    blocks.append(_section(action))

    labels = alert.get("labels") or {}
    context = f"fingerprint `{alert.get('fingerprint', '?')}`"
    if labels:
        context += " · " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    context_text = {"type": "mrkdwn", "text": _cut(_esc(context), _FIELD_MAX)}
    blocks.append({"type": "context", "elements": [context_text]})
    return {"text": _cut(text, _SECTION_MAX), "blocks": blocks}


def slack_group_payload(alerts: Sequence[Mapping[str, Any]], *, max_alerts: int = 10) -> dict[str, Any]:
    """One message for a group: a header with the counts, then one line per alert.

    Slack allows 50 blocks per message; a group lists its first ``max_alerts``
    and says how many more there are (the webhook and email channels carry them all).

    Examples
    --------
    >>> a = {"status": "firing", "severity": "warning", "signal": "drift", "model": "fraud",
    ...      "value": 0.3, "threshold": 0.1, "labels": {"feature": "amount"}}
    >>> p = slack_group_payload([a, {**a, "labels": {"feature": "age"}}])
    >>> p["text"], len(p["blocks"])
    ('[FIRING:2] fraud: drift', 3)
    """
    text = group_title(alerts)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(text, _HEADER_MAX), "emoji": True}}
    ]
    for alert in alerts[:max_alerts]:
        firing = alert.get("status") != "resolved"
        emoji = _SEVERITY_EMOJI.get(str(alert.get("severity")), ":bell:") if firing else ":white_check_mark:"
        labels = alert.get("labels") or {}
        subject = " ".join(f"{k}={labels[k]}" for k in ("feature", "host", "gpu") if labels.get(k))
        summary = str((alert.get("annotations") or {}).get("summary") or "")
        value, threshold = format_number(alert.get("value")), format_number(alert.get("threshold"))
        line = (f"{emoji} *{_esc(alert_name(alert))}* `{_esc(model_ref(alert))}` {_esc(subject)} "
                f"value {value}, threshold {threshold}")
        if summary:
            line += f"\n{_esc(summary)}"
        blocks.append(_section(line))
    if len(alerts) > max_alerts:
        blocks.append(_section(f"…and {len(alerts) - max_alerts} more"))
    return {"text": _cut(text, _SECTION_MAX), "blocks": blocks}


class SlackChannel(HttpChannel):
    """Post each notification to a Slack incoming webhook.

    Parameters
    ----------
    name
        The receiver's name.
    webhook_url
        The incoming-webhook URL: a credential, redacted from errors.
    runbook_url
        Runbook link for alerts without a ``runbook_url`` annotation.
    max_features
        How many drifted features to list.
    connect_timeout_s, read_timeout_s
        Per-attempt limits.
    clock
        Unix seconds, to turn an HTTP-date ``Retry-After`` into a delay.
    transport
        An httpx transport for tests; None for the network.

    Raises
    ------
    ValueError
        ``webhook_url`` is not an http(s) URL (the message does not quote it).
    """

    def __init__(
        self,
        name: str,
        webhook_url: Secret | str,
        *,
        runbook_url: str | None = None,
        max_features: int = 5,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._name = name
        # A plain str is accepted (tests, a local mock) but still treated as a credential.
        secret = webhook_url if isinstance(webhook_url, Secret) else Secret(webhook_url)
        self._url, self._url_secret = check_url(secret, f"slack {name}")
        register_log_secret(self._url_secret)
        self._runbook_url = runbook_url
        self._max_features = max_features
        self._clock = clock
        self._client = make_client(connect_timeout_s, read_timeout_s, transport)

    def send(self, n: Notification) -> None:
        """POST the message of ``n``; return on Slack's 2xx, raise :class:`DeliveryError` otherwise."""
        what = f"slack {self._name}"
        if n.more:
            payload = slack_group_payload(n.alerts)
        else:
            payload = slack_payload(n.alert, runbook_url=self._runbook_url, max_features=self._max_features)
        body = encode_json(payload, what)
        post_json(self._client, self._url, body, {"Content-Type": "application/json; charset=utf-8"}, what,
                  self._clock(), self._url_secret)

