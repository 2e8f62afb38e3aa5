"""Channels against real local servers: an HTTP server (webhook, Slack, Alertmanager) and an SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import email.utils
import io
import ipaddress
import json
import random
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from streams.events.models import AlertV1
from streams.notify import (
    AlertmanagerChannel,
    Channel,
    DeliveryError,
    EmailChannel,
    Notification,
    RetryPolicy,
    Secret,
    SlackChannel,
    StdoutChannel,
    WebhookChannel,
    deliver_with_retry,
    postable_alert,
    slack_payload,
    verify_signature,
)
from streams.notify.channel import ENVELOPE_VERSION, idempotency_key
from streams.notify.email import message_id
from streams.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_retry_after, sign

from . import FIRING, RESOLVED

HMAC_KEY = "whsec-test-7c1f"


def test_fixtures_are_valid_alert_events() -> None:
    for alert in (FIRING, RESOLVED):
        msgspec.convert(alert, AlertV1)


# -- a real HTTP server -----------------------------------------------------------------------------------
@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    secret: bytes | None
    replies: list[Reply]
    seen: list[Seen]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok: bool | None = None
        if self.server.secret is not None:
            ok = verify_signature(self.server.secret, self.headers.get(TIMESTAMP_HEADER, ""), body,
                                  self.headers.get(SIGNATURE_HEADER, ""), now_s=time.time())
        with self.server.lock:
            self.server.seen.append(Seen(self.path, dict(self.headers.items()), body, ok))
            reply = self.server.replies.pop(0) if self.server.replies else Reply()
        if ok is False:
            reply = Reply(401, b"bad signature")
        if reply.delay_s:
            time.sleep(reply.delay_s)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class HttpServer:
    """A threaded HTTP server on 127.0.0.1:<free port> answering scripted replies (then 200 ok)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.secret = secret
        self.httpd.replies = []
        self.httpd.seen = []
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        self.httpd.replies.extend(replies)

    @property
    def seen(self) -> list[Seen]:
        return self.httpd.seen

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[HttpServer]:
    s = HttpServer(secret=HMAC_KEY.encode())
    yield s
    s.close()


@pytest.fixture
def plain_server() -> Iterator[HttpServer]:
    s = HttpServer()
    yield s
    s.close()


def no_wait() -> tuple[list[float], Any, Any, random.Random]:
    """(recorded sleeps, sleep, clock, rng): a retry loop that never actually waits."""
    slept: list[float] = []
    now = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    return slept, sleep, lambda: now[0], random.Random(7)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


# -- webhook --------------------------------------------------------------------------------------------
def test_webhook_500_then_200_is_retried_with_the_same_idempotency_key_and_valid_signatures(
    server: HttpServer,
) -> None:
    server.reply(Reply(500, b"boom"), Reply(200, b""))
    ch = WebhookChannel("ops", server.url + "/hook", secret=Secret(HMAC_KEY))
    n = Notification.for_alert(FIRING, "ops")
    slept, sleep, clock, rng = no_wait()
    result = deliver_with_retry(ch, n, RetryPolicy(), sleep, clock, rng)
    ch.close()

    assert result.delivered and result.attempts == 2 and result.reason == "delivered"
    assert len(slept) == 1 and 0.4 <= slept[0] <= 0.5
    assert [s.signature_ok for s in server.seen] == [True, True]
    assert [s.headers["Idempotency-Key"] for s in server.seen] == [n.idempotency_key] * 2
    first = server.seen[0]
    assert first.path == "/hook"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers[SIGNATURE_HEADER].startswith("sha256=")
    assert json.loads(first.body) == {"version": ENVELOPE_VERSION, "idempotency_key": n.idempotency_key,
                                      "receiver": "ops", "group_key": "", "alerts": [FIRING]}


def test_webhook_signature_covers_timestamp_and_exact_body() -> None:
    body = b'{"alert":{}}'
    sig = sign(Secret(HMAC_KEY), "1767232800", body)
    assert verify_signature(HMAC_KEY.encode(), "1767232800", body, sig, now_s=1767232800 + 60)
    assert not verify_signature(HMAC_KEY.encode(), "1767232800", body + b" ", sig, now_s=1767232800)
    assert not verify_signature(HMAC_KEY.encode(), "1767232801", body, sig, now_s=1767232800)  # ts moved
    assert not verify_signature(b"other-key", "1767232800", body, sig, now_s=1767232800)
    # a captured request replayed after the tolerance is refused
    assert not verify_signature(HMAC_KEY.encode(), "1767232800", body, sig, now_s=1767232800 + 301)


def test_webhook_each_attempt_is_signed_at_its_own_time(server: HttpServer) -> None:
    server.reply(Reply(503), Reply(200))
    t = [time.time() - 200.0]
    ch = WebhookChannel("ops", server.url, secret=Secret(HMAC_KEY), clock=lambda: t[0])
    n = Notification.for_alert(FIRING, "ops")
    with pytest.raises(DeliveryError):
        ch.send(n)
    t[0] += 200.0
    ch.send(n)
    ch.close()
    stamps = [int(s.headers[TIMESTAMP_HEADER]) for s in server.seen]
    assert stamps[1] - stamps[0] == 200 and all(s.signature_ok for s in server.seen)


def test_webhook_400_is_not_retried(server: HttpServer) -> None:
    server.reply(Reply(400, b"missing field alert.model"))
    ch = WebhookChannel("ops", server.url, secret=Secret(HMAC_KEY))
    slept, sleep, clock, rng = no_wait()
    result = deliver_with_retry(ch, Notification.for_alert(FIRING, "ops"), RetryPolicy(), sleep, clock, rng)
    ch.close()
    assert not result.delivered and result.attempts == 1 and slept == []
    assert result.last_error is not None and not result.last_error.retryable
    assert "HTTP 400 missing field alert.model" in result.reason


@pytest.mark.parametrize(("status", "retryable"), [(408, True), (429, True), (500, True), (502, True),
                                                    (503, True), (401, False), (403, False), (404, False),
                                                    (409, False), (422, False), (301, False)])
def test_webhook_status_classification(server: HttpServer, status: int, retryable: bool) -> None:
    server.reply(Reply(status, b"", {"Location": "/elsewhere"} if status == 301 else {}))
    ch = WebhookChannel("ops", server.url, secret=Secret(HMAC_KEY))
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "ops"))
    ch.close()
    assert info.value.retryable is retryable
    assert len(server.seen) == 1  # no redirect followed


def test_webhook_unsigned_receiver_and_extra_headers(plain_server: HttpServer) -> None:
    ch = WebhookChannel("ops", plain_server.url, headers={"Authorization": "Bearer abc"})
    ch.send(Notification.for_alert(FIRING, "ops"))
    ch.close()
    headers = plain_server.seen[0].headers
    assert SIGNATURE_HEADER not in headers and headers["Authorization"] == "Bearer abc"


def test_webhook_network_errors_are_retryable() -> None:
    ch = WebhookChannel("ops", f"http://127.0.0.1:{closed_port()}/hook", connect_timeout_s=1.0)
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "ops"))
    ch.close()
    assert info.value.retryable and "ConnectError" in info.value.reason


def test_webhook_read_timeout_is_retryable(server: HttpServer) -> None:
    server.reply(Reply(200, delay_s=1.0))
    ch = WebhookChannel("ops", server.url, secret=Secret(HMAC_KEY), read_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "ops"))
    ch.close()
    assert info.value.retryable and "Timeout" in info.value.reason
    assert time.monotonic() - started < 0.9


def test_webhook_rejects_unusable_urls_up_front() -> None:
    for url in ("ftp://example.com/x", "not a url", "http://"):
        with pytest.raises(ValueError, match="webhook ops: url"):
            WebhookChannel("ops", url)


def test_replayed_alert_event_gives_the_same_key_and_state_changes_do_not() -> None:
    replay = json.loads(json.dumps(FIRING))
    replay["value"] = 0.35  # a re-evaluation of the same state change
    assert idempotency_key(replay, "ops") == idempotency_key(FIRING, "ops")
    keys = {idempotency_key(FIRING, "ops"), idempotency_key(RESOLVED, "ops"),
            idempotency_key(FIRING, "slack"),
            idempotency_key({**FIRING, "starts_at_ms": FIRING["starts_at_ms"] + 1}, "ops"),
            idempotency_key({**RESOLVED, "ends_at_ms": RESOLVED["ends_at_ms"] + 1}, "ops")}
    assert len(keys) == 5
    with pytest.raises(ValueError, match="ends_at_ms"):
        idempotency_key({**RESOLVED, "ends_at_ms": None}, "ops")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # the same episode and firing count: a replay, whatever the processing times say
        ({"starts_at_ms": 1}, {"starts_at_ms": 2}, True),
        # a repeat: the next firing count of the episode
        ({}, {"notification_seq": 2}, False),
        # a re-fire after a resolve: a new episode
        ({}, {"episode": "00000000000000ff"}, False),
        # a resolve is one per episode, whenever it was stamped
        (
            {"status": "resolved", "ends_at_ms": 5},
            {"status": "resolved", "ends_at_ms": 6, "notification_seq": 3},
            True,
        ),
        ({"status": "resolved", "ends_at_ms": 5}, {}, False),
    ],
)
def test_episode_keys(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    def alert(change: dict[str, Any]) -> dict[str, Any]:
        evidence = {"episode": change.pop("episode", "00000000000000aa"),
                    "notification_seq": change.pop("notification_seq", 1)}
        return {**FIRING, **change, "evidence": evidence}

    assert (idempotency_key(alert(dict(a)), "ops") == idempotency_key(alert(dict(b)), "ops")) is same


def test_episode_key_needs_the_firing_count() -> None:
    with pytest.raises(ValueError, match="notification_seq"):
        idempotency_key({**FIRING, "evidence": {"episode": "00000000000000aa"}}, "ops")


def test_retry_after_parsing() -> None:
    assert parse_retry_after("12", 0.0) == 12.0
    assert parse_retry_after("-3", 0.0) == 0.0
    new_year = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", new_year) == 30.0
    assert parse_retry_after("nan", 0.0) is None and parse_retry_after("", 0.0) is None


# -- Slack ----------------------------------------------------------------------------------------------
def _texts(payload: dict[str, Any]) -> str:
    return json.dumps(payload["blocks"], ensure_ascii=False)


def test_slack_payload_shape() -> None:
    p = slack_payload(FIRING)
    assert p["text"].startswith("[FIRING][warning] feature_drift_psi fraud-detector@2026-01-01.3: value 0.31")
    types = [b["type"] for b in p["blocks"]]
    assert types == ["header", "section", "section", "section", "section", "context"]
    header = p["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    assert "FIRING" in header["text"] and "fraud-detector@2026-01-01.3" in header["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in p["blocks"][2]["fields"]}
    assert fields["*Model*"] == "`fraud-detector`" and fields["*Version*"] == "`2026-01-01.3`"
    assert fields["*Severity*"] == "warning"
    assert fields["*Value*"] == "0.31" and fields["*Threshold*"] == "0.2"
    assert fields["*Window*"] == "1h" and fields["*Started*"] == "2026-01-01T02:00:00.000Z"
    assert len(p["blocks"][2]["fields"]) <= 10
    assert p["blocks"][3]["text"]["text"] == "*Top drifted features*\n1. `amount`\n2. `country`\n3. `hour`"
    action = p["blocks"][4]["text"]["text"]
    assert action.startswith("*Suggested action*\n") and "<https://runbooks.example/drift|Runbook>" in action
    assert "9f2c4e1a7b3d5f60" in p["blocks"][5]["elements"][0]["text"]


def test_slack_payload_resolved_escaping_and_limits() -> None:
    long = "x" * 5000
    alert = {**RESOLVED, "model_version": None, "evidence": {},
             "annotations": {"summary": "a <b> & c " + long, "suggested_action": "<!channel> wake up"}}
    p = slack_payload(alert, runbook_url="https://wiki.example/ops")
    header = p["blocks"][0]["text"]["text"]
    assert "RESOLVED" in header and ":white_check_mark:" in header
    summary = p["blocks"][1]["text"]["text"]
    assert summary.startswith("a &lt;b&gt; &amp; c ") and len(summary) <= 3000
    fields = [f["text"] for f in p["blocks"][2]["fields"]]
    assert "*Version*\nall versions" in fields and "*Ended*\n2026-01-01T03:00:00.000Z" in fields
    assert "Top drifted features" not in _texts(p)
    assert "&lt;!channel&gt; wake up" in _texts(p) and "<!channel>" not in _texts(p)
    assert "<https://wiki.example/ops|Runbook>" in _texts(p)
    assert len(p["text"]) <= 3000
    # a non-http runbook annotation is not rendered as a link
    bad = slack_payload({**FIRING, "annotations": {"runbook_url": "javascript:alert(1)"}})
    assert "Runbook" not in _texts(bad)


def test_slack_posts_the_payload_and_ok_is_success(plain_server: HttpServer) -> None:
    hook = plain_server.url + "/services/T000/B000/XXXXSECRETXXXX"
    ch = SlackChannel("team-risk", Secret(hook))
    assert isinstance(ch, Channel)
    ch.send(Notification.for_alert(FIRING, "team-risk"))
    ch.close()
    seen = plain_server.seen[0]
    assert seen.path == "/services/T000/B000/XXXXSECRETXXXX"
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == slack_payload(FIRING)


def test_slack_429_retry_after_is_a_hint_that_retry_honours(plain_server: HttpServer) -> None:
    plain_server.reply(Reply(429, b"rate_limited", {"Retry-After": "3"}), Reply(200, b"ok"))
    ch = SlackChannel("team-risk", Secret(plain_server.url + "/services/T/B/SECRETTOKEN"))
    n = Notification.for_alert(FIRING, "team-risk")
    slept, sleep, clock, rng = no_wait()
    result = deliver_with_retry(ch, n, RetryPolicy(), sleep, clock, rng)
    assert result.delivered and result.attempts == 2 and slept == [3.0]

    plain_server.reply(Reply(429, b"rate_limited", {"Retry-After": "3"}))
    with pytest.raises(DeliveryError) as info:
        ch.send(n)
    assert info.value.retryable and info.value.retry_after_s == 3.0


def test_slack_errors_are_not_retried_and_never_quote_the_webhook_url(plain_server: HttpServer) -> None:
    token = "XXXXSECRETXXXX"
    plain_server.reply(Reply(404, b"no_service"))
    ch = SlackChannel("team-risk", Secret(plain_server.url + f"/services/T000/B000/{token}"))
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "team-risk"))
    assert not info.value.retryable and "HTTP 404 no_service" in info.value.reason
    assert token not in info.value.reason

    down = SlackChannel("team-risk", Secret(f"http://127.0.0.1:{closed_port()}/services/T/B/{token}"))
    with pytest.raises(DeliveryError) as info:
        down.send(Notification.for_alert(FIRING, "team-risk"))
    assert info.value.retryable and token not in info.value.reason and token not in repr(info.value)
    with pytest.raises(ValueError) as bad:
        SlackChannel("team-risk", Secret(f"hooks.slack.com/services/{token}"))
    assert token not in str(bad.value)


# -- Alertmanager ---------------------------------------------------------------------------------------
def _rfc3339_ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_alertmanager_posts_one_postable_alert(plain_server: HttpServer) -> None:
    ch = AlertmanagerChannel("am", plain_server.url + "/", generator_url="https://driftline.example/models",
                             bearer_token=Secret("am-token"))
    ch.send(Notification.for_alert(FIRING, "am"))
    ch.send(Notification.for_alert(RESOLVED, "am"))
    ch.close()
    firing, resolved = plain_server.seen
    assert firing.path == "/api/v2/alerts" and firing.headers["Content-Type"] == "application/json"
    assert firing.headers["Authorization"] == "Bearer am-token"
    body = json.loads(firing.body)
    assert isinstance(body, list) and len(body) == 1
    alert = body[0]
    assert set(alert) == {"labels", "annotations", "startsAt", "generatorURL"}  # firing: no endsAt
    assert alert["labels"] == {"alertname": "feature_drift_psi", "model": "fraud-detector",
                               "model_version": "2026-01-01.3", "severity": "warning", "team": "risk",
                               "env": "prod", "driftline_fingerprint": "9f2c4e1a7b3d5f60"}
    assert alert["annotations"]["summary"] == FIRING["annotations"]["summary"]
    assert alert["annotations"]["value"] == "0.31" and alert["annotations"]["threshold"] == "0.2"
    assert _rfc3339_ms(alert["startsAt"]) == FIRING["starts_at_ms"]
    assert alert["generatorURL"] == "https://driftline.example/models"
    r = json.loads(resolved.body)[0]
    assert r["labels"] == alert["labels"]  # same identity: Alertmanager resolves the alert it has
    assert _rfc3339_ms(r["endsAt"]) == RESOLVED["ends_at_ms"]


def test_alertmanager_firing_ttl_and_label_hygiene() -> None:
    alert = {**FIRING, "model_version": None,
             "labels": {"team.name": "risk", "9lives": "x", "empty": "", "severity": "low"}}
    p = postable_alert(alert, now_ms=1_000_000, firing_ttl_s=300)
    assert _rfc3339_ms(p["endsAt"]) == 1_300_000
    assert p["labels"]["team_name"] == "risk" and p["labels"]["_9lives"] == "x"
    assert "empty" not in p["labels"] and "model_version" not in p["labels"]
    assert p["labels"]["severity"] == "warning"  # the alert's own severity wins over a user label


def test_alertmanager_validation_error_is_not_retried(plain_server: HttpServer) -> None:
    plain_server.reply(Reply(400, b'{"code":400,"message":"start must be before end"}'))
    ch = AlertmanagerChannel("am", plain_server.url)
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "am"))
    ch.close()
    assert not info.value.retryable and "start must be before end" in info.value.reason


# -- stdout ---------------------------------------------------------------------------------------------
def test_stdout_writes_one_json_line_per_notification() -> None:
    out = io.StringIO()
    ch = StdoutChannel("console", out)
    assert isinstance(ch, Channel)
    ch.send(Notification.for_alert(FIRING, "console"))
    ch.send(Notification.for_alert(RESOLVED, "console"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["version"] == ENVELOPE_VERSION and first["alerts"] == [FIRING]
    assert first["receiver"] == "console"
    out.close()
    with pytest.raises(DeliveryError) as info:
        ch.send(Notification.for_alert(FIRING, "console"))
    assert not info.value.retryable


def test_stdout_defaults_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    StdoutChannel().send(Notification.for_alert(FIRING, "stdout"))
    assert json.loads(capsys.readouterr().out)["idempotency_key"] == idempotency_key(FIRING, "stdout")


# -- email (a real SMTP server: aiosmtpd) ---------------------------------------------------------------
class _Controller(Controller):
    """aiosmtpd's Controller on port 0: learn the port the OS picked before the self-test connects."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class Mailbox:
    """aiosmtpd handler: records envelopes; can refuse recipients or data with a given reply."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(envelope)
        return "250 Message accepted for delivery"

    def message(self, i: int = -1) -> EmailMessage:
        msg = email.message_from_bytes(self.received[i].original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Controller, Mailbox]]:
    box = Mailbox()
    c = _Controller(box, hostname="127.0.0.1", port=0)
    c.start()
    yield c, box
    c.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, made now: with cryptography, else openssl."""
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", str(key_path), "-out", str(cert_path), "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_smtp_server(tmp_path: Path) -> Iterator[tuple[_Controller, Mailbox, Path]]:
    """SMTP requiring STARTTLS and AUTH (user alerts / password s3cr3t-pw)."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts"
              and auth_data.password == b"s3cr3t-pw")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    box = Mailbox()
    c = _Controller(box, hostname="127.0.0.1", port=0, tls_context=server_ctx, require_starttls=True,
                    authenticator=authenticator, auth_required=True)
    c.start()
    yield c, box, cert
    c.stop()


def _mailer(port: int, **kw: Any) -> EmailChannel:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": "Driftline <alerts@example.com>",
                            "recipients": ["oncall@example.com", "ml@example.com"], "security": "none",
                            "timeout_s": 5.0, "clock": lambda: 1_767_232_900.0}
    return EmailChannel("mail", **{**base, **kw})


def test_email_plain_smtp_delivers_subject_body_and_dedup_headers(
    smtp_server: tuple[_Controller, Mailbox],
) -> None:
    controller, box = smtp_server
    ch = _mailer(controller.port)
    assert isinstance(ch, Channel)
    n = Notification.for_alert(FIRING, "mail")
    ch.send(n)
    env = box.received[0]
    assert env.mail_from == "alerts@example.com" and env.rcpt_tos == ["oncall@example.com", "ml@example.com"]
    msg = box.message()
    assert msg["Subject"] == "[FIRING][warning] feature_drift_psi fraud-detector@2026-01-01.3"
    assert msg["Message-ID"] == f"<{n.idempotency_key}@example.com>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Driftline-Idempotency-Key"] == n.idempotency_key
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == 1_767_232_900
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content()
    for text in ("FIRING: feature_drift_psi on fraud-detector@2026-01-01.3", "Value:", "0.31", "Threshold:",
                 "Top drifted features: amount, country, hour", "Runbook: https://runbooks.example/drift",
                 "team=risk", "Fingerprint: 9f2c4e1a7b3d5f60", "2026-01-01T02:00:00.000Z"):
        assert text in body, text

    # the resolution threads under the firing mail, and a retry re-sends the same Message-ID
    r = Notification.for_alert(RESOLVED, "mail")
    ch.send(r)
    ch.send(r)
    resolved, again = box.message(1), box.message(2)
    assert resolved["Subject"].startswith("[RESOLVED][warning]")
    firing_id = message_id(n.idempotency_key, "alerts@example.com")
    assert resolved["In-Reply-To"] == resolved["References"] == firing_id
    assert resolved["Message-ID"] == again["Message-ID"] != msg["Message-ID"]
    assert "Ended:" in resolved.get_content()


def test_email_header_injection_is_neutralised(smtp_server: tuple[_Controller, Mailbox]) -> None:
    controller, box = smtp_server
    evil = {**FIRING, "signal": "psi\r\nBcc: victim@example.com"}
    _mailer(controller.port).send(Notification.for_alert(evil, "mail"))
    msg = box.message()
    assert msg["Bcc"] is None and "Bcc: victim@example.com" in msg["Subject"]
    assert box.received[0].rcpt_tos == ["oncall@example.com", "ml@example.com"]


@pytest.mark.parametrize(("where", "reply", "retryable"), [
    ("data", "451 4.3.0 Temporary local problem", True),
    ("data", "554 5.7.1 Message rejected as spam", False),
    ("rcpt", "550 5.1.1 No such user", False),
    ("rcpt", "450 4.2.1 Mailbox busy", True),
])
def test_email_smtp_replies_4xx_retryable_5xx_not(
    smtp_server: tuple[_Controller, Mailbox], where: str, reply: str, retryable: bool
) -> None:
    controller, box = smtp_server
    setattr(box, f"{where}_reply", reply)
    with pytest.raises(DeliveryError) as info:
        _mailer(controller.port).send(Notification.for_alert(FIRING, "mail"))
    assert info.value.retryable is retryable
    assert reply.split()[0] in info.value.reason


def test_email_connection_refused_is_retryable() -> None:
    with pytest.raises(DeliveryError) as info:
        _mailer(closed_port()).send(Notification.for_alert(FIRING, "mail"))
    assert info.value.retryable


def test_email_starttls_and_auth(tls_smtp_server: tuple[_Controller, Mailbox, Path]) -> None:
    controller, box, cert = tls_smtp_server
    trust = ssl.create_default_context(cafile=str(cert))
    ch = _mailer(controller.port, security="starttls", username="alerts", password=Secret("s3cr3t-pw"),
                 ssl_context=trust)
    ch.send(Notification.for_alert(FIRING, "mail"))
    assert box.message()["Subject"].startswith("[FIRING]")

    # wrong password: 535, not retryable, and the password is not in the reason
    wrong = _mailer(controller.port, security="starttls", username="alerts", password=Secret("hunter2-wrong"),
                    ssl_context=trust)
    with pytest.raises(DeliveryError) as info:
        wrong.send(Notification.for_alert(FIRING, "mail"))
    assert not info.value.retryable and "535" in info.value.reason and "hunter2" not in info.value.reason

    # the server's certificate is not trusted by the system CAs: refused, not retryable
    untrusted = _mailer(controller.port, security="starttls", username="alerts", password=Secret("s3cr3t-pw"))
    with pytest.raises(DeliveryError) as info:
        untrusted.send(Notification.for_alert(FIRING, "mail"))
    assert not info.value.retryable and "certificate" in info.value.reason


def test_email_starttls_required_but_not_offered_is_not_retried(
    smtp_server: tuple[_Controller, Mailbox],
) -> None:
    controller, _ = smtp_server
    with pytest.raises(DeliveryError) as info:
        _mailer(controller.port, security="starttls").send(Notification.for_alert(FIRING, "mail"))
    assert not info.value.retryable and "STARTTLS" in info.value.reason


def test_email_configuration_errors() -> None:
    with pytest.raises(ValueError, match="recipients"):
        _mailer(25, recipients=[])
    with pytest.raises(ValueError, match="username and password"):
        _mailer(25, security="starttls", username="alerts")
    with pytest.raises(ValueError, match="in clear"):
        _mailer(25, security="none", username="alerts", password=Secret("pw"))
    with pytest.raises(ValueError, match="security"):
        _mailer(25, security="tls")


# -- groups: several alerts of one model in one delivery ----------------------------------------

OTHER = {**FIRING, "fingerprint": "0123456789abcdef", "signal": "concept_drift",
         "labels": {**FIRING["labels"], "kind": "concept_drift"}}


def _group() -> Notification:
    members = [Notification.for_alert(a, "r") for a in (FIRING, OTHER, RESOLVED)]
    return Notification.for_group(members, '{model="fraud-detector"}')


def test_a_group_key_depends_on_its_members_only_and_a_group_of_one_is_its_member() -> None:
    g = _group()
    assert g.keys == tuple(Notification.for_alert(a, "r").idempotency_key for a in (FIRING, OTHER, RESOLVED))
    again = Notification.for_group([Notification.for_alert(a, "r") for a in (RESOLVED, FIRING, OTHER)], "x")
    assert again.idempotency_key == g.idempotency_key
    single = Notification.for_alert(FIRING, "r")
    assert Notification.for_group([single], "x") is single
    with pytest.raises(ValueError, match="one receiver per group"):
        Notification.for_group([single, Notification.for_alert(OTHER, "s")], "x")
    with pytest.raises(ValueError, match="at least one"):
        Notification.for_group([], "x")


def test_webhook_and_stdout_carry_every_alert_of_a_group() -> None:
    out = io.StringIO()
    StdoutChannel("r", out).send(_group())
    doc = json.loads(out.getvalue())
    assert doc["group_key"] == '{model="fraud-detector"}'
    assert [a["fingerprint"] for a in doc["alerts"]] == [FIRING["fingerprint"], OTHER["fingerprint"],
                                                         RESOLVED["fingerprint"]]


def test_slack_group_is_one_message_listing_each_alert(plain_server: HttpServer) -> None:
    ch = SlackChannel("r", Secret(plain_server.url + "/hook"))
    ch.send(_group())
    ch.close()
    (seen,) = plain_server.seen
    body = json.loads(seen.body)
    assert body["text"].startswith("[FIRING:2 RESOLVED:1] fraud-detector: ")
    assert len(body["blocks"]) == 4  # header + one line per alert


def test_alertmanager_group_posts_every_alert_in_one_request(plain_server: HttpServer) -> None:
    ch = AlertmanagerChannel("r", plain_server.url)
    ch.send(_group())
    ch.close()
    (seen,) = plain_server.seen
    posted = json.loads(seen.body)
    assert [p["labels"]["driftline_fingerprint"] for p in posted] == [
        FIRING["fingerprint"], OTHER["fingerprint"], RESOLVED["fingerprint"]
    ]


def test_email_group_is_one_mail(smtp_server: tuple[_Controller, Mailbox]) -> None:
    controller, box = smtp_server
    _mailer(controller.port).send(_group())
    msg = box.message()
    subject = " ".join(str(msg["Subject"]).split())  # unfolded
    assert subject.startswith("[FIRING:2 RESOLVED:1] fraud-detector: feature_drift_psi, concept_drift")
    assert msg.get_content().count("FIRING: ") == 2 and "RESOLVED: " in msg.get_content()
