"""A fleet's per-model work over event time: the worker's stages in simulated time, no Kafka.

    .venv/bin/python loadtest/bench_fleet.py [--models 100] [--duration-s 1400] [--slice-s 40]

The open loop's 1,000-model traffic (``loadtest/benchmark.py --open-loop 8000 --models
1000 --reference published --label-delay-s 30 --worker-config
loadtest/configs/labels_within_5m.yaml``), scaled down to ``--models`` models at the
same rate per model: one 500-event record per model every 62.5 s, round robin, every
prediction labelled ``--label-delay-s`` later, a reference profile published per model.
The records go through ``create_app``'s stages (decode, metrics, detection, alerting)
with an injected clock, as fast as the machine goes, and the 1 s timer runs once per
second of event time. Per slice of event time it reports the stages' CPU (process time
over the slice's length: the share of a core the work takes at real speed), the state
cells written, and the data-drift windows closed.

It runs the same traffic twice, with ``window_jitter: 0`` and with the default, so the
burst of first window closes (every model reaching ``window_events`` in the same round)
and its spreading show in one run. BLAS runs on one thread, as in ``driftline worker``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as streams.cli: before numpy is imported

import argparse
import sys
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.benchmark import Traffic
from loadtest.common import machine, save
from streams.app.factory import Driftline, create_app
from streams.config import load_settings

T0_MS = 1_795_000_000_000
RECORD_EVENTS = 500
console = Console()


@dataclass(slots=True)
class Slice:
    """What one slice of event time cost."""

    end_s: int
    cpu_s: float = 0.0
    writes: int = 0
    write_bytes: int = 0
    closes: int = 0

    def row(self, slice_s: int) -> dict[str, Any]:
        return {"end_s": self.end_s, "cpu_percent": round(100 * self.cpu_s / slice_s, 2),
                "state_writes": self.writes, "state_mb": round(self.write_bytes / 1e6, 2),
                "window_closes": self.closes}


@dataclass(slots=True)
class Run:
    window_jitter: float | None  # None: the default
    slices: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


def burst(slices: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The busiest slice against the median one: how far the closes pile up.

    >>> burst([{"cpu_percent": 2.0, "window_closes": 0}, {"cpu_percent": 8.0, "window_closes": 30},
    ...        {"cpu_percent": 3.0, "window_closes": 2}])
    {'max_closes_per_slice': 30, 'closes': 32, 'peak_cpu_over_median': 2.67}
    """
    cpus = sorted(s["cpu_percent"] for s in slices)
    median = cpus[len(cpus) // 2] if cpus else 0.0
    return {"max_closes_per_slice": max((s["window_closes"] for s in slices), default=0),
            "closes": sum(s["window_closes"] for s in slices),
            "peak_cpu_over_median": round(cpus[-1] / median, 2) if median else float("nan")}


def partition_of(model: str, partitions: int = 4) -> int:
    """A model's partition, the same for its predictions and its labels (keyed by model, as the SDK sends)."""
    return zlib.crc32(model.encode()) % partitions


def windows_closed(dl: Driftline) -> int:
    return sum(mon.windows for eng in dl.detection_stage.engines.values() for mon in eng.data.values())


def simulate(models: int, duration_s: int, slice_s: int, label_delay_s: int,
             window_jitter: float | None) -> Run:
    data = "" if window_jitter is None else f"detection: {{data: {{window_jitter: {window_jitter}}}}}\n"
    cfg = Path(tempfile.mkdtemp()) / "worker.yaml"
    cfg.write_text("metrics: {label_horizon: 5m}\n" + data)
    s = load_settings(str(cfg), env={}, bootstrap_servers="127.0.0.1:1", topic_prefix="fleet.",
                      app_id="fleet", data_dir=tempfile.mkdtemp(), web_port=6066, partitions=4)
    now = [T0_MS]

    def clock() -> int:
        return now[0]

    dl = create_app(s)
    dl.metrics_stage.clock = dl.detection_stage.clock = dl.alerting.clock = dl.ingest.wall_ms = clock
    cur = Slice(slice_s)

    def send_changelog(partition: int, key: bytes, value: bytes | None, **kwargs: Any) -> None:
        cur.writes += 1
        cur.write_bytes += len(value or b"")

    dl.state_table.send_changelog = send_changelog  # the table's changelog is Kafka: count instead
    names = [f"m{k}" for k in range(models)]
    traffic = Traffic(RECORD_EVENTS)
    for key, value in traffic.reference_profiles(names, T0_MS):
        dl.profiles.apply(key, value)
    per_record_ms = RECORD_EVENTS / (8 * models) * 1000  # 8 events/s per model, as the open loop
    topics = {"p": s.topic("predictions"), "f": s.topic("feedback")}
    offsets: dict[tuple[str, int], int] = {}
    labels: deque[tuple[int, str, bytes]] = deque()

    def feed(kind: str, model: str, partition: int, value: bytes) -> None:
        topic = topics[kind]
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        t = time.process_time()
        dl.ingest.process(topic, partition, offset, model.encode(), value)
        cur.cpu_s += time.process_time() - t

    run = Run(window_jitter)
    started, sent, next_ms, closed = time.perf_counter(), 0, float(T0_MS), 0
    for second in range(duration_s):
        for step in range(10):
            now[0] = T0_MS + second * 1000 + step * 100
            while labels and labels[0][0] <= now[0]:
                _, model, value = labels.popleft()
                feed("f", model, partition_of(model), traffic.feedback(value, now[0]))
            while next_ms <= now[0]:
                model = names[sent % models]
                sent += 1
                next_ms += per_record_ms
                value = traffic.record(model, event_time_ms=now[0])
                feed("p", model, partition_of(model), value)
                labels.append((now[0] + label_delay_s * 1000, model, value))
        t = time.process_time()
        for stage in (dl.metrics_stage, dl.detection_stage, dl.alerting):
            stage.tick()
        cur.cpu_s += time.process_time() - t
        if (second + 1) % slice_s == 0:
            total = windows_closed(dl)
            cur.closes, closed = total - closed, total
            run.slices.append(cur.row(slice_s))
            cur = Slice(second + 1 + slice_s)
    run.wall_s = time.perf_counter() - started
    return run


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--duration-s", type=int, default=1400, help="event time simulated")
    ap.add_argument("--slice-s", type=int, default=40)
    ap.add_argument("--label-delay-s", type=int, default=30)
    args = ap.parse_args(argv)
    if args.models < 1 or args.duration_s < args.slice_s or args.slice_s < 1:
        ap.error("need --models >= 1 and --duration-s >= --slice-s >= 1")
    runs = [simulate(args.models, args.duration_s, args.slice_s, args.label_delay_s, j) for j in (0.0, None)]
    table = Table(title=f"{args.models} models at 8 events/s each, per {args.slice_s} s of event time "
                        "(CPU: % of a core at real speed)")
    table.add_column("event time s", justify="right")
    for r in runs:
        tag = "jitter 0" if r.window_jitter == 0 else "default jitter"
        table.add_column(f"{tag}: CPU %", justify="right")
        table.add_column(f"{tag}: closes", justify="right")
    for rows in zip(*(r.slices for r in runs), strict=True):
        table.add_row(str(rows[0]["end_s"]), *(f"{x} " for row in rows
                                                for x in (row["cpu_percent"], row["window_closes"])))
    console.print(table)
    result: dict[str, Any] = {"machine": machine(), "args": vars(args),
              "runs": [{"window_jitter": r.window_jitter, "wall_s": round(r.wall_s, 1),
                        "burst": burst(r.slices), "slices": r.slices} for r in runs]}
    for res in result["runs"]:
        jitter = "default" if res["window_jitter"] is None else res["window_jitter"]
        console.print(f"window_jitter {jitter}: {res['burst']}")
    console.print(f"results: {save('fleet', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
