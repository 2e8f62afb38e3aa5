"""Scenario report analysis: matching alerts to incidents, time-to-alert, false and muted alerts."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.scenario_report import (
    DETECTS,
    Alert,
    Sample,
    analyse,
    firings,
    report_dict,
    summarise_samples,
    timeline_inputs,
)
from streams.sim.scenario import INCIDENT_KINDS, Incident

GRACE_S = 30.0
LEAK = Incident("memory_leak", "m-leak", 20.0, 400.0, {})
SILENCE = Incident("silence", "m-quiet", 100.0, 60.0, {})
DRIFT = Incident("feature_drift_abrupt", "m-drift", 200.0, 100.0, {})
INCIDENTS = (LEAK, SILENCE, DRIFT)


def alert(rule: str, model: str, at_s: float, *, status: str = "firing", fp: str | None = None,
          starts_s: float | None = None, muted: tuple[str, ...] = (), **labels: str) -> Alert:
    return Alert(arrival_s=at_s, status=status, rule=rule, model=model, fingerprint=fp or f"{rule}-{model}",
                 starts_at_s=at_s if starts_s is None else starts_s, labels=labels, muted_by=muted)


def test_every_incident_kind_has_detecting_rules() -> None:
    assert set(DETECTS) == set(INCIDENT_KINDS) and all(DETECTS.values())


@pytest.mark.parametrize(
    ("case", "alerts", "detected", "false"),
    [
        ("nothing fired", [], {}, []),
        ("each incident caught",
         [alert("memory_leak", "m-leak", 380), alert("silence", "m-quiet", 131),
          alert("drift", "m-drift", 240)],
         {"memory_leak": 360, "silence": 31, "feature_drift_abrupt": 40}, []),
        ("an alert before the incident is false and does not detect it",
         [alert("silence", "m-quiet", 99.5)], {}, ["silence m-quiet"]),
        ("the incident's start counts (inclusive)", [alert("silence", "m-quiet", 100.0)], {"silence": 0}, []),
        ("within the grace after the end", [alert("silence", "m-quiet", 189.9)], {"silence": 89.9}, []),
        ("after the grace: false", [alert("silence", "m-quiet", 190.0)], {}, ["silence m-quiet"]),
        ("the right rule on the wrong model is false",
         [alert("silence", "m-drift", 120)], {}, ["silence m-drift"]),
        ("the wrong rule on the right model is false",
         [alert("gpu_saturation", "m-quiet", 120)], {}, ["gpu_saturation m-quiet"]),
        ("a control model's alert is false", [alert("drift", "control", 250)], {}, ["drift control"]),
        ("the first detecting alert counts",
         [alert("silence", "m-quiet", 140, fp="b", host="h"), alert("silence", "m-quiet", 131, fp="a")],
         {"silence": 31}, []),
        ("a side effect is neither a detection nor false",
         [alert("anomaly", "m-leak", 300, host="h")], {}, []),
        ("a side effect long after the incident is false",
         [alert("anomaly", "m-leak", 450, host="h")], {}, ["anomaly m-leak"]),
        ("muted alerts neither detect nor count as false",
         [alert("silence", "m-quiet", 131, muted=("silence:abc",)), alert("drift", "x", 5, muted=("s:1",))],
         {}, []),
        ("resolved events are not firings", [alert("silence", "m-quiet", 131, status="resolved")], {}, []),
    ],
)
def test_matching(case: str, alerts: list[Alert], detected: dict[str, float], false: list[str]) -> None:
    a = analyse(INCIDENTS, alerts, GRACE_S)
    got = {r.incident.kind: round(r.time_to_alert_s, 3) for r in a.incidents if r.time_to_alert_s is not None}
    assert got == pytest.approx(detected), case
    assert [f"{x.rule} {x.model}" for x in a.false_alerts] == false, case
    assert {r.incident.kind for r in a.missed} == {i.kind for i in INCIDENTS} - set(detected), case


def test_a_serving_anomaly_detects_an_error_burst_and_a_host_anomaly_does_not() -> None:
    burst = Incident("error_burst", "m", 10, 60, {})
    leak = Incident("memory_leak", "m", 10, 60, {})
    serving = alert("anomaly", "m", 15, fp="s", subject="serving")
    host = alert("anomaly", "m", 12, fp="h", host="srv-0")
    a = analyse((burst,), [host, serving], GRACE_S)
    assert a.incidents[0].detected_by == serving and a.false_alerts == (host,)
    a = analyse((leak,), [host, serving], GRACE_S)
    assert a.incidents[0].side_effects == (host,) and a.false_alerts == (serving,) and a.missed


def test_repeats_of_an_episode_count_once_and_a_new_episode_again() -> None:
    alerts = [
        alert("drift", "control", 10, fp="f", starts_s=9.8),
        alert("drift", "control", 40, fp="f", starts_s=9.8),  # a repeat notification of the same episode
        alert("drift", "control", 50, fp="f", status="resolved", starts_s=9.8),
        alert("drift", "control", 70, fp="f", starts_s=69.9),  # fired again: a new episode
    ]
    fired, repeats = firings(alerts)
    assert [x.arrival_s for x in fired] == [10, 70] and repeats == 1
    a = analyse(INCIDENTS, alerts, GRACE_S)
    assert len(a.false_alerts) == 2 and (a.firings, a.resolved, a.repeats) == (2, 1, 1)


def test_details_of_a_detection() -> None:
    alerts = [
        alert("silence", "m-quiet", 131, fp="pred", stream="predictions"),
        alert("silence", "m-quiet", 133, fp="tel", stream="telemetry", host="h"),
        alert("silence", "m-quiet", 135, fp="x", muted=("inhibited_by:pred",)),
        alert("silence", "m-quiet", 165, fp="pred", status="resolved"),
        alert("memory_leak", "m-leak", 380), alert("anomaly", "m-leak", 300, host="h"),
    ]
    a = analyse(INCIDENTS, alerts, GRACE_S)
    leak, silence, drift = a.incidents
    assert silence.detected_by is not None and silence.detected_by.fingerprint == "pred"
    assert [x.fingerprint for x in silence.also_detected_by] == ["tel"]
    assert [x.fingerprint for x in silence.muted] == ["x"] and len(a.muted_alerts) == 1
    assert silence.resolved_s == 165
    assert [x.rule for x in leak.side_effects] == ["anomaly"] and leak.time_to_alert_s == 360
    assert drift.detected_by is None and a.missed == (drift,)


def test_overlapping_incidents_of_one_model_prefer_the_one_the_rule_detects() -> None:
    drift = Incident("feature_drift_abrupt", "m", 10, 100, {})
    concept = Incident("concept_drift", "m", 10, 100, {})
    a = analyse((drift, concept), [alert("concept_drift", "m", 20), alert("drift", "m", 30)], GRACE_S)
    assert [r.time_to_alert_s for r in a.incidents] == [20, 10]
    assert not a.false_alerts and not a.incidents[0].side_effects


def test_alert_from_an_event() -> None:
    event: dict[str, Any] = {
        "schema": "driftline.alert/v1", "fingerprint": "ab" * 8, "status": "firing", "severity": "critical",
        "model": "m", "signal": "silence", "value": 1.0, "threshold": 1.0, "window_ms": 0,
        "starts_at_ms": 1_000_500, "labels": {"alertname": "silence", "model": "m", "stream": "predictions"},
        "evidence": {"muted_by": ["silence:s1"]}, "annotations": {"summary": "No data"},
    }
    a = Alert.from_event(event, arrival=1001.0, t0=990.0)
    assert (a.arrival_s, a.starts_at_s, a.rule) == (11.0, 10.5, "silence")
    assert (a.muted_by, a.summary) == (("silence:s1",), "No data")
    assert a.brief()["labels"] == {"stream": "predictions"}


SAMPLES = [
    Sample(1.0, 100, 0.0, 10, 20.0, 100 * 2**20),
    Sample(2.0, 300, 150.0, None, 40.0, 110 * 2**20),
    Sample(3.0, 500, 450.0, 30, None, None),
    Sample(4.0, 500, 500.0, 0, 10.0, 120 * 2**20),
]


def test_summary_of_samples() -> None:
    s = summarise_samples(SAMPLES, run_s=4.0)
    assert s["events_produced"] == 500 and s["events_processed"] == 500
    assert s["produced_events_per_s"] == 125 and s["processed_events_per_s"] == 125
    assert s["produced_events_per_s_peak"] == 200 and s["processed_events_per_s_peak"] == 300
    assert s["lag_records"] == {"mean": 40 / 3, "max": 30, "final": 0}
    assert s["backlog_events"] == {"mean": 75.0, "max": 150.0, "final": 0.0}
    assert s["worker_cpu_percent"] == {"mean": 70 / 3, "max": 40.0}
    assert s["worker_rss_mib"]["max"] == 120 and s["worker_rss_mib"]["final"] == 120
    assert summarise_samples([]) == {}


def test_report_and_timeline_inputs() -> None:
    a = analyse(INCIDENTS, [alert("silence", "m-quiet", 131), alert("drift", "control", 50)], GRACE_S)
    r = report_dict(a, SAMPLES, run_s=4.0)
    assert not r["ok"] and r["false_alert_count"] == 1 and r["false_alerts"][0]["model"] == "control"
    assert r["missed"] == ["memory_leak on m-leak at 20s", "feature_drift_abrupt on m-drift at 200s"]
    inc = r["incidents"][1]
    assert inc["detected"] and inc["time_to_alert_s"] == 31 and inc["alert"]["rule"] == "silence"
    assert [x["produced_per_s"] for x in r["samples"]] == [None, 200.0, 200.0, 0.0]
    series, spans, markers = timeline_inputs(a, SAMPLES)
    assert set(series) == {"events/s produced", "events/s processed", "lag (records)", "backlog (events)"}
    assert series["backlog (events)"] == [(1.0, 100.0), (2.0, 150.0), (3.0, 50.0), (4.0, 0.0)]
    assert series["lag (records)"] == [(1.0, 10.0), (3.0, 30.0), (4.0, 0.0)]
    assert spans[1] == (100.0, 160.0, "silence m-quiet")
    assert markers == [(50, "FALSE drift control"), (131, "silence m-quiet")]
