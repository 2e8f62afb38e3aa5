"""Retry policy with an injected clock, sleep and rng; the delivery log in memory and on disk."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.notify import (
    DeliveryError,
    DeliveryLog,
    FileDeliveryLog,
    MemoryDeliveryLog,
    Notification,
    RetryPolicy,
    deliver_with_retry,
)

from . import FIRING, RESOLVED


class FakeTime:
    """A clock that only moves when slept on (or when a send takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Scripted:
    """Fails with the scripted errors (None: success), then succeeds; each send takes ``cost_s``."""

    errors: list[DeliveryError | None]
    time: FakeTime | None = None
    cost_s: float = 0.0
    name: str = "scripted"
    sent: list[Notification] = field(default_factory=list)

    def send(self, n: Notification) -> None:
        self.sent.append(n)
        if self.time is not None:
            self.time.now += self.cost_s
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error

    def close(self) -> None:
        pass


def retryable() -> DeliveryError:
    return DeliveryError("HTTP 503", True)


N = Notification.for_alert(FIRING, "ops")


# -- retry ----------------------------------------------------------------------------------------------
def test_delays_grow_exponentially_and_are_capped() -> None:
    t = FakeTime()
    ch = Scripted([retryable() for _ in range(10)])
    policy = RetryPolicy(initial_ms=500, max_ms=10_000, multiplier=2.0, jitter=0.0, max_elapsed_ms=3_600_000)
    result = deliver_with_retry(ch, N, policy, t.sleep, t.clock, random.Random(1))
    assert result.delivered and result.attempts == 11
    assert t.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]
    assert all(n is N for n in ch.sent)  # the same notification, so the same Idempotency-Key, every attempt


@pytest.mark.parametrize("jitter", [0.2, 0.5, 1.0])
def test_jitter_stays_within_its_bounds_and_spreads(jitter: float) -> None:
    policy = RetryPolicy(initial_ms=500, max_ms=60_000, jitter=jitter, max_elapsed_ms=10**9)
    for retry in range(12):
        ceiling = min(60_000.0, 500.0 * 2**retry)
        assert policy.ceiling_ms(retry) == ceiling
        draws = [policy.delay_ms(retry, random.Random(seed)) for seed in range(200)]
        assert all((1 - jitter) * ceiling <= d <= ceiling for d in draws)
        # uniform over the interval: the draws cover most of it
        assert max(draws) - min(draws) > 0.8 * jitter * ceiling


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    def run(seed: int) -> list[float]:
        t = FakeTime()
        deliver_with_retry(Scripted([retryable() for _ in range(5)]), N, RetryPolicy(), t.sleep, t.clock,
                           random.Random(seed))
        return t.slept

    assert run(3) == run(3) != run(4)


def test_gives_up_when_the_next_attempt_would_start_after_max_elapsed() -> None:
    t = FakeTime()
    ch = Scripted([retryable() for _ in range(1000)], time=t, cost_s=0.25)
    policy = RetryPolicy(initial_ms=1000, max_ms=8_000, jitter=0.0, max_elapsed_ms=30_000)
    result = deliver_with_retry(ch, N, policy, t.sleep, t.clock, random.Random(0))
    assert not result.delivered
    assert result.reason.startswith(f"gave up after {result.attempts} attempts")
    assert "HTTP 503" in result.reason
    # 1 + 2 + 4 + 8 + 8 = 23 s of sleep, plus 0.25 s per attempt; the next 8 s would pass 30 s
    assert t.slept == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert result.attempts == 6
    assert t.now - 1000.0 <= 30.0
    assert result.last_error is not None and result.last_error.retryable


def test_zero_budget_means_one_attempt() -> None:
    t = FakeTime()
    result = deliver_with_retry(Scripted([retryable()]), N, RetryPolicy(max_elapsed_ms=0), t.sleep, t.clock,
                                random.Random(0))
    assert not result.delivered and result.attempts == 1 and t.slept == []


def test_non_retryable_error_stops_at_once() -> None:
    t = FakeTime()
    ch = Scripted([DeliveryError("HTTP 400 bad payload", False)])
    result = deliver_with_retry(ch, N, RetryPolicy(), t.sleep, t.clock, random.Random(0))
    assert not result.delivered and result.attempts == 1 and t.slept == []
    assert result.reason == "not retryable: HTTP 400 bad payload"


def test_retry_after_hint_is_honoured_and_capped() -> None:
    t = FakeTime()
    ch = Scripted([DeliveryError("HTTP 429", True, retry_after_s=7.0),
                   DeliveryError("HTTP 429", True, retry_after_s=0.1),   # shorter than backoff: backoff wins
                   DeliveryError("HTTP 429", True, retry_after_s=86_400.0)])  # a day: capped at max_ms
    policy = RetryPolicy(initial_ms=500, max_ms=20_000, jitter=0.0, max_elapsed_ms=3_600_000)
    result = deliver_with_retry(ch, N, policy, t.sleep, t.clock, random.Random(0))
    assert result.delivered and result.attempts == 4
    assert t.slept == [7.0, 1.0, 20.0]


def test_a_channel_bug_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        name = "broken"

        def send(self, n: Notification) -> None:
            raise KeyError("annotations")

        def close(self) -> None:
            pass

    t = FakeTime()
    result = deliver_with_retry(Broken(), N, RetryPolicy(), t.sleep, t.clock, random.Random(0))
    assert not result.delivered and result.attempts == 1 and "KeyError" in result.reason
    assert "instead of DeliveryError" in caplog.text


def test_a_sleep_that_raises_aborts_the_retry_loop() -> None:
    class Shutdown(Exception):
        pass

    def sleep(_: float) -> None:
        raise Shutdown

    with pytest.raises(Shutdown):
        deliver_with_retry(Scripted([retryable()]), N, RetryPolicy(), sleep, lambda: 0.0, random.Random(0))


@pytest.mark.parametrize(("kwargs", "field_name"), [
    ({"initial_ms": 0}, "initial_ms"), ({"max_ms": 100}, "max_ms"), ({"multiplier": 0.5}, "multiplier"),
    ({"jitter": 1.5}, "jitter"), ({"jitter": -0.1}, "jitter"), ({"max_elapsed_ms": -1}, "max_elapsed_ms"),
])
def test_policy_validation_names_the_field(kwargs: dict[str, float], field_name: str) -> None:
    with pytest.raises(ValueError, match=f"^{field_name}:"):
        RetryPolicy(**kwargs)


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert RetryPolicy().ceiling_ms(100_000) == 60_000.0


# -- delivery log -----------------------------------------------------------------------------------------
def test_memory_log() -> None:
    d = MemoryDeliveryLog()
    assert isinstance(d, DeliveryLog)
    d.record("a", 100)
    d.record("b", 200)
    d.record("a", 300)  # a later record keeps the later time
    assert d.has("a") and d.has("b") and not d.has("c") and len(d) == 2
    assert d.forget_before(250) == 1
    assert d.has("a") and not d.has("b")


def test_file_log_survives_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "state" / "delivered.jsonl"
    d = FileDeliveryLog(path)
    assert isinstance(d, DeliveryLog)
    keys = [Notification.for_alert(a, r).idempotency_key for a in (FIRING, RESOLVED) for r in ("ops", "mail")]
    for i, k in enumerate(keys):
        d.record(k, 1000 + i)
    # no close(): records are durable when record() returns, as after a crash
    again = FileDeliveryLog(path)
    assert all(again.has(k) for k in keys) and len(again) == 4 and not again.has("other")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"k": keys[0], "at": 1000}
    again.close()
    d.close()


def test_file_log_forgets_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    d = FileDeliveryLog(path, compact_min_lines=10)
    for i in range(30):
        d.record(f"k{i}", i)
    assert len(path.read_text().splitlines()) == 30
    assert d.forget_before(25) == 25  # 25 dead lines >= 10 and >= 5 live: compact
    assert len(path.read_text().splitlines()) == 5
    d.record("k99", 99)  # appends after compaction go to the new file
    d.close()
    reloaded = FileDeliveryLog(path)
    assert sorted(reloaded.path.read_text().split()) == sorted(
        json.dumps({"k": k, "at": at}, separators=(",", ":")) for k, at in
        [("k25", 25), ("k26", 26), ("k27", 27), ("k28", 28), ("k29", 29), ("k99", 99)])
    assert not reloaded.has("k0") and reloaded.has("k29") and reloaded.has("k99")
    reloaded.close()


def test_file_log_small_forget_keeps_the_file_and_every_live_key(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    d = FileDeliveryLog(path)  # default compact_min_lines=1024
    for i in range(10):
        d.record(f"k{i}", i)
    assert d.forget_before(5) == 5
    assert len(path.read_text().splitlines()) == 10  # not compacted yet
    d.close()
    # forgotten keys come back on reload until a compaction (harmless: a replay that old is suppressed);
    # live keys are never lost
    again = FileDeliveryLog(path)
    assert all(again.has(f"k{i}") for i in range(5, 10))
    again.close()


def test_file_log_drops_a_torn_last_line_and_keeps_appending(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    path = tmp_path / "delivered.jsonl"
    d = FileDeliveryLog(path)
    d.record("complete", 1)
    d.close()
    with open(path, "ab") as f:
        f.write(b'{"k":"torn","a')  # a crash in the middle of an append: record() never returned
    d = FileDeliveryLog(path)
    assert "torn last record" in caplog.text
    assert d.has("complete") and not d.has("torn")
    d.record("next", 2)
    d.close()
    again = FileDeliveryLog(path)
    assert again.has("complete") and again.has("next") and len(again) == 2
    again.close()


def test_file_log_refuses_a_corrupt_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "delivered.jsonl"
    path.write_text('{"k":"a","at":1}\nnot json\n{"k":"b","at":2}\n')
    with pytest.raises(ValueError, match=r"delivered.jsonl:2: not a delivery-log record"):
        FileDeliveryLog(path)
    path.write_text('{"k":"a","at":"1"}\n')
    with pytest.raises(ValueError, match=r":1: not a delivery-log record"):
        FileDeliveryLog(path)


def test_record_after_ack_means_a_crash_resends_with_the_same_key(tmp_path: Path) -> None:
    """The notifier's contract: has() before, record() after the acknowledgement, nothing in between."""
    path = tmp_path / "delivered.jsonl"
    received: list[str] = []

    class Receiver:
        name = "ops"

        def send(self, n: Notification) -> None:
            received.append(n.idempotency_key)

        def close(self) -> None:
            pass

    def notify(alert: dict[str, object], log: FileDeliveryLog, crash_before_record: bool = False) -> None:
        n = Notification.for_alert(alert, "ops")
        if log.has(n.idempotency_key):
            return
        t = FakeTime()
        result = deliver_with_retry(Receiver(), n, RetryPolicy(), t.sleep, t.clock, random.Random(0))
        if crash_before_record:
            raise SystemExit("crash")
        if result.delivered:
            log.record(n.idempotency_key, 1_000)

    log = FileDeliveryLog(path)
    notify(FIRING, log)
    notify(dict(FIRING), log)  # a replayed event: suppressed
    assert len(received) == 1
    with pytest.raises(SystemExit):
        notify(RESOLVED, log, crash_before_record=True)
    log.close()
    log = FileDeliveryLog(path)  # restart: the resolved event is replayed and sent again, same key
    notify(RESOLVED, log)
    notify(RESOLVED, log)
    log.close()
    resolved_key = Notification.for_alert(RESOLVED, "ops").idempotency_key
    assert received == [Notification.for_alert(FIRING, "ops").idempotency_key, resolved_key, resolved_key]
