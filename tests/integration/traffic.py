"""Known synthetic traffic for the metrics tests, and its offline ground truth.

Two models over three minutes of event time: ``clf`` (binary classifier that
sends class probabilities, labels 0/1) and ``reg`` (regression). Every 7th
event is an error; 80% of events get a label; the first labels are sent
before their predictions (they must wait in the join) and one label is held
back to arrive after its window closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASE_MS = 1_800_000_000_000 // 60_000 * 60_000  # minute-aligned
EVENTS = 1800  # per model, one every 100 ms: three minutes
BATCH = 200
LATE_LABEL = 5  # index of the event whose label arrives after its windows closed
EARLY_LABELS = 40  # labels of events 0.. sent before any prediction
WINDOWS = ("1m", "2m/1m")
CONFIG = """
metrics:
  windows: ["1m", "2m/1m"]
  allowed_lateness: 5s
  idle_close: {idle}
  label_horizon: 1h
models:
  clf: {{task: classification}}
  reg: {{task: regression}}
"""


@dataclass
class Traffic:
    predictions: list[dict[str, Any]] = field(default_factory=list)  # column records
    early_feedback: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    late_feedback: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per model, one dict per event


def _labelled(i: int) -> bool:
    return i % 5 != 0 or i == LATE_LABEL


def make_traffic(seed: int = 7) -> Traffic:
    rng = np.random.default_rng(seed)
    t = Traffic()
    for model in ("clf", "reg"):
        rows = []
        for i in range(EVENTS):
            p = float(rng.random())
            row: dict[str, Any] = {
                "event_id": f"{model}-{i}",
                "event_time_ms": BASE_MS + i * 100,
                "latency_ms": float(np.round(rng.lognormal(3.0, 0.6), 3)),
                "status": "error" if i % 7 == 0 else "ok",
                "x": None if i % 11 == 0 else float(np.round(rng.normal(5, 2), 4)),
                "c": ["a", "b", "c"][i % 3],
            }
            if model == "clf":
                row["prediction"] = {"0": round(1 - p, 6), "1": round(p, 6)}
                row["label"] = int(rng.random() < 0.1 + 0.8 * p)
            else:
                yhat = float(np.round(rng.normal(50, 10), 4))
                row["prediction"] = yhat
                row["label"] = float(np.round(yhat + rng.normal(0, 3), 4))
            rows.append(row)
        t.rows[model] = rows
        for lo in range(0, EVENTS, BATCH):
            chunk = rows[lo : lo + BATCH]
            t.predictions.append(
                {
                    "schema": "driftline.prediction-columns/v1",
                    "model": model,
                    "model_version": "v1",
                    "event_id": [r["event_id"] for r in chunk],
                    "event_time_ms": [r["event_time_ms"] for r in chunk],
                    "latency_ms": [r["latency_ms"] for r in chunk],
                    "status": [r["status"] for r in chunk],
                    "features": {"x": [r["x"] for r in chunk], "c": [r["c"] for r in chunk]},
                    "prediction": [r["prediction"] for r in chunk],
                }
            )

        def fb(sel: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "schema": "driftline.feedback-columns/v1",
                "model": model,  # noqa: B023
                "event_id": [r["event_id"] for r in sel],
                "label": [r["label"] for r in sel],
                "event_time_ms": [r["event_time_ms"] + 30_000 for r in sel],
            }

        early = [r for i, r in enumerate(rows[:EARLY_LABELS]) if _labelled(i) and i != LATE_LABEL]
        t.early_feedback.append(fb(early))
        rest = [r for i, r in enumerate(rows) if i >= EARLY_LABELS and _labelled(i)]
        t.feedback.extend(fb(rest[k : k + BATCH]) for k in range(0, len(rest), BATCH))
        t.late_feedback.append(fb([rows[LATE_LABEL]]))
    return t


def window_starts(spec: str) -> list[tuple[int, int]]:
    size_ms, hop_ms = (60_000, 60_000) if spec == "1m" else (120_000, 60_000)
    first = BASE_MS - size_ms + hop_ms
    last = BASE_MS + EVENTS * 100 - 1
    return [(s, s + size_ms) for s in range(first, last + 1, hop_ms)]


def expected(t: Traffic, with_late_label: bool) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Offline metrics per (model, window, start), computed directly from the rows."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for model, rows in t.rows.items():
        for spec in WINDOWS:
            for start, end in window_starts(spec):
                sel = [(i, r) for i, r in enumerate(rows) if start <= r["event_time_ms"] < end]
                lab = [r for i, r in sel if _labelled(i) and (with_late_label or i != LATE_LABEL)]
                e: dict[str, Any] = {
                    "count": len(sel),
                    "error_rate": sum(r["status"] == "error" for _, r in sel) / len(sel),
                    "latencies": sorted(r["latency_ms"] for _, r in sel),
                    "labelled": len(lab),
                }
                if model == "clf":
                    pred = [1 if r["prediction"]["1"] > r["prediction"]["0"] else 0 for r in lab]
                    y = [r["label"] for r in lab]
                    tp = sum(p == 1 and a == 1 for p, a in zip(pred, y, strict=True))
                    fp = sum(p == 1 and a == 0 for p, a in zip(pred, y, strict=True))
                    fn = sum(p == 0 and a == 1 for p, a in zip(pred, y, strict=True))
                    e["accuracy"] = sum(p == a for p, a in zip(pred, y, strict=True)) / len(lab)
                    e["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
                    e["log_loss"] = -sum(
                        math.log(min(max(r["prediction"][str(r["label"])], 1e-15), 1 - 1e-15)) for r in lab
                    ) / len(lab)
                else:
                    err = [r["prediction"] - r["label"] for r in lab]
                    e["rmse"] = math.sqrt(sum(x * x for x in err) / len(err))
                    e["mae"] = sum(abs(x) for x in err) / len(err)
                out[(model, spec, start)] = e
    return out
