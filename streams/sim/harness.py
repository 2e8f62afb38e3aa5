"""Running a scenario against a real worker: its namespace, the worker process, the alerts coming back.

Shared by ``driftline demo`` and ``loadtest/scenario.py`` so that the demo a
newcomer watches and the load test that measures time-to-alert run the same
way. Each run gets its own namespace (topic prefix, worker app id, state
directory): a fresh worker, fresh detectors and a clean alerts topic, with no
state restored from an earlier run (an earlier run's models would otherwise
come back as "silent" two minutes in). The topics of the run are deleted
afterwards unless asked otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

from streams.config import Settings, settings_env
from streams.sim.scenario import Incident, Scenario

__all__ = [
    "AlertReader",
    "IncidentClock",
    "ReceivedAlert",
    "RunNamespace",
    "WorkerProcess",
    "delete_run_topics",
    "free_port",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RunNamespace:
    """Topic prefix, worker app id, state directory and config file of one run."""

    settings: Settings
    work_dir: Path
    config_path: Path

    @classmethod
    def create(cls, base: Settings, scenario: Scenario, work_root: Path, label: str,
               base_config: Mapping[str, Any] | None = None, web_port: int | None = None,
               tag: str | None = None) -> RunNamespace:
        """A fresh namespace under ``work_root``; writes the worker's merged config file there."""
        tag = tag or f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"
        work_dir = work_root / f"{label}-{tag}"
        work_dir.mkdir(parents=True, exist_ok=True)
        config = scenario.worker_config(base_config)
        partitions = int(config.get("partitions", base.partitions))
        settings = replace(
            base,
            topic_prefix=f"{label}-{tag}.",
            app_id=f"driftline-{label}-{tag}",
            data_dir=str(work_dir / "worker"),
            web_port=web_port if web_port is not None else base.web_port,
            partitions=partitions,
        )
        config_path = work_dir / "driftline.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return cls(settings, work_dir, config_path)

    def worker_env(self) -> dict[str, str]:
        return {**os.environ, "DRIFTLINE_CONFIG": str(self.config_path), **settings_env(self.settings)}


class WorkerProcess:
    """One ``driftline worker`` subprocess of a run (its output to ``log`` or to this terminal)."""

    def __init__(self, ns: RunNamespace, log: Path | None = None, live_s: float = 0.0) -> None:
        self.ns = ns
        self.log = log
        self._log_file: IO[bytes] | None = open(log, "wb") if log is not None else None  # noqa: SIM115
        cmd = [sys.executable, "-m", "streams.cli", "worker"]
        if live_s > 0:
            cmd += ["--live", str(live_s)]
        self.proc = subprocess.Popen(cmd, env=ns.worker_env(), stdout=self._log_file,
                                     stderr=subprocess.STDOUT if self._log_file else None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metrics_text(self, timeout_s: float = 5.0) -> str:
        url = f"http://127.0.0.1:{self.ns.settings.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return str(r.read().decode())

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None:
            return ""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until ``/metrics`` answers; raises with the log's tail if the worker exits or never answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.metrics_text(timeout_s=2.0)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"worker not ready within {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode


@dataclass(frozen=True, slots=True)
class ReceivedAlert:
    """An alert event as it arrived: ``arrival`` is ``time.time()`` when this process read it."""

    arrival: float
    event: dict[str, Any]


class AlertReader:
    """Reads the run's alerts topic from the start in a thread (its own consumer group).

    ``on_alert`` is called from the reader thread for each alert event.
    """

    def __init__(self, settings: Settings, on_alert: Callable[[ReceivedAlert], None] | None = None) -> None:
        from confluent_kafka import Consumer

        self.alerts: list[ReceivedAlert] = []
        self.undecodable = 0
        self.on_alert = on_alert
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"{settings.app_id}-observer-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self._consumer.subscribe([settings.topic("alerts")])
        self._thread = threading.Thread(target=self._run, name="driftline-alert-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(100, timeout=0.2):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                now = time.time()
                try:
                    event = orjson.loads(value)
                except orjson.JSONDecodeError:
                    self.undecodable += 1
                    continue
                got = ReceivedAlert(now, event)
                with self._lock:
                    self.alerts.append(got)
                if self.on_alert is not None:
                    self.on_alert(got)

    def snapshot(self) -> list[ReceivedAlert]:
        with self._lock:
            return list(self.alerts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


class IncidentClock:
    """Which incidents started and ended since the last call, for printing them as they happen."""

    def __init__(self, incidents: tuple[Incident, ...], t0: float) -> None:
        self.t0 = t0
        self._starts = sorted(incidents, key=lambda i: i.at_s)
        self._ends = sorted(incidents, key=lambda i: i.end_s)

    def due(self, now: float) -> Iterator[tuple[str, Incident]]:
        """``("start", incident)`` and ``("end", incident)`` in time order, each once."""
        t = now - self.t0
        events: list[tuple[float, str, Incident]] = []
        while self._starts and self._starts[0].at_s <= t:
            i = self._starts.pop(0)
            events.append((i.at_s, "start", i))
        while self._ends and self._ends[0].end_s <= t:
            i = self._ends.pop(0)
            events.append((i.end_s, "end", i))
        for _, what, inc in sorted(events, key=lambda e: (e[0], e[1] == "start")):
            yield what, inc


def delete_run_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Delete the run's topics (its prefix) and the worker's internal ones (its app id)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics
             if t.startswith(settings.topic_prefix) or t.startswith(f"{settings.app_id}-")]
    if not names:
        return []
    for _name, fut in admin.delete_topics(names, operation_timeout=timeout_s).items():
        try:
            fut.result()
        except Exception:  # already gone, or the broker refuses: the run's data was throwaway anyway
            continue
    return names
