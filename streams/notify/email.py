"""Email over SMTP (standard library ``smtplib``): one plain-text mail per alert state change.

Transport security is explicit (``security``):

``starttls`` (default, port 587)
    Connect in clear, then ``STARTTLS`` before anything else; a server that
    does not offer it is an error, never a silent downgrade.
``ssl`` (port 465)
    TLS from the first byte ("implicit TLS", RFC 8314).
``none`` (port 25)
    No encryption, for a relay on localhost or a trusted network only; AUTH
    is refused in this mode, since it would send the password in clear.

The certificate is verified against the system's CAs (or the ``ssl_context``
given). AUTH (``LOGIN``/``PLAIN``, whichever the server offers, as
``smtplib.SMTP.login`` chooses) runs when a username is configured.

Headers that let the recipient's side cope with at-least-once delivery:
``Message-ID`` is ``<idempotency_key@sender-domain>``, the same for every
retry and every replay of the alert event, so a mail store or client that
de-duplicates on it (Gmail does; most list servers too) keeps one copy; the
resolved mail carries ``In-Reply-To``/``References`` to the firing mail's
``Message-ID``, so clients thread the resolution under the alert; and
``Auto-Submitted: auto-generated`` (RFC 3834) stops vacation auto-replies.

Failures: SMTP 4xx replies (``421`` service not available, ``451`` local
error, ``452`` out of storage, ``454`` temporary auth failure) and network
errors are retryable; 5xx replies (``550`` no such mailbox, ``535`` bad
credentials, ``554``) are not, nor is a certificate that fails verification
or a server lacking STARTTLS or AUTH. When some recipients are refused and
others accepted, the mail was delivered: it is reported as such and the
refusals are logged (retrying would mail the accepted recipients again).
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, Literal

from streams.notify.channel import (
    DeliveryError,
    Notification,
    alert_name,
    alert_title,
    format_duration_ms,
    format_ms,
    format_number,
    group_title,
    idempotency_key,
    model_ref,
    redact,
    runbook_link,
    suggested_action,
    top_features,
)
from streams.notify.secrets import Secret

__all__ = ["EmailChannel", "Security", "email_body", "message_id"]

log = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}


def message_id(key: str, sender: str) -> str:
    """The ``Message-ID`` of the notification with idempotency key ``key``: ``<key@sender-domain>``.

    Examples
    --------
    >>> message_id("ab12", "Driftline <alerts@example.com>"), message_id("ab12", "alerts")
    ('<ab12@example.com>', '<ab12@driftline.invalid>')
    """
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2] if "@" in address else ""
    domain = domain or "driftline.invalid"
    return f"<{key}@{domain}>"


def _one_line(text: str) -> str:
    """Header-safe: a signal or label value with a newline must not inject headers."""
    return " ".join(text.split())


def _evidence_value(v: Any) -> str:
    if isinstance(v, list | dict):
        text = json.dumps(v, separators=(", ", ": "), ensure_ascii=False, default=str)
    else:
        text = format_number(v) if isinstance(v, int | float) or v is None else str(v)
    return text if len(text) <= 200 else text[:199] + "…"


def email_body(alert: Mapping[str, Any], *, runbook_url: str | None = None) -> str:
    """The plain-text body: what fired, the numbers, features, action, labels, evidence.

    Plain text on purpose: it renders identically in every client and pager
    gateway, is readable in a terminal, and cannot carry active content.

    Examples
    --------
    >>> print(email_body({"status": "firing", "severity": "warning", "signal": "psi", "model": "fraud",
    ...                   "value": 0.31, "threshold": 0.2, "window_ms": 3600000, "starts_at_ms": 0,
    ...                   "fingerprint": "9f2c4e1a7b3d5f60"}).splitlines()[0])
    FIRING: psi on fraud (severity warning)
    """
    firing = alert.get("status") != "resolved"
    annotations = alert.get("annotations") or {}
    lines = [f"{'FIRING' if firing else 'RESOLVED'}: {alert_name(alert)} on {model_ref(alert)} "
             f"(severity {alert.get('severity', '?')})", ""]
    summary = annotations.get("summary") or annotations.get("description")
    if summary:
        lines += [str(summary), ""]
    rows = [("Value", format_number(alert.get("value"))),
            ("Threshold", format_number(alert.get("threshold")))]
    if isinstance(alert.get("window_ms"), int):
        rows.append(("Window", format_duration_ms(alert["window_ms"])))
    if isinstance(alert.get("starts_at_ms"), int):
        rows.append(("Started", format_ms(alert["starts_at_ms"])))
    if not firing and isinstance(alert.get("ends_at_ms"), int):
        rows.append(("Ended", format_ms(alert["ends_at_ms"])))
    features = top_features(alert)
    if features:
        rows.append(("Top drifted features", ", ".join(features)))
    lines += [f"{k + ':':<22}{v}" for k, v in rows]
    lines += ["", f"Suggested action: {suggested_action(alert)}"]
    runbook = runbook_link(alert, runbook_url)
    if runbook:
        lines.append(f"Runbook: {runbook}")
    labels = alert.get("labels") or {}
    if labels:
        lines += ["", "Labels:", *(f"  {k}={v}" for k, v in sorted(labels.items()))]
    evidence = alert.get("evidence") or {}
    if evidence:
        lines += ["", "Evidence:", *(f"  {k}: {_evidence_value(v)}" for k, v in sorted(evidence.items()))]
    other = {k: v for k, v in annotations.items()
             if k not in ("summary", "description", "runbook_url", "suggested_action", "action")}
    if other:
        lines += ["", "Annotations:", *(f"  {k}: {v}" for k, v in sorted(other.items()))]
    lines += ["", f"Fingerprint: {alert.get('fingerprint', '?')}", "-- ", "Sent by Driftline."]
    return "\n".join(lines) + "\n"


class EmailChannel:
    """Send each notification as a plain-text mail through one SMTP server.

    A connection is opened per notification and closed after it: alerts are
    rare, and SMTP servers drop idle connections within minutes anyway, so a
    pooled connection would mostly be a stale one.

    Parameters
    ----------
    name
        The receiver's name.
    host, port
        The SMTP server; ``port`` defaults by ``security`` (587, 465, 25).
    sender
        ``From`` address (envelope and header), e.g. ``Driftline <alerts@example.com>``.
    recipients
        ``To`` addresses; at least one.
    security
        ``starttls``, ``ssl`` or ``none`` (see the module documentation).
    username, password
        AUTH credentials; both or neither.
    timeout_s
        Per socket operation (connect, each command): a stuck server must
        not hold the notifier.
    ssl_context
        TLS settings; the default verifies the server against the system CAs.
        Tests pass a context trusting their self-signed certificate.
    local_hostname
        The ``EHLO`` name; the machine's FQDN when None.
    runbook_url
        Runbook link for alerts without a ``runbook_url`` annotation.
    clock
        Unix seconds, for the ``Date`` header.

    Raises
    ------
    ValueError
        No recipient, an unknown ``security``, a username without a password
        (or the reverse), or AUTH requested with ``security="none"``.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        sender: str,
        recipients: Sequence[str],
        port: int | None = None,
        security: Security = "starttls",
        username: str | None = None,
        password: Secret | None = None,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        runbook_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        where = f"email {name}"
        if security not in _DEFAULT_PORTS:
            raise ValueError(f"{where}: security: must be starttls, ssl or none, got {security!r}")
        if isinstance(recipients, str) or not recipients:
            raise ValueError(f"{where}: recipients: expected a non-empty list of addresses")
        if (username is None) != (password is None):
            raise ValueError(f"{where}: username and password: give both or neither")
        if username is not None and security == "none":
            raise ValueError(f"{where}: username: AUTH without TLS would send the password in clear; "
                             "use security starttls or ssl")
        if timeout_s <= 0:
            raise ValueError(f"{where}: timeout_s: must be positive, got {timeout_s!r}")
        self._name = name
        self._host = host
        self._port = port if port is not None else _DEFAULT_PORTS[security]
        self._sender = sender
        self._recipients = list(recipients)
        self._security = security
        self._username = username
        self._password = password
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._runbook_url = runbook_url
        self._clock = clock

    @property
    def name(self) -> str:
        """The receiver's name."""
        return self._name

    def message(self, n: Notification) -> EmailMessage:
        """The mail sent for ``n`` (subject, threading headers, body); a group is one mail listing all."""
        alert = n.alert
        msg = EmailMessage()
        msg["Subject"] = _one_line(group_title(n.alerts) if n.more else alert_title(alert))
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Date"] = formatdate(self._clock(), usegmt=True)
        msg["Message-ID"] = message_id(n.idempotency_key, self._sender)
        if alert.get("status") == "resolved" and not n.more:
            # The first firing notification of the episode: same fingerprint, episode and receiver.
            evidence = {**(alert.get("evidence") or {}), "notification_seq": 1}
            first = {**alert, "status": "firing", "evidence": evidence}
            firing = message_id(idempotency_key(first, n.receiver), self._sender)
            msg["In-Reply-To"] = firing
            msg["References"] = firing
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Driftline-Idempotency-Key"] = n.idempotency_key
        msg["X-Driftline-Fingerprint"] = _one_line(",".join(str(a.get("fingerprint", "")) for a in n.alerts))
        bodies = [email_body(a, runbook_url=self._runbook_url) for a in n.alerts]
        msg.set_content(("\n" + "-" * 72 + "\n\n").join(bodies))
        return msg

    def _connect(self, context: ssl.SSLContext) -> smtplib.SMTP:
        if self._security == "ssl":
            return smtplib.SMTP_SSL(self._host, self._port, self._local_hostname, timeout=self._timeout_s,
                                    context=context)
        return smtplib.SMTP(self._host, self._port, self._local_hostname, timeout=self._timeout_s)

    def send(self, n: Notification) -> None:
        """Mail ``n``; return once the server accepted it (``250`` after ``DATA``).

        Raises
        ------
        DeliveryError
            Retryable for SMTP 4xx and network errors, not for 5xx, TLS
            verification failures or missing STARTTLS/AUTH support.
        """
        what = f"email {self._name}"
        msg = self.message(n)
        password = self._password.reveal() if self._password is not None else None
        try:
            context = self._ssl_context or ssl.create_default_context()
            with self._connect(context) as smtp:
                if self._security == "starttls":
                    smtp.ehlo()
                    smtp.starttls(context=context)  # raises SMTPNotSupportedError when not offered
                    smtp.ehlo()
                if self._username is not None and password is not None:
                    smtp.login(self._username, password)
                refused = smtp.send_message(msg, from_addr=self._sender, to_addrs=self._recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise DeliveryError(f"{what}: all recipients refused (SMTP {', '.join(map(str, codes))})",
                                any(400 <= c < 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            detail = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
                else str(exc.smtp_error)
            reason = redact(f"{what}: SMTP {exc.smtp_code} {_one_line(detail)[:200]}", password)
            raise DeliveryError(reason, 400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise DeliveryError(redact(f"{what}: server disconnected: {exc}", password), True) from None
        except smtplib.SMTPException as exc:  # STARTTLS or AUTH not offered, no usable AUTH mechanism
            raise DeliveryError(redact(f"{what}: {type(exc).__name__}: {exc}", password), False) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"{what}: TLS certificate not trusted: {exc.verify_message}", False) from None
        except OSError as exc:  # refused, unreachable, timed out, reset, TLS handshake cut short
            raise DeliveryError(redact(f"{what}: {type(exc).__name__}: {exc}", password), True) from None
        if refused:
            log.warning("%s: mail %s delivered, but refused for %s", what, msg["Message-ID"],
                        ", ".join(f"{addr} ({code})" for addr, (code, _) in sorted(refused.items())))

    def close(self) -> None:
        """Nothing to release: a connection lives for one notification."""
