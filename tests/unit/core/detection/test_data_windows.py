"""When the data-drift monitor closes its windows: thresholds stretched per model by the window jitter."""

from __future__ import annotations

import numpy as np
import pytest

from streams.core.batches import PredictionBatch, concat_predictions
from streams.core.detection.config import DataConfig
from streams.core.detection.data import DataMonitor
from streams.core.drift.profile import ProfileBuilder, ReferenceProfile

BATCH = 50
T0 = 1_700_000_000_000


def reference() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    b = ProfileBuilder()
    b.add({"x": rng.normal(size=2_000).tolist()}, None)
    return b.build("m", None, T0, "test")


def batch(model: str, k: int, ms_per_event: int) -> PredictionBatch:
    rng = np.random.default_rng(k)
    t = T0 + (k * BATCH + np.arange(BATCH)) * ms_per_event
    return PredictionBatch(model=model, model_version="v1",
                           event_id=[f"{model}-{k}-{j}" for j in range(BATCH)],
                           event_time_ms=t.astype(np.int64), latency_ms=np.ones(BATCH),
                           is_error=np.zeros(BATCH, dtype=bool),
                           features={"x": rng.normal(size=BATCH).tolist()})


def closes(cfg: DataConfig, model: str, batches: int, ms_per_event: int = 1) -> list[tuple[int, int]]:
    """(events in the window, event-time span in ms) of each window the monitor closed."""
    prof = reference()
    mon = DataMonitor(cfg, model, "v1")
    out: list[tuple[int, int]] = []
    for k in range(batches):
        n_before, windows, start = (mon.hist.n if mon.hist else 0), mon.windows, mon.window_start_ms
        b = batch(model, k, ms_per_event)
        mon.add(b, "p:0", k, 0, (prof.fingerprint, prof))
        if mon.windows > windows:
            out.append((n_before + BATCH, int(b.event_time_ms.max()) - start))
    return out


@pytest.mark.parametrize(
    ("jitter", "window_events", "window_ms", "ms_per_event", "binding"),
    [
        (0.0, 1_000, 0, 1, "events"),
        (0.5, 1_000, 0, 1, "events"),
        (1.0, 1_000, 0, 1, "events"),
        (0.0, 100, 2_000, 1, "span"),
        (0.5, 100, 2_000, 1, "span"),
    ],
)
def test_a_window_closes_at_its_stretched_thresholds(jitter: float, window_events: int, window_ms: int,
                                                     ms_per_event: int, binding: str) -> None:
    cfg = DataConfig(window_events=window_events, window_ms=window_ms, window_jitter=jitter,
                     max_events_per_s=0, sequential=False, domain_every_ms=0)
    mon = DataMonitor(cfg, "m", "v1")
    got = closes(cfg, "m", 200, ms_per_event)
    assert len(got) >= 2
    for w, (n, span_ms) in enumerate(got):
        mon.windows = w
        stretch = mon.window_stretch()
        assert 1.0 <= stretch < 1.0 + jitter or stretch == 1.0 == 1.0 + jitter
        if binding == "events":  # closes with the first batch that reaches the stretched count
            assert window_events * stretch <= n < window_events * stretch + BATCH
        else:
            assert window_ms * stretch <= span_ms < window_ms * stretch + BATCH * ms_per_event


def test_models_that_start_together_close_their_windows_apart() -> None:
    """The point of the jitter: a fleet started at once does not run its tests in the same minute."""
    cfg = DataConfig(window_events=1_000, window_ms=0, max_events_per_s=0, sequential=False,
                     domain_every_ms=0)
    first = [DataMonitor(cfg, f"model-{i}", "v1").window_stretch() for i in range(200)]
    assert min(first) < 1.05 and max(first) > 1.45  # spread over the whole range ...
    counts, _ = np.histogram(first, bins=5, range=(1.0, 1.5))
    assert counts.min() >= 20  # ... and roughly evenly (40 expected per bin)
    together = DataConfig(window_events=1_000, window_ms=0, window_jitter=0.0, max_events_per_s=0)
    assert {DataMonitor(together, f"model-{i}", "v1").window_stretch() for i in range(200)} == {1.0}


def test_the_stretch_is_a_function_of_persisted_state() -> None:
    """A restored monitor closes the same windows as one that never stopped (replay-stable)."""
    cfg = DataConfig(window_events=1_000, window_ms=0, max_events_per_s=0, sequential=False,
                     domain_every_ms=0)
    prof = reference()
    a = DataMonitor(cfg, "m", "v1")
    for k in range(50):  # a window or two closed, the next one open
        a.add(batch("m", k, 1), "p:0", k, 0, (prof.fingerprint, prof))
    assert a.windows >= 1 and a.hist is not None and a.hist.n > 0
    b = DataMonitor.from_json(a.to_json(), cfg, "m", "v1", (prof.fingerprint, prof), None, [])
    assert b.window_stretch() == a.window_stretch()
    for k in range(50, 120):
        a.add(batch("m", k, 1), "p:0", k, 0, (prof.fingerprint, prof))
        b.add(batch("m", k, 1), "p:0", k, 0, (prof.fingerprint, prof))
    assert a.windows == b.windows > 2 and a.to_json() == b.to_json()
    assert DataMonitor(cfg, "m", "v2").window_stretch() != DataMonitor(cfg, "m", "v1").window_stretch()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_jitter_outside_zero_to_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="window_jitter"):
        DataConfig(window_jitter=bad)


def window_sizes(mon: DataMonitor, feed: list[PredictionBatch], prof: ReferenceProfile) -> list[int]:
    """Events in each window the monitor closed (its histogram's count before the close)."""
    sizes: list[int] = []
    orig = mon._close_window

    def close(*args: object, **kwargs: object) -> None:
        assert mon.hist is not None
        sizes.append(mon.hist.n)
        orig(*args, **kwargs)  # type: ignore[arg-type]

    mon._close_window = close  # type: ignore[method-assign]
    for k, b in enumerate(feed):
        mon.add(b, "p:0", k, 0, (prof.fingerprint, prof))
    return sizes


@pytest.mark.parametrize(("jitter", "group"), [(0.0, 7), (0.0, 20), (0.5, 7), (0.5, 33)])
def test_a_group_of_records_closes_its_windows_where_the_records_one_by_one_would(jitter: float,
                                                                                  group: int) -> None:
    """The worker folds records in groups; a window still closes at the end of the record that fills it."""
    cfg = DataConfig(window_events=300, window_ms=0, window_jitter=jitter, max_events_per_s=0)
    records = [batch("m", k, 1) for k in range(140)]
    one_by_one = window_sizes(DataMonitor(cfg, "m", "v1"), records, reference())
    grouped = [concat_predictions(records[i : i + group]) for i in range(0, len(records), group)]
    got = window_sizes(DataMonitor(cfg, "m", "v1"), grouped, reference())
    assert len(one_by_one) >= 15
    assert got == one_by_one
