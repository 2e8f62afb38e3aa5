"""Detection cost: one worker with metrics and detection on, against ingest alone, in the same run.

    .venv/bin/python loadtest/bench_detection.py [--records 1600] [--batch 500]

Same traffic as ``bench_metrics.py`` (8 models, 20 features, labels for half
the predictions), plus telemetry. Worker runs, interleaved so that drift of
the machine shows up as spread rather than bias:

(i) ingest alone (``metrics`` and ``detection`` off),
(m) metrics on, detection off,
(d) metrics and detection on (the shipped defaults: concept drift on the
    error stream, per-feature windowed tests and Page-Hinkley, domain
    classifier, Half-Space Trees on serving summaries and telemetry),

and (e) the detection engine alone in-process (no Kafka) for its own
per-event cost and the state it persists per model version.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.bench_ingest import ensure_broker
from loadtest.bench_metrics import interleaved_runs, make_records
from loadtest.common import machine, save
from streams.config import load_settings
from streams.core.detection.engine import DetectionEngine
from streams.core.engine import MetricsEngine
from streams.events.codec import Decoder

CONFIGS = {
    "ingest": "metrics: {enabled: false}\ndetection: {enabled: false}\n",
    "metrics": "detection: {enabled: false}\n",
    "detection": "{}\n",
}


def engine_alone(recs: list[tuple[str, bytes, bytes]]) -> tuple[float, float, dict[str, Any]]:
    """Events/s of metrics alone and of metrics + detection in-process, and detector state sizes."""
    s = load_settings(env={})
    dec = Decoder()
    decoded = [(topic, dec.decode(v)) for topic, _, v in recs]
    events = sum(len(b) for _, d in decoded for b in (*d.predictions, *d.feedback))
    rates = []
    det: DetectionEngine | None = None
    signals = 0
    for with_detection in (False, True):
        eng = MetricsEngine(s.metrics, 0)
        det = DetectionEngine(s.detection, 0, lambda m, v: None) if with_detection else None
        if det is not None:
            eng.match_listeners.append(det.on_matches)
        t0 = time.perf_counter()
        for off, (topic, d) in enumerate(decoded):
            for i, pb in enumerate(d.predictions):
                eng.on_predictions(pb, topic, off, now_ms=0, batch_index=i)
                if det is not None:
                    det.on_predictions(pb, topic, off, i, now_ms=0)
            for i, fb in enumerate(d.feedback):
                eng.on_feedback(fb, topic, off, now_ms=0, batch_index=i)
            eng.advance(now_ms=0)
            eng.take_writes()
            eng.take_snapshots()
            if det is not None:
                det.take_writes()
                signals += len(det.take_signals())
        rates.append(events / (time.perf_counter() - t0))
    assert det is not None
    by_kind: dict[str, list[int]] = defaultdict(list)
    for mons, kind in ((det.concept, "d:concept"), (det.data, "d:data"), (det.latency, "d:latency")):
        for mon in mons.values():
            by_kind[kind].append(len(orjson.dumps(mon.to_json())))
    state = {k: statistics.mean(v) for k, v in by_kind.items()}
    return rates[0], rates[1], {"bytes_per_monitor": state, "signals": signals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1600, help="prediction records (each gets a label record)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    recs, total = make_records(args.records, args.batch)
    bootstrap = ensure_broker()
    tag = uuid.uuid4().hex[:6]
    base = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": f"benchd{tag}.",
        "web_port": 16067,
        "partitions": 4,
    }
    runs = interleaved_runs(base, tag, recs, total, CONFIGS, ("ingest", "metrics", "detection") * args.rounds)
    metrics_eps, detection_eps, state = engine_alone(recs)
    med = {k: statistics.median(v) for k, v in runs.items()}
    res: dict[str, Any] = {
        "machine": machine(),
        "records": args.records,
        "batch_events": args.batch,
        "events": total,
        "worker_events_per_s": dict(runs),
        "ratio_detection_over_ingest": med["detection"] / med["ingest"],
        "ratio_metrics_over_ingest": med["metrics"] / med["ingest"],
        "ratio_detection_over_metrics": med["detection"] / med["metrics"],
        "in_process_metrics_events_per_s": metrics_eps,
        "in_process_metrics_and_detection_events_per_s": detection_eps,
        "detector_state": state,
    }
    path = save("detection", res)
    print(orjson.dumps({k: v for k, v in res.items() if k != "machine"}, option=orjson.OPT_INDENT_2).decode())
    print(f"results: {path}")


if __name__ == "__main__":
    main()
