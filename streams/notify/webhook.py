"""Generic webhook: the notification as signed JSON, POSTed to a URL.

Request
-------
``POST <url>`` with body::

    {"version": "driftline.notification/v2", "idempotency_key": "...",
     "receiver": "...", "group_key": "{model=\"fraud\"}",
     "alerts": [{... a driftline.alert/v1 event ...}, ...]}

``alerts`` holds one event, or several when alerts of one group (one model,
by default) changed state within the receiver's ``group_wait``; ``group_key``
is empty for a single alert. Each event keeps its own ``fingerprint`` and
``status``, so a receiver that tracks alerts one by one just iterates.

and headers:

``Content-Type: application/json``
    The body is compact, key-sorted UTF-8 JSON.
``Idempotency-Key``
    The notification's key (:func:`streams.notify.channel.idempotency_key`):
    identical across retries and across a replay of the same alert event, so
    the receiver can drop duplicates (at-least-once delivery; see
    :mod:`streams.notify.dedup`).
``X-Driftline-Timestamp``
    Unix seconds when this attempt was signed.
``X-Driftline-Signature: sha256=<hex>``
    HMAC-SHA256, keyed with the receiver's secret, of ``<timestamp>.<body>``:
    the timestamp header's ASCII digits, a ``.``, then the exact body bytes.
    Sent only when a secret is configured.

Verifying
---------
What a receiver does (:func:`verify_signature` is a reference implementation):

1. Recompute the HMAC over ``timestamp + "." + raw body`` (the raw bytes as
   received, before any JSON parsing or re-serialisation) and compare it with
   the header in constant time.
2. Reject a timestamp more than five minutes from the receiver's clock.
3. Drop a request whose ``Idempotency-Key`` it has already processed.

Signing the timestamp with the body is what Stripe (``Stripe-Signature:
t=...,v1=...``) and Slack (``v0:<ts>:<body>``) do: a signature over the body
alone proves authorship but not freshness, so a captured request could be
replayed forever; with the timestamp inside the MAC a replay is refused once
it is older than the tolerance, and the timestamp cannot be altered without
breaking the signature. Each retry is signed afresh, so a retry ten minutes
after the first attempt still passes a five-minute tolerance (the
``Idempotency-Key`` is what stays the same).

Failures: a 2xx is success; 408, 429, any 5xx and network errors
(connection refused, timeouts, a connection reset mid-response) are
retryable; any other status is not (a 4xx means the request itself is wrong,
and a 3xx is not followed: a webhook that moved is a configuration to fix).

The helpers :func:`post_json`, :func:`http_error` and
:func:`parse_retry_after` are shared by the Slack and Alertmanager channels.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from streams.notify.channel import DeliveryError, Notification, envelope, redact
from streams.notify.secrets import Secret

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "HttpChannel",
    "WebhookChannel",
    "http_error",
    "parse_retry_after",
    "post_json",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
USER_AGENT = "driftline-notify/1"
DEFAULT_TOLERANCE_S = 300.0


def sign(secret: Secret | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Driftline-Signature`` value of ``body`` sent at ``timestamp``: ``sha256=<hex>``.

    Examples
    --------
    >>> sign(b"k", "1767232800", b'{"a":1}')
    'sha256=84d6d2400bfb7a5cdb8c368db761ffb8ba120e3f9dc8d0ba1dce52bc0eb3eb90'
    """
    key = secret.reveal().encode("utf-8") if isinstance(secret, Secret) else secret
    mac = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: Secret | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received webhook is authentic and fresh (what a receiver should check).

    Parameters
    ----------
    secret
        The shared HMAC key.
    timestamp, body, signature
        The ``X-Driftline-Timestamp`` header, the raw request body, the
        ``X-Driftline-Signature`` header.
    now_s
        The receiver's current time, Unix seconds (passed in so that tests
        and receivers choose their clock).
    tolerance_s
        Largest accepted distance between ``timestamp`` and ``now_s``; the
        replay window.

    Examples
    --------
    >>> sig = sign(b"k", "1000", b"{}")
    >>> verify_signature(b"k", "1000", b"{}", sig, now_s=1010), verify_signature(b"k", "1000", b"{}", sig,
    ...                                                                          now_s=2000)
    (True, False)
    """
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now_s - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delay-seconds or an HTTP-date), or None.

    Examples
    --------
    >>> parse_retry_after("30", 0.0), parse_retry_after(None, 0.0), parse_retry_after("soon", 0.0)
    (30.0, None, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 15.0)
    45.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_s
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def http_error(
    response: httpx.Response, what: str, now_s: float, *secrets: str | None
) -> DeliveryError | None:
    """None for a 2xx; otherwise the :class:`DeliveryError` the status means.

    408, 429 and 5xx are retryable, carrying ``Retry-After`` as a hint; every
    other status is not. The reason quotes the status and the start of the
    response body (Slack explains itself there: ``invalid_payload``,
    ``channel_not_found``), never the request URL; ``secrets`` are redacted
    from the quoted body, in case the receiver echoes the request.
    """
    status = response.status_code
    if 200 <= status < 300:
        return None
    retryable = status in (408, 429) or status >= 500
    body = response.text.strip().replace("\n", " ")
    reason = f"{what}: HTTP {status}" + (f" {redact(body, *secrets)[:200]}" if body else "")
    hint = parse_retry_after(response.headers.get("Retry-After"), now_s) if retryable else None
    return DeliveryError(reason, retryable, retry_after_s=hint)


def transport_error(exc: httpx.HTTPError, what: str, *secrets: str | None) -> DeliveryError:
    """The :class:`DeliveryError` of a request that got no HTTP response.

    Timeouts, refused or reset connections and a peer that broke the protocol
    are retryable; a URL httpx cannot use (bad scheme, malformed) and a
    request we could not even encode are not: no retry fixes configuration.
    """
    retryable = isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError
    )
    detail = redact(str(exc), *secrets) or "no detail"
    return DeliveryError(f"{what}: {type(exc).__name__}: {detail}", retryable)


def encode_json(payload: Any, what: str) -> bytes:
    """Compact, key-sorted UTF-8 JSON; a payload JSON cannot hold (NaN, an object) is not retryable."""
    try:
        return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DeliveryError(f"{what}: payload is not JSON-encodable: {exc}", False) from None


def post_json(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    what: str,
    now_s: float,
    *secrets: str | None,
) -> httpx.Response:
    """POST ``body`` and return the 2xx response; raise :class:`DeliveryError` otherwise.

    ``secrets`` (the URL when it carries a token, credentials) are redacted
    from error reasons.
    """
    try:
        response = client.post(url, content=body, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise transport_error(exc, what, *secrets) from None
    except httpx.InvalidURL:
        raise DeliveryError(f"{what}: invalid URL", False) from None
    error = http_error(response, what, now_s, *secrets)
    if error is not None:
        raise error
    return response


def make_client(
    connect_timeout_s: float, read_timeout_s: float, transport: httpx.BaseTransport | None
) -> httpx.Client:
    """One pooled client per channel: keep-alive connections, explicit timeouts, no redirects.

    ``write`` and ``pool`` use the read timeout: a request body is small, and a
    pool wait longer than a read means the receiver is stuck anyway.
    """
    timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s,
                            pool=read_timeout_s)
    return httpx.Client(timeout=timeout, follow_redirects=False, transport=transport,
                        headers={"User-Agent": USER_AGENT})


class _RedactSecrets(logging.Filter):
    """Redact registered secret strings from the records of the logger it is attached to.

    httpx logs every request at INFO as ``HTTP Request: POST <full URL> ...``;
    for a Slack webhook (or any URL carrying a token) that line is the
    credential. A filter on the ``httpx`` logger rewrites such records before
    any handler sees them. Channels register their secret URLs when built and
    unregister them when closed (counted: two channels may share one).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            self._secrets[secret] += 1

    def remove(self, secret: str) -> None:
        with self._lock:
            self._secrets[secret] -= 1
            if self._secrets[secret] <= 0:
                del self._secrets[secret]

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = list(self._secrets)
        if secrets:
            message = record.getMessage()
            redacted = redact(message, *secrets)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


_LOG_REDACTOR = _RedactSecrets()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_LOG_REDACTOR)


def register_log_secret(secret: str | None) -> None:
    """Keep ``secret`` out of httpx's and httpcore's log records until :func:`unregister_log_secret`."""
    if secret:
        _LOG_REDACTOR.add(secret)


def unregister_log_secret(secret: str | None) -> None:
    """Undo one :func:`register_log_secret`."""
    if secret:
        _LOG_REDACTOR.remove(secret)


def check_url(url: str | Secret, what: str) -> tuple[str, str | None]:
    """(the URL, the string to redact from errors: the URL when it is a secret); checked once, up front.

    A URL httpx cannot use is a configuration error, reported when the channel
    is built rather than as a failed delivery of the first alert. The message
    does not quote the URL, which may be a credential.

    Raises
    ------
    ValueError
        Not an ``http``/``https`` URL with a host.
    """
    raw = url.reveal() if isinstance(url, Secret) else url
    try:
        parsed = httpx.URL(raw)
    except (httpx.InvalidURL, TypeError):
        raise ValueError(f"{what}: url: not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what}: url: expected an http:// or https:// URL with a host")
    return raw, raw if isinstance(url, Secret) else None


class HttpChannel:
    """What the HTTP channels share: their name, a pooled client, and a URL that may be a credential.

    Subclasses set ``_name``, ``_client`` and ``_url_secret`` (the URL text to keep out of logs, or
    None) in their constructor.
    """

    _name: str
    _client: httpx.Client
    _url_secret: str | None

    @property
    def name(self) -> str:
        """The receiver's name."""
        return self._name

    def close(self) -> None:
        """Close the pooled connections."""
        if not self._client.is_closed:
            unregister_log_secret(self._url_secret)
        self._client.close()


class WebhookChannel(HttpChannel):
    """POST each notification as signed JSON to one URL.

    Parameters
    ----------
    name
        The receiver's name.
    url
        Where to POST. A :class:`~streams.notify.secrets.Secret` when it
        embeds a token: it is then redacted from every error reason.
    secret
        HMAC key for ``X-Driftline-Signature``; None sends no signature (only
        for receivers on a trusted network).
    connect_timeout_s, read_timeout_s
        Per-attempt limits: a receiver that hangs must not hold the notifier
        longer than this; the retry stage tries again later.
    headers
        Extra request headers (an ``Authorization`` for a gateway, say).
    clock
        Unix seconds, for the signature timestamp (passed in for tests).
    transport
        An httpx transport, for tests (``httpx.MockTransport``); None for the
        network.

    Raises
    ------
    ValueError
        ``url`` is not an http(s) URL with a host (checked here, not at the
        first alert; the message does not quote the URL).

    Examples
    --------
    >>> import httpx
    >>> seen = []
    >>> def receiver(request):
    ...     seen.append(request.headers["Idempotency-Key"])
    ...     return httpx.Response(204)
    >>> ch = WebhookChannel("ops", "https://hooks.example/x", secret=Secret("k"),
    ...                     transport=httpx.MockTransport(receiver))
    >>> a = {"fingerprint": "9f2c4e1a7b3d5f60", "status": "firing", "starts_at_ms": 0}
    >>> ch.send(Notification.for_alert(a, "ops")); ch.close()
    >>> seen == [Notification.for_alert(a, "ops").idempotency_key]
    True
    """

    def __init__(
        self,
        name: str,
        url: str | Secret,
        *,
        secret: Secret | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._name = name
        self._url, self._url_secret = check_url(url, f"webhook {name}")
        self._secret = secret
        register_log_secret(self._url_secret)
        self._headers = dict(headers or {})
        self._clock = clock
        self._client = make_client(connect_timeout_s, read_timeout_s, transport)

    def payload(self, n: Notification) -> dict[str, Any]:
        """The JSON document sent for ``n`` (the envelope around its alerts)."""
        return envelope(n)

    def send(self, n: Notification) -> None:
        """POST ``n``; return on a 2xx, raise :class:`DeliveryError` otherwise."""
        what = f"webhook {self._name}"
        body = encode_json(self.payload(n), what)
        now = self._clock()
        timestamp = str(int(now))
        headers = {**self._headers, "Content-Type": "application/json", "Idempotency-Key": n.idempotency_key,
                   TIMESTAMP_HEADER: timestamp}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        post_json(self._client, self._url, body, headers, what, now, self._url_secret)

