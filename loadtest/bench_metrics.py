"""Windowed metrics cost: one worker with metrics on against the same worker with metrics off.

    .venv/bin/python loadtest/bench_metrics.py [--records 1600] [--batch 500]

Traffic: 8 models, column batches of ``--batch`` predictions with 20 features,
event time advancing 40 ms per event per model (so 1m / 5m-hop-1m / 1h windows
open, close and expire during the run), and labels for half the predictions
on the feedback topic. Runs, all in this process's lifetime, on one broker:

(i) ``driftline worker`` with ``metrics.enabled: false`` (ingest alone),
(m) ``driftline worker`` with the metrics stage on (default windows),
(i2) ingest alone again, to bound drift of the machine during the run,

plus (e) the engine alone in-process (no Kafka) for its per-event cost, and
the persisted state per model (panes, closed windows, label join) it leaves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.bench_ingest import ensure_broker, worker_run
from loadtest.common import machine, prediction_rows, save, to_columns
from streams.broker.admin import create_topics
from streams.config import Settings, load_settings
from streams.core.engine import MetricsEngine
from streams.events.codec import Decoder

MODELS = 8
STEP_MS = 40
T0 = 1_800_000_000_000


def make_records(records: int, batch: int) -> tuple[list[tuple[str, bytes, bytes]], int]:
    """(topic suffix, key, value) in send order, and the number of events."""
    bases = [to_columns(prediction_rows(batch, seed=k, model=f"m{k}")) for k in range(MODELS)]
    out: list[tuple[str, bytes, bytes]] = []
    events = 0
    for i in range(records):
        k = i % MODELS
        n = i // MODELS  # batch number of this model
        rec = dict(bases[k])
        ids = [f"m{k}-{n}-{j}" for j in range(batch)]
        rec["event_id"] = ids
        rec["event_time_ms"] = [T0 + (n * batch + j) * STEP_MS for j in range(batch)]
        out.append(("predictions", f"m{k}".encode(), orjson.dumps(rec)))
        events += batch
        half = ids[::2]
        fb = {
            "schema": "driftline.feedback-columns/v1",
            "model": f"m{k}",
            "event_id": half,
            "label": [float(j % 3) for j in range(len(half))],
            "event_time_ms": [T0 + (n * batch) * STEP_MS + 60_000] * len(half),
        }
        out.append(("feedback", f"m{k}".encode(), orjson.dumps(fb)))
        events += len(half)
    return out, events


def produce(s: Settings, recs: list[tuple[str, bytes, bytes]]) -> None:
    p = Producer(
        {
            "bootstrap.servers": s.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": 16_000_000,
            "queue.buffering.max.kbytes": 1_000_000,
        }
    )
    for topic, key, value in recs:
        while True:
            try:
                p.produce(s.topic(topic), key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(120) == 0


def run_worker(s: Settings, total: int, config: str) -> float:
    """Events/s (predictions and labels) of one worker with ``config`` as its YAML file."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    try:
        eps, seen = worker_run(s, total, {"DRIFTLINE_CONFIG": f.name}, kinds=("prediction", "feedback"))
    finally:
        os.unlink(f.name)
    if seen < total:
        raise SystemExit(f"worker {s.app_id} saw {seen:.0f} of {total} events")
    return eps


def interleaved_runs(base: dict[str, Any], tag: str, recs: list[tuple[str, bytes, bytes]], total: int,
                     configs: dict[str, str], order: tuple[str, ...]) -> dict[str, list[float]]:
    """Events/s of one fresh worker per entry of ``order`` (a config name) over the same records.

    Interleaving the configurations spreads the drift of a noisy machine over all of
    them, so ratios of medians from one call are comparable.
    """
    runs: dict[str, list[float]] = defaultdict(list)
    first = True
    for name in order:
        run_tag = uuid.uuid4().hex[:6]
        s = load_settings(env={}, **base, app_id=f"bench-{name}-{run_tag}",
                          data_dir=f".driftline/bench/{tag}/{name}-{run_tag}")
        create_topics(s)
        if first:
            produce(s, recs)
            first = False
        runs[name].append(run_worker(s, total, configs[name]))
        print(f"{name:10s} {runs[name][-1]:>12,.0f} events/s", flush=True)
    return runs


def engine_alone(recs: list[tuple[str, bytes, bytes]]) -> tuple[float, dict[str, Any]]:
    """Per-event cost of the engine in-process, and the persisted state it leaves per model."""
    s = load_settings(env={})
    dec = Decoder()
    decoded = [(topic, dec.decode(v)) for topic, _, v in recs]
    eng = MetricsEngine(s.metrics, 0)
    table: dict[bytes, bytes] = {}
    t0 = time.perf_counter()
    for off, (topic, d) in enumerate(decoded):
        for pb in d.predictions:
            eng.on_predictions(pb, topic, off, now_ms=0)
        for fb in d.feedback:
            eng.on_feedback(fb, topic, off, now_ms=0)
        eng.advance(now_ms=0)
        for k, v in eng.take_writes():
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        eng.take_snapshots()
    dt = time.perf_counter() - t0
    events = sum(len(b) for _, d in decoded for b in (*d.predictions, *d.feedback))
    by_kind: dict[str, int] = defaultdict(int)
    for k, v in table.items():
        by_kind[orjson.loads(k)[0]] += len(k) + len(v)
    pending = sum(m.join.pending for m in eng.models.values())
    state = {
        "models": len(eng.models),
        "bytes_per_model_by_cell_kind": {k: v / len(eng.models) for k, v in sorted(by_kind.items())},
        "metric_state_bytes_per_model": sum(v for k, v in by_kind.items() if k in ("pane", "win", "meta"))
        / len(eng.models),
        "join_bytes_per_pending_prediction": (by_kind["jc"] + by_kind.get("jm", 0)) / max(pending, 1),
        "pending_predictions": pending,
        "open_panes": sum(len(se.panes) for m in eng.models.values() for se in m.series.values()),
        "closed_windows": sum(len(se.closed) for m in eng.models.values() for se in m.series.values()),
    }
    return events / dt, state


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--records", type=int, default=1600, help="prediction records (each also gets a label record)"
    )
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    recs, total = make_records(args.records, args.batch)
    bootstrap = ensure_broker()
    tag = uuid.uuid4().hex[:6]
    base = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": f"benchm{tag}.",
        "web_port": 16067,
        "partitions": 4,
    }
    configs = {"ingest": "metrics: {enabled: false}\ndetection: {enabled: false}\n",
               "metrics": "detection: {enabled: false}\n"}
    runs = interleaved_runs(base, tag, recs, total, configs, ("ingest", "metrics") * 2)
    engine_eps, state = engine_alone(recs)
    res: dict[str, Any] = {
        "machine": machine(),
        "records": args.records,
        "batch_events": args.batch,
        "features": 20,
        "events": total,
        "models": MODELS,
        "ingest_only_events_per_s": runs["ingest"],
        "with_metrics_events_per_s": runs["metrics"],
        "ratio_metrics_over_ingest": statistics.median(runs["metrics"]) / statistics.median(runs["ingest"]),
        "engine_alone_events_per_s": engine_eps,
        "state": state,
    }
    path = save("metrics", res)
    print(orjson.dumps({k: v for k, v in res.items() if k != "machine"}, option=orjson.OPT_INDENT_2).decode())
    print(f"results: {path}")


if __name__ == "__main__":
    main()
