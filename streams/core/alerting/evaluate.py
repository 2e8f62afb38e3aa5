"""Rule evaluation: metrics snapshots and signals in, per-series observations out.

A *series* is one alert's subject: a rule and its labels (``alertname``,
``model``, ``model_version`` when known, ``metric`` or ``kind``, and for
signals the subject labels ``feature``, ``host``, ``gpu``, ``stream``,
``subject``). :class:`RuleEvaluator` keeps, per series, whether its condition
holds and answers every relevant input with an :class:`Observation` of that
state; :class:`~streams.core.alerting.lifecycle.Lifecycle` turns observations
into alert events.

Metric series
    One per (rule, model, version). A snapshot counts when its window is the
    rule's, its segment is null, the value is a number and the count behind it
    reaches ``min_count``; and only if it is newer than the last one that
    counted, by (``window_start_ms``, ``revision``): a late revision of an
    older window, or a replayed snapshot, does not overrule a newer window.
    Hysteresis: for ``op ">"`` the condition starts when ``value > trigger``,
    ends when ``value < clear``, and otherwise (``clear <= value <= trigger``)
    keeps its previous state, so a value oscillating between the two levels
    neither fires nor resolves again. A series with no counting snapshot for
    ``hold_ms`` becomes inactive (:meth:`RuleEvaluator.expire`); its record is
    kept, inactive, for a day (the default label horizon), so that revisions
    of its old windows stay ignored, then forgotten.
Signal series
    A signal matches a rule by kind, model glob, and, when ``active=true``,
    detector and ``min_score``. ``active=true`` makes the series active;
    ``active=false`` clears it, whatever the detector. Point detections
    (:data:`~streams.core.alerting.rules.POINT_KINDS`) stay active ``hold_ms``
    after the last one, then :meth:`RuleEvaluator.expire` clears them.
    Signals are deduplicated by ``signal_id`` (the last 10 000), so a worker
    replay does not refresh a hold or repeat a clear.

Time is ``now_ms``, an argument, never the wall clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from streams.core.alerting.rules import POINT_KINDS, Rule

__all__ = ["SUBJECT_LABELS", "Observation", "RuleEvaluator", "clean_evidence", "metric_value"]

#: Signal labels copied into the alert's labels: they name the signal's subject (a host, a GPU, a
#: stream), so two subjects are two alerts. Other signal labels are not identity and are dropped.
SUBJECT_LABELS = ("host", "gpu", "stream", "subject")
FORGET_MS = 24 * 3_600_000
MAX_SEEN_SIGNALS = 10_000
_STATE_VERSION = 1
_MAX_TEXT = 1024
_MAX_LIST = 64

EvidenceValue = float | int | str | bool | list[float | int | str] | None


@dataclass(frozen=True, slots=True)
class Observation:
    """The state of one series after an input: the condition holds (``active``) or not.

    Attributes
    ----------
    rule
        The rule that decided.
    labels
        The alert's labels: its identity (``fingerprint``) and routing.
    active
        Whether the condition holds now.
    value, threshold
        The measured number and the level it was compared with (``clear`` for an inactive metric
        observation); ``None`` where unknown (an expiry).
    window_ms
        Length of the data window behind ``value``.
    at_ms
        ``now_ms`` of the observation.
    evidence
        Flat JSON data backing it, fit for ``AlertV1.evidence``.
    """

    rule: Rule
    labels: Mapping[str, str]
    active: bool
    value: float | None
    threshold: float | None
    window_ms: int
    at_ms: int
    evidence: Mapping[str, EvidenceValue] = field(default_factory=dict)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _evidence_value(v: Any) -> EvidenceValue:
    if v is None or isinstance(v, bool | str):
        return v[:_MAX_TEXT] if isinstance(v, str) else v
    if isinstance(v, int) and abs(v) < 2**63:
        return v
    if isinstance(v, int | float):
        return _finite(v)
    if isinstance(v, list | tuple):
        items = [_evidence_value(x) for x in v[:_MAX_LIST]]
        return [x for x in items if isinstance(x, int | float | str) and not isinstance(x, bool)]
    return str(v)[:_MAX_TEXT]


def clean_evidence(evidence: Any) -> dict[str, EvidenceValue]:
    """Evidence clipped to what ``AlertV1.evidence`` accepts (non-finite numbers become ``None``).

    >>> clean_evidence({"a": float("nan"), "b": [1, "x", None, [2]], "": 1, "c": {"d": 1}})
    {'a': None, 'b': [1, 'x'], 'c': "{'d': 1}"}
    """
    if not isinstance(evidence, Mapping):
        return {}
    return {str(k)[:128]: _evidence_value(v) for k, v in evidence.items() if str(k)}


def metric_value(snap: Mapping[str, Any], path: str) -> float | None:
    """The number at a dotted ``path`` of a snapshot; ``None`` if absent, null or not a finite number.

    ``features.<name>.<stat>`` takes the feature name whole, dots included.

    >>> snap = {"serving": {"latency_ms": {"p99": 812.0}}, "features": {"a.b": {"mean": 2}}}
    >>> metric_value(snap, "serving.latency_ms.p99"), metric_value(snap, "features.a.b.mean")
    (812.0, 2.0)
    >>> metric_value(snap, "labels.classification.accuracy") is None
    True
    """
    if path.startswith("features."):
        name, _, stat = path[len("features.") :].rpartition(".")
        keys = ["features", name, stat]
    else:
        keys = path.split(".")
    node: Any = snap
    for k in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(k)
    return _finite(node)


def _count_path(path: str) -> str:
    """The count a metric rule's ``min_count`` is compared with."""
    if path.startswith("labels."):
        return "labels.labelled"
    if path.startswith("features."):
        return path.rpartition(".")[0] + ".count"
    if path.startswith("predictions."):
        return "predictions.count"
    return "serving.count"


@dataclass(slots=True)
class _Series:
    rule: str
    labels: dict[str, str]
    active: bool
    last_ms: int  # now_ms of the last verdict that counted
    expires: bool  # whether hold_ms ends it (metric series, point detections)
    threshold: float | None
    window_ms: int
    start_ms: int | None = None  # metric: window_start_ms of the last snapshot that counted
    revision: int = -1  # metric: its revision

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "labels": self.labels,
            "active": self.active,
            "last_ms": self.last_ms,
            "expires": self.expires,
            "threshold": self.threshold,
            "window_ms": self.window_ms,
            "start_ms": self.start_ms,
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> _Series:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be an object")
        try:
            labels = raw["labels"]
            if not isinstance(labels, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise ValueError(f"{where}.labels: must map strings to strings")
            threshold = raw["threshold"]
            start = raw["start_ms"]
            return cls(
                rule=str(raw["rule"]),
                labels=dict(labels),
                active=bool(raw["active"]),
                last_ms=int(raw["last_ms"]),
                expires=bool(raw["expires"]),
                threshold=None if threshold is None else float(threshold),
                window_ms=int(raw["window_ms"]),
                start_ms=None if start is None else int(start),
                revision=int(raw["revision"]),
            )
        except KeyError as e:
            raise ValueError(f"{where}.{e.args[0]}: missing field") from None
        except (TypeError, ValueError) as e:
            if str(e).startswith(where):
                raise
            raise ValueError(f"{where}: {e}") from None


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class RuleEvaluator:
    """Evaluate rules over snapshots and signals; per-series state (see the module docstring).

    Parameters
    ----------
    rules
        The rules; names must be unique (:func:`~streams.core.alerting.rules.parse_rules`
        guarantees it).

    Examples
    --------
    >>> from streams.core.alerting.rules import Rule
    >>> r = Rule("errors", "metric", metric="serving.error_rate", window="5m/1m", op=">",
    ...          trigger=0.05, clear=0.03)
    >>> ev = RuleEvaluator([r])
    >>> def snap(rate, start):
    ...     return {"model": "m", "model_version": "v1", "segment": None, "window": "5m/1m",
    ...             "window_start_ms": start, "window_end_ms": start + 300_000, "revision": 0,
    ...             "serving": {"count": 500, "error_rate": rate}}
    >>> [o.active for t, rate in enumerate([0.01, 0.06, 0.04, 0.04, 0.02])
    ...  for o in ev.on_snapshot(snap(rate, t * 60_000), now_ms=t * 60_000)]
    [False, True, True, True, False]
    >>> ev.on_snapshot(snap(0.5, 0), now_ms=300_000)  # an older window: ignored
    []
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rules: names must be unique")
        self._by_name = {r.name: r for r in self.rules}
        self._metric = [r for r in self.rules if r.source == "metric"]
        self._signal = [r for r in self.rules if r.source == "signal"]
        self._series: dict[tuple[tuple[str, str], ...], _Series] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Number of tracked series."""
        return len(self._series)

    # -- metric snapshots -----------------------------------------------------------------------

    def on_snapshot(self, snap: Mapping[str, Any], now_ms: int) -> list[Observation]:
        """Observations of every metric rule the snapshot counts for (see the module docstring)."""
        model = snap.get("model")
        if not isinstance(model, str) or snap.get("segment") is not None:
            return []
        version = snap.get("model_version")
        start, end, revision = snap.get("window_start_ms"), snap.get("window_end_ms"), snap.get("revision", 0)
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(revision, int)):
            return []
        out: list[Observation] = []
        for rule in self._metric:
            assert rule.metric is not None and rule.trigger is not None and rule.clear is not None
            if snap.get("window") != rule.window or not any(fnmatchcase(model, g) for g in rule.models):
                continue
            value = metric_value(snap, rule.metric)
            count = metric_value(snap, _count_path(rule.metric))
            if value is None or (rule.min_count and (count is None or count < rule.min_count)):
                continue
            labels = {"alertname": rule.name, "model": model, "metric": rule.metric}
            if isinstance(version, str):
                labels["model_version"] = version
            labels.update(rule.labels)
            key = _key(labels)
            s = self._series.get(key)
            if s is not None and s.start_ms is not None and (start, revision) <= (s.start_ms, s.revision):
                continue  # an older window, or the same snapshot again
            was = s is not None and s.active
            if rule.op == ">":
                active = True if value > rule.trigger else False if value < rule.clear else was
            else:
                active = True if value < rule.trigger else False if value > rule.clear else was
            threshold = rule.trigger if active else rule.clear
            if s is None:
                s = self._series[key] = _Series(
                    rule.name, labels, active, now_ms, True, threshold, end - start
                )
            s.active, s.last_ms, s.threshold, s.window_ms = active, now_ms, threshold, end - start
            s.start_ms, s.revision = start, revision
            evidence: dict[str, EvidenceValue] = {
                "metric": rule.metric,
                "op": rule.op,
                "trigger": rule.trigger,
                "clear": rule.clear,
                "window": rule.window,
                "window_start_ms": start,
                "window_end_ms": end,
                "revision": revision,
                "count": count,
            }
            out.append(
                Observation(rule, dict(labels), active, value, threshold, end - start, now_ms, evidence)
            )
        return out

    # -- signals --------------------------------------------------------------------------------

    def on_signal(self, sig: Mapping[str, Any], now_ms: int) -> list[Observation]:
        """Observations of every signal rule the signal matches; ``[]`` for a repeated ``signal_id``."""
        kind, model, active = sig.get("kind"), sig.get("model"), sig.get("active")
        if not isinstance(kind, str) or not isinstance(model, str) or not isinstance(active, bool):
            return []
        sid = sig.get("signal_id")
        if isinstance(sid, str):
            if sid in self._seen:
                return []
            self._seen[sid] = None
            if len(self._seen) > MAX_SEEN_SIGNALS:
                self._seen.popitem(last=False)
        score = _finite(sig.get("score"))
        base: dict[str, str] = {"model": model, "kind": kind}
        version, feature = sig.get("model_version"), sig.get("feature")
        if isinstance(version, str):
            base["model_version"] = version
        if isinstance(feature, str):
            base["feature"] = feature
        sig_labels = sig.get("labels")
        if isinstance(sig_labels, Mapping):
            for name in SUBJECT_LABELS:
                v = sig_labels.get(name)
                if isinstance(v, str):
                    base[name] = v[:_MAX_TEXT]
        start, end = sig.get("window_start_ms"), sig.get("window_end_ms")
        window_ms = max(end - start, 0) if isinstance(start, int) and isinstance(end, int) else 0
        evidence = clean_evidence(sig.get("evidence"))
        for k in (
            "signal_id",
            "detector",
            "score",
            "p_value",
            "detected_at_ms",
            "since_ms",
            "window_start_ms",
            "window_end_ms",
        ):
            if k in sig:
                evidence[k] = _evidence_value(sig[k])
        out: list[Observation] = []
        for rule in self._signal:
            if kind not in rule.kinds or not any(fnmatchcase(model, g) for g in rule.models):
                continue
            if active and rule.detectors and sig.get("detector") not in rule.detectors:
                continue
            if active and rule.min_score is not None and (score is None or score < rule.min_score):
                continue
            labels = {"alertname": rule.name, **base, **rule.labels}
            key = _key(labels)
            threshold = _finite(sig.get("threshold"))
            if threshold is None:
                threshold = rule.min_score
            if active:
                s = self._series.get(key)
                if s is None:
                    s = self._series[key] = _Series(
                        rule.name, labels, True, now_ms, False, threshold, window_ms
                    )
                s.active, s.last_ms, s.threshold, s.window_ms = True, now_ms, threshold, window_ms
                s.expires = kind in POINT_KINDS
            else:
                self._series.pop(key, None)
            out.append(
                Observation(rule, dict(labels), active, score, threshold, window_ms, now_ms, dict(evidence))
            )
        return out

    # -- time -----------------------------------------------------------------------------------

    def expire(self, now_ms: int) -> list[Observation]:
        """Inactive observations of the series whose verdict is older than their rule's ``hold_ms``.

        Call it on a timer (every minute or so), also when no input arrives.
        """
        out: list[Observation] = []
        for key in sorted(self._series):
            s = self._series[key]
            rule = self._by_name.get(s.rule)
            if rule is None:  # the rule was removed from the configuration
                del self._series[key]
                continue
            if s.expires and s.active and now_ms - s.last_ms >= rule.hold:
                s.active = False
                evidence: dict[str, EvidenceValue] = {
                    "expired": True,
                    "last_ms": s.last_ms,
                    "hold_ms": rule.hold,
                }
                out.append(
                    Observation(rule, dict(s.labels), False, None, s.threshold, s.window_ms, now_ms, evidence)
                )
            if not s.active and (rule.source == "signal" or now_ms - s.last_ms >= max(rule.hold, FORGET_MS)):
                del self._series[key]
        return out

    # -- state ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON state: every series and the recent signal ids."""
        return {
            "v": _STATE_VERSION,
            "series": [s.to_json() for s in self._series.values()],
            "seen_signal_ids": list(self._seen),
        }

    @classmethod
    def from_json(cls, raw: Any, rules: Iterable[Rule]) -> RuleEvaluator:
        """Restore from :meth:`to_json`; series of rules no longer configured are dropped."""
        ev = cls(rules)
        if not isinstance(raw, Mapping):
            raise ValueError(f"evaluator state: must be an object, got {type(raw).__name__}")
        if raw.get("v") != _STATE_VERSION:
            raise ValueError(f"evaluator state.v: expected {_STATE_VERSION}, got {raw.get('v')!r}")
        series, seen = raw.get("series"), raw.get("seen_signal_ids")
        if not isinstance(series, list):
            raise ValueError("evaluator state.series: must be a list")
        if not isinstance(seen, list) or not all(isinstance(x, str) for x in seen):
            raise ValueError("evaluator state.seen_signal_ids: must be a list of strings")
        for i, item in enumerate(series):
            s = _Series.from_json(item, f"evaluator state.series[{i}]")
            if s.rule in ev._by_name:
                ev._series[_key(s.labels)] = s
        ev._seen = OrderedDict.fromkeys(seen[-MAX_SEEN_SIGNALS:])
        return ev
