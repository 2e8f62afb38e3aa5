"""Prometheus metrics of a worker's pipeline, on an injected registry.

Names follow Prometheus conventions (``_total`` counters, base units,
``driftline_`` namespace). Label values come from closed sets (event kind,
dead-letter reason, topic, partition) so cardinality is bounded.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.events.reasons import Reason

KINDS = ("prediction", "feedback", "telemetry")


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    """The ingest stage's health: what came in, what was rejected, how far behind."""

    records_in: Counter
    bytes_in: Counter
    events_in: Counter
    events_invalid: Counter
    deadletter_records: Counter
    consumer_lag: Gauge
    offset_jumps: Counter
    event_lag_seconds: Gauge
    decode_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PipelineMetrics:
        m = cls(
            records_in=Counter("driftline_records_in", "Kafka records consumed.",
                               ["topic"], registry=registry),
            bytes_in=Counter("driftline_record_bytes_in", "Bytes of Kafka record values consumed.",
                             ["topic"], registry=registry),
            events_in=Counter("driftline_events_in", "Valid events routed onward, by kind.",
                              ["kind"], registry=registry),
            events_invalid=Counter("driftline_events_invalid",
                                   "Records or events rejected at the boundary, by reason.",
                                   ["reason"], registry=registry),
            deadletter_records=Counter("driftline_deadletter_records",
                                       "Records written to the dead-letter topic, by reason.",
                                       ["reason"], registry=registry),
            consumer_lag=Gauge("driftline_consumer_lag_records",
                               "Records between the last processed offset and the high watermark.",
                               ["topic", "partition"], registry=registry),
            offset_jumps=Counter("driftline_input_offset_jumps",
                                 "Input records read out of offset order, by the ingest agent's verdict.",
                                 ["topic", "kind"], registry=registry),
            event_lag_seconds=Gauge("driftline_event_time_lag_seconds",
                                    "Wall clock minus the newest event time processed, by kind.",
                                    ["kind"], registry=registry),
            decode_seconds=Histogram("driftline_record_decode_seconds",
                                     "Time to decode and validate one record.",
                                     registry=registry,
                                     buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1)),
        )
        for kind in KINDS:  # export zeros so dashboards and rate() work from the start
            m.events_in.labels(kind)
        for reason in Reason:
            m.events_invalid.labels(reason.value)
            m.deadletter_records.labels(reason.value)
        # process_start_time_seconds (restarts), CPU, RSS, open fds; a registry that already has
        # them (the global default registry) keeps its own
        with contextlib.suppress(ValueError):
            ProcessCollector(registry=registry)
        return m


WindowKey = tuple[str, str, str]  # model, version, window name

# Gauges read off the newest snapshot of each (model, version, window), overall traffic only.
# (metric name, help, path into the snapshot)
_SNAPSHOT_GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("driftline_window_requests", "Predictions in the last closed window.", ("serving", "count")),
    ("driftline_window_requests_per_second", "Request rate over the last closed window.",
     ("serving", "rate_per_s")),
    ("driftline_window_error_ratio", "Share of predictions with status error.", ("serving", "error_rate")),
    ("driftline_window_label_coverage_ratio", "Share of the window's predictions that have a label.",
     ("labels", "coverage")),
    ("driftline_window_accuracy_ratio", "Accuracy of labelled predictions.",
     ("labels", "classification", "accuracy")),
    ("driftline_window_f1_macro_ratio", "Macro-averaged F1 of labelled predictions.",
     ("labels", "classification", "macro", "f1")),
    ("driftline_window_log_loss", "Log-loss of labelled predictions with probabilities.",
     ("labels", "classification", "log_loss")),
    ("driftline_window_mae", "Mean absolute error (regression), in the label's unit.",
     ("labels", "regression", "mae")),
    ("driftline_window_rmse", "Root mean squared error (regression), in the label's unit.",
     ("labels", "regression", "rmse")),
    ("driftline_window_late_events", "Events that arrived after the window closed.", ("late_events",)),
    ("driftline_window_revision", "Revision of the newest snapshot (late labels raise it).", ("revision",)),
)
_QUANTILE_GAUGES = (
    ("driftline_window_latency_seconds", "Serving latency quantiles of the last closed window.",
     ("serving", "latency_ms")),
    ("driftline_window_label_delay_seconds", "Label delay quantiles of the last closed window.",
     ("labels", "delay_ms")),
)
# A gauge may not carry a "quantile" label (that is reserved for summaries): "stat" names the statistic.
_STATS = ("p50", "p90", "p95", "p99", "max")


def _dig(snap: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = snap
    for part in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


class SnapshotCollector(Collector):
    """Exposes the newest closed-window snapshot per (model, version, window) as gauges.

    Cardinality is bounded: at most ``max_series`` (model, version, window)
    triples (the least recently updated are dropped), segments are not
    exported (they are on the metrics topic), and feature gauges carry at
    most ``max_features`` feature names per model version.
    """

    def __init__(self, max_series: int = 300, max_features: int = 50) -> None:
        self.max_series = max_series
        self.max_features = max_features
        self._latest: dict[WindowKey, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, snap: Mapping[str, Any]) -> None:
        if snap.get("segment"):
            return
        key = (str(snap["model"]), str(snap["model_version"]), str(snap["window"]))
        with self._lock:
            old = self._latest.pop(key, None)
            if old is not None and int(old["window_start_ms"]) > int(snap["window_start_ms"]):
                snap = old  # a revision of an older window does not replace the newest one
            self._latest[key] = snap
            while len(self._latest) > self.max_series:
                del self._latest[next(iter(self._latest))]

    def latest(self) -> list[tuple[WindowKey, Mapping[str, Any]]]:
        """The newest snapshot per (model, version, window), for the live view."""
        with self._lock:
            return list(self._latest.items())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest = self.latest()
        labels = ["model", "version", "window"]
        for name, doc, path in _SNAPSHOT_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=labels)
            for key, snap in latest:
                v = _dig(snap, path)
                if isinstance(v, (int, float)):
                    g.add_metric(list(key), float(v))
            yield g
        for name, doc, path in _QUANTILE_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=[*labels, "stat"])
            for key, snap in latest:
                summary = _dig(snap, path) or {}
                for stat in _STATS:
                    v = summary.get(stat)
                    if isinstance(v, (int, float)):
                        g.add_metric([*key, stat], float(v) / 1000.0)
            yield g
        missing = GaugeMetricFamily("driftline_window_feature_missing_ratio",
                                    "Share of sampled events missing the feature.",
                                    labels=[*labels, "feature"])
        mean = GaugeMetricFamily("driftline_window_feature_mean", "Mean of a numeric feature.",
                                 labels=[*labels, "feature"])
        for key, snap in latest:
            feats = snap.get("features") or {}
            for fname in sorted(feats)[: self.max_features]:
                st = feats[fname]
                if isinstance(st.get("missing_rate"), (int, float)):
                    missing.add_metric([*key, fname], float(st["missing_rate"]))
                if st.get("kind") == "numeric" and isinstance(st.get("mean"), (int, float)):
                    mean.add_metric([*key, fname], float(st["mean"]))
        yield missing
        yield mean


@dataclass(frozen=True, slots=True)
class MetricsExporter:
    """The metrics stage's own health plus the snapshot gauges."""

    snapshots: Counter
    state_writes: Counter
    restored_cells: Counter
    late_expired: Gauge
    join_pending: Gauge
    join_events: Gauge
    open_panes: Gauge
    closed_windows: Gauge
    collector: SnapshotCollector

    @classmethod
    def create(cls, registry: CollectorRegistry, max_series: int = 300) -> MetricsExporter:
        collector = SnapshotCollector(max_series=max_series)
        registry.register(collector)
        return cls(
            snapshots=Counter("driftline_metric_snapshots", "Window snapshots emitted, by reason.",
                              ["reason"], registry=registry),
            state_writes=Counter("driftline_state_writes", "Cells written to the state changelog.",
                                 registry=registry),
            restored_cells=Counter("driftline_state_restored_cells", "Cells read back at start-up.",
                                   registry=registry),
            late_expired=Gauge("driftline_late_events_expired",
                               "Events too late for any window still held, per partition.",
                               ["partition"], registry=registry),
            join_pending=Gauge("driftline_label_join_pending",
                               "Predictions waiting for their label, per partition.",
                               ["partition"], registry=registry),
            join_events=Gauge("driftline_label_join_outcomes",
                              "Label join outcomes since start, per partition and outcome.",
                              ["partition", "outcome"], registry=registry),
            open_panes=Gauge("driftline_state_open_panes", "Open panes held, per partition.",
                             ["partition"], registry=registry),
            closed_windows=Gauge("driftline_state_closed_windows",
                                 "Closed windows held for label revisions, per partition.",
                                 ["partition"], registry=registry),
            collector=collector,
        )

    def observe(self, snap: Mapping[str, Any]) -> None:
        self.snapshots.labels(str(snap.get("reason"))).inc()
        self.collector.observe(snap)

    def observe_engine(self, eng: Any) -> None:
        p = str(eng.partition)
        models = eng.models.values()
        self.late_expired.labels(p).set(sum(m.late_expired for m in models))
        self.join_pending.labels(p).set(sum(m.join.pending for m in models))
        for outcome in ("matched", "duplicate_labels", "unmatched_expired", "predictions_expired",
                        "predictions_evicted"):
            self.join_events.labels(p, outcome).set(sum(getattr(m.join.counters, outcome) for m in models))
        self.open_panes.labels(p).set(sum(len(s.panes) for m in models for s in m.series.values()))
        self.closed_windows.labels(p).set(sum(len(s.closed) for m in models for s in m.series.values()))


class DetectorCollector(Collector):
    """Latest anomaly score per monitor, read from the live engines at scrape time (bounded)."""

    def __init__(self, max_series: int = 300) -> None:
        self.max_series = max_series
        self.engines: dict[int, Any] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("driftline_anomaly_score",
                              "Latest Half-Space Trees score (0 normal .. 1 anomalous) per subject.",
                              labels=["model", "subject", "name"])
        n = 0
        for eng in list(self.engines.values()):
            for (model, version), mon in list(eng.latency.items()):
                if n < self.max_series:
                    g.add_metric([model, "serving", version], mon.last_score)
                    n += 1
            for (model, host), mon in list(eng.hosts.items()):
                if n < self.max_series:
                    g.add_metric([model, "host", host], mon.last_score)
                    n += 1
        yield g


DRIFT_KINDS = ("data_drift", "prediction_drift")
OTHER_MODEL = "_other"


class BoundedGauge:
    """A labelled gauge holding at most ``max_series`` children; the least recently set are removed."""

    def __init__(self, gauge: Gauge, max_series: int) -> None:
        self.gauge = gauge
        self.max_series = max_series
        self._keys: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    def set(self, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._keys[labels] = None
            self._keys.move_to_end(labels)
            self.gauge.labels(*labels).set(value)
            while len(self._keys) > self.max_series:
                old, _ = self._keys.popitem(last=False)
                self.gauge.remove(*old)


@dataclass(frozen=True, slots=True)
class DetectionExporter:
    """The detection stage's health and output counts."""

    signals: Counter
    errors: Counter
    state_writes: Counter
    restored_cells: Counter
    profiles_built: Counter
    profiles_invalid: Counter
    monitors: Gauge
    collector: DetectorCollector
    drift_score: BoundedGauge
    alerts: Counter
    alert_models: set[str]
    max_alert_models: int = 300

    @classmethod
    def create(cls, registry: CollectorRegistry, max_drift_series: int = 1000,
               max_alert_models: int = 300) -> DetectionExporter:
        collector = DetectorCollector()
        registry.register(collector)
        return cls(
            signals=Counter("driftline_signals", "Signals emitted, by kind, detector and state.",
                            ["kind", "detector", "active"], registry=registry),
            errors=Counter("driftline_detection_errors",
                           "Monitor steps that raised and were skipped (the record was still processed).",
                           ["monitor"], registry=registry),
            state_writes=Counter("driftline_detection_state_writes",
                                 "Detector state cells written to the state changelog.", registry=registry),
            restored_cells=Counter("driftline_detection_restored_cells",
                                   "Detector state cells read back at start-up.", registry=registry),
            profiles_built=Counter("driftline_profiles_built",
                                   "Reference profiles built from a version's first events.",
                                   registry=registry),
            profiles_invalid=Counter("driftline_profiles_invalid",
                                     "Records of the profiles topic that were not valid profiles (ignored).",
                                     registry=registry),
            monitors=Gauge("driftline_detection_monitors", "Monitors held, per partition and kind.",
                           ["partition", "kind"], registry=registry),
            collector=collector,
            drift_score=BoundedGauge(
                Gauge("driftline_drift_score",
                      "Score of the newest data or prediction drift signal per feature and detector "
                      "(the detector's own scale; absent until the feature's first signal).",
                      ["model", "version", "feature", "detector"], registry=registry),
                max_drift_series,
            ),
            alerts=Counter("driftline_alerts", "Alert events sent to the alerts topic (firing, resolved).",
                           ["model", "alertname", "status", "severity"], registry=registry),
            alert_models=set(),
            max_alert_models=max_alert_models,
        )

    def observe_signal(self, sig: Mapping[str, Any]) -> None:
        self.signals.labels(str(sig["kind"]), str(sig["detector"]), str(sig["active"]).lower()).inc()
        if sig["kind"] in DRIFT_KINDS and sig.get("feature") is not None:
            labels = (str(sig["model"]), str(sig.get("model_version") or ""), str(sig["feature"]),
                      str(sig["detector"]))
            self.drift_score.set(labels, float(sig.get("score") or 0.0))

    def observe_alert(self, event: Mapping[str, Any]) -> None:
        """One alert event (``AlertingStage(on_event=...)``); models past the bound count as ``_other``."""
        model = str(event.get("model") or "")
        if model not in self.alert_models:
            if len(self.alert_models) >= self.max_alert_models:
                model = OTHER_MODEL
            else:
                self.alert_models.add(model)
        self.alerts.labels(model, str(event.get("signal")), str(event.get("status")),
                           str(event.get("severity"))).inc()

    def observe_engine(self, eng: Any) -> None:
        p = str(eng.partition)
        self.collector.engines[eng.partition] = eng
        for kind in ("concept", "data", "latency", "hosts"):
            self.monitors.labels(p, kind).set(len(getattr(eng, kind)))
