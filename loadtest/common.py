"""Shared pieces of the benchmarks: synthetic batches and a broker to run against."""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path
from typing import Any

import orjson

N_FEATURES = 20
RESULTS = Path(".driftline/bench")


def prediction_rows(n: int, seed: int = 1, model: str = "bench", version: str = "v1",
                    start: int = 0) -> list[dict[str, Any]]:
    """``n`` prediction events with 20 features (15 numeric, 5 categorical)."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        feats: dict[str, Any] = {f"num_{k}": rng.gauss(0, 1) for k in range(15)}
        feats.update({f"cat_{k}": rng.choice(("a", "b", "c", "d")) for k in range(5)})
        rows.append({"schema": "driftline.prediction/v1", "event_id": f"{seed}-{i}", "model": model,
                     "model_version": version, "event_time_ms": 1_700_000_000_000 + i,
                     "latency_ms": rng.lognormvariate(2, 0.5),
                     "status": "error" if rng.random() < 0.01 else "ok",
                     "features": feats, "prediction": rng.random()})
    return rows


def to_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The column-batch form of rows of one model version (what the SDK sends)."""
    first = rows[0]
    return {
        "schema": "driftline.prediction-columns/v1",
        "model": first["model"], "model_version": first["model_version"],
        "event_id": [r["event_id"] for r in rows],
        "event_time_ms": [r["event_time_ms"] for r in rows],
        "latency_ms": [r["latency_ms"] for r in rows],
        "status": [r["status"] for r in rows],
        "features": {k: [r["features"][k] for r in rows] for k in first["features"]},
        "prediction": [r["prediction"] for r in rows],
    }


def column_record(n: int, seed: int = 1, start: int = 0, model: str = "bench") -> bytes:
    return orjson.dumps(to_columns(prediction_rows(n, seed, model=model, start=start)))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
