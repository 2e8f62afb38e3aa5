"""Tests of the pure parts of loadtest.benchmark: statistics, rate from polls, probes, profile summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from loadtest.benchmark import (
    PROBE_EVENTS,
    ProbeTracker,
    Traffic,
    auto_rate,
    classify_stack,
    cpu_rate,
    events_in_of,
    percentile,
    probe_models_needed,
    probe_record,
    rate_between,
    ratios,
    slope_per_min,
    summarize,
    summarize_profile,
    within_noise,
)
from streams.app.detection_stage import input_counts
from streams.app.profiles import ProfileStore
from streams.core.detection.config import OpsConfig
from streams.core.detection.inputs import InputMonitor
from streams.events.codec import Decoder


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [3.0, 1.0, 7.5, 2.25, 9.0, 4.0, 4.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([2.0], 99) == 2.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_median_and_spread() -> None:
    s = summarize([100.0, 80.0, 120.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (100.0, 80.0, 120.0, 3)
    assert s["spread_pct"] == pytest.approx(40.0)
    assert s["runs"] == [100.0, 80.0, 120.0]
    assert math.isnan(summarize([])["median"])


def test_ratios_are_per_repeat() -> None:
    assert ratios([10.0, 30.0], [20.0, 30.0]) == [0.5, 1.0]
    assert math.isnan(ratios([1.0], [0.0])[0])
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])


def test_within_noise_is_range_overlap() -> None:
    prev = summarize([90.0, 100.0, 110.0])
    assert within_noise(prev, summarize([105.0, 115.0, 120.0]))
    assert not within_noise(prev, summarize([111.0, 115.0, 120.0]))
    assert within_noise(prev, summarize([100.0]))


def test_slope_per_min() -> None:
    points = [(float(t), 50.0 + 2.0 * t) for t in range(0, 120, 5)]  # 2 units/s
    assert slope_per_min(points) == pytest.approx(120.0)
    assert slope_per_min([(0.0, 1.0), (60.0, 1.0)]) == 0.0
    assert math.isnan(slope_per_min([(0.0, 1.0)]))


def test_rate_between_excludes_start_up_and_places_the_end() -> None:
    # Start-up (zeros), then 1,000 events/s from 1.5 s; the total (5,000) is reached at 6.5 s, between
    # the polls at 6 and 7 s, and the worker idles after it.
    samples = [(0.0, 0.0), (1.0, 0.0), (2.0, 500.0), (3.0, 1500.0), (4.0, 2500.0), (5.0, 3500.0),
               (6.0, 4500.0), (7.0, 5000.0), (8.0, 5000.0)]
    # Without placing the end at 6.5 s the rate would read (5000 - 500) / 5 = 900 events/s.
    assert rate_between(samples, 5000) == pytest.approx(1000.0)
    steady = [(float(t), 1000.0 * t) for t in range(1, 6)]
    assert rate_between(steady, 5000) == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        rate_between([(0.0, 0.0), (1.0, 10.0)], 10)


def test_probe_tracker_matches_firing_alerts_of_probe_models() -> None:
    t = ProbeTracker()
    t.sent_probe("probe-0", 100.0)
    t.sent_probe("probe-1", 101.0)
    firing = {"status": "firing", "labels": {"alertname": "invalid_input", "model": "probe-0"}}
    assert t.on_alert({**firing, "status": "resolved"}, 100.2) is None
    drift = {"status": "firing", "labels": {"alertname": "drift", "model": "probe-0"}}
    assert t.on_alert(drift, 100.2) is None
    assert t.on_alert(firing, 100.25) == pytest.approx(0.25)
    assert t.on_alert(firing, 100.5) is None  # a repeat answers nothing
    t.sent_probe("probe-1", 200.0)  # the first probe-1 never got its alert
    s = t.summary()
    assert (s["probes_sent"], s["alerts_matched"], s["probes_without_alert"]) == (3, 1, 2)
    assert s["p50_s"] == pytest.approx(0.25)


def test_probe_models_cover_the_rule_window() -> None:
    assert probe_models_needed(5.0, 95.0) == 20
    assert probe_models_needed(200.0, 95.0) == 2


def test_one_probe_record_trips_the_invalid_input_rule() -> None:
    """The open loop relies on this: one probe = events refused one by one, enough for the defaults."""
    decoded = Decoder().decode(probe_record("probe-3", 7))
    counts = input_counts(decoded)
    assert counts == (0, 0, PROBE_EVENTS, 0)
    mon = InputMonitor(OpsConfig(), "probe-3")
    signals = mon.add(counts, "predictions:0", 0, now_ms=1_000)
    assert [s["active"] for s in signals] == [True]


def test_traffic_records_are_valid_unique_column_batches() -> None:
    traffic = Traffic(batch=20, bases=2)
    dec = Decoder()
    first, second = (dec.decode(traffic.record("m1")) for _ in range(2))
    for d in (first, second):
        assert not d.rejected
        assert [b.model for b in d.predictions] == ["m1"]
        assert len(d.predictions[0].features) == 20
    assert set(first.predictions[0].event_id).isdisjoint(second.predictions[0].event_id)
    assert second.predictions[0].event_time_ms[0] > first.predictions[0].event_time_ms[-1]
    live = dec.decode(traffic.record("m2", event_time_ms=123))
    assert live.predictions[0].event_time_ms.tolist() == [123] * 20


def test_traffic_feedback_labels_every_prediction_of_its_record() -> None:
    traffic = Traffic(batch=30, bases=2)
    record = traffic.record("m1", event_time_ms=1_000)
    pred = Decoder().decode(record).predictions[0]
    got = Decoder().decode(traffic.feedback(record, event_time_ms=31_000))
    assert not got.rejected and not got.predictions
    (fb,) = got.feedback
    assert fb.model == "m1" and list(fb.event_id) == list(pred.event_id)
    assert fb.event_time_ms.tolist() == [31_000] * 30
    assert np.allclose(np.asarray(fb.label, dtype=float), np.asarray(pred.prediction, dtype=float) + 0.01)


def test_traffic_reference_profiles_one_per_model_accepted_by_the_worker_store() -> None:
    traffic = Traffic(batch=200, bases=3)
    refs = traffic.reference_profiles(["m1", "m2"], created_ms=5)
    store = ProfileStore()
    for key, value in refs:
        store.apply(key, value)
    assert [k for k, _ in refs] == [b"m1|*", b"m2|*"] and store.invalid == 0
    for model in ("m1", "m2"):
        found = store.get(model, "v1")
        assert found is not None
        prof = found[1]
        assert prof.model == model and prof.n_events == 600 and len(prof.features) == 20


@pytest.mark.parametrize("per_s", [1000.0, 25_000.0, 400.0])
def test_traffic_event_time_advances_at_the_model_rate(per_s: float) -> None:
    """Event time spans ``events / per_s`` seconds per model: the rate the windows and sampling see."""
    traffic = Traffic(batch=500, bases=2, model_events_per_s=per_s)
    dec = Decoder()
    times = np.concatenate([dec.decode(traffic.record("m1")).predictions[0].event_time_ms for _ in range(8)])
    assert np.all(np.diff(times) >= 0)
    assert (times[-1] - times[0]) / 1000 == pytest.approx(len(times) / per_s, rel=0.01)
    with pytest.raises(ValueError, match="positive"):
        Traffic(batch=5, model_events_per_s=0)


def test_profile_summary_by_stage() -> None:
    lines = [
        "thread (1);run (faust/worker.py:10);process (streams/app/ingest.py:130);"
        "decode (streams/events/codec.py:99) 30",
        "thread (1);run (faust/worker.py:10);on_predictions (streams/core/detection/data.py:50) 50",
        "thread (1);tick (streams/app/detection_stage.py:184);"
        "flush_writes (streams/app/detection_stage.py:191);dumps (orjson:1) 20",
        "garbage line",
    ]
    prof = summarize_profile(lines)
    assert prof["samples"] == 100
    stages = dict(prof["by_stage_pct"])
    assert stages["decode + validate"] == pytest.approx(30.0)
    assert stages["detection: data drift (windowed tests, PH, domain clf)"] == pytest.approx(50.0)
    assert stages["changelog: state cells serialised + put"] == pytest.approx(20.0)
    assert classify_stack(["main (x.py:1)"]) == "other"
    # runtime samples go to the innermost runtime frame: encoding a produce request is the producer's
    agent = "ingest_agent (streams/app/factory.py:238)"
    encode = "lz4_encode (aiokafka/codec.py:1)"
    assert classify_stack([agent, "send (faust/transport/producer.py:1)", encode]).startswith("kafka produce")


def test_cpu_rate_over_the_same_span() -> None:
    # (worker CPU seconds, events so far): 2 CPU-s for the 4,000 events after the first sample.
    samples = [(0.5, 0.0), (1.0, 1000.0), (2.0, 3000.0), (3.0, 5000.0), (3.1, 5000.0)]
    assert cpu_rate(samples, 5000) == pytest.approx(2000.0)
    assert math.isnan(cpu_rate([(1.0, 10.0)], 10))


def test_events_in_reads_the_counter_from_an_exposition() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    reg = CollectorRegistry()
    c = Counter("driftline_events_in", "Valid events routed onward, by kind.", ["kind"], registry=reg)
    c.labels("prediction").inc(1500)
    c.labels("feedback").inc(7)
    text = generate_latest(reg).decode()
    assert events_in_of(text) == 1500.0
    assert events_in_of(text, ("prediction", "feedback")) == 1507.0
    assert events_in_of("") == 0.0


def test_open_loop_result_from_samples() -> None:
    """Memory figures (at 1 min, end, slope over the second half) and medians after warm-up."""
    import argparse

    from loadtest.benchmark import OpenLoopState, open_loop_result

    args = argparse.Namespace(duration_s=240.0, models=10, batch=500, partitions=4, probe_every_s=5.0,
                              worker_config=None, scrape_every_s=15.0, label_delay_s=0.0, reference="auto")
    samples = [{"t": float(t), "produced_eps": 1000.0, "processed_eps": 900.0 if t % 15 == 0 else math.nan,
                "processed_total": 900.0 * t, "events_in_scraped": 900.0 * t if t % 15 == 0 else math.nan,
                "produced_total": 1000.0 * t, "lag_records": 2.0, "lag_events": 1000.0,
                "rss_mb": 100.0 + 0.5 * t, "cpu_pct": 50.0, "load_1m": 1.0} for t in range(1, 241)]
    tracker = ProbeTracker()
    tracker.sent_probe("probe-0", 10.0)
    tracker.on_alert({"status": "firing", "labels": {"alertname": "invalid_input", "model": "probe-0"}}, 10.4)
    res = open_loop_result(args, 1000.0, samples, tracker, OpenLoopState(produced_events=240_000))
    assert res["rss_mb"]["at_1_min"] == pytest.approx(130.0)
    assert res["rss_mb"]["at_end"] == pytest.approx(220.0)
    assert res["rss_mb"]["slope_mb_per_min_second_half"] == pytest.approx(30.0)
    assert res["processed_eps_median_after_warmup"] == pytest.approx(900.0)
    assert res["processed_events_per_s_overall"] == pytest.approx(900.0)
    assert res["event_to_alert"]["p99_s"] == pytest.approx(0.4)
    assert res["produced_events_per_s"] == pytest.approx(1000.0)
    assert res["probes"] == [{"sent_s": 10.0, "model": "probe-0", "latency_s": pytest.approx(0.4)}]
    assert math.isnan(res["event_to_alert_second_half"]["p99_s"])  # no probe sent after 120 s


@pytest.mark.parametrize("content", [None, "{", '{"events_per_s": {}}',
                                     '{"events_per_s": {"c_full": {"median": NaN}}}'])
def test_auto_rate_refuses_a_missing_or_empty_closed_loop_result(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "benchmark.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit, match="run the closed loop first"):
        auto_rate(path)


def test_auto_rate_is_80_percent_of_the_closed_loop_median(tmp_path: Path) -> None:
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps({"events_per_s": {"c_full": {"median": 50_000.0}}}))
    assert auto_rate(path) == pytest.approx(40_000.0)
