"""Cost of ``DriftlineClient.log_prediction`` on the serving path.

The client's producer points at an unreachable broker (``127.0.0.1:1``), so
nothing is ever delivered: the buffer fills to ``max_buffered_events`` pending
events and every later call takes the drop path. Both phases are reported,
together with the background thread's encoding cost per event (which competes
for the GIL, but not on the serving path's critical section).

Prints one JSON object. Nothing is asserted: this is a measurement.

Usage::

    .venv/bin/python loadtest/bench_sdk.py [--events 200000] [--features 20]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry

from streams.sdk import DriftlineClient
from streams.sdk.buffer import KIND_PREDICTION, RecordEncoder


def _features(rng: random.Random, n: int) -> dict[str, float | int | str | bool | None]:
    out: dict[str, float | int | str | bool | None] = {}
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out[f"num_{i}"] = rng.random() * 100
        elif kind == 1:
            out[f"int_{i}"] = rng.randrange(1000)
        elif kind == 2:
            out[f"cat_{i}"] = rng.choice(("de", "fr", "us", "jp"))
        elif kind == 3:
            out[f"flag_{i}"] = rng.random() < 0.5
        else:
            out[f"opt_{i}"] = None if rng.random() < 0.1 else rng.gauss(0, 1)
    return out


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1000.0


def _summary(ns: list[int]) -> dict[str, Any]:
    s = sorted(ns)
    return {
        "calls": len(s),
        "mean_us": round(statistics.fmean(s) / 1000.0, 3) if s else None,
        "p50_us": round(_pct(s, 0.50), 3),
        "p99_us": round(_pct(s, 0.99), 3),
        "p999_us": round(_pct(s, 0.999), 3),
        "max_us": round(s[-1] / 1000.0, 3) if s else None,
    }


def _encode_cost(features: list[dict[str, Any]], validate: bool) -> float:
    """Background-thread cost per event: column-encode (and validate) 500-event records."""
    enc = RecordEncoder("bench", validate=validate)
    events = [
        (KIND_PREDICTION, "v1", f"{i:032x}", 1_700_000_000_000 + i, 1.5, "ok", f, 0.5, None, None)
        for i, f in enumerate(features)
    ]
    t0 = time.perf_counter()
    n = 0
    for start in range(0, len(events), 500):
        chunk = events[start:start + 500]
        r = enc.encode(KIND_PREDICTION, "v1", chunk)
        assert r.failed == 0
        n += len(chunk)
    return (time.perf_counter() - t0) / n * 1e6


class _GcPauses:
    """Time every garbage collection: it explains most of the tail (the SDK's
    serving path allocates a tuple and a dict copy per call, like any Python)."""

    def __init__(self) -> None:
        self.by_gen: dict[int, list[float]] = {}
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._t0) * 1e3
            self.by_gen.setdefault(int(info["generation"]), []).append(ms)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {"count": len(v), "total_ms": round(sum(v), 1),
                        "max_ms": round(max(v), 2)}
            for g, v in sorted(self.by_gen.items())
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--max-buffered", type=int, default=100_000)
    ap.add_argument("--bootstrap", default="127.0.0.1:1")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    rng = random.Random(7)
    pool = [_features(rng, args.features) for _ in range(1000)]
    client = DriftlineClient(
        args.bootstrap,
        model="bench",
        model_version="v1",
        max_buffered_events=args.max_buffered,
        registry=CollectorRegistry(),
        producer_config={"message.timeout.ms": 600_000, "log_level": 0},
    )
    log_prediction = client.log_prediction
    perf_ns = time.perf_counter_ns
    timings: list[int] = []
    append = timings.append
    raised = 0
    gc_pauses = _GcPauses()
    gc.callbacks.append(gc_pauses)
    wall0 = time.perf_counter()
    for i in range(args.events):
        f = pool[i % 1000]
        t0 = perf_ns()
        try:
            log_prediction(f, 0.73, latency_ms=2.5)
        except Exception:  # the promise under test: this must stay 0
            raised += 1
        append(perf_ns() - t0)
    wall = time.perf_counter() - wall0
    gc.callbacks.remove(gc_pauses)
    stats_after = client.stats()

    # Mean without per-call timer overhead: one timed loop on the drop path only
    # if the buffer is full by now (it is, with the defaults), else mixed.
    bulk_t0 = time.perf_counter()
    bulk_n = 50_000
    for i in range(bulk_n):
        log_prediction(pool[i % 1000], 0.73, latency_ms=2.5)
    bulk_us = (time.perf_counter() - bulk_t0) / bulk_n * 1e6

    t_close = time.perf_counter()
    client.close(timeout_s=1.0)
    close_s = time.perf_counter() - t_close
    final = client.stats()

    accepted_phase = timings[: stats_after.accepted]
    dropped_phase = timings[stats_after.accepted:]
    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "events": args.events,
        "features_per_event": args.features,
        "max_buffered_events": args.max_buffered,
        "bootstrap": args.bootstrap,
        "raised": raised,
        "wall_s": round(wall, 3),
        "log_prediction_all": _summary(timings),
        "log_prediction_accepted_phase": _summary(accepted_phase),
        "log_prediction_drop_phase": _summary(dropped_phase),
        "timer_overhead_note": "per-call figures include one perf_counter_ns pair (~0.05-0.1 us)",
        "gc_pauses_during_timed_loop": gc_pauses.summary(),
        "bulk_loop_mean_us_drop_path": round(bulk_us, 3),
        "stats_after_logging": stats_after.__dict__ if hasattr(stats_after, "__dict__") else {
            k: getattr(stats_after, k) for k in stats_after.__slots__
        },
        "close_s": round(close_s, 3),
        "final_stats": {k: getattr(final, k) for k in final.__slots__},
        "background_encode_us_per_event": {
            "validate": round(_encode_cost(pool * 10, True), 3),
            "no_validate": round(_encode_cost(pool * 10, False), 3),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
