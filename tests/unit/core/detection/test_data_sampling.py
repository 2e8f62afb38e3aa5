"""Rate-bounded sampling of the data-drift monitor: cost stops growing with traffic, verdicts hold."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streams.core.batches import PredictionBatch
from streams.core.detection.config import DataConfig, DetectionConfig, OpsConfig
from tests.unit.core.detection.test_engine import T0, Pipeline, Record, kinds, story

FAST = DetectionConfig(
    data=DataConfig(window_events=1000, window_ms=0, chunk_events=50, auto_profile_events=2000,
                    max_events_per_s=1000),
    ops=OpsConfig(silence_after_ms=5_000),
)


def fast(records: list[Record], events_per_ms: int) -> list[Record]:
    """The same story at ``events_per_ms`` events per millisecond of event time."""
    out: list[Record] = []
    for kind, b in records:
        if kind == "p":
            assert isinstance(b, PredictionBatch)
            b = replace(b, event_time_ms=T0 + (b.event_time_ms - T0) // 100 // events_per_ms)
        out.append((kind, b))
    return out


def data_monitor(p: Pipeline) -> Any:
    (mon,) = p.det.data.values()
    return mon


def test_a_fast_stream_is_sampled_after_its_first_window_and_drift_is_still_found() -> None:
    p = Pipeline(FAST)
    p.feed(fast(story(seed=0, batches=120, shift_at=60), events_per_ms=10))  # 10,000 events/s
    mon = data_monitor(p)
    assert mon.sample_p == pytest.approx(0.1, rel=0.05)
    found = {s["feature"] for s in kinds(p.signals, "data_drift") if s["active"] and s.get("feature")}
    assert {"amount", "plan"} <= found


def test_a_fast_stream_is_sampled_before_its_first_long_window_closes() -> None:
    """The open window's own rate sets the share once it spans RATE_PROBE_MS of event time."""
    from streams.core.detection.data import RATE_PROBE_MS

    cfg = replace(FAST, data=replace(FAST.data, window_ms=600_000))  # a window far longer than the story
    records = fast(story(seed=0, batches=400, shift_at=10**9), events_per_ms=10)  # 10,000 events/s, 10 s
    p = Pipeline(cfg)
    p.feed(records)
    mon = data_monitor(p)
    span_ms = max(int(b.event_time_ms.max()) for k, b in records if k == "p") - T0
    assert RATE_PROBE_MS < span_ms < cfg.data.window_ms
    assert mon.windows == 0  # the first window is still open ...
    assert mon.sample_p == pytest.approx(0.1, rel=0.05)  # ... and already sampled at 1,000 / 10,000
    assert mon.hist.n < mon.window_seen / 2  # the tests saw a fraction of the events


def test_a_fast_stream_is_sampled_once_it_holds_the_probe_s_events_at_the_limit_rate() -> None:
    """A model starting far above the limit folds about ``max_events_per_s * RATE_PROBE_MS`` rows whole,
    not ``RATE_PROBE_MS`` of its own traffic."""
    from streams.core.detection.data import RATE_PROBE_MIN_MS, RATE_PROBE_MS

    cfg = replace(FAST, data=replace(FAST.data, window_ms=600_000, window_events=10**6,
                                            max_window_events=10**6))
    records = fast(story(seed=0, batches=400, shift_at=10**9), events_per_ms=10)  # 10,000 events/s
    early_ms = T0 + 2 * RATE_PROBE_MIN_MS
    early = [(k, b) for k, b in records if k != "p" or int(b.event_time_ms.max()) < early_ms]
    p = Pipeline(cfg)
    p.feed(early)
    mon = data_monitor(p)
    assert mon.window_seen >= cfg.data.max_events_per_s * RATE_PROBE_MS // 1000  # past the probe's events
    assert mon.sample_p == pytest.approx(0.1, rel=0.1)
    # whole until the probe (2,000 events, or RATE_PROBE_MIN_MS), a tenth after it
    assert mon.hist.n < 0.1 * mon.window_seen + RATE_PROBE_MIN_MS * 10 + 500


def test_a_slow_stream_is_not_sampled() -> None:
    p = Pipeline(FAST)
    p.feed(story(seed=0, batches=16, shift_at=10**9))  # 10 events/s
    assert data_monitor(p).sample_p == 1.0


@pytest.mark.parametrize("cut", [31, 77])
def test_sampling_is_replay_stable_and_survives_a_restore(cut: int) -> None:
    records = fast(story(seed=2, batches=40, shift_at=20), events_per_ms=10)
    whole = Pipeline(FAST)
    whole.feed(records)
    first = Pipeline(FAST)
    first.feed(records[:cut])
    second = Pipeline(FAST)
    second.metrics.restore(first.metric_cells.items(), now_ms=0)
    second.det.restore(first.cells.items())
    second.cells = dict(first.cells)
    second.feed(records, start=cut)
    assert second.state() == whole.state()
    assert {s["signal_id"] for s in first.signals + second.signals} == {s["signal_id"] for s in whole.signals}


def test_sampling_off_keeps_every_row() -> None:
    cfg = replace(FAST, data=replace(FAST.data, max_events_per_s=0))
    p = Pipeline(cfg)
    p.feed(fast(story(seed=0, batches=16, shift_at=10**9), events_per_ms=10))
    assert data_monitor(p).sample_p == 1.0


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="max_events_per_s"):
        DataConfig(max_events_per_s=-1)
