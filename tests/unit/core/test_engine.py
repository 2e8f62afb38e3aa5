"""The metrics engine: windows, lateness, label join, revisions, crash replay, state bounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streams.core.batches import FeedbackBatch, PredictionBatch
from streams.core.engine import MetricsEngine
from streams.core.metrics_config import EngineConfig, ModelConfig
from streams.core.outcomes import TaskConfig
from streams.core.windows import WindowSpec
from tests.unit.core.builders import prediction_batch

T0 = 1_800_000_000_000 // 60_000 * 60_000


def cfg(**kw: Any) -> EngineConfig:
    base: dict[str, Any] = {
        "windows": (WindowSpec.parse("1m"), WindowSpec.parse("2m/1m")),
        "allowed_lateness_ms": 5_000,
        "idle_close_ms": 60_000,
        "label_horizon_ms": 3_600_000,
    }
    base.update(kw)
    return EngineConfig(**base)


def preds(
    ids: list[str],
    times: list[int],
    preds_: list[Any] | None = None,
    model: str = "m",
    version: str = "v1",
    errors: list[bool] | None = None,
    segment: list[str] | None = None,
    request_id: list[str] | None = None,
) -> PredictionBatch:
    n = len(ids)
    return prediction_batch(
        ids,
        times,
        model=model,
        version=version,
        prediction=preds_ if preds_ is not None else [1] * n,
        features={"x": [float(i) for i in range(n)]},
        errors=errors or [False] * n,
        latency=list(np.linspace(1.0, 100.0, n)),
        segment=None if segment is None else {"region": list(segment)},
        request_id=list(request_id) if request_id is not None else None,
    )


def labels(ids: list[str], ys: list[Any], t_ms: int, model: str = "m") -> FeedbackBatch:
    return FeedbackBatch(model, ids, ys, np.full(len(ids), t_ms, dtype=np.int64))


def snaps_by_key(snaps: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in snaps:
        key = (s["model_version"], s["segment"], s["window"], s["window_start_ms"])
        if key not in out or s["revision"] >= out[key]["revision"]:
            out[key] = s
    return out


def test_tumbling_and_hopping_windows_count_their_events() -> None:
    eng = MetricsEngine(cfg(), 0)
    times = [T0 + 1_000 * i for i in range(150)]  # 2.5 minutes, one per second
    eng.on_predictions(
        preds([f"e{i}" for i in range(150)], times, errors=[i % 10 == 0 for i in range(150)]),
        "p:0",
        0,
        now_ms=0,
    )
    eng.advance(now_ms=0)
    got = snaps_by_key(eng.take_snapshots())
    # stream time T0+149s, lateness 5s: windows ending by T0+144s are closed
    assert {k[2:] for k in got} == {("1m", T0), ("1m", T0 + 60_000), ("2m/1m", T0 - 60_000), ("2m/1m", T0)}
    assert got[("v1", None, "1m", T0)]["serving"]["count"] == 60
    assert got[("v1", None, "2m/1m", T0)]["serving"]["count"] == 120
    assert got[("v1", None, "2m/1m", T0 - 60_000)]["serving"]["count"] == 60
    assert got[("v1", None, "1m", T0)]["serving"]["error_rate"] == pytest.approx(6 / 60)
    eng.advance(now_ms=10**9)  # the model went quiet: idle close flushes the rest
    rest = snaps_by_key(eng.take_snapshots())
    assert {k[2:] for k in rest} == {("1m", T0 + 120_000), ("2m/1m", T0 + 60_000), ("2m/1m", T0 + 120_000)}
    assert all(s["reason"] == "idle" for s in rest.values())
    assert not any(s.panes for m in eng.models.values() for s in m.series.values())


def test_events_later_than_the_allowed_lateness_are_counted_not_folded() -> None:
    eng = MetricsEngine(cfg(windows=(WindowSpec.parse("1m"),)), 0)
    eng.on_predictions(preds(["a", "b"], [T0 + 1_000, T0 + 70_000]), "p:0", 0, now_ms=0)
    eng.advance(0)
    first = snaps_by_key(eng.take_snapshots())[("v1", None, "1m", T0)]
    assert first["serving"]["count"] == 1 and first["late_events"] == 0
    eng.on_predictions(preds(["late1", "late2"], [T0 + 2_000, T0 + 3_000]), "p:0", 1, now_ms=0)
    eng.advance(0)
    revised = snaps_by_key(eng.take_snapshots())[("v1", None, "1m", T0)]
    assert revised["serving"]["count"] == 1
    assert revised["late_events"] == 2 and revised["revision"] == 1


@pytest.mark.parametrize("label_first", [False, True])
def test_labels_join_by_event_id_whichever_arrives_first(label_first: bool) -> None:
    eng = MetricsEngine(cfg(models={"m": ModelConfig(task=TaskConfig("classification"))}), 0)
    p = preds(["a", "b", "c", "d"], [T0 + 1_000] * 4, preds_=["x", "y", "x", "x"])
    fb = labels(["a", "b", "c"], ["x", "x", "x"], T0 + 9_000)
    steps = [(fb, "f:0"), (p, "p:0")] if label_first else [(p, "p:0"), (fb, "f:0")]
    for off, (batch, src) in enumerate(steps):
        if isinstance(batch, PredictionBatch):
            eng.on_predictions(batch, src, off, now_ms=0)
        else:
            eng.on_feedback(batch, src, off, now_ms=0)
    eng.advance(now_ms=10**9)
    s = snaps_by_key(eng.take_snapshots())[("v1", None, "1m", T0)]
    assert s["labels"]["labelled"] == 3 and s["labels"]["coverage"] == pytest.approx(0.75)
    assert s["labels"]["classification"]["accuracy"] == pytest.approx(2 / 3)
    assert s["labels"]["delay_ms"]["max"] == pytest.approx(8_000, rel=0.01)


def test_a_late_label_revises_exactly_the_windows_of_its_prediction() -> None:
    eng = MetricsEngine(cfg(models={"m": ModelConfig(task=TaskConfig("regression"))}), 0)
    eng.on_predictions(preds(["a", "b"], [T0 + 1_000, T0 + 61_000], preds_=[10.0, 20.0]), "p:0", 0, 0)
    eng.advance(10**9)
    eng.take_snapshots()
    eng.on_feedback(labels(["a"], [13.0], T0 + 500_000), "f:0", 0, 0)
    eng.advance(10**9)
    revised = snaps_by_key(eng.take_snapshots())
    assert set(revised) == {
        ("v1", None, "1m", T0),
        ("v1", None, "2m/1m", T0 - 60_000),
        ("v1", None, "2m/1m", T0),
    }
    for s in revised.values():
        assert s["revision"] == 1 and s["reason"] == "revised"
        assert s["labels"]["regression"]["rmse"] == pytest.approx(3.0)
    eng.on_feedback(labels(["a"], [99.0], T0 + 600_000), "f:0", 1, 0)  # a duplicate label is ignored
    eng.advance(10**9)
    assert eng.take_snapshots() == []
    assert eng.models["m"].join.counters.duplicate_labels == 1


def _script() -> list[tuple[str, Any]]:
    """Predictions and labels over three minutes, including orphans and a champion/challenger pair."""
    rng = np.random.default_rng(3)
    steps: list[tuple[str, Any]] = [("f", labels(["e0", "e1"], [1, 0], T0 + 5_000))]
    for k in range(12):
        ids = [f"e{k * 20 + i}" for i in range(20)]
        times = [T0 + 15_000 * k + 500 * i for i in range(20)]
        scores = [float(v) for v in rng.random(20)]
        steps.append(
            (
                "p",
                preds(
                    ids,
                    times,
                    preds_=scores,
                    errors=[i % 4 == 0 for i in range(20)],
                    segment=["eu" if i % 3 else "us" for i in range(20)],
                    request_id=[f"r{k}-{i}" for i in range(20)],
                ),
            )
        )
        steps.append(
            (
                "p",
                preds(
                    [f"s{x}" for x in ids],
                    times,
                    preds_=[s + 0.1 for s in scores],
                    version="v2",
                    request_id=[f"r{k}-{i}" for i in range(20)],
                ),
            )
        )
        if k % 2:
            lab = [f"e{(k - 1) * 20 + i}" for i in range(0, 40, 3)]
            steps.append(("f", labels(lab, [int(rng.random() < 0.5) for _ in lab], times[-1])))
    return steps


def _config() -> EngineConfig:
    return cfg(
        segment_by=("region",),
        models={
            "m": ModelConfig(
                task=TaskConfig("classification"), sample_rate=0.5, champion="v1", challengers=("v2",)
            )
        },
    )


def _run(eng: MetricsEngine, steps: list[tuple[str, Any]], start: int, stop: int) -> None:
    for off in range(start, stop):
        kind, batch = steps[off]
        if kind == "p":
            eng.on_predictions(batch, "in:0", off, now_ms=0)
        else:
            eng.on_feedback(batch, "in:0", off, now_ms=0)
        eng.advance(now_ms=0)


def _final(eng: MetricsEngine) -> dict[tuple[Any, ...], dict[str, Any]]:
    eng.advance(now_ms=10**9)
    return snaps_by_key(eng.take_snapshots())


def _strip(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k not in ("revision", "reason")}


@pytest.mark.parametrize("crash_after", [1, 4, 9, 16, 23])
@pytest.mark.parametrize("committed_back", [0, 1, 3])
@pytest.mark.parametrize("lost_writes", [0, 1, 5])
def test_crash_and_replay_give_the_same_final_snapshots(
    crash_after: int, committed_back: int, lost_writes: int
) -> None:
    """Persisted = a prefix of the changelog; replay from an earlier committed offset."""
    steps = _script()
    ref = MetricsEngine(_config(), 0)
    _run(ref, steps, 0, len(steps))
    want = _final(ref)

    eng = MetricsEngine(_config(), 0)
    log: list[tuple[bytes, bytes | None]] = []
    snaps: list[dict[str, Any]] = []
    replay_from = max(crash_after - committed_back - 1, 0)
    for off in range(crash_after):
        if off == replay_from:
            committed_writes = len(log)  # writes of committed records are flushed before the commit
        _run(eng, steps, off, off + 1)
        log.extend(eng.take_writes())
        snaps.extend(eng.take_snapshots())
    log = log[: max(len(log) - lost_writes, committed_writes)]  # the tail of the last flush never made it
    table: dict[bytes, bytes] = {}
    for k, v in log:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v
    restarted = MetricsEngine(_config(), 0)
    restarted.restore(table.items(), now_ms=0)
    _run(restarted, steps, replay_from, len(steps))
    snaps.extend(restarted.take_snapshots())
    got = snaps_by_key(snaps + list(_final(restarted).values()))
    assert got.keys() == want.keys()
    for key in want:
        assert _strip(got[key]) == _strip(want[key]), key


def test_champion_challenger_pairs_by_request_and_reports_differences() -> None:
    eng = MetricsEngine(_config(), 0)
    _run(eng, _script(), 0, len(_script()))
    snaps = _final(eng)
    s = snaps[("v2", None, "1m", T0)]
    assert s["champion"]["champion_version"] == "v1"
    assert s["champion"]["paired"]["n"] == 80
    assert s["champion"]["paired"]["mae"] == pytest.approx(0.1)
    assert s["champion"]["error_rate_diff"] == pytest.approx(0.0 - 0.25)
    assert snaps[("v1", None, "1m", T0)]["champion"] is None


def test_segments_and_sampling_are_recorded_in_snapshots() -> None:
    eng = MetricsEngine(_config(), 0)
    _run(eng, _script(), 0, len(_script()))
    snaps = _final(eng)
    eu, us = snaps[("v1", "region=eu", "1m", T0)], snaps[("v1", "region=us", "1m", T0)]
    total = snaps[("v1", None, "1m", T0)]
    assert eu["serving"]["count"] + us["serving"]["count"] == total["serving"]["count"] == 80
    sampling = total["sampling"]
    assert sampling["rate"] == 0.5 and 0 < sampling["sampled_events"] < 80
    assert sampling["estimated_events"] == pytest.approx(2 * sampling["sampled_events"])


def test_state_is_bounded_after_windows_close_and_the_horizon_passes() -> None:
    eng = MetricsEngine(cfg(label_horizon_ms=120_000), 0)
    for k in range(30):  # 30 minutes
        eng.on_predictions(
            preds([f"e{k}-{i}" for i in range(10)], [T0 + 60_000 * k + i for i in range(10)]),
            "p:0",
            k,
            now_ms=0,
        )
        eng.advance(0)
    ms = eng.models["m"]
    series = ms.series[("m", "v1", "")]
    assert len(series.panes) <= 3  # the panes of the still-open 2m/1m windows
    assert len(series.closed) <= 2 * 4  # two specs, ~horizon/hop windows each
    assert ms.join.pending <= 40


def test_waiting_predictions_are_capped_per_partition_across_models() -> None:
    """max_pending_labels bounds all models of a partition together, oldest chunk first."""
    eng = MetricsEngine(cfg(max_pending_labels=100), 0)
    for k in range(60):  # 60 batches of 10 over 30 models: 600 predictions, none labelled
        model = f"m{k % 30}"
        ids = [f"{model}-{k}-{i}" for i in range(10)]
        eng.on_predictions(preds(ids, [T0 + 1_000 * k + i for i in range(10)], model=model), "p:0", k,
                           now_ms=0)
        eng.advance(0)
        held = sum(ms.join.pending for ms in eng.models.values())
        assert held == eng.join_budget.pending <= 100
    evicted = sum(ms.join.counters.predictions_evicted for ms in eng.models.values())
    assert evicted == 600 - 100
    newest = {ms.name for ms in eng.models.values() if ms.join.pending}
    assert newest == {f"m{k % 30}" for k in range(50, 60)}  # the last ten batches are the ones held
    # Evicted chunks are deleted from the state too: a restore holds what the live engine holds.
    writes = dict(eng.take_writes())
    again = MetricsEngine(cfg(max_pending_labels=100), 0)
    again.restore([(k, v) for k, v in writes.items() if v is not None], now_ms=0)
    assert again.join_budget.pending == 100
    assert {ms.name for ms in again.models.values() if ms.join.pending} == newest


def test_bad_config_is_rejected_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        ModelConfig(sample_rate=0)
    with pytest.raises(ValueError, match="challengers"):
        ModelConfig(challengers=("v2",))
    with pytest.raises(ValueError, match="hop"):
        WindowSpec.parse("5m/2m")


@pytest.mark.parametrize("label_offsets", [(3, 5), (5, 3)])
def test_labels_of_several_records_read_before_their_prediction_all_count(
    label_offsets: tuple[int, int],
) -> None:
    """A chunk that arrives after the orphans of two label records takes both, whatever their row order."""
    eng = MetricsEngine(cfg(), 0)
    for eid, off in sorted(zip(("e0", "e1"), label_offsets, strict=True), key=lambda x: x[1]):
        eng.on_feedback(FeedbackBatch("m", [eid], [0.5], np.array([T0 + 9_000])), "fb:0", off, now_ms=0)
    eng.on_predictions(preds(["e0", "e1"], [T0 + 1_000, T0 + 2_000], preds_=[0.1, 0.2]), "p:0", 0, now_ms=0)
    eng.advance(now_ms=0)
    eng.on_predictions(preds(["x"], [T0 + 200_000]), "p:0", 1, now_ms=0)
    eng.advance(now_ms=0)
    got = snaps_by_key(eng.take_snapshots())
    assert got[("v1", None, "1m", T0)]["labels"]["labelled"] == 2


# A prediction record whose events straddle a pane boundary (two minutes of events here), labelled
# by label records that do too: a 2m/1m window spans both panes, the 1m windows one each.
STRADDLE = [T0 + 30_000 + 1_000 * i for i in range(60)]  # T0+30s .. T0+89s: panes T0 and T0+60s
STRADDLE_IDS = [f"s{i}" for i in range(60)]


def _straddle_labels(rows: list[int]) -> FeedbackBatch:
    return labels([STRADDLE_IDS[i] for i in rows], [0.5] * len(rows), T0 + 100_000)


def _labelled(eng: MetricsEngine) -> dict[tuple[str, int], int]:
    got = snaps_by_key(eng.take_snapshots())
    return {(w, s): got[("v1", None, w, s)]["labels"]["labelled"]
            for w, s in (("1m", T0), ("1m", T0 + 60_000), ("2m/1m", T0))}


WANT_STRADDLE = {("1m", T0): 30, ("1m", T0 + 60_000): 30, ("2m/1m", T0): 60}


@pytest.mark.parametrize("labels_after_close", [False, True])
def test_a_label_record_spanning_two_panes_counts_in_a_window_over_both(labels_after_close: bool) -> None:
    """One (prediction record, label record) pair reaches a closed 2m window from each of its two panes."""
    eng = MetricsEngine(cfg(), 0)
    eng.on_predictions(preds(STRADDLE_IDS, STRADDLE), "p:0", 0, now_ms=0)
    if labels_after_close:
        eng.on_predictions(preds(["x"], [T0 + 300_000]), "p:0", 1, now_ms=0)
        eng.advance(now_ms=0)
    eng.on_feedback(_straddle_labels(list(range(60))), "fb:0", 0, now_ms=0)
    eng.advance(now_ms=0)
    eng.on_predictions(preds(["y"], [T0 + 400_000]), "p:0", 2, now_ms=0)
    eng.advance(now_ms=0)
    assert _labelled(eng) == WANT_STRADDLE


def test_a_crash_that_persisted_one_pane_ahead_of_the_other_loses_no_label_of_a_window_over_both() -> None:
    """Panes of one window may be persisted at different label records; the window keeps each pane's guard.

    The second label record's panes are written later pane first (its rows list the later
    minute first), so a crash can persist that pane without the earlier one. The restarted
    worker closes the windows before the label record is replayed: the replay must still
    count in the 2m window what the earlier pane missed.
    """
    first_rows = list(range(0, 60, 2))  # both panes
    second_rows = list(range(59, 0, -2))  # both panes, the later one first
    eng = MetricsEngine(cfg(), 0)
    eng.on_predictions(preds(STRADDLE_IDS, STRADDLE), "p:0", 0, now_ms=0)
    eng.on_feedback(_straddle_labels(first_rows), "fb:0", 0, now_ms=0)
    persisted = dict(eng.take_writes())
    eng.on_feedback(_straddle_labels(second_rows), "fb:0", 1, now_ms=0)
    flush = eng.take_writes()
    panes = [i for i, (k, _) in enumerate(flush) if k.startswith(b'["pane"')]
    assert len(panes) == 2 and b"%d" % (T0 + 60_000) in flush[panes[0]][0]  # the later pane is first
    for cut in range(len(flush) + 1):
        table = dict(persisted)
        table.update(flush[:cut])
        restarted = MetricsEngine(cfg(), 0)
        restarted.restore([(k, v) for k, v in table.items() if v is not None], now_ms=0)
        restarted.on_predictions(preds(["x"], [T0 + 300_000]), "p:0", 1, now_ms=0)
        restarted.advance(now_ms=0)  # every window over the two panes closes before the replay
        restarted.on_feedback(_straddle_labels(second_rows), "fb:0", 1, now_ms=0)
        restarted.advance(now_ms=0)
        assert _labelled(restarted) == WANT_STRADDLE, f"crash after {cut} of {len(flush)} writes"
