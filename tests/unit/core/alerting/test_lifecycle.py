"""Tests of the alerting pipeline: RuleEvaluator observations into Lifecycle events.

Scenarios are scripts of steps run through :class:`Harness` (evaluator, then
lifecycle, then a tick of both), with the clock as an argument. Every event
any test produces is checked against the contract twice: decoded as
``AlertV1`` by msgspec and validated against ``schemas/alert.v1.json``.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.core.alerting.evaluate import Observation, RuleEvaluator
from streams.core.alerting.inhibit import Inhibitor
from streams.core.alerting.lifecycle import AlertStatus, Lifecycle, fingerprint, group_key
from streams.core.alerting.rules import DEFAULT_RULES, Rule
from streams.core.alerting.silences import SilenceSet
from streams.events.models import AlertV1

ROOT = Path(__file__).resolve().parents[4]
VALIDATOR = Draft202012Validator(json.loads((ROOT / "schemas" / "alert.v1.json").read_text()))
MIN = 60_000
HOUR = 60 * MIN


_VALIDATED: set[bytes] = set()  # jsonschema takes about 2 ms an event: each distinct event once


def check_event(ev: dict[str, Any]) -> dict[str, Any]:
    """The event as the worker would write it decodes as AlertV1 and validates against the schema."""
    raw = orjson.dumps(ev)
    decoded = msgspec.json.decode(raw, type=AlertV1)
    assert decoded.fingerprint == ev["fingerprint"] and decoded.status == ev["status"]
    assert fingerprint(ev["labels"]) == ev["fingerprint"]
    if raw not in _VALIDATED:
        VALIDATOR.validate(orjson.loads(raw))
        _VALIDATED.add(raw)
    return ev


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *head, last = path.split(".")
    for k in head:
        doc = doc.setdefault(k, {})
    doc[last] = value


def snap(
    start_ms: int,
    values: dict[str, Any],
    *,
    model: str = "m",
    version: str = "v1",
    window: str = "5m/1m",
    size_ms: int = 5 * MIN,
    count: int = 1000,
    labelled: int = 1000,
    revision: int = 0,
    segment: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "driftline.metrics/v1",
        "model": model,
        "model_version": version,
        "segment": segment,
        "window": window,
        "window_start_ms": start_ms,
        "window_end_ms": start_ms + size_ms,
        "revision": revision,
        "serving": {"count": count},
        "labels": {"labelled": labelled},
    }
    for path, v in values.items():
        set_path(doc, path, v)
    return doc


_ids = itertools.count(1)


def sig(
    kind: str,
    active: bool,
    at_ms: int,
    *,
    model: str = "m",
    version: str | None = "v1",
    feature: str | None = None,
    score: float = 0.3,
    threshold: float | None = 0.1,
    detector: str = "ks",
    labels: dict[str, str] | None = None,
    evidence: dict[str, Any] | None = None,
    signal_id: str | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "schema": "driftline.signal/v1",
        "signal_id": signal_id or f"{next(_ids):032x}",
        "kind": kind,
        "detector": detector,
        "model": model,
        "active": active,
        "score": score,
        "threshold": threshold,
        "p_value": 0.001,
        "window_start_ms": max(at_ms - MIN, 0),
        "window_end_ms": at_ms,
        "detected_at_ms": at_ms,
    }
    if version is not None:
        s["model_version"] = version
    if feature is not None:
        s["feature"] = feature
    if labels:
        s["labels"] = labels
    if evidence:
        s["evidence"] = evidence
    return s


class Harness:
    """Evaluator + lifecycle, as the worker wires them; every event is contract-checked."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...], **kw: Any) -> None:
        self.ev = RuleEvaluator(rules)
        self.lc = Lifecycle(**kw)
        self.events: list[dict[str, Any]] = []

    def _run(self, obs: list[Observation], now_ms: int) -> list[dict[str, Any]]:
        out = [check_event(e) for o in obs for e in self.lc.observe(o, now_ms)]
        self.events.extend(out)
        return out

    def snapshot(self, doc: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        return self._run(self.ev.on_snapshot(doc, now_ms), now_ms)

    def signal(self, doc: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
        return self._run(self.ev.on_signal(doc, now_ms), now_ms)

    def tick(self, now_ms: int) -> list[dict[str, Any]]:
        out = self._run(self.ev.expire(now_ms), now_ms)
        more = [check_event(e) for e in self.lc.tick(now_ms)]
        self.events.extend(more)
        return out + more

    def step(self, step: tuple[Any, ...]) -> list[dict[str, Any]]:
        what, now_ms, *rest = step
        if what == "snap":
            return self.snapshot(rest[0], now_ms)
        if what == "sig":
            return self.signal(rest[0], now_ms)
        return self.tick(now_ms)


def run(rules: list[Rule], script: list[tuple[Any, ...]], **kw: Any) -> list[tuple[int, str, str]]:
    """``(now_ms, status, rule)`` of every event of the script."""
    h = Harness(rules, **kw)
    out: list[tuple[int, str, str]] = []
    for step in script:
        out.extend((step[1], e["status"], e["signal"]) for e in h.step(step))
    return out


def errors_rule(for_ms: int = 0, **kw: Any) -> Rule:
    return Rule(
        "errors",
        "metric",
        metric="serving.error_rate",
        window="5m/1m",
        op=">",
        trigger=0.05,
        clear=0.03,
        min_count=100,
        for_ms=for_ms,
        severity="critical",
        action="rollback",
        **kw,
    )


def rates(values: list[float], *, every_ms: int = MIN, tick_after_ms: int = 30_000) -> list[tuple[Any, ...]]:
    """One 5m/1m snapshot per minute (window start = arrival), each followed by a tick."""
    out: list[tuple[Any, ...]] = []
    for i, r in enumerate(values):
        t = i * every_ms
        out.append(("snap", t, snap(t, {"serving.error_rate": r})))
        out.append(("tick", t + tick_after_ms))
    return out


CONCEPT = Rule("concept", "signal", kinds=("concept_drift",), severity="critical", action="rollback")
SILENCE = Rule("silence", "signal", kinds=("silence",), severity="critical")
ANOMALY_2M = Rule("anomaly", "signal", kinds=("anomaly",), for_ms=2 * MIN)

# (name, rules, script, expected (now_ms, status, rule) of every event)
SCENARIOS: list[tuple[str, list[Rule], list[tuple[Any, ...]], list[tuple[int, str, str]]]] = [
    (
        "for_0_fires_at_once_and_resolves_once",
        [errors_rule()],
        rates([0.01, 0.06, 0.07, 0.02, 0.01]),
        [(MIN, "firing", "errors"), (3 * MIN, "resolved", "errors")],
    ),
    (
        "hysteresis_between_clear_and_trigger_does_not_flap",
        [errors_rule()],
        rates([0.06, 0.04, 0.049, 0.031, 0.05, 0.04, 0.029, 0.04, 0.049, 0.03, 0.051]),
        [(0, "firing", "errors"), (6 * MIN, "resolved", "errors"), (10 * MIN, "firing", "errors")],
    ),
    (
        "for_5m_fires_when_held_5m",
        [errors_rule(for_ms=5 * MIN)],
        rates([0.06] * 8),
        [(5 * MIN, "firing", "errors")],
    ),
    (
        "for_5m_flapping_never_fires",
        [errors_rule(for_ms=5 * MIN)],
        rates([0.06, 0.01] * 15),
        [],
    ),
    (
        "for_5m_pending_dropped_on_clear",
        [errors_rule(for_ms=5 * MIN)],
        rates([0.06, 0.06, 0.06, 0.06, 0.02] + [0.02] * 5),
        [],
    ),
    (
        "for_5m_fires_on_tick_without_new_snapshot",
        [errors_rule(for_ms=5 * MIN)],
        [("snap", 0, snap(0, {"serving.error_rate": 0.2}))] + [("tick", t * 40_000) for t in range(1, 12)],
        [(320_000, "firing", "errors")],
    ),
    (
        "below_min_count_ignored",
        [errors_rule()],
        [("snap", 0, snap(0, {"serving.error_rate": 0.5}, count=99)), ("tick", MIN)],
        [],
    ),
    (
        "repeated_point_detections_one_alert_then_hold_expiry_resolves",
        [CONCEPT],
        [("sig", t * MIN, sig("concept_drift", True, t * MIN, detector="adwin")) for t in range(0, 10, 2)]
        + [("tick", t * MIN) for t in range(10, 60, 5)],
        [(0, "firing", "concept"), (40 * MIN, "resolved", "concept")],
    ),
    (
        "condition_held_until_cleared",
        [SILENCE],
        [("sig", 0, sig("silence", True, 0, labels={"stream": "predictions"}))]
        + [("tick", t * HOUR) for t in range(1, 4)]
        + [("sig", 3 * HOUR + 1, sig("silence", False, 3 * HOUR, labels={"stream": "predictions"}))],
        [(0, "firing", "silence"), (3 * HOUR + 1, "resolved", "silence")],
    ),
    (
        "flapping_condition_faster_than_for_never_fires",
        [ANOMALY_2M],
        [
            ("sig", t * 30_000, sig("anomaly", t % 2 == 0, t * 30_000, labels={"host": "h1"}))
            for t in range(40)
        ],
        [],
    ),
    (
        "condition_fires_after_for_and_clear_resolves",
        [ANOMALY_2M],
        [("sig", 0, sig("anomaly", True, 0, labels={"host": "h1"}))]
        + [("tick", t * MIN) for t in range(1, 5)]
        + [("sig", 5 * MIN, sig("anomaly", False, 5 * MIN, labels={"host": "h1"}))],
        [(2 * MIN, "firing", "anomaly"), (5 * MIN, "resolved", "anomaly")],
    ),
]


@pytest.mark.parametrize(("name", "rules", "script", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(
    name: str, rules: list[Rule], script: list[tuple[Any, ...]], expected: list[tuple[int, str, str]]
) -> None:
    assert run(rules, script) == expected


def test_event_fields_firing_and_resolved() -> None:
    h = Harness([errors_rule(labels={"team": "risk"})])
    (fire,) = h.snapshot(snap(0, {"serving.error_rate": 0.08}), now_ms=1_000)
    assert fire["status"] == "firing" and "ends_at_ms" not in fire
    assert fire["severity"] == "critical" and fire["model"] == "m" and fire["model_version"] == "v1"
    assert fire["signal"] == "errors" and fire["value"] == 0.08 and fire["threshold"] == 0.05
    assert fire["window_ms"] == 5 * MIN and fire["starts_at_ms"] == 1_000
    assert fire["labels"] == {
        "alertname": "errors",
        "model": "m",
        "model_version": "v1",
        "metric": "serving.error_rate",
        "team": "risk",
    }
    ev = fire["evidence"]
    assert ev["suggested_action"] == "rollback" and ev["metric"] == "serving.error_rate"
    assert ev["window_start_ms"] == 0 and ev["window_end_ms"] == 5 * MIN and ev["revision"] == 0
    assert ev["count"] == 1000 and ev["trigger"] == 0.05 and ev["clear"] == 0.03
    assert "muted_by" not in ev
    assert fire["annotations"]["summary"].startswith("errors on m v1")
    (res,) = h.snapshot(snap(MIN, {"serving.error_rate": 0.01}), now_ms=61_000)
    assert res["status"] == "resolved" and res["fingerprint"] == fire["fingerprint"]
    assert res["starts_at_ms"] == 1_000 and res["ends_at_ms"] == 61_000
    assert res["value"] == 0.01 and res["threshold"] == 0.03


def test_default_rules_fire_with_rendered_annotations() -> None:
    h = Harness(DEFAULT_RULES)
    fired: dict[str, dict[str, Any]] = {}
    for i in range(8):
        t = i * MIN
        h.snapshot(snap(t, {"serving.latency_ms.p99": 1500.0, "serving.error_rate": 0.2}), t)
        h.tick(t + 1)
    h.snapshot(
        snap(0, {"labels.classification.accuracy": 0.7}, window="1h", size_ms=HOUR, labelled=500), 8 * MIN
    )
    h.tick(20 * MIN)
    h.signal(
        sig(
            "data_drift",
            True,
            20 * MIN,
            feature="amount",
            evidence={"rank": 1, "drifted_features": ["amount"]},
        ),
        20 * MIN,
    )
    h.signal(
        sig("gpu_saturation", True, 21 * MIN, version=None, score=99.0, labels={"host": "h1", "gpu": "0"}),
        21 * MIN,
    )
    h.signal(sig("memory_leak", True, 21 * MIN, version=None, score=1e8, labels={"host": "h1"}), 21 * MIN)
    for e in h.events:
        fired[e["signal"]] = e
    assert set(fired) == {
        "serving_latency_p99",
        "serving_error_rate",
        "accuracy_low",
        "drift",
        "gpu_saturation",
        "memory_leak",
    }
    assert fired["serving_latency_p99"]["annotations"]["summary"] == (
        "m v1: p99 latency 1500 ms (over 1000 ms for 5 min)"
    )
    assert fired["serving_error_rate"]["annotations"]["summary"] == (
        "m v1: 20.0% of requests fail (over 5% for 5 min)"
    )
    assert fired["accuracy_low"]["annotations"]["summary"] == "m v1: accuracy 0.700 below 0.8 on 1h of labels"
    assert fired["drift"]["annotations"]["summary"] == "data_drift of m v1 amount (score 0.3, threshold 0.1)"
    assert fired["gpu_saturation"]["annotations"]["summary"] == "GPU 0 of m on h1 saturated (99%)"
    assert fired["drift"]["evidence"]["suggested_action"] == "retrain"
    assert fired["gpu_saturation"]["evidence"]["suggested_action"] == "scale_out"
    assert fired["accuracy_low"]["severity"] == "critical"


def test_signal_labels_and_evidence() -> None:
    rule = Rule("drift", "signal", kinds=("data_drift",), labels={"team": "risk"})
    h = Harness([rule])
    s = sig(
        "data_drift",
        True,
        2 * MIN,
        feature="amount",
        labels={"host": "h1", "gpu": "2", "stream": "predictions", "run": "ignored"},
        evidence={"rank": 1, "drifted_features": ["amount", "country"], "psi": 0.31},
    )
    (ev,) = h.signal(s, 2 * MIN)
    assert ev["labels"] == {
        "alertname": "drift",
        "model": "m",
        "model_version": "v1",
        "kind": "data_drift",
        "feature": "amount",
        "host": "h1",
        "gpu": "2",
        "stream": "predictions",
        "team": "risk",
    }
    e = ev["evidence"]
    assert e["drifted_features"] == ["amount", "country"] and e["rank"] == 1 and e["psi"] == 0.31
    assert e["signal_id"] == s["signal_id"] and e["p_value"] == 0.001 and e["detector"] == "ks"
    assert ev["value"] == 0.3 and ev["threshold"] == 0.1 and ev["window_ms"] == MIN


def test_one_alert_per_feature_and_grouped_per_model() -> None:
    h = Harness([Rule("drift", "signal", kinds=("data_drift",))])
    evs = [e for f in ("a", "b", "c") for e in h.signal(sig("data_drift", True, 0, feature=f), 0)]
    assert len({e["fingerprint"] for e in evs}) == 3
    assert {group_key(e["labels"]) for e in evs} == {'{model="m"}'}


def test_signal_filters() -> None:
    rule = Rule(
        "drift", "signal", kinds=("data_drift",), detectors=("ks",), min_score=0.2, models=("fraud*",)
    )
    h = Harness([rule])
    assert h.signal(sig("data_drift", True, 0, model="other", feature="a"), 0) == []
    assert h.signal(sig("data_drift", True, 0, model="fraud", feature="a", detector="chi2"), 0) == []
    assert h.signal(sig("data_drift", True, 0, model="fraud", feature="a", score=0.1), 0) == []
    assert h.signal(sig("prediction_drift", True, 0, model="fraud", feature="a"), 0) == []
    (fire,) = h.signal(sig("data_drift", True, 0, model="fraud", feature="a"), 0)
    # A clear passes the detector filter: the reference was replaced, the drift verdict is void.
    (res,) = h.signal(sig("data_drift", False, MIN, model="fraud", feature="a", detector="reference"), MIN)
    assert (fire["status"], res["status"]) == ("firing", "resolved")


def test_duplicate_signal_ids_are_dropped() -> None:
    h = Harness([CONCEPT])
    s = sig("concept_drift", True, 0)
    assert [e["status"] for e in h.signal(s, 0)] == ["firing"]
    h.signal(sig("concept_drift", True, 25 * MIN), 25 * MIN)
    # The replay of the first detection must not extend the hold beyond 25 + 30 min.
    assert h.signal(dict(s), 50 * MIN) == []
    assert [e["status"] for e in h.tick(55 * MIN)] == ["resolved"]


def test_snapshot_selection() -> None:
    h = Harness([errors_rule()])
    bad = {"serving.error_rate": 0.5}
    assert h.snapshot(snap(0, bad, window="1m", size_ms=MIN), 0) == []  # another window
    assert h.snapshot(snap(0, bad, segment="region=eu"), 0) == []  # a segment
    assert h.snapshot(snap(0, {"serving.error_rate": None}), 0) == []  # null metric
    assert h.ev.on_snapshot(snap(0, {}), 0) == []  # absent metric
    assert [e["status"] for e in h.snapshot(snap(2 * MIN, bad), 0)] == ["firing"]
    ok = {"serving.error_rate": 0.0}
    assert h.ev.on_snapshot(snap(MIN, ok, revision=5), MIN) == []  # an older window
    assert h.ev.on_snapshot(snap(2 * MIN, bad), MIN) == []  # the same snapshot again
    (res,) = h.snapshot(snap(2 * MIN, ok, revision=1), MIN)  # a revision of the latest window
    assert res["status"] == "resolved"


def test_label_metric_counts_labels_not_requests() -> None:
    rule = Rule(
        "acc",
        "metric",
        metric="labels.classification.accuracy",
        window="1h",
        op="<",
        trigger=0.8,
        min_count=200,
    )
    h = Harness([rule])
    acc = {"labels.classification.accuracy": 0.5}
    assert h.snapshot(snap(0, acc, window="1h", size_ms=HOUR, count=10_000, labelled=199), 0) == []
    (ev,) = h.snapshot(snap(0, acc, window="1h", size_ms=HOUR, labelled=200, revision=1), MIN)
    assert ev["status"] == "firing" and ev["evidence"]["count"] == 200


def test_stale_metric_series_resolves_and_old_revisions_stay_ignored() -> None:
    h = Harness([errors_rule()])
    assert [e["status"] for e in h.snapshot(snap(10 * MIN, {"serving.error_rate": 0.5}), 10 * MIN)] == [
        "firing"
    ]
    assert h.tick(10 * MIN + 29 * MIN) == []
    (res,) = h.tick(10 * MIN + 30 * MIN)  # hold: max(30 min, 3 hops)
    assert res["status"] == "resolved" and res["value"] is None and res["evidence"]["expired"] is True
    # A late revision of an older window (labels arrive for hours) does not revive it...
    assert h.snapshot(snap(5 * MIN, {"serving.error_rate": 0.5}, revision=3), 2 * HOUR) == []
    # ... a newer window does.
    assert [e["status"] for e in h.snapshot(snap(3 * HOUR, {"serving.error_rate": 0.5}), 3 * HOUR)] == [
        "firing"
    ]
    # A day without snapshots forgets the series.
    h.snapshot(snap(3 * HOUR + MIN, {"serving.error_rate": 0.0}), 3 * HOUR + MIN)
    h.tick(28 * HOUR)
    assert len(h.ev) == 0


def test_repeat_interval_exactly_one_per_interval_on_tick() -> None:
    h = Harness([SILENCE], repeat_interval_ms=HOUR)
    h.signal(sig("silence", True, 0, labels={"stream": "predictions"}), 0)
    repeats: list[tuple[int, str]] = []
    for t in range(7 * MIN, 5 * HOUR, 7 * MIN):
        for _ in range(2):  # a second tick at the same time repeats nothing
            repeats.extend((t, e["status"]) for e in h.tick(t))
    assert repeats == [(t * MIN, "firing") for t in (63, 126, 189, 252)]
    assert {e["starts_at_ms"] for e in h.events} == {0}
    assert len({e["fingerprint"] for e in h.events}) == 1


def test_resolved_retention_and_refire() -> None:
    h = Harness([CONCEPT], resolve_retention_ms=10 * MIN)
    h.signal(sig("concept_drift", True, 0), 0)
    h.tick(30 * MIN)  # hold expired: resolved
    assert [a.status for a in h.lc.alerts()] == [AlertStatus.RESOLVED]
    h.tick(39 * MIN)
    assert len(h.lc) == 1
    h.tick(40 * MIN)
    assert len(h.lc) == 0
    (ev,) = h.signal(sig("concept_drift", True, 41 * MIN), 41 * MIN)
    assert ev["status"] == "firing" and ev["starts_at_ms"] == 41 * MIN
    assert ev["fingerprint"] == h.events[0]["fingerprint"]


def test_clock_never_runs_backwards() -> None:
    h = Harness([errors_rule(for_ms=5 * MIN)])
    h.snapshot(snap(0, {"serving.error_rate": 0.5}), 10 * MIN)
    # A step back of the clock neither shortens nor restarts the pending time.
    assert h.snapshot(snap(MIN, {"serving.error_rate": 0.5}), 0) == []
    assert [e["starts_at_ms"] for e in h.tick(15 * MIN)] == [15 * MIN]


def test_retire_rules() -> None:
    h = Harness([errors_rule(), CONCEPT])
    h.snapshot(snap(0, {"serving.error_rate": 0.5}), 0)
    h.signal(sig("concept_drift", True, 0), 0)
    evs = h.lc.retire_rules({"concept"}, MIN)
    assert [(e["signal"], e["status"]) for e in evs] == [("errors", "resolved")]
    assert evs[0]["evidence"]["rule_removed"] is True
    check_event(evs[0])
    assert [a.rule for a in h.lc.alerts()] == ["concept"]


# -- fingerprints -------------------------------------------------------------------------------

LABEL_SETS = [
    {},
    {"alertname": "drift"},
    {
        "alertname": "drift",
        "model": "fraud",
        "model_version": "v1",
        "feature": "amount",
        "kind": "data_drift",
    },
    {"a": "", "b": "x"},
    {"model": "é", "feature": "名前"},
]


@pytest.mark.parametrize("labels", LABEL_SETS)
def test_fingerprint_order_independent(labels: dict[str, str]) -> None:
    fps: set[str] = set()
    items = list(labels.items())
    for _ in range(10):
        random.Random(len(fps)).shuffle(items)
        fps.add(fingerprint(dict(items)))
    assert len(fps) == 1
    (fp,) = fps
    assert len(fp) == 32 and int(fp, 16) >= 0


def test_fingerprint_stable_and_distinct() -> None:
    # Golden values: a change would re-key every alert on the compacted alerts topic.
    assert fingerprint(LABEL_SETS[2]) == "8d763b00b3156d78eabd1c4ade4df92b"
    assert fingerprint({}) == "cae66941d9efbd404e4d88758ea67670"
    fps = [
        fingerprint(x) for x in [*LABEL_SETS, {"a": "b"}, {"ab": ""}, {"a": "", "b": ""}, {"a": "b", "": ""}]
    ]
    assert len(set(fps)) == len(fps)


# -- state round trip -------------------------------------------------------------------------------


def random_script(seed: int, steps: int = 400) -> list[tuple[Any, ...]]:
    """Snapshots, signals and ticks of two models, with replays of earlier snapshots and signals."""
    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    t = 0
    start = {("m1", "v1"): 0, ("m2", "v1"): 0}
    sent: list[dict[str, Any]] = []
    for _ in range(steps):
        t += rng.choice([10_000, 30_000, 60_000, 5 * MIN])
        r = rng.random()
        if r < 0.4:
            key = rng.choice(list(start))
            start[key] += MIN
            rate = rng.choice([0.0, 0.02, 0.04, 0.06, 0.2])
            p99 = rng.choice([200.0, 900.0, 1200.0])
            doc = snap(start[key], {"serving.error_rate": rate, "serving.latency_ms.p99": p99}, model=key[0])
            out.append(("snap", t, doc))
            if rng.random() < 0.3:  # the window revised, or sent again after a worker restart
                again = {**doc, "revision": rng.choice([0, 1])}
                again["serving"] = {**doc["serving"], "error_rate": rng.choice([0.0, 0.2])}
                out.append(("snap", t + 1, again))
        elif r < 0.7:
            kind = rng.choice(["concept_drift", "data_drift", "anomaly", "silence", "memory_leak"])
            labels = {"host": rng.choice(["h1", "h2"])} if kind in ("anomaly", "memory_leak") else {}
            if kind == "silence":
                labels = {"stream": "predictions"}
            doc = sig(
                kind,
                rng.random() < 0.7,
                t,
                model=rng.choice(["m1", "m2"]),
                feature=rng.choice(["a", "b"]) if kind == "data_drift" else None,
                labels=labels,
                score=rng.random(),
            )
            sent.append(doc)
            out.append(("sig", t, doc))
        elif r < 0.8 and sent:
            out.append(("sig", t, dict(rng.choice(sent[-20:]))))  # a replayed signal
        else:
            out.append(("tick", t))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_round_trip_mid_stream_gives_identical_events(seed: int) -> None:
    rules = [*DEFAULT_RULES, errors_rule(for_ms=2 * MIN), replace(ANOMALY_2M, name="anomaly_2m")]
    script = random_script(seed)
    # Regular cuts, and cuts right before a snapshot sent again (it must be recognised after the restore).
    replays = [i for i, step in enumerate(script) if step[0] == "snap" and step[1] % 10_000 == 1]
    cuts = {*range(0, len(script), 37), *replays[:4]}
    reference = Harness(rules, repeat_interval_ms=30 * MIN)
    saved: dict[int, tuple[bytes, bytes]] = {}
    expected: list[list[dict[str, Any]]] = []
    for i, step in enumerate(script):
        if i in cuts:  # the state as the worker would persist it: JSON bytes
            saved[i] = (orjson.dumps(reference.ev.to_json()), orjson.dumps(reference.lc.to_json()))
        expected.append(reference.step(step))
    assert {e["status"] for e in reference.events} == {"firing", "resolved"}
    for cut, (ev_state, lc_state) in sorted(saved.items()):
        restored = Harness(rules)
        restored.ev = RuleEvaluator.from_json(orjson.loads(ev_state), rules)
        restored.lc = Lifecycle.from_json(orjson.loads(lc_state), repeat_interval_ms=30 * MIN)
        for i in range(cut, len(script)):
            assert restored.step(script[i]) == expected[i], (seed, cut, i, script[i])


def test_state_json_errors_name_the_field() -> None:
    h = Harness([CONCEPT])
    h.signal(sig("concept_drift", True, 0), 0)
    state = h.lc.to_json()
    state["alerts"][0]["status"] = "sleeping"
    with pytest.raises(ValueError, match=r"^lifecycle state\.alerts\[0\]\.status: "):
        Lifecycle.from_json(state)
    state = h.lc.to_json()
    state["alerts"][0]["labels"]["model"] = "other"
    with pytest.raises(ValueError, match=r"^lifecycle state\.alerts\[0\]\.fingerprint: "):
        Lifecycle.from_json(state)
    with pytest.raises(ValueError, match=r"^lifecycle state\.v: "):
        Lifecycle.from_json({"v": 2})
    with pytest.raises(ValueError, match=r"^evaluator state\.series\[0\]\.labels: missing field"):
        RuleEvaluator.from_json({"v": 1, "series": [{}], "seen_signal_ids": []}, [CONCEPT])


def test_evaluator_from_json_drops_series_of_removed_rules() -> None:
    h = Harness([CONCEPT, SILENCE])
    h.signal(sig("concept_drift", True, 0), 0)
    h.signal(sig("silence", True, 0), 0)
    assert len(h.ev) == 2
    assert len(RuleEvaluator.from_json(h.ev.to_json(), [SILENCE])) == 1


def test_lifecycle_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"^repeat_interval_ms: "):
        Lifecycle(repeat_interval_ms=0)
    with pytest.raises(ValueError, match=r"^resolve_retention_ms: "):
        Lifecycle(resolve_retention_ms=-1)
    assert isinstance(Lifecycle().silences, SilenceSet) and isinstance(Lifecycle().inhibitor, Inhibitor)


# -- episodes: what notifiers key idempotency on -----------------------------------------------


def _notified(ev: dict[str, Any]) -> tuple[str, str, int | None]:
    return ev["status"], ev["evidence"]["episode"], ev["evidence"].get("notification_seq")


def test_repeats_count_up_within_an_episode_and_a_refire_is_a_new_episode() -> None:
    h = Harness([SILENCE], repeat_interval_ms=HOUR)
    h.signal(sig("silence", True, 0), 0)
    h.tick(HOUR)  # one repeat
    h.signal(sig("silence", False, HOUR + MIN), HOUR + MIN)
    h.signal(sig("silence", True, 2 * HOUR), 2 * HOUR)
    got = [_notified(e) for e in h.events]
    first, second = got[0][1], got[-1][1]
    assert got == [("firing", first, 1), ("firing", first, 2), ("resolved", first, 2), ("firing", second, 1)]
    assert first != second and len(first) == 16


@pytest.mark.parametrize("opening", ["signal", "snapshot"])
def test_a_crash_before_the_state_is_saved_replays_the_same_episode(opening: str) -> None:
    """Emit, crash before the lifecycle state reaches the changelog, replay the input later.

    The replayed firing event has a later ``starts_at_ms`` (processing time), but the same
    episode and sequence number, so a notifier derives the same idempotency key.
    """
    rule = CONCEPT if opening == "signal" else errors_rule()
    before = Harness([rule])
    saved_ev, saved_lc = before.ev.to_json(), before.lc.to_json()
    inp = sig("concept_drift", True, 0) if opening == "signal" else snap(0, {"serving.error_rate": 0.5})
    feed = before.signal if opening == "signal" else before.snapshot
    (fired,) = feed(inp, 5 * MIN)
    after = Harness([rule])
    after.ev = RuleEvaluator.from_json(saved_ev, [rule])
    after.lc = Lifecycle.from_json(saved_lc)
    refeed = after.signal if opening == "signal" else after.snapshot
    (again,) = refeed(inp, 9 * MIN)
    assert again["starts_at_ms"] != fired["starts_at_ms"]
    assert _notified(again) == _notified(fired)


def test_state_written_before_episodes_existed_still_loads() -> None:
    h = Harness([CONCEPT])
    h.signal(sig("concept_drift", True, 0), 0)
    state = h.lc.to_json()
    for a in state["alerts"]:
        del a["episode"], a["sends"]
    lc = Lifecycle.from_json(state)
    (ev,) = lc.tick(5 * HOUR)  # the repeat of an old-format alert: keyed by starts_at_ms downstream
    assert "episode" not in ev["evidence"] and ev["status"] == "firing"
