"""Long tumbling windows fold finished panes into an accumulator: bounded state, same results."""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.core.batches import FeedbackBatch
from streams.core.engine import MetricsEngine
from streams.core.windows import WindowSpec
from tests.same import assert_same
from tests.unit.core.test_engine import T0, cfg, preds, snaps_by_key


def _run(windows: tuple[str, ...], minutes: int) -> tuple[MetricsEngine, list[dict[str, Any]], int, int]:
    """``minutes`` of traffic, 4 batches a minute, each labelled 20 s later.

    Returns the engine, its snapshots, and the most panes and accumulators its series held.
    """
    eng = MetricsEngine(cfg(windows=tuple(WindowSpec.parse(w) for w in windows)), 0)
    rng = np.random.default_rng(3)
    snaps: list[dict[str, Any]] = []
    most_panes = most_accs = 0
    waiting: list[tuple[int, FeedbackBatch]] = []
    for k in range(minutes * 4):
        t0 = T0 + 15_000 * k
        ids = [f"e{k}-{i}" for i in range(25)]
        times = [t0 + 600 * i for i in range(25)]
        scores = [float(v) for v in rng.random(25)]
        eng.on_predictions(preds(ids, times, preds_=scores), "predictions:0", k, now_ms=0)
        waiting.append((t0 + 20_000, FeedbackBatch("m", ids, [int(rng.random() < s) for s in scores],
                                                    np.full(25, t0 + 20_000, dtype=np.int64))))
        while waiting and waiting[0][0] <= t0:
            _, fb = waiting.pop(0)
            eng.on_feedback(fb, "feedback:0", k, now_ms=0)
        eng.advance(now_ms=0)
        snaps.extend(eng.take_snapshots())
        series = eng.models["m"].series[("m", "v1", "")]
        most_panes, most_accs = max(most_panes, len(series.panes)), max(most_accs, len(series.accs))
    for i, (_, fb) in enumerate(waiting):
        eng.on_feedback(fb, "feedback:0", 10_000 + i, now_ms=0)
    eng.advance(now_ms=10**9)
    snaps.extend(eng.take_snapshots())
    return eng, snaps, most_panes, most_accs


def test_an_hour_window_holds_the_panes_of_its_shorter_windows_and_one_accumulator() -> None:
    _, _, most_panes, most_accs = _run(("1m", "5m/1m", "1h"), minutes=40)
    # 5m/1m needs five panes, plus the minute being filled and one waiting out the lateness.
    assert most_panes <= 7
    assert most_accs == 1


def test_the_accumulated_hour_equals_the_hour_kept_in_one_pane() -> None:
    _, snaps, _, _ = _run(("1m", "5m/1m", "1h"), minutes=70)
    _, single, _, _ = _run(("1h",), minutes=70)  # the pane is the whole hour: nothing to fold
    got = {k: s for k, s in snaps_by_key(snaps).items() if k[2] == "1h"}
    want = {k: s for k, s in snaps_by_key(single).items() if k[2] == "1h"}
    assert got.keys() == want.keys() and len(got) == 2
    for key in want:
        assert got[key]["serving"]["count"] > 0 and got[key]["labels"]["labelled"] > 0
        assert_same(got[key], want[key], str(key), rel=1e-12)
