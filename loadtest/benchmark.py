"""One command for Driftline's throughput and latency figures, with the baselines measured in the same run.

    .venv/bin/python loadtest/benchmark.py [--repeats 3] [--records 2000] [--batch 500] [--out DIR]
    .venv/bin/python loadtest/benchmark.py --open-loop RATE|auto --duration-s 600 [--models 1000]

**Closed loop** (the default). The traffic (column-batch prediction records of
``--batch`` events, 20 features, ``--models`` models, as the SDK sends them) is
generated once and produced once to a fresh topic; then every repeat measures,
in this order, so that drift of a shared machine shows up as spread, not as
bias between the measurements:

(a) raw consume ceiling: confluent-kafka batch consume, touching only the bytes;
(b) consume + decode/validate (Driftline's decoder), one thread, no faust;
(c) one ``driftline worker`` subprocess with the **default** config (metrics,
    detection, alerting), consuming the topic from the start; then the same
    worker with detection off, and with metrics and detection off, so the
    table shows where the cost is.

Worker rates run from the first to the last event processed, read from the
worker's own ``driftline_events_in_total`` (its Prometheus endpoint, polled
every 0.5 s); start-up and group join are not counted. Every figure also comes
as events per CPU-second of the measuring process (the worker, or the (a)/(b)
consumer with librdkafka's threads): on a shared two-core machine the wall-clock
rate follows the neighbours, the CPU-normalised one much less. Ratios c/a and
c/b are medians of per-repeat ratios: the two figures of one repeat were taken
minutes apart, those of two repeats further apart. Before each worker run the reference profiles that the
previous worker published are tombstoned, so every repeat starts from the same
state (no profile: the detectors build one from the first events, as on a
fresh deployment).

**Open loop** (``--open-loop RATE``; ``auto`` = 80 % of the last closed-loop
(c) median in ``<out>/benchmark.json``). Producers send at a fixed rate
whatever the worker does, for ``--duration-s``; every ``--probe-every-s`` a
probe record (a row batch of 50 invalid events) goes out keyed by one of a
round-robin of ``probe-N`` models, which the ``invalid_input`` rule turns into
a firing alert without any window or ``for`` delay. Event-to-alert latency =
arrival of that alert on the alerts topic minus the probe's produce time. Each
second: produced events/s, consumer lag of the worker's group (committed vs
high watermark, read from the broker), worker RSS and CPU (psutil); processed
events/s from the worker's counter every ``--scrape-every-s`` (15 s: a scrape
of a worker with 1,000 models renders 1.4 MB and blocks its event loop for a few
hundred ms, so scraping it every second would measure the scrapes). Output:
JSON, a table and a PNG timeline (``loadtest/timeline.py``). By default the
open loop sends no labels (every prediction waits in the label join) and each
model builds its own reference profile; ``--label-delay-s S`` labels every
prediction record S seconds later, ``--reference published`` publishes one
reference profile per model before the traffic, and ``--worker-config`` takes
the worker's YAML (``loadtest/configs/labels_within_5m.yaml``: the
``label_horizon`` of a deployment whose labels come within minutes).

``--profile`` adds one more default-config worker run under ``py-spy`` (closed
loop), or attaches py-spy to the open loop's worker for ``--profile-s`` after
the warm-up, and prints where the time goes by pipeline stage. py-spy is a
measuring tool, not a dependency: ``.venv/bin/pip install py-spy``.

Results go to ``<out>/benchmark.json`` (closed loop) or ``<out>/open-loop.json``,
plus a timestamped copy; a closed-loop run compares itself with the previous
``benchmark.json`` (within noise = the min-max ranges of the two runs overlap).
The broker: ``DRIFTLINE_BOOTSTRAP_SERVERS`` if set, else the bench broker
(127.0.0.1:19092, ``.driftline/bench-kafka``), started if needed and stopped at
the end if this command started it. Topics this command created are deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.common import N_FEATURES, column_record, machine  # noqa: E402
from loadtest.timeline import render_timeline  # noqa: E402
from streams.app.profiles import profile_key  # noqa: E402
from streams.broker.admin import create_topics  # noqa: E402
from streams.config import Settings, load_settings  # noqa: E402
from streams.core.drift.profile import ProfileBuilder  # noqa: E402
from streams.events.codec import Decoder  # noqa: E402
from streams.events.models import FEEDBACK_COLUMNS_V1  # noqa: E402

DEFAULT_OUT = Path(".driftline/bench")
BROKER_DIR = Path(".driftline/bench-kafka")
T0_MS = 1_800_000_000_000
#: Worker variants of (c): name -> (YAML config, label). ``c_full`` is the shipped default.
VARIANTS: dict[str, tuple[str, str]] = {
    "c_full": ("{}\n", "(c) worker, default config (metrics+detection+alerting)"),
    "c_no_detection": ("detection: {enabled: false}\n", "(c') worker, detection off"),
    "c_ingest_only": ("metrics: {enabled: false}\ndetection: {enabled: false}\n",
                      "(c'') worker, metrics + detection off"),
    "c_low_rate": ("{}\n", "(c*) worker, default config, event time at 1,000 events/s per model"),
}
#: Event-time rate per model of the ``c_low_rate`` traffic: below the data-drift sampling cap
#: (``detection.data.max_events_per_s``, 2,000), so every event goes through every test.
LOW_RATE_EVENTS_PER_S = 1000.0
LABELS = {"a": "(a) raw consume, bytes only", "b": "(b) consume + decode/validate",
          **{k: v[1] for k, v in VARIANTS.items()}}
PROBE_EVENTS = 50  # > invalid_min_rejected (20): one probe record alone trips the rule
PROBE_REUSE_S = 95.0  # the invalid_input window (60 s) plus a bucket must pass before a probe model re-fires
TARGET_EVENTS_PER_S = 200_000
TARGET_C_OVER_B = 0.5
TARGET_P99_S = 2.0

# Wide enough for the tables when piped to a file or a CI log (rich would fall back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 130)


# -- pure helpers (unit-tested) ---------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default).

    NaN for no values, so a run without samples shows as missing rather than as zero.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and relative spread of repeated measurements.

    The median, not the mean: on a shared two-core machine one repeat that met a
    test suite is an outlier, not information about the code.
    """
    if not values:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan, "spread_pct": math.nan,
                "runs": []}
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"n": len(values), "median": med, "min": lo, "max": hi,
            "spread_pct": (hi - lo) / med * 100.0 if med else math.nan, "runs": list(values)}


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios ``num[i] / den[i]`` (the two taken close in time), NaN where ``den`` is 0."""
    if len(num) != len(den):
        raise ValueError(f"need as many numerators as denominators, got {len(num)} and {len(den)}")
    return [n / d if d else math.nan for n, d in zip(num, den, strict=True)]


def within_noise(prev: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
    """Whether two summaries agree within the noise of the runs: their min-max ranges overlap.

    A single-repeat summary has a zero-width range, so it has to land inside the other's.
    """
    return bool(cur["min"] <= prev["max"] and prev["min"] <= cur["max"])


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, in value units per minute (NaN below 2 points)."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return math.nan
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0


def rate_between(samples: Sequence[tuple[float, float]], total: float) -> float:
    """Events/s of a worker from polled ``(time s, events processed so far)`` samples.

    From the first sample that saw an event (start-up and group join excluded) to
    the moment the count reached ``total``. That moment falls between two polls;
    it is placed by the rate of the poll interval before it, so the poll period
    does not bias short runs (an ingest-only worker finishes a million events in
    a few seconds).
    """
    moving = [(t, n) for t, n in samples if n > 0]
    if len(moving) < 2:
        raise ValueError("need at least two samples with events processed")
    t1, n1 = moving[0]
    done = next((i for i, (_, n) in enumerate(moving) if n >= total), len(moving) - 1)
    t_end, n_end = moving[done]
    if done >= 2 and n_end >= total:
        tp, np_ = moving[done - 1]
        tpp, npp = moving[done - 2]
        prev_rate = (np_ - npp) / (tp - tpp) if tp > tpp else 0.0
        if prev_rate > 0 and np_ < total:
            t_end = min(t_end, tp + (total - np_) / prev_rate)
            n_end = total
    if t_end <= t1:
        raise ValueError("samples do not span any time")
    return (n_end - n1) / (t_end - t1)


def cpu_rate(samples: Sequence[tuple[float, float]], total: float) -> float:
    """Events per CPU-second from polled ``(process CPU s, events so far)``, over the span of
    :func:`rate_between` (first event seen to ``total`` reached); NaN when it cannot tell."""
    moving = [(c, n) for c, n in samples if n > 0]
    if len(moving) < 2:
        return math.nan
    c1, n1 = moving[0]
    c2, n2 = next(((c, n) for c, n in moving if n >= total), moving[-1])
    return (n2 - n1) / (c2 - c1) if c2 > c1 else math.nan


class ProbeTracker:
    """Matches firing ``invalid_input`` alerts to the probe records that caused them.

    One probe is outstanding per probe model at a time (models are reused only
    after the rule's window has emptied), so the first firing alert of a model
    after its probe answers that probe. Thread-safe: the producer and the
    alert consumer run in different threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: dict[str, float] = {}
        self.answered: list[tuple[float, str, float]] = []  # (sent at, model, latency s)
        self.unanswered: list[tuple[float, str]] = []
        self.sent = 0

    def sent_probe(self, model: str, at: float) -> None:
        with self._lock:
            previous = self.pending.pop(model, None)
            if previous is not None:
                self.unanswered.append((previous, model))
            self.pending[model] = at
            self.sent += 1

    def on_alert(self, event: Mapping[str, Any], at: float) -> float | None:
        """The latency this alert event answers, or None (not a firing invalid_input of a probe)."""
        labels = event.get("labels") or {}
        if event.get("status") != "firing" or labels.get("alertname") != "invalid_input":
            return None
        model = str(labels.get("model", ""))
        with self._lock:
            sent = self.pending.pop(model, None)
            if sent is None:
                return None
            latency = at - sent
            self.answered.append((sent, model, latency))
            return latency

    def summary(self, sent_from: float = -math.inf) -> dict[str, Any]:
        """Latency percentiles of the probes sent at or after ``sent_from`` (default: all)."""
        with self._lock:
            lat = [x for sent, _, x in self.answered if sent >= sent_from]
            missing = len(self.unanswered) + len(self.pending)
            return {"probes_sent": self.sent, "alerts_matched": len(lat), "probes_without_alert": missing,
                    "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
                    "max_s": max(lat) if lat else math.nan,
                    "mean_s": statistics.fmean(lat) if lat else math.nan}


def probe_models_needed(probe_every_s: float, reuse_after_s: float = PROBE_REUSE_S) -> int:
    """Probe models in the round-robin so that each is reused only after ``reuse_after_s``."""
    return max(1, math.ceil(reuse_after_s / probe_every_s) + 1)


# (stage, substrings of a py-spy frame "function (file:line)"). Driftline's own stages: the first
# stage with a frame anywhere in a sample's stack takes the sample, so callees come before callers
# (detection runs inside the metrics engine's match listeners; changelog writes inside timers).
_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up (imports)", ("importlib._bootstrap",)),
    ("changelog: state cells serialised + put", ("take_writes", "flush_writes", "FaustTableStore",
                                                 "streams/app/state.py", "faust/tables/")),
    ("alerting (rules, lifecycle)", ("streams/core/alerting/", "streams/app/alerting_stage.py")),
    ("detection: data drift (windowed tests, PH, domain clf)", ("streams/core/detection/data.py",)),
    ("detection: concept drift", ("streams/core/detection/concept.py",)),
    ("detection: latency/serving HST", ("streams/core/detection/serving.py", "DetectionEngine._latency")),
    ("detection: inputs, hosts, other", ("streams/core/detection/", "streams/app/detection_stage.py",
                                         "streams/core/ops/")),
    ("decode + validate", ("streams/events/codec.py",)),
    ("metrics engine (panes, sketches, label join)", ("streams/core/", "streams/app/metrics_stage.py")),
)
# Everything else is runtime, charged to the innermost frame that names one of these: a sample in
# lz4_encode under faust's agent is the producer's, not faust's.
_RUNTIME: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kafka produce: changelog, snapshots, signals (lz4 encode, send)",
     ("lz4_encode", "aiokafka/producer", "faust/transport/producer", "streams/app/transport.py")),
    ("kafka consume (fetch, lz4 decode, unpack)",
     ("lz4_decode", "aiokafka/consumer", "faust/transport/consumer", "aiokafka/record")),
    ("prometheus exposition + counters", ("prometheus_client", "streams/observability.py")),
    ("ingest routing (agent, router, dead letters)", ("streams/app/",)),
    ("profiles/control topic followers", ("confluent_kafka", "TopicFollower")),
    ("faust / asyncio runtime", ("faust/", "mode/", "asyncio", "aiohttp", "aiokafka", "selectors")),
)


def classify_stack(frames: Sequence[str]) -> str:
    """The pipeline stage a py-spy sample (frames root first) belongs to; ``other`` if none."""
    for stage, needles in _STAGES:
        if any(nd in fr for fr in frames for nd in needles):
            return stage
    for fr in reversed(frames):
        for stage, needles in _RUNTIME:
            if any(nd in fr for nd in needles):
                return stage
    return "other"


def summarize_profile(lines: Sequence[str], top: int = 25) -> dict[str, Any]:
    """Samples by stage and the hottest functions (self and inclusive) of py-spy ``raw`` output."""
    by_stage: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += n
        by_stage[classify_stack(frames)] += n
        self_time[_short_frame(frames[-1])] += n
        for fr in {_short_frame(f) for f in frames}:
            inclusive[fr] += n

    def pct(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, n / total * 100.0) for name, n in c.most_common(k)] if total else []

    return {"samples": total, "by_stage_pct": pct(by_stage, len(by_stage)),
            "self_pct": pct(self_time, top), "inclusive_pct": pct(inclusive, top)}


def _short_frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines of one function are one entry."""
    name, _, loc = frame.partition(" (")
    path = loc.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


# -- broker, topics, traffic ------------------------------------------------------------------------

@contextlib.contextmanager
def bench_broker(keep: bool) -> Iterator[str]:
    """The broker to measure against; stopped at the end only if started here (and not ``keep``)."""
    if os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS"):
        yield os.environ["DRIFTLINE_BOOTSTRAP_SERVERS"]
        return
    from streams.broker.local import LocalBroker

    d = Settings()
    broker = LocalBroker(d.kafka_version, Path(d.kafka_cache_dir), BROKER_DIR,
                         port=19092, controller_port=19093, heap="1g")
    already = broker.pid() is not None and broker.answering()
    bootstrap = broker.up()
    try:
        yield bootstrap
    finally:
        if not already and not keep:
            broker.down()


def settings_for(bootstrap: str, prefix: str, app_id: str, data_dir: Path, web_port: int,
                 partitions: int) -> Settings:
    return load_settings(env={}, bootstrap_servers=bootstrap, topic_prefix=prefix, app_id=app_id,
                         data_dir=str(data_dir), web_port=web_port, partitions=partitions)


def delete_topics(bootstrap: str, prefixes: Sequence[str]) -> int:
    """Delete topics whose names start with any of ``prefixes`` (this run's); how many."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if any(t.startswith(p) for p in prefixes)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()
    return len(names)


class Traffic:
    """Column-batch prediction records as the SDK sends them, for any number of models.

    Feature values come from a few :func:`loadtest.common.column_record` bases
    (20 features: 15 numeric, 5 categorical); each record gets its own model
    name, event ids and event times, so nothing is a duplicate and event time
    advances per model as a model serving 1,000 predictions/s would (1 ms per
    event), which opens and closes the 1 m windows during a run.
    """

    def __init__(self, batch: int, bases: int = 16, model_events_per_s: float = 1000.0) -> None:
        if model_events_per_s <= 0:
            raise ValueError(f"model_events_per_s must be positive, got {model_events_per_s}")
        self.batch = batch
        self.model_events_per_s = model_events_per_s
        self.bases = [orjson.loads(column_record(batch, seed=k, model="base")) for k in range(bases)]
        self.sent: dict[str, int] = {}

    def record(self, model: str, event_time_ms: int | None = None) -> bytes:
        n = self.sent.get(model, 0)
        self.sent[model] = n + 1
        base = self.bases[(zlib.crc32(model.encode()) + n) % len(self.bases)]
        ids = [f"{model}-{n}-{j}" for j in range(self.batch)]
        if event_time_ms is None:
            first = n * self.batch
            per_ms = self.model_events_per_s / 1000.0
            times = [T0_MS + int((first + j) / per_ms) for j in range(self.batch)]
        else:
            times = [event_time_ms] * self.batch
        return orjson.dumps({**base, "model": model, "event_id": ids, "event_time_ms": times})

    def feedback(self, record: bytes, event_time_ms: int) -> bytes:
        """The feedback record that labels every prediction of ``record`` (a :meth:`record` value).

        The label is the prediction plus 0.01, so the regression metrics have
        something to measure; every event gets ``event_time_ms``.
        """
        pred = orjson.loads(record)
        ids = pred["event_id"]
        return orjson.dumps({"schema": FEEDBACK_COLUMNS_V1, "model": pred["model"], "event_id": ids,
                             "label": [round(p + 0.01, 6) for p in pred["prediction"]],
                             "event_time_ms": [event_time_ms] * len(ids)})

    def reference_profiles(self, models: Sequence[str], created_ms: int) -> list[tuple[bytes, bytes]]:
        """One published reference profile per model (profiles-topic key and value), from the traffic's bases.

        The open loop can publish these before its traffic, as a platform team
        publishes references built from training data, so that no model folds
        its first ``auto_profile_events`` events into a profile of its own.
        """
        builder = ProfileBuilder()
        for base in self.bases:
            builder.add(base["features"], base["prediction"])
        doc = orjson.loads(builder.build("base", None, created_ms, "bench:traffic-bases").to_json())
        out = []
        for m in models:
            doc["model"] = m
            out.append((profile_key(m, None), orjson.dumps(doc)))
        return out


def probe_record(model: str, seq: int, events: int = PROBE_EVENTS) -> bytes:
    """A row batch of ``events`` prediction events that all fail validation (latency is a string).

    Each is refused on its own (not the record as a whole), so the record counts
    ``events`` rejected events for ``model``: at 50 > ``invalid_min_rejected``
    and 100 % rejected, the ``invalid_input`` rule fires on this record alone.
    """
    rows = [{"schema": "driftline.prediction/v1", "event_id": f"{model}-{seq}-{j}", "model": model,
             "model_version": "v1", "event_time_ms": int(time.time() * 1000), "latency_ms": "probe",
             "status": "ok", "features": {}} for j in range(events)]
    return orjson.dumps(rows)


def producer(bootstrap: str) -> Producer:
    """A producer configured as the SDK's (lz4, idempotent, acks=all, short linger)."""
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 20, "compression.type": "lz4", "message.max.bytes": 16_000_000,
                     "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_000_000})


def produce_one(p: Producer, topic: str, key: bytes, value: bytes, wait_s: float = 0.05) -> None:
    """Produce one record, serving delivery reports while the producer's queue is full."""
    while True:
        try:
            p.produce(topic, key=key, value=value)
            return
        except BufferError:
            p.poll(wait_s)


def produce_all(p: Producer, topic: str, recs: Sequence[tuple[bytes, bytes]]) -> None:
    for key, value in recs:
        produce_one(p, topic, key, value)
        p.poll(0)
    if p.flush(180) != 0:
        raise SystemExit("producer could not deliver the traffic within 180 s")


def loadavg() -> float:
    return os.getloadavg()[0]


# -- measurements -----------------------------------------------------------------------------------

def consume_rate(s: Settings, records: int, batch: int, decode: bool) -> tuple[float, float]:
    """(a) or (b): events/s of one confluent-kafka consumer, from assigning the partitions to the last record.

    ``assign`` rather than ``subscribe``: no group join to leave out of the time, and
    the clock starts before librdkafka's background fetch does (it prefetches up to
    64 MB as soon as partitions are assigned, so starting at the first record that
    ``consume`` returns would leave the fetch out). Second figure: events per CPU-second
    of this process (librdkafka's fetch and decompression threads included).
    """
    topic = s.topic("predictions")
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.max.bytes": 64_000_000, "max.partition.fetch.bytes": 16_000_000})
    partitions = len(c.list_topics(topic, timeout=10).topics[topic].partitions)  # connect before the clock
    dec = Decoder(s.max_record_bytes)
    seen = events = 0
    deadline = time.monotonic() + 300
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    try:
        while seen < records:
            if time.monotonic() > deadline:
                raise SystemExit(f"consumer saw {seen} of {records} records in 300 s")
            msgs = c.consume(500, timeout=1.0)
            for msg in msgs:
                if msg.error():
                    continue
                v = msg.value()
                if decode:
                    events += dec.decode(v).n_valid
                else:
                    events += batch if v else 0  # touch the bytes, no more
                seen += 1
        dt = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        c.close()
    if decode and events != records * batch:
        raise SystemExit(f"decoder accepted {events} of {records * batch} events")
    return events / dt, events / cpu if cpu > 0 else math.nan


def events_in(port: int, kinds: tuple[str, ...] = ("prediction",)) -> float:
    """``driftline_events_in_total`` of the worker (the sum over ``kinds``), read from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return events_in_of(r.read().decode())


def events_in_of(text: str, kinds: tuple[str, ...] = ("prediction",)) -> float:
    """The sum of ``driftline_events_in_total{kind=...}`` over ``kinds`` in a text exposition.

    A line scan, not prometheus_client's parser: a worker with 1,000 models exposes
    1.4 MB, which the full parser takes over a second of this process's CPU to read,
    time stolen (with the GIL) from the open loop's producer thread.
    """
    prefix = "driftline_events_in_total{"
    wanted = {f'kind="{k}"' for k in kinds}
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _, rest = line[len(prefix):].partition("}")
            if wanted.intersection(labels.split(",")):
                total += float(rest.split()[0])
    return total


@dataclass
class Worker:
    """One ``driftline worker`` subprocess with a YAML config."""

    s: Settings
    config_yaml: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    _config_path: Path | None = field(default=None, repr=False)

    def start(self) -> Worker:
        data = Path(self.s.data_dir)
        data.parent.mkdir(parents=True, exist_ok=True)
        self._config_path = data.parent / f"{self.s.app_id}.yaml"
        self._config_path.write_text(self.config_yaml)
        env = {**os.environ, "DRIFTLINE_CONFIG": str(self._config_path),
               "DRIFTLINE_BOOTSTRAP_SERVERS": self.s.bootstrap, "DRIFTLINE_TOPIC_PREFIX": self.s.topic_prefix,
               "DRIFTLINE_APP_ID": self.s.app_id, "DRIFTLINE_DATA_DIR": self.s.data_dir,
               "DRIFTLINE_WEB_PORT": str(self.s.web_port), "DRIFTLINE_PARTITIONS": str(self.s.partitions)}
        cmd = [sys.executable, "-m", "streams.cli", "worker"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        if self._config_path is not None:
            self._config_path.unlink(missing_ok=True)

    def events_in(self) -> float:
        return events_in(self.s.web_port)


def worker_rate(s: Settings, config_yaml: str, total: int, log_path: Path,
                profile_path: Path | None = None, poll_s: float = 0.5,
                timeout_s: float = 900) -> tuple[float, float]:
    """(c): events/s of one fresh worker over ``total`` prediction events already in the topic.

    Second figure: events per CPU-second of the worker process over the same span,
    which a neighbour on the machine disturbs far less than the wall-clock rate.
    """
    w = Worker(s, config_yaml, log_path).start()
    samples: list[tuple[float, float]] = []
    cpu_samples: list[tuple[float, float]] = []
    proc = psutil.Process(w.pid)
    spy: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if w.proc is not None and w.proc.poll() is not None:
                raise SystemExit(f"worker {s.app_id} exited with {w.proc.returncode}; log: {log_path}")
            try:
                n = w.events_in()
            except OSError:
                time.sleep(poll_s)
                continue
            samples.append((time.perf_counter(), n))
            with contextlib.suppress(psutil.Error):
                ct = proc.cpu_times()
                cpu_samples.append((ct.user + ct.system, n))
            if profile_path is not None and spy is None and n > 0:
                spy = start_py_spy(w.pid, profile_path)
            if n >= total:
                break
            time.sleep(poll_s)
        else:
            raise SystemExit(f"worker {s.app_id} processed {samples[-1][1] if samples else 0:.0f} of "
                             f"{total} events in {timeout_s:.0f} s; log: {log_path}")
    finally:
        if spy is not None:
            stop_py_spy(spy)
        w.stop()
    return rate_between(samples, total), cpu_rate(cpu_samples, total)


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    """SIGINT: py-spy stops sampling and writes its file."""
    if spy.poll() is not None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(10)


def start_py_spy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` attached to ``pid`` once it processes events, so start-up is not in the profile.

    ``--nonblocking``: sampling does not pause the worker (a few % of samples may be
    torn, which does not matter for shares of tens of percent).
    """
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy (a measuring tool, "
                         "not a dependency)")
    path.unlink(missing_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--threads", "--rate", "200", "--nonblocking",
           "-o", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def clear_profiles(s: Settings) -> int:
    """Tombstone every reference profile on the profiles topic; how many keys.

    The worker publishes the profiles it builds from the first events of each
    model; the next worker on the same topics would start with them installed
    and do different work. Tombstones make every repeat start alike.
    """
    topic = s.topic("profiles")
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"bench-prof-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    keys: set[bytes] = set()
    try:
        tp = TopicPartition(topic, 0)
        low, high = c.get_watermark_offsets(tp, timeout=10)
        if high <= low:
            return 0
        c.assign([TopicPartition(topic, 0, low)])
        pos = low
        deadline = time.monotonic() + 30
        while pos < high and time.monotonic() < deadline:
            for msg in c.consume(500, timeout=1.0):
                if msg.error():
                    continue
                pos = (msg.offset() or 0) + 1
                key = msg.key()
                if key is not None:
                    if msg.value() is None:
                        keys.discard(key)
                    else:
                        keys.add(key)
    finally:
        c.close()
    if keys:
        p = Producer({"bootstrap.servers": s.bootstrap, "acks": "all"})
        for k in keys:
            p.produce(topic, key=k, value=None)
        p.flush(30)
    return len(keys)


# -- closed loop ------------------------------------------------------------------------------------

def cleanup(bootstrap: str, work: Path, prefixes: Sequence[str]) -> None:
    """Remove a run's data folders and topics, also when it failed or was interrupted."""
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(Exception):
        delete_topics(bootstrap, prefixes)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # runs/, when no other run is using it


def run_closed(args: argparse.Namespace, bootstrap: str, out: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    work = out / "runs" / tag
    try:  # every topic and app id of this run starts with one of these
        return _closed(args, bootstrap, out, tag, work)
    finally:
        cleanup(bootstrap, work, [f"benchc{tag}.", f"bench-{tag}"])


def _closed(args: argparse.Namespace, bootstrap: str, out: Path, tag: str, work: Path) -> dict[str, Any]:
    prefix, low_prefix = f"benchc{tag}.", f"benchc{tag}.low."
    s = settings_for(bootstrap, prefix, f"bench-{tag}", work / "base", args.web_port, args.partitions)
    low = settings_for(bootstrap, low_prefix, f"bench-{tag}-low", work / "base", args.web_port,
                       args.partitions)
    models = [f"m{k}" for k in range(args.models)]
    total = args.records * args.batch
    rate = model_rate(args)
    avg_bytes, produce_s = 0.0, 0.0
    for st, per_model in ((s, rate), (low, LOW_RATE_EVENTS_PER_S)):
        create_topics(st)
        traffic = Traffic(args.batch, model_events_per_s=per_model)
        t_gen = time.perf_counter()
        recs = [(models[i % len(models)].encode(), traffic.record(models[i % len(models)]))
                for i in range(args.records)]
        gen_s = time.perf_counter() - t_gen
        avg_bytes = sum(len(v) for _, v in recs) / len(recs)
        console.print(f"[bold]traffic[/]: {args.records:,} records x {args.batch} events = {total:,} events, "
                      f"{len(models)} models, {N_FEATURES} features, {avg_bytes / 1024:.0f} KiB/record, "
                      f"event time at {per_model:,.0f} events/s per model (generated in {gen_s:.1f} s); "
                      f"topic {st.topic('predictions')}, {args.partitions} partitions")
        t_prod = time.perf_counter()
        produce_all(producer(bootstrap), st.topic("predictions"), recs)
        elapsed = time.perf_counter() - t_prod
        produce_s = produce_s or elapsed  # the main traffic's
        del recs
        console.print(f"produced in {elapsed:.1f} s ({total / elapsed:,.0f} events/s)")

    runs: dict[str, list[float]] = {k: [] for k in LABELS}
    cpu_runs: dict[str, list[float]] = {k: [] for k in LABELS}
    loads: dict[str, list[float]] = {k: [] for k in LABELS}
    for rep in range(args.repeats):
        for name in LABELS:
            load = loadavg()
            if name == "a":
                eps, per_cpu = consume_rate(s, args.records, args.batch, decode=False)
            elif name == "b":
                eps, per_cpu = consume_rate(s, args.records, args.batch, decode=True)
            else:
                src, src_prefix = (low, low_prefix) if name == "c_low_rate" else (s, prefix)
                clear_profiles(src)
                run_id = f"bench-{tag}-{name.replace('_', '-')}-{rep}"
                ws = settings_for(bootstrap, src_prefix, run_id, work / run_id, args.web_port,
                                  args.partitions)
                eps, per_cpu = worker_rate(ws, VARIANTS[name][0], total, out / "logs" / f"{run_id}.log")
            runs[name].append(eps)
            cpu_runs[name].append(per_cpu)
            loads[name].append(load)
            console.print(f"  repeat {rep + 1}/{args.repeats}  {name:15s} {eps:>12,.0f} events/s "
                          f"{per_cpu:>12,.0f} events/CPU-s   (load {load:.2f})")

    profile: dict[str, Any] | None = None
    if args.profile:
        clear_profiles(s)
        run_id = f"bench-{tag}-profile"
        ws = settings_for(bootstrap, prefix, run_id, work / run_id, args.web_port, args.partitions)
        raw = out / f"profile-{args.profile_variant}.txt"
        eps, _ = worker_rate(ws, VARIANTS[args.profile_variant][0], total, out / "logs" / f"{run_id}.log",
                             profile_path=raw)
        deadline = time.monotonic() + 30
        while not raw.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        profile = {"variant": args.profile_variant, "events_per_s_under_py_spy": eps, "raw": str(raw),
                   **summarize_profile(raw.read_text().splitlines() if raw.exists() else [])}

    res: dict[str, Any] = {
        "kind": "closed-loop",
        "machine": machine_facts(),
        "records": args.records, "batch_events": args.batch, "events": total, "models": len(models),
        "features": N_FEATURES, "partitions": args.partitions, "repeats": args.repeats,
        "model_events_per_s": rate, "low_rate_model_events_per_s": LOW_RATE_EVENTS_PER_S,
        "record_bytes_avg": avg_bytes, "produce_events_per_s": total / produce_s,
        "labels": LABELS,
        "events_per_s": {k: summarize(v) for k, v in runs.items()},
        "events_per_cpu_s": {k: summarize(v) for k, v in cpu_runs.items()},
        "load_1m_before_each": loads,
        "ratios": ratio_table(runs),
        "cpu_ratios": ratio_table(cpu_runs),
        "profile": profile,
    }
    c_med = res["events_per_s"]["c_full"]["median"]
    res["targets"] = {
        "c_over_b_at_least_0_5": res["ratios"]["c_over_b"]["median"] >= TARGET_C_OVER_B,
        "c_at_least_200k_events_per_s": c_med >= TARGET_EVENTS_PER_S,
    }
    return res


RATIOS = {"c_over_a": ("c_full", "a"), "c_over_b": ("c_full", "b"),
          "c_low_rate_over_b": ("c_low_rate", "b"),
          "c_ingest_only_over_b": ("c_ingest_only", "b"),
          "c_full_over_c_ingest_only": ("c_full", "c_ingest_only"),
          "c_no_detection_over_c_ingest_only": ("c_no_detection", "c_ingest_only"),
          "c_full_over_c_no_detection": ("c_full", "c_no_detection")}


def ratio_table(runs: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """Summaries of the per-repeat ratios in :data:`RATIOS`."""
    return {name: summarize(ratios(runs[num], runs[den])) for name, (num, den) in RATIOS.items()}


def machine_facts() -> dict[str, Any]:
    """``common.machine()`` plus what explains a figure on a shared box: load, memory, CPU model."""
    facts = machine()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    facts.update({"cpu_model": cpu_model, "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
                  "loadavg": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return facts


def print_closed(res: Mapping[str, Any], prev: Mapping[str, Any] | None) -> None:
    if not res["repeats"]:  # --repeats 0 --profile: the profile alone
        if res.get("profile"):
            print_profile(res["profile"])
        return
    eps = res["events_per_s"]
    b_med = eps["b"]["median"]
    a_med = eps["a"]["median"]
    t = Table(title=f"Driftline benchmark: {res['events']:,} events ({res['records']:,} records x "
                    f"{res['batch_events']}), {res['models']} models, {res['features']} features, "
                    f"{res['repeats']} repeats interleaved; event time at "
                    f"{res.get('model_events_per_s', 1000.0):,.0f} events/s per model")
    t.add_column("measurement")
    t.add_column("median events/s", justify="right")
    t.add_column("min - max", justify="right")
    t.add_column("spread", justify="right")
    t.add_column("events/CPU-s", justify="right")
    t.add_column("/ (a)", justify="right")
    t.add_column("/ (b)", justify="right")
    if prev:
        t.add_column("previous: events/s, events/CPU-s (within noise?)", justify="right")
    for k, label in res["labels"].items():
        sm = eps[k]
        row = [label, f"{sm['median']:,.0f}", f"{sm['min']:,.0f} - {sm['max']:,.0f}",
               f"{sm['spread_pct']:.0f} %", f"{res['events_per_cpu_s'][k]['median']:,.0f}",
               f"{sm['median'] / a_med:.2f}", f"{sm['median'] / b_med:.2f}"]
        if prev:
            p, pc = prev.get("events_per_s", {}).get(k), prev.get("events_per_cpu_s", {}).get(k)
            cell = f"{p['median']:,.0f} ({'yes' if within_noise(p, sm) else 'NO'})" if p else "-"
            if pc:
                cm = res["events_per_cpu_s"][k]
                cell += f", {pc['median']:,.0f} ({'yes' if within_noise(pc, cm) else 'NO'})"
            row.append(cell)
        t.add_row(*row)
    console.print(t)
    r = Table(title="ratios (median of per-repeat ratios)")
    r.add_column("ratio")
    r.add_column("events/s: median", justify="right")
    r.add_column("min - max", justify="right")
    r.add_column("events/CPU-s: median", justify="right")
    r.add_column("min - max", justify="right")
    for k, sm in res["ratios"].items():
        cm = res["cpu_ratios"][k]
        r.add_row(k, f"{sm['median']:.3f}", f"{sm['min']:.3f} - {sm['max']:.3f}",
                  f"{cm['median']:.3f}", f"{cm['min']:.3f} - {cm['max']:.3f}")
    console.print(r)
    m = res["machine"]
    console.print(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_gib']} GiB, Python {m['python']}; "
                  "load average at the end " + " / ".join(f"{x:.2f}" for x in m["loadavg"]))
    tg = res["targets"]
    console.print(f"target c/b >= {TARGET_C_OVER_B}: {'met' if tg['c_over_b_at_least_0_5'] else 'NOT met'} "
                  f"({res['ratios']['c_over_b']['median']:.2f}); "
                  f"target c >= {TARGET_EVENTS_PER_S:,} events/s: "
                  f"{'met' if tg['c_at_least_200k_events_per_s'] else 'NOT met'} "
                  f"({eps['c_full']['median']:,.0f})")
    if res.get("profile"):
        print_profile(res["profile"])


def print_profile(prof: Mapping[str, Any]) -> None:
    worker = "the default worker" if prof.get("variant", "c_full") == "c_full" else prof["variant"]
    t = Table(title=f"where {worker}'s time goes (py-spy, {prof['samples']:,} samples, "
                    f"{prof['events_per_s_under_py_spy']:,.0f} events/s under the profiler)")
    t.add_column("stage")
    t.add_column("share of samples", justify="right")
    for stage, pct in prof["by_stage_pct"]:
        t.add_row(stage, f"{pct:.1f} %")
    console.print(t)
    f = Table(title="hottest functions (self time)")
    f.add_column("function")
    f.add_column("self", justify="right")
    for name, pct in prof["self_pct"][:15]:
        f.add_row(name, f"{pct:.1f} %")
    console.print(f)


# -- open loop --------------------------------------------------------------------------------------

@dataclass
class OpenLoopState:
    """What the producer and alert threads share with the sampler."""

    produced_events: int = 0
    produced_records: int = 0
    labelled_events: int = 0
    probes: list[tuple[float, str]] = field(default_factory=list)  # (sent at, model)
    alerts: list[tuple[float, str, str, str]] = field(default_factory=list)  # (at, status, alertname, model)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _produce_open_loop(st: OpenLoopState, bootstrap: str, topic: str, traffic: Traffic, models: Sequence[str],
                       rate: float, duration_s: float, probe_every_s: float, probe_after_s: float,
                       tracker: ProbeTracker, t0: float, feedback_topic: str = "",
                       label_delay_s: float = 0.0) -> None:
    """Send ``rate`` events/s for ``duration_s`` whatever the worker does, plus probes.

    With ``label_delay_s`` > 0 every prediction record is labelled whole by a
    feedback record sent that many seconds later (on ``feedback_topic``).
    """
    p = producer(bootstrap)
    per_record = traffic.batch
    n_probe_models = probe_models_needed(probe_every_s)
    next_probe = t0 + probe_after_s
    probe_seq = 0
    i = 0
    labels_due: deque[tuple[float, str, bytes]] = deque()
    try:
        while not st.stop.is_set():
            now = time.time()
            if now - t0 >= duration_s:
                break
            while labels_due and labels_due[0][0] <= now:
                _, model, value = labels_due.popleft()
                produce_one(p, feedback_topic, model.encode(), traffic.feedback(value, int(now * 1000)), 0.01)
                st.labelled_events += per_record
            due = int((now - t0) * rate / per_record) - st.produced_records
            for _ in range(max(due, 0)):
                model = models[i % len(models)]
                i += 1
                value = traffic.record(model, event_time_ms=int(time.time() * 1000))
                produce_one(p, topic, model.encode(), value, 0.01)
                if label_delay_s > 0:
                    labels_due.append((now + label_delay_s, model, value))
                st.produced_records += 1
                st.produced_events += per_record
            if now >= next_probe:
                model = f"probe-{probe_seq % n_probe_models}"
                sent = time.time()
                p.produce(topic, key=model.encode(), value=probe_record(model, probe_seq))
                p.poll(0)
                tracker.sent_probe(model, sent)
                st.probes.append((sent, model))
                probe_seq += 1
                next_probe += probe_every_s
            p.poll(0)
            time.sleep(0.005)
    except Exception as exc:  # surface it in the report rather than dying silently in a thread
        st.errors.append(f"producer: {exc!r}")
    finally:
        p.flush(60)


def _follow_alerts(st: OpenLoopState, bootstrap: str, topic: str, tracker: ProbeTracker) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-alerts-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    c.subscribe([topic])
    try:
        while not st.stop.is_set():
            for msg in c.consume(100, timeout=0.1):
                at = time.time()
                value = msg.value()
                if msg.error() or not value:
                    continue
                try:
                    ev = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue
                tracker.on_alert(ev, at)
                labels = ev.get("labels") or {}
                st.alerts.append((at, str(ev.get("status")), str(labels.get("alertname")),
                                  str(labels.get("model", ""))))
    except Exception as exc:
        st.errors.append(f"alerts: {exc!r}")
    finally:
        c.close()


def group_offsets(c: Consumer, topic: str, partitions: int) -> tuple[int, int]:
    """(committed offsets of the worker's group, high watermarks), summed over ``topic``'s partitions.

    Read from the broker, so watching the worker costs the worker nothing; the
    difference is the consumer lag in records.
    """
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    committed = high_total = 0
    for tp in c.committed(tps, timeout=5):
        low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5, cached=False)
        committed += tp.offset if tp.offset >= 0 else low
        high_total += high
    return committed, high_total


def run_open_loop(args: argparse.Namespace, bootstrap: str, out: Path, rate: float) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    work = out / "runs" / tag
    try:
        return _open_loop(args, bootstrap, out, rate, tag, work)
    finally:
        cleanup(bootstrap, work, [f"bencho{tag}.", f"bench-open-{tag}"])


def _open_loop(args: argparse.Namespace, bootstrap: str, out: Path, rate: float, tag: str,
               work: Path) -> dict[str, Any]:
    prefix = f"bencho{tag}."
    app_id = f"bench-open-{tag}"
    s = settings_for(bootstrap, prefix, app_id, work / "worker", args.web_port, args.partitions)
    create_topics(s)
    config = Path(args.worker_config).read_text() if args.worker_config else VARIANTS["c_full"][0]
    traffic = Traffic(args.batch)
    models = [f"m{k}" for k in range(args.models)]
    tracker = ProbeTracker()
    st = OpenLoopState()
    log_path = out / "logs" / f"{app_id}.log"
    if args.reference == "published":  # before the worker starts: it reads the topic up to its end first
        produce_all(producer(bootstrap), s.topic("profiles"),
                    traffic.reference_profiles(models, int(time.time() * 1000)))
    w = Worker(s, config, log_path).start()
    samples: list[dict[str, Any]] = []
    lag_consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id, "enable.auto.commit": False})
    proc = psutil.Process(w.pid)
    threads: list[threading.Thread] = []
    spy: subprocess.Popen[bytes] | None = None
    console.print(f"[bold]open loop[/]: {rate:,.0f} events/s for {args.duration_s:.0f} s, "
                  f"{len(models)} models x {N_FEATURES} features, records of {args.batch} events; "
                  f"probe every {args.probe_every_s:.0f} s "
                  f"over {probe_models_needed(args.probe_every_s)} probe models; worker log {log_path}")
    try:
        deadline = time.monotonic() + 120
        while True:  # worker up (its /metrics answers) before the clock starts
            if w.proc is not None and w.proc.poll() is not None:
                raise SystemExit(f"worker exited with {w.proc.returncode}; log: {log_path}")
            try:
                w.events_in()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker did not answer in 120 s; log: {log_path}") from None
                time.sleep(0.5)
        t0 = time.time()
        threads = [
            threading.Thread(target=_follow_alerts, daemon=True,
                             args=(st, bootstrap, s.topic("alerts"), tracker)),
            threading.Thread(target=_produce_open_loop, daemon=True, args=(
                st, bootstrap, s.topic("predictions"), traffic, models, rate, args.duration_s,
                args.probe_every_s, args.probe_after_s, tracker, t0,
                s.topic("feedback"), args.label_delay_s)),
        ]
        for th in threads:
            th.start()
        proc.cpu_percent(None)
        spy_until = 0.0
        shown_rate = math.nan
        last_produced = 0
        last_t = t0
        drain_until: float | None = None
        next_print = t0 + 30
        next_scrape = t0 + args.scrape_every_s
        while True:
            time.sleep(max(0.0, 1.0 - (time.time() - last_t)))
            now = time.time()
            try:
                committed, high = group_offsets(lag_consumer, s.topic("predictions"), args.partitions)
                lag = float(high - committed)
                # Probe records are records too (one in several hundred): not counted as events.
                processed = float(max(committed - tracker.sent, 0) * args.batch)
            except Exception:
                lag = processed = math.nan
            exact = math.nan
            if now >= next_scrape:  # the worker's own count, as often as Prometheus would ask for it
                next_scrape += args.scrape_every_s
                with contextlib.suppress(OSError):
                    exact = w.events_in()
            if args.profile and spy is None and now - t0 >= args.probe_after_s:
                spy = start_py_spy(w.pid, out / "profile-open-loop.txt")
                spy_until = now + args.profile_s
            if spy is not None and spy.poll() is None and now >= spy_until:
                stop_py_spy(spy)
            try:
                rss = proc.memory_info().rss / 2**20
                cpu = proc.cpu_percent(None)
            except psutil.Error:
                rss = cpu = math.nan
            produced = st.produced_events
            dt = now - last_t
            scraped = [x for x in samples if math.isfinite(x["events_in_scraped"])]
            rate_now = math.nan  # the worker's own counter between its last two scrapes
            if math.isfinite(exact):
                last = scraped[-1] if scraped else {"t": 0.0, "events_in_scraped": 0.0}
                prev_t, prev_n = last["t"], last["events_in_scraped"]
                rate_now = (exact - prev_n) / (now - t0 - prev_t)
            sample = {"t": now - t0, "produced_eps": (produced - last_produced) / dt,
                      "processed_eps": rate_now,
                      "processed_total": processed, "events_in_scraped": exact, "produced_total": produced,
                      "lag_records": lag, "lag_events": lag * args.batch, "rss_mb": rss, "cpu_pct": cpu,
                      "load_1m": loadavg()}
            samples.append(sample)
            last_produced, last_t = produced, now
            shown_rate = rate_now if math.isfinite(rate_now) else shown_rate
            if now >= next_print:
                lat = tracker.summary()
                console.print(f"  t={now - t0:5.0f} s  produced {sample['produced_eps']:>9,.0f}/s  processed "
                              f"{shown_rate:>9,.0f}/s  lag {lag:>6,.0f} rec  RSS {rss:,.0f} MB  "
                              f"cpu {cpu:.0f} %  probes {lat['probes_sent']} p50 {lat['p50_s']:.2f} s "
                              f"p99 {lat['p99_s']:.2f} s  load {sample['load_1m']:.2f}")
                next_print += 30
            if w.proc is not None and w.proc.poll() is not None:
                st.errors.append(f"worker exited with {w.proc.returncode}")
                break
            if now - t0 >= args.duration_s:
                if drain_until is None:
                    drain_until = now + args.drain_s
                caught_up = lag == 0 and not tracker.pending
                if caught_up or now >= drain_until:
                    break
    finally:
        st.stop.set()
        for th in threads:
            th.join(60)
        if spy is not None:
            stop_py_spy(spy)
        w.stop()
        lag_consumer.close()
    res = open_loop_result(args, rate, samples, tracker, st, t0)
    raw = out / "profile-open-loop.txt"
    if args.profile and raw.exists():
        res["profile"] = {"events_per_s_under_py_spy": res["processed_eps_median_after_warmup"],
                          "raw": str(raw), "seconds": args.profile_s,
                          **summarize_profile(raw.read_text().splitlines())}
    res["worker_log"] = str(log_path)
    png = out / "open-loop.png"
    res["timeline_png"] = str(render_open_loop(png, res, samples, tracker, st, t0))
    return res


def open_loop_result(args: argparse.Namespace, rate: float, samples: Sequence[Mapping[str, Any]],
                     tracker: ProbeTracker, st: OpenLoopState, t0: float = 0.0) -> dict[str, Any]:
    during = [x for x in samples if x["t"] <= args.duration_s]
    rss = [(x["t"], x["rss_mb"]) for x in during if math.isfinite(x["rss_mb"])]
    second_half = [(t, v) for t, v in rss if t >= args.duration_s / 2]
    at_1m = next((v for t, v in rss if t >= 60), rss[0][1] if rss else math.nan)
    steady = [x for x in during if x["t"] >= min(60.0, args.duration_s / 4)]

    def med(key: str, xs: Sequence[Mapping[str, Any]] = steady) -> float:
        vals = [x[key] for x in xs if math.isfinite(x[key])]
        return statistics.median(vals) if vals else math.nan

    last = samples[-1] if samples else {}
    return {
        "kind": "open-loop",
        "machine": machine_facts(),
        "target_rate_events_per_s": rate, "duration_s": args.duration_s, "models": args.models,
        "features": N_FEATURES, "batch_events": args.batch, "partitions": args.partitions,
        "probe_every_s": args.probe_every_s, "probe_models": probe_models_needed(args.probe_every_s),
        "scrape_every_s": args.scrape_every_s,
        "processed_events_worker_count": max((x["events_in_scraped"] for x in samples
                                              if math.isfinite(x["events_in_scraped"])), default=math.nan),
        "worker_config": args.worker_config or "default",
        "label_delay_s": args.label_delay_s, "labelled_events": st.labelled_events,
        "reference": args.reference,
        "produced_events": st.produced_events, "produced_events_per_s": st.produced_events / args.duration_s,
        "processed_events_final": last.get("processed_total", math.nan),
        "processed_eps_median_after_warmup": med("processed_eps"),
        "processed_events_per_s_overall": max(
            ((x["events_in_scraped"] / x["t"]) for x in during if math.isfinite(x["events_in_scraped"])
             and x["t"] >= args.duration_s - args.scrape_every_s), default=math.nan),
        "lag_records_median_after_warmup": med("lag_records"),
        "lag_records_max": max((x["lag_records"] for x in during if math.isfinite(x["lag_records"])),
                               default=math.nan),
        "lag_records_at_end_of_production": during[-1]["lag_records"] if during else math.nan,
        "cpu_pct_median_after_warmup": med("cpu_pct"),
        "load_1m_median": med("load_1m", samples),
        "event_to_alert": tracker.summary(),
        # The second half: past the warm-up of a run with many models (trees and profiles built per model).
        "event_to_alert_second_half": {k: v for k, v in tracker.summary(t0 + args.duration_s / 2).items()
                                       if k not in ("probes_without_alert",)},
        "probes": [{"sent_s": sent - t0, "model": model, "latency_s": lat}
                   for sent, model, lat in tracker.answered],
        "rss_mb": {"at_1_min": at_1m, "at_end": rss[-1][1] if rss else math.nan,
                   "max": max((v for _, v in rss), default=math.nan),
                   "slope_mb_per_min_second_half": slope_per_min(second_half),
                   "slope_mb_per_min_after_1_min": slope_per_min([(t, v) for t, v in rss if t >= 60])},
        "alerts_by_name": dict(Counter(f"{a[2]}:{a[1]}" for a in st.alerts)),
        "errors": st.errors,
        "samples": list(samples),
    }


def render_open_loop(path: Path, res: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                     tracker: ProbeTracker, st: OpenLoopState, t0: float) -> Path:
    series = {
        "produced events/s": [(x["t"], x["produced_eps"]) for x in samples],
        "processed events/s": [(x["t"], x["processed_eps"]) for x in samples],
        "consumer lag (records)": [(x["t"], x["lag_records"]) for x in samples],
        "worker RSS (MB)": [(x["t"], x["rss_mb"]) for x in samples],
        "worker CPU (% of a core)": [(x["t"], x["cpu_pct"]) for x in samples],
        "event-to-alert latency (s)": sorted((sent - t0 + lat, lat) for sent, _, lat in tracker.answered),
    }
    axes = {"produced events/s": "events/s", "processed events/s": "events/s"}
    half = res["duration_s"] / 2
    spans = [(half, res["duration_s"], "RSS slope window (second half)")]
    markers = [(at - t0, f"{model}") for at, status, name, model in st.alerts
               if status == "firing" and name == "invalid_input"]
    lat = res["event_to_alert"]
    title = (f"open loop {res['target_rate_events_per_s']:,.0f} events/s, {res['models']} models x "
             f"{res['features']} features, {res['duration_s']:.0f} s: "
             f"event-to-alert p50 {lat['p50_s']:.2f} s, "
             f"p99 {lat['p99_s']:.2f} s; load {res['load_1m_median']:.1f}")
    return render_timeline(path, title, series, spans, markers, axes=axes)


def print_open_loop(res: Mapping[str, Any]) -> None:
    lat = res["event_to_alert"]
    lat2 = res["event_to_alert_second_half"]
    rss = res["rss_mb"]
    t = Table(title=f"open loop: {res['target_rate_events_per_s']:,.0f} events/s target, "
                    f"{res['duration_s']:.0f} s, {res['models']} models x {res['features']} features")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("produced events/s (mean)", f"{res['produced_events_per_s']:,.0f}"),
        ("processed events/s (median after warm-up / whole run)",
         f"{res['processed_eps_median_after_warmup']:,.0f} / {res['processed_events_per_s_overall']:,.0f}"),
        ("consumer lag, records (median after warm-up / max / at end)",
         f"{res['lag_records_median_after_warmup']:,.0f} / {res['lag_records_max']:,.0f} / "
         f"{res['lag_records_at_end_of_production']:,.0f}"),
        ("worker CPU, % of a core (median)", f"{res['cpu_pct_median_after_warmup']:.0f}"),
        ("event-to-alert p50 / p99 / max (s)",
         f"{lat['p50_s']:.3f} / {lat['p99_s']:.3f} / {lat['max_s']:.3f}"),
        ("event-to-alert p50 / p99 / max (s), probes of the second half",
         f"{lat2['p50_s']:.3f} / {lat2['p99_s']:.3f} / {lat2['max_s']:.3f}"),
        ("probes sent / matched / without alert",
         f"{lat['probes_sent']} / {lat['alerts_matched']} / {lat['probes_without_alert']}"),
        ("RSS MB at 1 min / at end / max",
         f"{rss['at_1_min']:,.0f} / {rss['at_end']:,.0f} / {rss['max']:,.0f}"),
        ("RSS slope MB/min (second half / after 1 min)",
         f"{rss['slope_mb_per_min_second_half']:.2f} / {rss['slope_mb_per_min_after_1_min']:.2f}"),
        ("load average (1 min, median)", f"{res['load_1m_median']:.2f}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    p99_ok = lat["p99_s"] < TARGET_P99_S and lat["probes_without_alert"] == 0
    console.print(f"target p99 < {TARGET_P99_S} s: {'met' if p99_ok else 'NOT met'}; "
                  f"timeline: {res['timeline_png']}")
    if res["errors"]:
        console.print(f"[red]errors[/]: {res['errors']}")
    if res.get("profile"):
        print_profile(res["profile"])


# -- main -------------------------------------------------------------------------------------------

def save(out: Path, name: str, res: Mapping[str, Any]) -> Path:
    """``<out>/<name>.json`` plus a timestamped copy, so the previous run stays comparable."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=2, default=str)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"{name}-{stamp}.json").write_text(text)
    path = out / f"{name}.json"
    path.write_text(text)
    return path


def model_rate(args: argparse.Namespace) -> float:
    """Event-time rate per model of the closed-loop traffic.

    By default the rate a worker sees when it keeps up with the target
    (200,000 events/s over ``--models``): the statistical work that depends on
    event time (windows that close every ``window_ms``, the data-drift sampling
    cap per model) is then that of the steady state the target describes, not
    that of a slow fleet replayed at speed, which ``c_low_rate`` measures.
    """
    if args.model_events_per_s is not None:
        return float(args.model_events_per_s)
    return float(TARGET_EVENTS_PER_S / args.models)


def auto_rate(closed_results: Path) -> float:
    """80 % of (c) from the last closed-loop run; exits naming what is missing if there is none."""
    try:
        c = json.loads(closed_results.read_text())["events_per_s"]["c_full"]["median"]
    except (OSError, ValueError, KeyError, TypeError):
        c = math.nan
    if not isinstance(c, int | float) or not math.isfinite(c) or c <= 0:
        raise SystemExit(f"--open-loop auto: no closed-loop (c) median in {closed_results}; run the "
                         "closed loop first (loadtest/benchmark.py, with --repeats 1 or more)")
    return 0.8 * float(c)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="closed loop: interleaved repeats of a, b, c")
    ap.add_argument("--records", type=int, default=2000, help="closed loop: records in the topic")
    ap.add_argument("--batch", type=int, default=500, help="events per column-batch record")
    ap.add_argument("--models", type=int, default=None,
                    help="models (default: 8 closed loop, 1000 open loop)")
    ap.add_argument("--features", type=int, default=N_FEATURES, choices=[N_FEATURES],
                    help="features per event (the traffic of loadtest/common.py has 20)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--model-events-per-s", type=float, default=None,
                    help="closed loop: event-time rate of each model's traffic (default: 200,000 / models, "
                         "the steady state of the target); the (c*) run always uses 1,000")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--web-port", type=int, default=16068, help="the measured worker's /metrics port")
    ap.add_argument("--profile", action="store_true",
                    help="closed loop: one more default worker under py-spy; open loop: py-spy on the "
                         "worker for --profile-s after the warm-up")
    ap.add_argument("--profile-s", type=float, default=60.0, help="open loop: seconds of profile")
    ap.add_argument("--profile-variant", choices=[k for k in VARIANTS], default="c_full",
                    help="closed loop: the worker configuration --profile runs (default: the default one)")
    ap.add_argument("--keep-broker", action="store_true", help="leave the bench broker running at the end")
    ap.add_argument("--open-loop", metavar="RATE|auto", help="open loop at RATE events/s "
                    "(auto: 80 %% of the (c) median in <out>/benchmark.json)")
    ap.add_argument("--duration-s", type=float, default=180.0, help="open loop: seconds of traffic")
    ap.add_argument("--probe-every-s", type=float, default=5.0, help="open loop: seconds between probes")
    ap.add_argument("--probe-after-s", type=float, default=15.0,
                    help="open loop: first probe after (warm-up)")
    ap.add_argument("--drain-s", type=float, default=60.0, help="open loop: wait for the worker to catch up")
    ap.add_argument("--worker-config", help="open loop: YAML for the worker instead of the defaults")
    ap.add_argument("--label-delay-s", type=float, default=0.0,
                    help="open loop: label every prediction record by a feedback record this many seconds "
                         "later (0: no labels, every prediction waits in the label join)")
    ap.add_argument("--reference", choices=("auto", "published"), default="auto",
                    help="open loop: 'published' publishes one reference profile per model before the "
                         "traffic (as from training data); 'auto': each model builds its own from its "
                         "first events")
    ap.add_argument("--scrape-every-s", type=float, default=15.0,
                    help="open loop: read the worker's /metrics this often (a scrape of a worker with "
                         "1,000 models blocks its event loop for a few hundred ms)")
    args = ap.parse_args(argv)
    if args.models is None:
        args.models = 1000 if args.open_loop else 8
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # the worker and the broker use paths relative to the repository
    rate = 0.0
    if args.open_loop:
        rate = auto_rate(out / "benchmark.json") if args.open_loop == "auto" else float(args.open_loop)
    with bench_broker(args.keep_broker) as bootstrap:
        if args.open_loop:
            res = run_open_loop(args, bootstrap, out, rate)
            path = save(out, "open-loop", res)
            print_open_loop(res)
        else:
            prev_path = out / "benchmark.json"
            prev = json.loads(prev_path.read_text()) if prev_path.exists() else None
            res = run_closed(args, bootstrap, out)
            if prev is not None and prev.get("model_events_per_s", 1000.0) != res["model_events_per_s"]:
                console.print("previous results were of traffic at another event-time rate: not compared")
                prev = None
            if prev is not None:
                res["previous"] = {key: prev.get(key, {}) for key in ("events_per_s", "events_per_cpu_s")}
                res["within_noise_of_previous"] = {
                    key: {k: within_noise(prev[key][k], v) for k, v in res[key].items()
                          if k in prev.get(key, {})}
                    for key in ("events_per_s", "events_per_cpu_s")}
            path = save(out, "benchmark", res)
            print_closed(res, prev)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
