"""Per-model flow counters for the live terminal view (bounded: at most ``max_models`` rows)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.batches import FeedbackBatch, PredictionBatch
from streams.events.models import TelemetryV1


@dataclass
class FlowStats:
    max_models: int = 50
    predictions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    feedback: Counter[str] = field(default_factory=Counter)
    telemetry: Counter[str] = field(default_factory=Counter)
    deadletters: Counter[str] = field(default_factory=Counter)
    last_rss_bytes: dict[str, int] = field(default_factory=dict)

    def _key(self, model: str, version: str | None = None) -> str:
        key = model if version is None else f"{model}@{version}"
        if key in self.predictions or len(self.predictions) < self.max_models:
            return key
        return "(other)"

    def on_predictions(self, b: PredictionBatch, pos: object = None) -> None:
        key = self._key(b.model, b.model_version)
        self.predictions[key] += len(b)
        self.errors[key] += int(b.is_error.sum())

    def on_feedback(self, b: FeedbackBatch, pos: object = None) -> None:
        self.feedback[b.model] += len(b)

    def on_telemetry(self, events: list[TelemetryV1], pos: object = None) -> None:
        for t in events:
            self.telemetry[t.model] += 1
            self.last_rss_bytes[t.model] = t.rss_bytes

    def on_deadletter(self, reason: str) -> None:
        self.deadletters[reason] += 1


def render(flow: FlowStats, elapsed_s: float, previous: dict[str, int] | None = None) -> object:
    """A rich table of what flowed so far; rates are against ``previous`` totals."""
    from rich.table import Table

    previous = previous if previous is not None else {}
    table = Table(title=f"Driftline worker — {elapsed_s:,.0f}s", title_justify="left")
    for col in ("model@version", "predictions", "errors", "feedback", "telemetry", "rss MiB"):
        table.add_column(col, justify="right" if col != "model@version" else "left")
    for key, n in sorted(flow.predictions.items()):
        model = key.split("@", 1)[0]
        rss = flow.last_rss_bytes.get(model)
        table.add_row(key, f"{n:,}", f"{flow.errors[key]:,}", f"{flow.feedback[model]:,}",
                      f"{flow.telemetry[model]:,}", "-" if rss is None else f"{rss / 2**20:,.0f}")
    if flow.deadletters:
        dl = ", ".join(f"{r}={n:,}" for r, n in sorted(flow.deadletters.items()))
        table.caption = f"dead-lettered: {dl}"
    else:
        table.caption = "dead-lettered: none"
    return table


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if not isinstance(v, (int, float)) else format(v * scale, spec)


def render_windows(latest: list[tuple[tuple[str, str, str], Mapping[str, Any]]], window: str) -> object:
    """The newest closed ``window`` per model version: serving, latency and label metrics."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"last closed {window} window", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("model@version", "start", "req", "err", "p99ms", "lab", "acc", "F1", "RMSE", "rev"):
        table.add_column(col, justify="left" if col in ("model@version", "start") else "right")
    for (model, version, win), snap in sorted(latest):
        if win != window:
            continue
        serving, labels = snap["serving"], snap["labels"]
        cls, reg = labels.get("classification") or {}, labels.get("regression") or {}
        start = time.strftime("%H:%M", time.gmtime(snap["window_start_ms"] / 1000))
        table.add_row(f"{model}@{version}", start, f"{serving['count']:,}",
                      _fmt(serving["error_rate"], ".1%"),
                      _fmt(serving["latency_ms"]["p99"], ",.0f"), _fmt(labels["coverage"], ".0%"),
                      _fmt(cls.get("accuracy"), ".2f"), _fmt((cls.get("macro") or {}).get("f1"), ".2f"),
                      _fmt(reg.get("rmse"), ",.2f"), str(snap["revision"]))
    return table


_SHORT = {"concept_drift": "concept", "data_drift": "data", "prediction_drift": "prediction",
          "multivariate_drift": "joint", "memory_leak": "leak", "gpu_saturation": "gpu",
          "page_hinkley": "ph", "chi_squared": "chi2", "mann_whitney": "mw", "domain_classifier": "auc",
          "half_space_trees": "hst", "theil_sen": "trend"}


def render_signals(recent: list[Mapping[str, Any]]) -> object:
    """The newest signals (drift, anomalies, operational conditions), newest last; fits 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title="recent signals", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col in ("time", "signal", "model@version", "subject", "state", "score", "p"):
        table.add_column(col, justify="right" if col in ("score", "p") else "left", no_wrap=True)
    for s in recent:
        when = time.strftime("%H:%M:%S", time.gmtime(s["detected_at_ms"] / 1000))
        subject = s.get("feature") or ",".join(str(v) for v in (s.get("labels") or {}).values())
        rank = (s.get("evidence") or {}).get("rank")
        if rank:
            subject = f"#{rank} {subject}"
        kind, det = _SHORT.get(s["kind"], s["kind"]), _SHORT.get(s["detector"], s["detector"])
        table.add_row(when, f"{kind}/{det}", f"{s['model']}@{s.get('model_version') or '*'}", subject[:16],
                      "active" if s["active"] else "cleared", _fmt(s["score"], ".3g"),
                      _fmt(s.get("p_value"), ".0e"))
    if not recent:
        table.caption = "none yet (drift tests need a reference: a profile, or a version's first events)"
    return table
