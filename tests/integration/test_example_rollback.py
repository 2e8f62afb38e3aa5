"""``examples/rollback_on_accuracy.py`` against the real broker: an accuracy alert switches traffic back.

Alerts are produced to the per-test alerts topic as the worker would write them
(keyed by fingerprint); the example's consumer loop runs in a thread, then as
the command line in a subprocess.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from tests.integration.conftest import producer
from tests.unit.test_example_rollback import EXAMPLE, MUTED, accuracy_alert, load_example

pytestmark = pytest.mark.integration
rb = load_example()


def send(s: Settings, records: list[tuple[str, bytes]]) -> None:
    p = producer(s)
    for key, value in records:
        p.produce(s.topic("alerts"), key=key.encode(), value=value)
    assert p.flush(30) == 0


def active(path: Path, model: str) -> str:
    return str(json.loads(path.read_text())[model]["active"])


def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def all_committed(s: Settings, group: str) -> bool:
    """Whether ``group`` has committed every record of the alerts topic (read without joining it)."""
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(s.topic("alerts"), i) for i in range(s.partitions)]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        return all(committed[i] == ends[i] or (ends[i] == 0 and committed[i] < 0) for i in ends)
    finally:
        c.close()


@pytest.fixture()
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"fraud": {"versions": ["v1", "v2"], "active": "v2"},
                                "churn": {"versions": ["v1", "v2"], "active": "v2"}}))
    return path


@pytest.fixture()
def loop(settings: Settings, registry: Path) -> Iterator[Callable[[], None]]:
    """Start the example's consumer loop in a thread; stopped (and its error raised) at teardown."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            rb.run(settings.bootstrap, settings.topic("alerts"), f"{settings.app_id}-rollback", registry,
                   stop=stop.is_set, offset_reset="earliest", poll_timeout_s=0.2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    yield thread.start
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors


def test_a_firing_accuracy_alert_switches_traffic_back_and_a_muted_one_does_not(
    settings: Settings, registry: Path, loop: Callable[[], None]
) -> None:
    muted = accuracy_alert(fingerprint="aaaaaaaaaaaaaaaa", model="churn", evidence=MUTED,
                           labels={"alertname": "accuracy_low", "model": "churn", "model_version": "v2"})
    firing = accuracy_alert()
    send(settings, [("0000000000000000", b"not an alert"),
                    (muted["fingerprint"], orjson.dumps(muted)),
                    (firing["fingerprint"], orjson.dumps(firing))])
    loop()
    assert wait_for(lambda: active(registry, "fraud") == "v1"), registry.read_text()
    # every record handled and committed, the muted one and the garbage included
    assert wait_for(lambda: all_committed(settings, f"{settings.app_id}-rollback"))
    assert active(registry, "churn") == "v2"

    # a repeat of the firing alert (repeat interval, or a replay) does not roll back further
    send(settings, [(firing["fingerprint"], orjson.dumps(firing))])
    assert wait_for(lambda: all_committed(settings, f"{settings.app_id}-rollback"))
    assert active(registry, "fraud") == "v1"


def test_the_command_line(settings: Settings, registry: Path, tmp_path: Path) -> None:
    alert = accuracy_alert()
    send(settings, [(alert["fingerprint"], orjson.dumps(alert))])
    log = tmp_path / "rollback.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--bootstrap", settings.bootstrap,
             "--topic-prefix", settings.topic_prefix, "--app-id", settings.app_id,
             "--registry", str(registry), "--from-beginning"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: active(registry, "fraud") == "v1" or proc.poll() is not None), log.read_text()
        assert active(registry, "fraud") == "v1", log.read_text()
        assert wait_for(lambda: all_committed(settings, f"{settings.app_id}-rollback"))
    finally:
        proc.send_signal(signal.SIGTERM)
        rc: Any = proc.wait(30)
    assert rc == 0, log.read_text()
    assert "rolled fraud back from v2 to v1" in log.read_text()
