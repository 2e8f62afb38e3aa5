"""Scenario report: which alert caught which incident and how fast, which alerts were false. Pure.

Inputs are the scenario's incidents (the ground truth: kind, model, start,
duration), the alert events read back from the alerts topic with the time
each arrived, and the runner's one-second samples. Nothing here touches
Kafka or the clock, so the matching rules are unit-tested on their own
(``tests/unit/loadtest/test_scenario_report.py``).

Matching. Alert events are first reduced to *firings*: one per alert
episode (``fingerprint`` and ``starts_at_ms``), at the arrival of its first
``firing`` event; later events of the episode are repeats. A firing that
carries ``evidence.muted_by`` (inhibited, or silenced) is *muted*: notifiers
skip it, so it neither detects an incident nor counts as a false alert; it
is counted and listed on its own. Each other firing is attributed to an
incident of its model when it arrived at or after the incident's start and
before ``end + grace_s`` and

* its rule (and labels) is one that *detects* the incident's kind
  (:data:`DETECTS`); the incident's first such firing is its detection, and time-to-alert is that
  firing's arrival minus the incident's start; or else
* its rule is a known *side effect* of the incident (:data:`SIDE_EFFECTS`)
  and it arrived while the incident lasted or within ``side_grace_s`` (30 s)
  after: an alert the incident really causes that is not the one meant to
  catch it (a leaking process also looks anomalous to the telemetry anomaly
  detector). Side effects are listed per incident, not counted as false.

Every other firing is a false alert. An incident without a detection is
missed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.sim.scenario import Incident

__all__ = [
    "DETECTS",
    "SIDE_EFFECTS",
    "Alert",
    "Analysis",
    "IncidentResult",
    "RuleMatch",
    "Sample",
    "analyse",
    "firings",
    "report_dict",
    "summarise_samples",
    "timeline_inputs",
]

@dataclass(frozen=True, slots=True)
class RuleMatch:
    """An alert rule, optionally narrowed by labels: ``labels`` must be equal, ``present`` must be set.

    The ``anomaly`` rule covers two detectors: serving anomalies (latency and
    errors of a model version; label ``subject=serving``) and telemetry
    anomalies of a host (label ``host``); an incident is caught by the one that
    watches what it breaks.
    """

    rule: str
    labels: Mapping[str, str] = field(default_factory=dict)
    present: tuple[str, ...] = ()

    def matches(self, alert: Alert) -> bool:
        return (alert.rule == self.rule and all(alert.labels.get(k) == v for k, v in self.labels.items())
                and all(k in alert.labels for k in self.present))

    def __str__(self) -> str:
        narrow = [f"{k}={v}" for k, v in self.labels.items()] + list(self.present)
        return f"{self.rule}[{','.join(narrow)}]" if narrow else self.rule


SERVING_ANOMALY = RuleMatch("anomaly", {"subject": "serving"})
HOST_ANOMALY = RuleMatch("anomaly", present=("host",))

#: Alert rules (the default rule names) that detect each incident kind.
DETECTS: Mapping[str, tuple[RuleMatch, ...]] = {
    "feature_drift_abrupt": (RuleMatch("drift"),),
    "feature_drift_gradual": (RuleMatch("drift"),),
    "concept_drift": (RuleMatch("concept_drift"), RuleMatch("accuracy_low")),
    "latency_spike": (RuleMatch("serving_latency_p99"), SERVING_ANOMALY),
    "error_burst": (RuleMatch("serving_error_rate"), SERVING_ANOMALY),
    "memory_leak": (RuleMatch("memory_leak"),),
    "gpu_saturation": (RuleMatch("gpu_saturation"),),
    "silence": (RuleMatch("silence"),),
    "malformed_flood": (RuleMatch("invalid_input"),),
}
#: Alerts an incident genuinely causes besides its detection. Feature drift moves the model's score
#: (labels follow the score, so accuracy moves with it, and ADWIN reports changes either way); a
#: leaking process's RSS and a saturated GPU are also features of the telemetry anomaly detector.
SIDE_EFFECTS: Mapping[str, tuple[RuleMatch, ...]] = {
    "feature_drift_abrupt": (RuleMatch("concept_drift"), RuleMatch("accuracy_low")),
    "feature_drift_gradual": (RuleMatch("concept_drift"), RuleMatch("accuracy_low")),
    "memory_leak": (HOST_ANOMALY,),
    "gpu_saturation": (HOST_ANOMALY,),
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event as the runner received it; times in seconds since the run's start."""

    arrival_s: float
    status: str
    rule: str
    model: str
    fingerprint: str
    starts_at_s: float
    labels: Mapping[str, str] = field(default_factory=dict)
    muted_by: tuple[str, ...] = ()
    summary: str = ""
    severity: str = ""

    @classmethod
    def from_event(cls, event: Mapping[str, Any], arrival: float, t0: float) -> Alert:
        """From a ``driftline.alert/v1`` event that arrived at ``arrival`` (epoch s); ``t0`` is the start."""
        evidence = event.get("evidence") or {}
        muted = evidence.get("muted_by") or []
        return cls(
            arrival_s=arrival - t0,
            status=str(event.get("status", "")),
            rule=str(event.get("signal", "")),
            model=str(event.get("model", "")),
            fingerprint=str(event.get("fingerprint", "")),
            starts_at_s=float(event.get("starts_at_ms", 0)) / 1000.0 - t0,
            labels={str(k): str(v) for k, v in (event.get("labels") or {}).items()},
            muted_by=tuple(str(m) for m in muted) if isinstance(muted, list) else (str(muted),),
            summary=str((event.get("annotations") or {}).get("summary", "")),
            severity=str(event.get("severity", "")),
        )

    def brief(self) -> dict[str, Any]:
        """The JSON form of the report."""
        labels = {k: v for k, v in self.labels.items() if k not in ("alertname", "model")}
        out: dict[str, Any] = {
            "rule": self.rule, "model": self.model, "arrival_s": round(self.arrival_s, 2),
            "starts_at_s": round(self.starts_at_s, 2), "severity": self.severity, "labels": labels,
            "summary": self.summary, "fingerprint": self.fingerprint,
        }
        if self.muted_by:
            out["muted_by"] = list(self.muted_by)
        return out


@dataclass(frozen=True, slots=True)
class IncidentResult:
    """What happened to one incident: its detection (if any) and the other alerts it explains."""

    incident: Incident
    detected_by: Alert | None
    also_detected_by: tuple[Alert, ...] = ()
    side_effects: tuple[Alert, ...] = ()
    muted: tuple[Alert, ...] = ()
    resolved_s: float | None = None

    @property
    def time_to_alert_s(self) -> float | None:
        return None if self.detected_by is None else self.detected_by.arrival_s - self.incident.at_s


@dataclass(frozen=True, slots=True)
class Analysis:
    incidents: tuple[IncidentResult, ...]
    false_alerts: tuple[Alert, ...]
    muted_alerts: tuple[Alert, ...]
    firings: int
    resolved: int
    repeats: int

    @property
    def missed(self) -> tuple[IncidentResult, ...]:
        return tuple(r for r in self.incidents if r.detected_by is None)


def firings(alerts: Iterable[Alert]) -> tuple[list[Alert], int]:
    """The first ``firing`` event of each episode (fingerprint, start), in arrival order; and the
    number of repeats (further firing events of an episode already seen)."""
    seen: set[tuple[str, float]] = set()
    out: list[Alert] = []
    repeats = 0
    for a in sorted(alerts, key=lambda a: a.arrival_s):
        if a.status != "firing":
            continue
        key = (a.fingerprint, round(a.starts_at_s, 3))
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        out.append(a)
    return out, repeats


def _fits(inc: Incident, a: Alert, grace_s: float) -> bool:
    return bool(a.model == inc.model and inc.at_s <= a.arrival_s < inc.end_s + grace_s)


def analyse(incidents: Sequence[Incident], alerts: Iterable[Alert], grace_s: float,
            side_grace_s: float = 30.0) -> Analysis:
    """Match alerts to incidents (see the module docstring)."""
    alerts = list(alerts)
    fired, repeats = firings(alerts)
    detections: dict[int, list[Alert]] = {i: [] for i in range(len(incidents))}
    effects: dict[int, list[Alert]] = {i: [] for i in range(len(incidents))}
    muted_of: dict[int, list[Alert]] = {i: [] for i in range(len(incidents))}
    false_alerts: list[Alert] = []
    muted: list[Alert] = []
    order = sorted(range(len(incidents)), key=lambda i: (incidents[i].at_s, i))
    for a in fired:
        fitting = [i for i in order if _fits(incidents[i], a, grace_s)]
        detecting = [i for i in fitting if any(m.matches(a) for m in DETECTS[incidents[i].kind])]
        explaining = [i for i in order if _fits(incidents[i], a, min(grace_s, side_grace_s))
                      and any(m.matches(a) for m in SIDE_EFFECTS.get(incidents[i].kind, ()))]
        if a.muted_by:
            muted.append(a)
            if detecting or explaining:
                muted_of[(detecting or explaining)[0]].append(a)
        elif detecting:
            detections[detecting[0]].append(a)
        elif explaining:
            effects[explaining[0]].append(a)
        else:
            false_alerts.append(a)
    results = []
    for i, inc in enumerate(incidents):
        found = detections[i]
        first = found[0] if found else None
        resolved_s = None
        if first is not None:
            ends = [a.arrival_s for a in alerts if a.status == "resolved"
                    and a.fingerprint == first.fingerprint and a.arrival_s >= first.arrival_s]
            resolved_s = min(ends) if ends else None
        results.append(IncidentResult(inc, first, tuple(found[1:]), tuple(effects[i]), tuple(muted_of[i]),
                                      resolved_s))
    resolved = sum(1 for a in alerts if a.status == "resolved")
    return Analysis(tuple(results), tuple(false_alerts), tuple(muted), len(fired), resolved, repeats)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of the run, ``t_s`` seconds after its start (``None``: could not be read).

    ``lag_records`` is the worker group's consumer lag in Kafka records (a
    record carries a batch of events); :attr:`backlog_events` is the lag in
    events, produced minus processed.
    """

    t_s: float
    produced_events: int
    processed_events: float | None = None
    lag_records: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    load_1m: float | None = None  # the machine's load average: other work competing for the cores

    @property
    def backlog_events(self) -> float | None:
        if self.processed_events is None:
            return None
        return max(0.0, self.produced_events - self.processed_events)


def _rates(samples: Sequence[Sample], attr: str) -> list[tuple[float, float]]:
    """Per-second rate of a cumulative counter between consecutive samples where both are known."""
    out: list[tuple[float, float]] = []
    prev: Sample | None = None
    for s in samples:
        if getattr(s, attr) is None:
            continue
        if prev is not None and s.t_s > prev.t_s:
            out.append((s.t_s, max(0.0, (getattr(s, attr) - getattr(prev, attr)) / (s.t_s - prev.t_s))))
        prev = s
    return out


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": sum(values) / len(values), "max": max(values)}


def summarise_samples(samples: Sequence[Sample], run_s: float | None = None) -> dict[str, Any]:
    """Throughput, lag, worker CPU and RSS over the run.

    The produced and processed rates are totals over the time traffic ran
    (``run_s``, default the span of the samples), so a burst at the end does
    not skew them; peaks come from the per-second rates.
    """
    if not samples:
        return {}
    span = run_s if run_s is not None else samples[-1].t_s - samples[0].t_s
    last = samples[-1]
    processed = [s for s in samples if s.processed_events is not None]
    produced_rate = _rates(samples, "produced_events")
    processed_rate = _rates(samples, "processed_events")
    lags = [float(s.lag_records) for s in samples if s.lag_records is not None]
    backlog = [b for s in samples if (b := s.backlog_events) is not None]
    cpu = [s.cpu_percent for s in samples if s.cpu_percent is not None]
    rss = [float(s.rss_bytes) / 2**20 for s in samples if s.rss_bytes is not None]
    load = [s.load_1m for s in samples if s.load_1m is not None]
    # the worker of a run starts fresh, so its counter is the run's total
    total_processed = processed[-1].processed_events if processed else None
    return {
        "events_produced": last.produced_events,
        "events_processed": total_processed,
        "produced_events_per_s": last.produced_events / span if span > 0 else None,
        "processed_events_per_s": (
            total_processed / span if span > 0 and total_processed is not None else None),
        "produced_events_per_s_peak": max((r for _, r in produced_rate), default=None),
        "processed_events_per_s_peak": max((r for _, r in processed_rate), default=None),
        "lag_records": {**_stats(lags), "final": lags[-1] if lags else None},
        "backlog_events": {**_stats(backlog), "final": backlog[-1] if backlog else None},
        "worker_cpu_percent": _stats(cpu),
        "worker_rss_mib": {**_stats(rss), "final": rss[-1] if rss else None},
        "load_1m": _stats(load),
    }


def _incident_dict(r: IncidentResult) -> dict[str, Any]:
    inc = r.incident
    tta = r.time_to_alert_s
    return {
        "kind": inc.kind, "model": inc.model, "at_s": inc.at_s, "duration_s": inc.duration_s,
        "params": inc.params, "detected": r.detected_by is not None,
        "time_to_alert_s": None if tta is None else round(tta, 2),
        "alert": None if r.detected_by is None else r.detected_by.brief(),
        "resolved_s": None if r.resolved_s is None else round(r.resolved_s, 2),
        "also_detected_by": [a.brief() for a in r.also_detected_by],
        "side_effects": [a.brief() for a in r.side_effects],
        "muted": [a.brief() for a in r.muted],
    }


def report_dict(analysis: Analysis, samples: Sequence[Sample], run_s: float | None = None) -> dict[str, Any]:
    """The analysis and the samples as the JSON report's ``incidents``, ``false_alerts`` ... fields."""
    rates_p = dict(_rates(samples, "produced_events"))
    rates_c = dict(_rates(samples, "processed_events"))
    return {
        "ok": not analysis.missed,
        "incidents": [_incident_dict(r) for r in analysis.incidents],
        "missed": [f"{r.incident.kind} on {r.incident.model} at {r.incident.at_s:g}s"
                   for r in analysis.missed],
        "false_alert_count": len(analysis.false_alerts),
        "false_alerts": [a.brief() for a in analysis.false_alerts],
        "muted_alert_count": len(analysis.muted_alerts),
        "muted_alerts": [a.brief() for a in analysis.muted_alerts],
        "alert_counts": {"firing": analysis.firings, "resolved": analysis.resolved,
                         "repeats": analysis.repeats},
        "summary": summarise_samples(samples, run_s),
        "samples": [
            {"t_s": round(s.t_s, 2), "produced_events": s.produced_events,
             "processed_events": s.processed_events, "produced_per_s": _round(rates_p.get(s.t_s)),
             "processed_per_s": _round(rates_c.get(s.t_s)),
             "lag_records": s.lag_records, "backlog_events": s.backlog_events,
             "cpu_percent": _round(s.cpu_percent), "rss_bytes": s.rss_bytes, "load_1m": s.load_1m}
            for s in samples
        ],
    }


def _round(v: float | None, digits: int = 1) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, digits)


def timeline_inputs(analysis: Analysis, samples: Sequence[Sample]) -> tuple[
        dict[str, list[tuple[float, float]]], list[tuple[float, float, str]], list[tuple[float, str]]]:
    """``series``, ``spans`` and ``markers`` for ``loadtest.timeline.render_timeline``: rates and lag
    over time, one span per incident, one marker per alert firing (false ones marked so)."""
    series = {
        "events/s produced": _rates(samples, "produced_events"),
        "events/s processed": _rates(samples, "processed_events"),
        "lag (records)": [(s.t_s, float(s.lag_records)) for s in samples if s.lag_records is not None],
        "backlog (events)": [(s.t_s, b) for s in samples if (b := s.backlog_events) is not None],
    }
    spans = [(r.incident.at_s, r.incident.end_s, f"{r.incident.kind} {r.incident.model}")
             for r in analysis.incidents]
    markers: list[tuple[float, str]] = []
    for r in analysis.incidents:
        if r.detected_by is not None:
            markers.append((r.detected_by.arrival_s, f"{r.detected_by.rule} {r.detected_by.model}"))
    markers += [(a.arrival_s, f"FALSE {a.rule} {a.model}") for a in analysis.false_alerts]
    return series, spans, sorted(markers)
