"""The simulated traffic: deterministic given the seed, and each incident changes what it should."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from streams.events import models as m
from streams.sim.fleet import ModelServer
from streams.sim.generator import BLOCK, ModelGenerator, expected_accuracy, malformed_record
from streams.sim.harness import IncidentClock
from streams.sim.scenario import Incident, ModelSpec, parse_scenario

SPEC = ModelSpec(name="m", rate_per_s=100.0, hosts=("h0", "h1"), gpus=1, error_rate=0.01,
                 versions=(("v1", 0.75), ("v2", 0.25)))
DRIFT = {"feature": "amount", "shift_sd": 1.0, "categorical": "country", "mix": None}


def gen(*incidents: Incident, seed: int = 7) -> ModelGenerator:
    return ModelGenerator(SPEC, incidents, seed)


def test_same_seed_same_events_however_they_are_chunked() -> None:
    whole = gen().predictions(0, 3 * BLOCK + 17)
    parts = [gen().predictions(a, b) for a, b in ((0, 5), (5, BLOCK + 3), (BLOCK + 3, 3 * BLOCK + 17))]
    for name in ("p_yes", "latency_ms", "error", "labelled", "label_yes", "label_delay_s"):
        assert np.array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in parts])), name
    assert whole.features["country"] == [c for p in parts for c in p.features["country"]]
    assert whole.version == [v for p in parts for v in p.version]


def test_another_seed_other_events() -> None:
    assert not np.array_equal(gen(seed=1).predictions(0, 100).p_yes, gen(seed=2).predictions(0, 100).p_yes)


def test_stationary_traffic_matches_the_spec() -> None:
    p = gen().predictions(0, 20_000)
    assert abs(np.mean(p.features["amount"]) - 50) < 1 and abs(np.std(p.features["amount"]) - 20) < 1
    assert abs(p.version.count("v2") / len(p) - 0.25) < 0.02
    assert abs(p.error.mean() - 0.01) < 0.005
    assert abs(p.labelled.mean() - 0.5 * 0.99) < 0.02 and not (p.labelled & p.error).any()
    assert abs(np.median(p.latency_ms) - 25) < 1
    assert np.all((p.label_delay_s >= 1) & (p.label_delay_s <= 5))
    accuracy = np.mean((p.p_yes > 0.5) == p.label_yes)
    assert abs(accuracy - expected_accuracy(SPEC)) < 0.02 and accuracy > 0.85  # above accuracy_low's 0.8


def window(p: Any, lo_s: float, hi_s: float) -> Any:
    return (p.t_s >= lo_s) & (p.t_s < hi_s)


def test_abrupt_drift_shifts_inside_its_window_only() -> None:
    base = gen().predictions(0, 30_000)
    p = gen(Incident("feature_drift_abrupt", "m", 100, 100, DRIFT)).predictions(0, 30_000)
    inside, outside = window(p, 100, 200), ~window(p, 100, 200)
    amount, amount0 = np.array(p.features["amount"]), np.array(base.features["amount"])
    assert np.allclose(amount[outside], amount0[outside])
    assert np.allclose(amount[inside] - amount0[inside], 20.0)  # one standard deviation
    jp = np.array(p.features["country"]) == "jp"  # 10 % before, 40 % with the shares reversed
    assert abs(jp[outside].mean() - 0.1) < 0.02 and abs(jp[inside].mean() - 0.4) < 0.03
    assert np.array_equal(p.latency_ms, base.latency_ms)  # only what the incident is about changes


def test_gradual_drift_ramps_over_its_duration() -> None:
    p = gen(Incident("feature_drift_gradual", "m", 0, 200, {**DRIFT, "shift_sd": 2.0})).predictions(0, 20_000)
    base = gen().predictions(0, 20_000)
    shift = (np.array(p.features["amount"]) - np.array(base.features["amount"])) / 20.0
    assert np.allclose(shift, 2.0 * p.t_s / 200.0, atol=1e-3)


def test_concept_drift_inverts_labels_and_leaves_inputs_alone() -> None:
    base = gen().predictions(0, 20_000)
    p = gen(Incident("concept_drift", "m", 100, 100, {"inverted_fraction": 1.0})).predictions(0, 20_000)
    inside = window(p, 100, 200)
    assert np.array_equal(p.p_yes, base.p_yes) and p.features == base.features
    right = (p.p_yes > 0.5) == p.label_yes
    assert right[~inside].mean() > 0.85 and right[inside].mean() < 0.15


def test_latency_spike_and_error_burst() -> None:
    base = gen().predictions(0, 20_000)
    p = gen(Incident("latency_spike", "m", 50, 50, {"factor": 40.0}),
            Incident("error_burst", "m", 120, 30, {"error_rate": 0.3})).predictions(0, 20_000)
    slow, failing = window(p, 50, 100), window(p, 120, 150)
    assert np.allclose(p.latency_ms[slow], base.latency_ms[slow] * 40, rtol=1e-3)
    assert np.array_equal(p.latency_ms[~slow], base.latency_ms[~slow])
    assert abs(p.error[failing].mean() - 0.3) < 0.03 and p.error[~failing].mean() < 0.02


def test_telemetry_memory_leak_and_gpu_saturation_per_host() -> None:
    g = gen(Incident("memory_leak", "m", 10, 100, {"mib_per_min": 60.0, "hosts": ["h1"]}),
            Incident("gpu_saturation", "m", 10, 100, {"utilization_percent": 99.0, "memory_fraction": 0.99,
                                                      "hosts": None}))
    before, during = g.telemetry(1, 5), g.telemetry(1, 70)
    assert during["rss_bytes"] - before["rss_bytes"] == pytest.approx(60 * 2**20, abs=30 * 2**20)
    assert abs(g.telemetry(0, 70)["rss_bytes"] - before["rss_bytes"]) < 30 * 2**20  # h0 does not leak
    assert before["gpus"][0]["utilization_percent"] < 70
    for host in (0, 1):
        gpu = g.telemetry(host, 70)["gpus"][0]
        assert gpu["utilization_percent"] >= 99
        assert gpu["memory_used_bytes"] >= 0.98 * gpu["memory_total_bytes"]
    assert g.telemetry(1, 200)["gpus"][0]["utilization_percent"] < 70  # over after the incident
    assert g.telemetry(1, 70) == g.telemetry(1, 70)  # deterministic


def test_telemetry_fits_the_contract() -> None:
    sample = {**gen().telemetry(0, 3), "model": "m", "model_version": "v1", "event_time_ms": 1}
    encoded = msgspec.json.encode({"schema": "driftline.telemetry/v1", **sample})
    msgspec.json.decode(encoded, type=m.TelemetryV1)


def test_silence_and_malformed_flood_schedule() -> None:
    g = gen(Incident("silence", "m", 10, 5, {"telemetry": False}),
            Incident("malformed_flood", "m", 20, 5, {"records_per_s": 7.0}))
    assert [g.silenced(t) for t in (9.9, 10, 14.9, 15)] == [False, True, True, False]
    assert not g.telemetry_silenced(12)
    assert [g.malformed_per_s(t) for t in (19, 20, 25)] == [0.0, 7.0, 0.0]


def test_malformed_records_are_refused_by_the_decoder() -> None:
    from streams.events.codec import Decoder

    dec = Decoder()
    for n in range(6):
        out = dec.decode(malformed_record("m", n))
        assert out.rejected and out.n_valid == 0, n


class FakeClient:
    def __init__(self) -> None:
        self.predictions: list[tuple[Any, ...]] = []
        self.feedback: list[tuple[str, str]] = []
        self.telemetry: list[dict[str, Any]] = []

    def log_prediction(self, features: Any, prediction: Any, **kw: Any) -> str:
        self.predictions.append((features, prediction, kw))
        return str(kw["event_id"])

    def log_feedback(self, event_id: str, label: str, **kw: Any) -> bool:
        self.feedback.append((event_id, label))
        return True

    def log_telemetry(self, sample: dict[str, Any]) -> bool:
        self.telemetry.append(sample)
        return True


def test_model_server_sends_what_is_due_and_skips_silence() -> None:
    g = gen(Incident("silence", "m", 2, 2, {"telemetry": True}),
            Incident("malformed_flood", "m", 5, 2, {"records_per_s": 10.0}))
    client, bad = FakeClient(), []
    srv = ModelServer(SPEC, g, client, t0_ms=1_000_000, id_prefix="r-",
                      garbage=lambda model, value: bad.append((model, value)), end_s=8)
    for k in range(1, 101):
        srv.step(k * 0.1)  # ten seconds of ticks; the server stops at end_s = 8
    assert srv.counts["predictions"] == len(client.predictions) == 600  # 800 due, 200 silent
    times = [kw["event_time_ms"] for _, _, kw in client.predictions]
    assert not any(1_002_000 <= t < 1_004_000 for t in times) and max(times) < 1_008_000
    assert {kw["model_version"] for _, _, kw in client.predictions} == {"v1", "v2"}
    errors = [p for p in client.predictions if p[2]["status"] == "error"]
    assert all(pred is None for _, pred, _ in errors)
    assert 0 < len(client.feedback) <= srv.counts["feedback"] + len(srv.labels)
    assert {label for _, label in client.feedback} == {"yes", "no"}
    # two hosts, one sample a second for t in [0, 8], minus two silent seconds
    assert len(client.telemetry) == 2 * (9 - 2)
    assert all(t["model"] == "m" and t["gpus"] for t in client.telemetry)
    assert len(bad) == srv.counts["malformed"] == 20 and {model for model, _ in bad} == {"m"}


def test_incident_clock_reports_each_start_and_end_once_in_order() -> None:
    s = parse_scenario({"duration_s": 100, "models": [{"name": "a"}],
                        "incidents": [{"kind": "silence", "model": "a", "at_s": 10, "duration_s": 5},
                                      {"kind": "error_burst", "model": "a", "at_s": 12, "duration_s": 20}]})
    clock = IncidentClock(s.incidents, t0=1000.0)
    assert list(clock.due(1005)) == []
    got = [(what, i.kind) for what, i in clock.due(1020)]
    assert got == [("start", "silence"), ("start", "error_burst"), ("end", "silence")]
    assert [(w, i.kind) for w, i in clock.due(1100)] == [("end", "error_burst")]
    assert list(clock.due(2000)) == []
