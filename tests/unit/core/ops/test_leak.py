"""Tests of streams.core.ops.leak.LeakDetector.

Series are sampled every 5 s and fed one minute per batch (the telemetry
cadence); every series is seeded. The statistics are checked against SciPy
(``theilslopes``, ``kendalltau``) and, for the lag-restricted variance,
against a Monte-Carlo permutation estimate.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.stats

import streams.core.ops.leak as leak_module
from streams.core.ops.leak import LeakDetector, _mk_p_greater, _trend
from streams.core.ops.silence import Condition

MIB = 2**20
GIB = 2**30
STEP_MS = 5_000
BATCH = 12  # one minute of samples
Series = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def times(minutes: int) -> np.ndarray:
    return np.arange(0, minutes * 60_000, STEP_MS, dtype=np.int64)


def linear(base: float, bytes_per_h: float, noise: float) -> Series:
    return lambda t, rng: base + bytes_per_h * t / 3.6e6 + rng.normal(0.0, noise, t.size)


def sawtooth(
    base: float, period_ms: int, amplitude: float, phase: float = 0.0, bytes_per_h: float = 0.0
) -> Series:
    """GC pattern: rises by ``amplitude`` over each period, then drops (plus a trend and 5 MiB of noise)."""
    return lambda t, rng: (
        base
        + amplitude * np.mod(t / period_ms + phase, 1.0)
        + bytes_per_h * t / 3.6e6
        + rng.normal(0.0, 5 * MIB, t.size)
    )


def piecewise(grow_minutes: int, bytes_per_h: float, after: str) -> Series:
    """Growth for ``grow_minutes``, then a plateau (``after="flat"``) or a restart back to the base."""

    def f(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        stop_ms = grow_minutes * 60_000
        grown = bytes_per_h * np.minimum(t, stop_ms) / 3.6e6
        if after == "restart":
            grown = np.where(t < stop_ms, grown, 0.0)
        out: np.ndarray = 2.0 * GIB + grown + rng.normal(0.0, 20 * MIB, t.size)
        return out

    return f


def run(det: LeakDetector, t: np.ndarray, y: np.ndarray, batch: int = BATCH) -> list[Condition]:
    out = []
    for i in range(0, t.size, batch):
        c = det.update(t[i : i + batch], y[i : i + batch])
        if c is not None:
            out.append(c)
    return out


def summary(conds: list[Condition]) -> list[tuple[bool, int, int]]:
    """(active, since minute, detected minute) per transition."""
    return [(c.active, c.since_ms // 60_000, int(c.evidence["detected_ms"]) // 60_000) for c in conds]


# (name, series, minutes, expected transitions (active, since_min, detected_min))
SCENARIOS: list[tuple[str, Series, int, list[tuple[bool, int, int]]]] = [
    ("linear_leak", linear(2 * GIB, 300 * MIB, 30 * MIB), 60, [(True, 15, 20)]),
    ("small_process_absolute_threshold", linear(300 * MIB, 80 * MIB, 5 * MIB), 60, [(True, 15, 20)]),
    ("flat_noisy", linear(2 * GIB, 0.0, 50 * MIB), 90, []),
    ("flat_constant", lambda t, rng: np.full(t.size, 2.0 * GIB), 60, []),
    ("slow_growth_below_threshold", linear(2 * GIB, 30 * MIB, 10 * MIB), 90, []),
    ("large_process_relative_threshold", linear(20 * GIB, 500 * MIB, 30 * MIB), 90, []),
    ("gc_sawtooth_1min", sawtooth(2 * GIB, 60_000, 300 * MIB), 90, []),
    ("gc_sawtooth_3min", sawtooth(2 * GIB, 180_000, 300 * MIB, phase=0.3), 90, []),
    ("gc_sawtooth_5min_phase0", sawtooth(2 * GIB, 300_000, 300 * MIB, phase=0.0), 90, []),
    ("gc_sawtooth_5min_phase_half", sawtooth(2 * GIB, 300_000, 300 * MIB, phase=0.5), 90, []),
    ("gc_sawtooth_7min", sawtooth(2 * GIB, 420_000, 300 * MIB, phase=0.7), 90, []),
    (
        "leak_under_gc_sawtooth",
        sawtooth(2 * GIB, 180_000, 300 * MIB, bytes_per_h=400 * MIB),
        60,
        [(True, 15, 20)],
    ),
    # Growth stops at minute 40: the window shows it until about minute 59, then 15 minutes of hysteresis.
    ("leak_then_plateau", piecewise(40, 400 * MIB, "flat"), 120, [(True, 15, 20), (False, 59, 74)]),
    # Restart at minute 40: the drop outweighs the growth in the window from minute 45.
    ("leak_then_restart", piecewise(40, 400 * MIB, "restart"), 100, [(True, 15, 20), (False, 45, 60)]),
]


@pytest.mark.parametrize(("name", "series", "minutes", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(name: str, series: Series, minutes: int, expected: list[tuple[bool, int, int]]) -> None:
    t = times(minutes)
    y = series(t, np.random.default_rng(sum(map(ord, name))))
    assert summary(run(LeakDetector(), t, y)) == expected


def test_textbook_statistics_flag_a_gc_sawtooth() -> None:
    """Why the defaults depart from all pairs and first-hold activation: the classic procedure fires here."""
    t = times(90)
    y = sawtooth(2 * GIB, 300_000, 300 * MIB)(t, np.random.default_rng(1))
    assert run(LeakDetector(min_pair_lag_ms=0, confirm_ms=0), t, y) != []
    assert run(LeakDetector(), t, y) == []


def test_condition_values_and_evidence() -> None:
    t = times(40)
    y = linear(2 * GIB, 300 * MIB, 10 * MIB)(t, np.random.default_rng(2))
    (c,) = run(LeakDetector(limit_bytes=4 * GIB), t, y)
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in c.evidence.values())
    ev = {k: float(v) for k, v in c.evidence.items()}
    assert c.active and c.value == ev["slope_bytes_per_h"] and c.value == pytest.approx(300 * MIB, rel=0.05)
    assert c.threshold == pytest.approx(0.05 * ev["median_rss_bytes"])  # relative threshold binds at 2 GiB
    assert ev["relative_growth_per_h"] == pytest.approx(c.value / ev["median_rss_bytes"])
    assert ev["p_value"] < 1e-10 and ev["mann_kendall_s"] > 0 and 0 < ev["pairs"] < 256 * 255 / 2
    assert ev["span_ms"] >= 15 * 60_000 and ev["points"] >= 10
    # Evaluations happen at the last sample of a batch (minute m + 55 s).
    assert (c.since_ms, ev["detected_ms"]) == (15 * 60_000 + 55_000, 20 * 60_000 + 55_000)
    expected_ms = (4 * GIB - ev["fitted_rss_bytes"]) / (c.value / 3.6e6)
    assert ev["time_to_limit_ms"] == pytest.approx(expected_ms, abs=1)


# -- statistics against references ---------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_all_pairs_match_scipy(ties: bool) -> None:
    rng = np.random.default_rng(3)
    n = 60
    t = np.sort(rng.uniform(0.0, 1e6, n))
    y = rng.integers(0, 6, n).astype(np.float64)
    if not ties:
        y += 0.01 * t / 1e6
    trend = _trend(t, y, 0.0)
    assert trend is not None
    slope, s, var_s, pairs = trend
    assert pairs == n * (n - 1) // 2
    assert slope == pytest.approx(scipy.stats.theilslopes(y, t).slope, rel=1e-12, abs=1e-18)
    _, g = np.unique(y, return_counts=True)
    classic = (n * (n - 1) * (2 * n + 5) - np.sum(g * (g - 1) * (2 * g + 5))) / 18.0  # Kendall 1975
    assert var_s == pytest.approx(classic, rel=1e-12)
    # kendalltau (tau-b, asymptotic, no continuity correction) has z = S / sqrt(Var S) when t has no ties.
    p = scipy.stats.kendalltau(t, y, alternative="greater", method="asymptotic").pvalue
    assert s / math.sqrt(var_s) == pytest.approx(scipy.stats.norm.isf(p), rel=1e-9)


@pytest.mark.parametrize(("ties", "min_lag"), [(False, 250_000.0), (True, 250_000.0), (False, 500_000.0)])
def test_restricted_pairs_variance_matches_permutations(ties: bool, min_lag: float) -> None:
    rng = np.random.default_rng(4)
    n = 40
    t = np.sort(rng.uniform(0.0, 1e6, n))
    y = rng.integers(0, 5, n).astype(np.float64) if ties else rng.normal(size=n)
    trend = _trend(t, y, min_lag)
    assert trend is not None
    var_s = trend[2]
    i, j = np.triu_indices(n, k=1)
    keep = t[j] - t[i] >= min_lag
    i, j = i[keep], j[keep]
    perms = np.array([rng.permutation(y) for _ in range(6_000)])
    s = np.sign(perms[:, j] - perms[:, i]).sum(axis=1)
    assert abs(s.mean()) < 4 * math.sqrt(var_s / s.size)
    assert s.var() == pytest.approx(var_s, rel=0.06)  # 6 000 draws: relative SE of a variance ~1.8 %


@pytest.mark.parametrize(
    ("s", "var_s", "p"), [(0, 10.0, 0.5), (1, 10.0, 0.5), (-1, 10.0, 0.5), (0, 0.0, 1.0)]
)
def test_mann_kendall_p_value_edges(s: int, var_s: float, p: float) -> None:
    assert _mk_p_greater(s, var_s) == p


# -- batching, order, gating ----------------------------------------------------


def _integral_series(minutes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    t = times(minutes)
    y = np.round(
        linear(2 * GIB, 300 * MIB, 20 * MIB)(t, np.random.default_rng(seed))
    )  # whole bytes: exact sums
    return t, y


@pytest.mark.parametrize("batch", [1, 7, 100, 10_000])
def test_buckets_do_not_depend_on_batching(batch: int) -> None:
    t, y = _integral_series(45, 5)
    reference = LeakDetector(eval_every_ms=10**9)
    run(reference, t, y)
    det = LeakDetector(eval_every_ms=10**9)
    run(det, t, y, batch=batch)
    # Not stale_samples: a sample leaving the window is pruned later or (one big batch) dropped on arrival.
    keys = ("keys", "offset_sum_ms", "rss_sum_bytes", "counts", "max_time_ms")
    assert {k: det.to_state()[k] for k in keys} == {k: reference.to_state()[k] for k in keys}


def test_out_of_order_within_batches_gives_the_same_transitions() -> None:
    t, y = _integral_series(60, 6)
    expected = summary(run(LeakDetector(), t, y))
    rng = np.random.default_rng(7)
    det = LeakDetector()
    got = []
    for i in range(0, t.size, BATCH):
        perm = rng.permutation(min(BATCH, t.size - i)) + i
        c = det.update(t[perm], y[perm])
        if c is not None:
            got.append(c)
    assert summary(got) == expected and expected == [(True, 15, 20)]


def test_late_samples_inside_the_window_count_and_stale_ones_are_dropped() -> None:
    t, y = _integral_series(40, 8)
    det = LeakDetector(eval_every_ms=10**9)
    det.update(t[-1:], y[-1:])  # newest first
    det.update(t[:-1][::-1].copy(), y[:-1][::-1].copy())  # then everything else, backwards
    n_old = int(np.count_nonzero(t < t[-1] - 30 * 60_000 + det._bucket_ms))
    assert det.stale_samples > 0 and abs(det.stale_samples - n_old) <= 2  # within a bucket of the window edge
    assert det.n_points <= det.max_points
    assert det.update(np.array([0], dtype=np.int64), np.array([1.0])) is None  # far too old: dropped
    assert det.update(np.array([t[-1]], dtype=np.int64), np.array([math.nan])) is None
    assert det.invalid_samples == 1


def test_evaluates_at_most_every_eval_every_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = leak_module._trend

    def counting(t: np.ndarray, y: np.ndarray, min_lag: float) -> Any:
        calls.append(t.size)
        return real(t, y, min_lag)

    monkeypatch.setattr(leak_module, "_trend", counting)
    t, y = _integral_series(40, 9)
    det = LeakDetector(eval_every_ms=120_000)
    run(det, t, y, batch=1)
    # Evaluations need a half-full window (15 min): then one every 2 minutes of event time.
    assert len(calls) == pytest.approx((40 - 15) / 2, abs=1)


@pytest.mark.parametrize("cut_batches", [5, 17, 25, 52, 80])
def test_state_round_trip_mid_stream(cut_batches: int) -> None:
    t = times(110)
    y = piecewise(40, 400 * MIB, "flat")(t, np.random.default_rng(10))
    reference = LeakDetector(limit_bytes=8 * GIB)
    expected = run(reference, t, y)
    assert [c.active for c in expected] == [True, False]
    cut = cut_batches * BATCH
    first = LeakDetector(limit_bytes=8 * GIB)
    head = run(first, t[:cut], y[:cut])
    restored = LeakDetector.from_state(json.loads(json.dumps(first.to_state(), allow_nan=False)))
    tail = run(restored, t[cut:], y[cut:])
    assert head + tail == expected
    assert restored.to_state() == reference.to_state()


# -- validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"window_ms": 0}, "window_ms"),
        ({"window_ms": 1.5}, "window_ms"),
        ({"min_points": 2}, "min_points"),
        ({"min_points": 300}, "min_points"),
        ({"max_points": 2}, "max_points"),
        ({"min_growth_bytes_per_h": -1.0}, "min_growth_bytes_per_h"),
        ({"min_growth_bytes_per_h": math.inf}, "min_growth_bytes_per_h"),
        ({"min_relative_growth_per_h": math.nan}, "min_relative_growth_per_h"),
        ({"max_p_value": 0.0}, "max_p_value"),
        ({"max_p_value": 1.5}, "max_p_value"),
        ({"clear_after_ms": -1}, "clear_after_ms"),
        ({"eval_every_ms": True}, "eval_every_ms"),
        ({"limit_bytes": 0}, "limit_bytes"),
        ({"min_pair_lag_ms": -1}, "min_pair_lag_ms"),
        ({"min_pair_lag_ms": 20 * 60_000}, "min_pair_lag_ms"),
        ({"confirm_ms": None}, "confirm_ms"),
    ],
)
def test_parameter_validation_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        LeakDetector(**kwargs)


def test_update_validation_names_the_array() -> None:
    det = LeakDetector()
    with pytest.raises(ValueError, match="times_ms"):
        det.update(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="times_ms"):
        det.update(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="rss_bytes"):
        det.update(np.array([1, 2], dtype=np.int64), np.array([1.0]))
    assert det.update(np.zeros(0, dtype=np.int64), np.zeros(0)) is None


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(v=2), "v=1"),
        (lambda s: s.pop("counts"), "missing"),
        (lambda s: s["params"].update(window_ms=0), "window_ms"),
        (lambda s: s["params"].pop("confirm_ms"), "params"),
        (lambda s: s.update(counts=s["counts"][:-1]), "length"),
        (lambda s: s.update(keys=s["keys"][::-1]), "increasing"),
        (lambda s: s.update(rss_sum_bytes=[-1.0] * len(s["keys"])), "RSS"),
        (lambda s: s.update(max_time_ms=s["max_time_ms"] + 10**9), "window"),
        (lambda s: s.update(active=1), "active"),
        (lambda s: s.update(since_ms="x"), "since_ms"),
        (lambda s: s.update(stale_samples=-1), "stale_samples"),
    ],
)
def test_from_json_rejects_malformed_state(mutate: Any, match: str) -> None:
    t, y = _integral_series(20, 11)
    det = LeakDetector()
    run(det, t, y)
    state = json.loads(json.dumps(det.to_state()))
    mutate(state)
    with pytest.raises(ValueError, match=match):
        LeakDetector.from_state(state)


# -- cost -----------------------------------------------------------------------


def test_update_cost() -> None:
    """Per-update cost on a full window (256 points), without and with an evaluation; loosely bounded."""
    t, y = _integral_series(60, 12)
    det = LeakDetector(eval_every_ms=10**12)
    run(det, t[: 40 * BATCH], y[: 40 * BATCH])
    det.update(t[40 * BATCH : 40 * BATCH + 1], y[40 * BATCH : 40 * BATCH + 1])  # evaluates once, then never
    assert det.n_points >= det.max_points - 1  # 255 or 256, with the alignment of the window on buckets
    start = time.perf_counter()
    for i in range(40 * BATCH + 1, 60 * BATCH, BATCH):
        det.update(t[i : i + BATCH], y[i : i + BATCH])
    plain_us = (time.perf_counter() - start) / 20 * 1e6
    det.eval_every_ms = 0
    start = time.perf_counter()
    for i in range(40 * BATCH, 60 * BATCH, BATCH):
        det.update(t[i : i + BATCH], y[i : i + BATCH])
    eval_us = (time.perf_counter() - start) / 20 * 1e6
    print(f"LeakDetector.update, 12 samples, 256 points: {plain_us:.0f} us, with evaluation {eval_us:.0f} us")
    assert plain_us < 5_000 and eval_us < 50_000


def test_json_aliases() -> None:
    det = LeakDetector()
    run(det, *_integral_series(20, 13))
    assert LeakDetector.from_json(det.to_json()).to_state() == det.to_state()
