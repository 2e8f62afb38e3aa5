"""``driftline notify`` end to end: real broker, real receivers (HTTP with HMAC, SMTP, Alertmanager).

Alert events are produced straight to the alerts topic (the worker's alerting
stage is tested elsewhere); the notifier runs as a real subprocess. Commits
are read back from the broker (the notifier's consumer group), so the tests
see what a restarted notifier would resume from.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.notify.webhook import verify_signature
from tests.integration.conftest import free_port, producer, settings_env
from tests.integration.peers import Alertmanager

pytestmark = pytest.mark.integration
SECRET = "s3cret-for-tests"
T0 = 1_800_000_000_000


class Receiver:
    """A webhook receiver that verifies the HMAC and deduplicates by Idempotency-Key."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[str] = []  # idempotency keys of every verified request, repeats included
        self.processed: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.server: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_signature(
                    SECRET.encode(),
                    self.headers["X-Driftline-Timestamp"],
                    body,
                    self.headers["X-Driftline-Signature"],
                    now_s=time.time(),
                )
                with outer.lock:
                    if not ok:
                        outer.bad_signatures += 1
                    else:
                        key = self.headers["Idempotency-Key"]
                        outer.requests.append(key)
                        outer.processed.setdefault(key, orjson.loads(body))
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def alerts(self) -> list[tuple[str, str]]:
        """``(fingerprint, status)`` of every alert received, in arrival order (repeats of a key once)."""
        with self.lock:
            return [(a["fingerprint"], a["status"]) for p in self.processed.values() for a in alerts_in(p)]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content)
        return "250 OK"


def alert(i: int, status: str = "firing") -> dict[str, Any]:
    fp = hashlib.blake2b(f"alert-{i}".encode(), digest_size=8).hexdigest()
    a: dict[str, Any] = {
        "schema": "driftline.alert/v1",
        "fingerprint": fp,
        "status": status,
        "severity": "critical",
        "model": "fraud",
        "model_version": "v1",
        "signal": "concept_drift",
        "value": 0.2,
        "threshold": None,
        "window_ms": 60_000,
        "starts_at_ms": T0 + i * 1000,
        "evidence": {"suggested_action": "rollback", "direction": "up"},
        "labels": {"alertname": "concept_drift", "model": "fraud", "team": "risk"},
        "annotations": {"summary": f"error rate of fraud@v1 went up (#{i})"},
    }
    if status == "resolved":
        a["ends_at_ms"] = T0 + i * 1000 + 60_000
    return a


def alerts_in(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The alert events of a webhook payload (``alerts`` in the v2 envelope, ``alert`` in v1)."""
    return list(payload["alerts"]) if "alerts" in payload else [payload["alert"]]


def send_alerts(s: Settings, alerts: list[dict[str, Any]]) -> None:
    p = producer(s)
    for a in alerts:
        p.produce(s.topic("alerts"), key=a["fingerprint"].encode(), value=orjson.dumps(a))
    assert p.flush(30) == 0


class NotifierProcess:
    def __init__(self, s: Settings, config: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.log = log
        env = {**settings_env(s), "DRIFTLINE_CONFIG": str(config), "HOOK_SECRET": SECRET, **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "notify"],
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def committed(s: Settings) -> dict[int, int]:
    """The notifier group's committed offset per partition of the alerts topic (where it has one)."""
    group = f"{s.app_id}-notify"
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(s.topic("alerts"), p) for p in range(s.partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def write_config(
    path: Path,
    hook_port: int,
    smtp_port: int | None,
    am_url: str | None,
    retry: str = "{initial: 200ms, max: 1s, max_elapsed: 5m}",
    hook2_port: int | None = None,
    group_wait: str = "0s",
) -> Path:
    hooks = {"hook": hook_port} if hook2_port is None else {"hook": hook_port, "hook2": hook2_port}
    receivers = [
        f'    {name}: {{type: webhook, url: "http://127.0.0.1:{port}/alerts", secret: env:HOOK_SECRET}}'
        for name, port in hooks.items()
    ]
    routes = [f"    - {{receiver: {name}, match: {{team: risk}}, continue: true}}" for name in hooks]
    if smtp_port is not None:
        receivers.append(
            f"    mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none, "
            "from: driftline@example.com, to: [oncall@example.com]}"
        )
        routes.append("    - {receiver: mail, match: {severity: critical}, continue: true}")
    if am_url is not None:
        receivers.append(f'    am: {{type: alertmanager, url: "{am_url}"}}')
        routes.append("    - {receiver: am, match: {model: fraud}}")
    path.write_text(
        "notify:\n  receivers:\n"
        + "\n".join(receivers)
        + "\n  routes:\n"
        + "\n".join(routes)
        + f"\n  default_receiver: hook\n  retry: {retry}\n"
        + f"  delivery_log: {path.parent / 'delivered.jsonl'}\n"
        + f"  group_wait: {group_wait}\n"
    )
    return path


def wait_for(cond: Any, timeout_s: float, what: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def test_alerts_reach_webhook_with_a_valid_hmac_email_and_a_real_alertmanager(
    settings: Settings, tmp_path: Path
) -> None:
    am = Alertmanager(tmp_path / "am")
    hook = Receiver(free_port()).start()
    box = Mailbox()
    smtp_port = free_port()
    smtp = Controller(box, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    # Grouping on (the default 5 s, 2 s here): both alerts are of model fraud, so the webhook and the
    # mail each get one notification listing both, and Alertmanager gets both in one post.
    cfg = write_config(tmp_path / "driftline.yaml", hook.port, smtp_port, am.url, group_wait="2s")
    notifier = NotifierProcess(settings, cfg, tmp_path / "notify.log")
    try:
        send_alerts(settings, [alert(1), alert(2)])
        wait_for(
            lambda: len(hook.processed) == 1 and len(box.messages) == 1 and len(am.alerts()) == 2,
            60,
            lambda: f"deliveries:\n{(tmp_path / 'notify.log').read_text()[-2000:]}",
        )
        assert hook.bad_signatures == 0 and len(hook.requests) == 1
        (grouped,) = hook.processed.values()
        assert [a["fingerprint"] for a in grouped["alerts"]] == [alert(i)["fingerprint"] for i in (1, 2)]
        assert grouped["group_key"] == '{model="fraud"}'
        listed = {a["labels"]["driftline_fingerprint"]: a for a in am.alerts()}
        assert set(listed) == {alert(1)["fingerprint"], alert(2)["fingerprint"]}
        assert all(
            a["labels"]["alertname"] == "concept_drift" and a["status"]["state"] == "active"
            for a in listed.values()
        )
        assert b"concept_drift" in box.messages[0]
        assert SECRET not in (tmp_path / "notify.log").read_text()
    finally:
        notifier.stop()
        smtp.stop()
        hook.stop()
        am.stop()


def test_kill_9_between_delivery_and_commit_redelivers_nothing_twice(
    settings: Settings, tmp_path: Path
) -> None:
    hook = Receiver(free_port()).start()
    cfg = write_config(tmp_path / "driftline.yaml", hook.port, None, None)
    delivery_log = tmp_path / "delivered.jsonl"
    alerts = [alert(i) for i in range(6)]
    # Each record's offset is committed no sooner than 3 s after its deliveries. Deliveries run in a
    # worker thread, so the kill waits until every one is recorded in the delivery log: it then lands
    # after delivery and before commit, not between a receiver's acknowledgement and its log record
    # (the one window where at-least-once does re-send, with the same idempotency key).
    first = NotifierProcess(
        settings, cfg, tmp_path / "notify0.log", {"DRIFTLINE_NOTIFY_FAULT_COMMIT_DELAY_S": "3"}
    )
    try:
        send_alerts(settings, alerts)
        wait_for(
            lambda: delivery_log.exists() and len(delivery_log.read_bytes().splitlines()) == len(alerts),
            60,
            "every delivery recorded",
        )
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        delivered_before = len(hook.requests)
        assert sum(committed(settings).values()) == 0  # killed before any record's offset was committed
        second = NotifierProcess(settings, cfg, tmp_path / "notify1.log")
        try:
            # The second notifier re-reads all six records and finds every key in the delivery log.
            wait_for(lambda: sum(committed(settings).values()) == len(alerts), 60, "the re-read committed")
            time.sleep(2)  # anything re-sent would have arrived by now
        finally:
            second.stop()
        assert delivered_before == len(hook.processed)
        assert sorted(hook.requests) == sorted(set(hook.requests))  # no idempotency key seen twice
        assert sorted(hook.alerts()) == sorted((a["fingerprint"], a["status"]) for a in alerts)
    finally:
        hook.stop()


def test_a_receiver_that_is_down_does_not_delay_a_healthy_one(settings: Settings, tmp_path: Path) -> None:
    down_port = free_port()
    up = Receiver(free_port()).start()
    # Both receivers get every alert; "hook" is down and retried for up to 5 minutes.
    cfg = write_config(tmp_path / "driftline.yaml", down_port, None, None, hook2_port=up.port)
    notifier = NotifierProcess(settings, cfg, tmp_path / "notify.log")
    down = Receiver(down_port)
    alerts = [alert(i) for i in range(4)]
    try:
        send_alerts(settings, alerts)
        # Delivered one receiver after the other, hook2 would wait out hook's retries (5 minutes); the
        # bound leaves room for the notifier's start and group join on a loaded machine.
        wait_for(lambda: len(up.alerts()) == len(alerts), 60,
                 lambda: f"the healthy receiver:\n{(tmp_path / 'notify.log').read_text()[-2000:]}")
        assert down.requests == []
        assert sum(committed(settings).values()) == 0  # every record still owes "hook" a delivery
        down.start()
        wait_for(lambda: len(down.alerts()) == len(alerts), 30, "deliveries once the receiver is back")
        wait_for(lambda: sum(committed(settings).values()) == len(alerts), 30, "every offset committed")
        for r in (up, down):
            assert sorted(r.requests) == sorted(set(r.requests))  # no idempotency key twice
            assert sorted(r.alerts()) == sorted((a["fingerprint"], a["status"]) for a in alerts)
            assert r.bad_signatures == 0
    finally:
        notifier.stop()
        down.stop()
        up.stop()


OUTAGE_S = 180  # "several minutes"
RETRY_BUDGET_S = 600  # retry.max_elapsed: the first alert's retries, begun at the outage's start, outlast it


@pytest.mark.timeout(OUTAGE_S + 240)
def test_a_receiver_down_for_a_while_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    assert RETRY_BUDGET_S > OUTAGE_S + 120  # with room for the notifier's start and a slow broker
    port = free_port()
    cfg = write_config(
        tmp_path / "driftline.yaml", port, None, None,
        retry=f"{{initial: 200ms, max: 1s, max_elapsed: {RETRY_BUDGET_S}s}}",
    )
    notifier = NotifierProcess(settings, cfg, tmp_path / "notify.log")
    hook = Receiver(port)
    alerts = [alert(i) for i in range(3)] + [alert(0, "resolved")]
    try:
        send_alerts(settings, alerts)
        # The receiver is down: connection refused, retried with backoff (capped at 1 s) for 3 minutes.
        time.sleep(OUTAGE_S)
        assert notifier.proc.poll() is None, (tmp_path / "notify.log").read_text()[-2000:]
        assert sum(committed(settings).values()) == 0  # nothing acknowledged, nothing committed
        hook.start()
        wait_for(lambda: len(hook.alerts()) == len(alerts), 60, "deliveries once the receiver is back")
        wait_for(lambda: sum(committed(settings).values()) == len(alerts), 30, "every offset committed")
        time.sleep(2)  # anything re-sent would have arrived by now
        assert sorted(hook.requests) == sorted(set(hook.requests))  # no idempotency key twice
        received = hook.alerts()
        assert sorted(received) == sorted((a["fingerprint"], a["status"]) for a in alerts)  # none lost
        first = alert(0)["fingerprint"]
        assert received.index((first, "firing")) < received.index((first, "resolved"))  # order kept
        assert "undeliverable" not in (tmp_path / "notify.log").read_text()
    finally:
        notifier.stop()
        hook.stop()
