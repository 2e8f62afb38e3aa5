"""Decode + validation cost per event, by record form, against json parsing alone.

    .venv/bin/python loadtest/bench_validation.py

Baselines measured in the same run: ``orjson.loads`` of the same bytes (parsing
only, no validation) and the reference ``jsonschema`` validator per event.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import machine, prediction_rows, save, to_columns
from streams.events.codec import Decoder

BATCH = 500


def per_event_us(fn: Callable[[], object], events: int, repeat: int = 7,
                 min_s: float = 0.3) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        n = 0
        t0 = time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        runs.append(dt / (n * events) * 1e6)
    return {"median_us": statistics.median(runs), "min_us": min(runs), "max_us": max(runs)}


def main() -> None:
    rows = prediction_rows(BATCH)
    single = orjson.dumps(rows[0])
    row_batch = orjson.dumps(rows)
    col_batch = orjson.dumps(to_columns(rows))
    dec = Decoder()
    bad_rows = list(rows)
    bad_rows[7] = dict(rows[7], latency_ms="slow")
    bad_row_batch = orjson.dumps(bad_rows)
    assert dec.decode(col_batch).n_valid == BATCH and dec.decode(bad_row_batch).n_valid == BATCH - 1
    results = {
        "single_event_record": per_event_us(lambda: dec.decode(single), 1),
        "row_batch_500": per_event_us(lambda: dec.decode(row_batch), BATCH),
        "column_batch_500": per_event_us(lambda: dec.decode(col_batch), BATCH),
        "row_batch_500_one_invalid": per_event_us(lambda: dec.decode(bad_row_batch), BATCH),
        "baseline_orjson_loads_row_batch_500": per_event_us(lambda: orjson.loads(row_batch), BATCH),
        "baseline_orjson_loads_column_batch_500": per_event_us(lambda: orjson.loads(col_batch), BATCH),
    }
    try:
        import jsonschema

        schema = json.loads(Path("schemas/prediction.v1.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
        results["reference_jsonschema_per_event"] = per_event_us(
            lambda: [validator.is_valid(r) for r in rows[:50]], 50, repeat=3)
    except (ImportError, FileNotFoundError):
        pass
    base = results["baseline_orjson_loads_row_batch_500"]["median_us"]
    out = {"machine": machine(), "batch_events": BATCH, "features": 20, "results": results,
           "ratio_column_decode_to_orjson_rows": results["column_batch_500"]["median_us"] / base}
    path = save("validation", out)
    for name, r in results.items():
        print(f"{name:42s} {r['median_us']:8.3f} us/event  (min {r['min_us']:.3f}, max {r['max_us']:.3f})")
    ratio = out["ratio_column_decode_to_orjson_rows"]
    print(f"column-batch decode+validate / orjson parse of row batch: {ratio:.2f}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
