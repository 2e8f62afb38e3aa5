"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for development and tests.

The broker's jars come from Maven Central through ``mvn`` on first use and are
cached per version; storage is formatted once per data directory. Nothing
here is a fake: it is the Apache broker, run with ``java -cp libs/* kafka.Kafka``.

Version: 4.3.1 is pinned because it is the newest 4.x release whose artifacts
all resolve on Maven Central at the time of writing (4.4.0's
``kafka-tools-api`` did not). aiokafka 0.14 (under faust-streaming) and
librdkafka 2.x (under confluent-kafka) both speak the protocol versions 4.x
requires; the integration suite runs both against this broker.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.driftline</groupId><artifactId>local-kafka</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>2.24.3</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


def cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding, as Kafka makes them.

    Like Kafka's ``Uuid.randomUuid``, never one that starts with ``-``: one in 64
    random ids does, and the storage tool's argument parser would read it as an
    option ("argument --cluster-id/-t: expected one argument"), which failed a
    broker start at random.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True, slots=True)
class LocalBroker:
    """One local broker: where its jars are cached and where its data lives.

    Parameters
    ----------
    version
        Apache Kafka release, e.g. ``"4.3.1"``.
    cache_dir
        Jars go to ``cache_dir/<version>/libs``; shared by every data dir.
    data_dir
        Log segments, ``server.properties``, pid and log file of this broker.
    port, controller_port
        Listener ports on 127.0.0.1.
    """

    version: str
    cache_dir: Path
    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return self.cache_dir / self.version / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    # -- fetching ----------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Fetch the broker's jars with ``mvn`` unless this version is cached."""
        marker = self.libs / ".complete"
        if marker.exists():
            return self.libs
        if shutil.which("mvn") is None or shutil.which("java") is None:
            raise BrokerError("the local broker needs `java` (17+) and `mvn` on PATH")
        work = self.cache_dir / self.version
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(_POM.format(version=self.version))
        tmp = work / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = ["mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            raise BrokerError(f"mvn could not fetch Kafka {self.version}:\n{tail}")
        shutil.rmtree(self.libs, ignore_errors=True)
        tmp.rename(self.libs)
        marker.touch()
        return self.libs

    # -- lifecycle -------------------------------------------------------------
    def _java(self, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
                "-cp", f"{self.libs}/*", *args]

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir / 'logs'}",
            "num.partitions=4",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "message.max.bytes=16777216",
            "log.retention.check.interval.ms=60000",
            "",
        ]))
        (self.data_dir / "log4j2.yaml").write_text(_LOG4J)
        return props

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def answering(self, timeout_s: float = 0.5) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def up(self, wait_s: float = 90.0) -> str:
        """Start the broker (fetching and formatting first if needed); return its address."""
        if self.pid() is not None and self.answering():
            return self.bootstrap
        if self.answering():
            raise BrokerError(f"port {self.port} is taken by another process; set local_broker_port")
        self.ensure_jars()
        props = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id()}",
                           "-c", str(props)),
                capture_output=True, text=True, timeout=120,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting storage failed:\n{(fmt.stdout + fmt.stderr)[-2000:]}")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"broker exited with {proc.returncode}:\n{self._log_tail()}")
            if self.answering() and self._metadata_ready():
                return self.bootstrap
            time.sleep(0.3)
        self.down()
        raise BrokerError(f"broker did not answer within {wait_s:.0f}s:\n{self._log_tail()}")

    def _metadata_ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return bool(md.brokers)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def down(self, wait_s: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after ``wait_s``. True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.pid() is None or _is_zombie(pid):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        pid = self.pid()
        return {
            "version": self.version,
            "bootstrap": self.bootstrap,
            "pid": pid,
            "running": pid is not None,
            "answering": self.answering(),
            "jars_cached": (self.libs / ".complete").exists(),
            "data_dir": str(self.data_dir),
        }


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def from_settings(settings: object) -> LocalBroker:
    from streams.config import Settings

    assert isinstance(settings, Settings)
    return LocalBroker(
        version=settings.kafka_version,
        cache_dir=Path(settings.kafka_cache_dir),
        data_dir=Path(settings.local_broker_dir),
        port=settings.local_broker_port,
        controller_port=settings.local_controller_port,
    )
