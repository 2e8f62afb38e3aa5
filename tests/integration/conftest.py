"""Integration fixtures: a real Apache Kafka broker and real worker processes.

The broker is the project's own local KRaft broker (``streams.broker.local``)
on free ports in a temporary directory, unless ``DRIFTLINE_TEST_BOOTSTRAP``
names an external cluster. Each test gets its own topic prefix, so tests never
see each other's records.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from streams.broker.admin import create_topics
from streams.broker.local import LocalBroker
from streams.config import Settings, load_settings
from streams.config import settings_env as env_of

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DRIFTLINE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    defaults = Settings()
    port = free_port()
    controller_port = free_port()
    while controller_port == port:  # two free_port() calls can return the same port
        controller_port = free_port()
    broker = LocalBroker(
        version=defaults.kafka_version,
        cache_dir=Path(defaults.kafka_cache_dir),
        data_dir=tmp_path_factory.mktemp("kafka"),
        port=port,
        controller_port=controller_port,
    )
    broker.up()
    yield broker.bootstrap
    broker.down()


@pytest.fixture()
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = load_settings(
        env={},
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        app_id=f"driftline-test-{tag}",
        data_dir=str(tmp_path / "worker"),
        web_port=free_port(),
        partitions=2,
    )
    create_topics(s)
    return s


def settings_env(s: Settings) -> dict[str, str]:
    return {**os.environ, **env_of(s)}


class WorkerProcess:
    """``driftline worker`` as a real subprocess, with its log kept for failures."""

    def __init__(self, s: Settings, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = s
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**settings_env(s), **(extra_env or {})}, stdout=open(log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def metrics_text(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()[-3000:]}"
            try:
                self.metrics_text()
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"worker not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture()
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture()
def config_workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[[str], WorkerProcess]]:
    """Start workers with a YAML config (``tmp_path/driftline.yaml``; logs ``worker<N>.log``)."""
    workers: list[WorkerProcess] = []

    def start(config: str) -> WorkerProcess:
        cfg = tmp_path / "driftline.yaml"
        cfg.write_text(config)
        w = WorkerProcess(settings, tmp_path / f"worker{len(workers)}.log",
                          extra_env={"DRIFTLINE_CONFIG": str(cfg)})
        workers.append(w)
        w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()


def producer(s: Settings) -> Producer:
    return Producer({"bootstrap.servers": s.bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5})


def consume_all(s: Settings, topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    """Read ``topic`` from the start until ``expected`` records arrived (or time runs out)."""
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg.value())
    finally:
        c.close()
    return out


def wait_changelog(s: Settings, key_prefix: bytes, timeout_s: float = 60) -> bool:
    """Wait until the state changelog holds a cell whose key starts with ``key_prefix``.

    A worker counts a cell write when it hands the cell to faust's producer, not when the broker
    has it: a kill -9 test that must restart *from* the changelog waits here before killing.
    """
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"cl-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([f"{s.app_id}-state-changelog"])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=0.5):
                key = msg.key()
                if msg.error() is None and msg.value() is not None and key and key.startswith(key_prefix):
                    return True
    finally:
        c.close()
    return False


def metric_value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
