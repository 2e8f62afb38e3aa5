"""Tests of streams.core.sketch.DDSketch.

Reference: Datadog's ``ddsketch`` library (``ddsketch.DDSketch`` and, for the
collapsing tests, ``LogCollapsingLowestDenseDDSketch``), fed value by value.

Rank convention (checked by ``test_rank_convention_is_numpy_lower``): the
library computes ``rank = q * (count - 1)`` and returns the first bucket whose
cumulative count is ``> rank`` (``Store.key_at_rank(rank, lower=True)``), after
the zero bucket. For unit weights that is the bucket of the item of 0-based
sorted index ``floor(q * (n - 1))``, i.e. ``np.quantile(x, q, method="lower")``.
Ours uses the very same rank and bucket search; the only differences are that
ours clamps the bucket representative to the exact ``[min, max]`` and returns
the exact min/max at ``q=0``/``q=1``. So for ``0 < q < 1``:
``ours == clip(library, min, max)``, to float rounding (in practice bit for
bit: same mapping arithmetic, same sequential cumulative sums).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from ddsketch import DDSketch as RefSketch
from ddsketch import LogCollapsingLowestDenseDDSketch as RefCollapsingSketch

from streams.core.sketch import MAX_BUCKETS_LIMIT, MIN_INDEXABLE_VALUE, DDSketch

QS = [0.5, 0.9, 0.95, 0.99]
GRID = [float(q) for q in np.linspace(0.0, 1.0, 41)[1:-1]]
REL_TOL = 1e-12  # float rounding between the two implementations
SLACK = 1e-9  # relative slack on the accuracy bound (log rounding at bucket edges)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# name -> seeded generator of a 1-D float64 array of values that are 0 or >= MIN_INDEXABLE_VALUE
DISTRIBUTIONS: dict[str, Callable[[], np.ndarray]] = {
    "lognormal_latency_ms": lambda: _rng(1).lognormal(mean=3.0, sigma=0.8, size=20_000),
    "heavy_tail_lognormal": lambda: _rng(2).lognormal(mean=2.0, sigma=2.0, size=20_000),
    "uniform": lambda: _rng(3).uniform(0.0, 100.0, size=20_000),
    "exponential": lambda: _rng(4).exponential(scale=50.0, size=20_000),
    "constant": lambda: np.full(1_000, 42.5),
    "with_zeros": lambda: np.where(_rng(5).random(20_000) < 0.3, 0.0, _rng(6).exponential(10.0, 20_000)),
    "mostly_zeros": lambda: np.r_[np.zeros(999), 12.0],
    "integer_ms": lambda: _rng(7).integers(0, 1_000, size=20_000).astype(np.float64),
    "tiny": lambda: _rng(8).lognormal(mean=-14.0, sigma=1.0, size=20_000),
    "huge": lambda: _rng(9).lognormal(mean=40.0, sigma=2.0, size=20_000),
    "three_values": lambda: np.array([3.0, 1.0, 2.0]),
}


def _ref(values: np.ndarray, weights: np.ndarray | None = None, a: float = 0.01) -> RefSketch:
    ref = RefSketch(a)
    for i, v in enumerate(values.tolist()):
        w = 1.0 if weights is None else float(weights[i])
        if w > 0:  # the library refuses weight 0
            ref.add(v, w)
    return ref


def _ref_collapsing(batches: list[np.ndarray], a: float, max_buckets: int) -> RefCollapsingSketch:
    ref = RefCollapsingSketch(a, bin_limit=max_buckets)
    for batch in batches:
        for v in batch.tolist():
            ref.add(v)
    return ref


def _sketch(values: np.ndarray, a: float = 0.01, max_buckets: int = 2048, batch: int = 500) -> DDSketch:
    s = DDSketch(a, max_buckets)
    for start in range(0, len(values), batch):
        s.add(values[start : start + batch])
    return s


def _state(s: DDSketch) -> dict[str, Any]:
    """Everything but the float sum, which depends on summation order."""
    out = s.to_json()
    del out["sum"]
    return out


def _assert_same_except_sum(a: DDSketch, b: DDSketch) -> None:
    assert _state(a) == _state(b)
    assert math.isclose(a.sum, b.sum, rel_tol=1e-12)


# --------------------------------------------------------------------------- differential


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_differential_vs_library(name: str) -> None:
    x = DISTRIBUTIONS[name]()
    assert bool(np.all((x == 0) | (x >= MIN_INDEXABLE_VALUE)))  # same zero bucket in both
    ours = _sketch(x)
    ref = _ref(x)
    lo, hi = float(x.min()), float(x.max())
    assert ours.count == ref.count == len(x)
    assert ours.min == lo and ours.max == hi
    assert math.isclose(ours.sum, ref.sum, rel_tol=1e-9)
    for q in QS + GRID:
        got = ours.quantile(q)
        lib = ref.get_quantile_value(q)
        assert got is not None and lib is not None
        assert math.isclose(got, min(max(lib, lo), hi), rel_tol=REL_TOL), (q, got, lib)
    # both within relative accuracy of the exact quantile (same rank convention)
    for q in QS:
        true = float(np.quantile(x, q, method="lower"))
        for est in (ours.quantile(q), ref.get_quantile_value(q)):
            assert est is not None
            assert abs(est - true) <= 0.01 * true * (1 + SLACK), (q, est, true)
    assert ours.quantile(0.0) == lo
    assert ours.quantile(1.0) == hi


@pytest.mark.parametrize("a", [0.001, 0.005, 0.02, 0.05, 0.2])
def test_differential_other_accuracies(a: float) -> None:
    # Bucket count grows as 1/a: at a=0.001 this span needs ~12k buckets, so lift the bound
    # (the library's plain DDSketch never collapses).
    x = DISTRIBUTIONS["heavy_tail_lognormal"]()
    ours = _sketch(x, a=a, max_buckets=100_000)
    assert ours.n_buckets < 100_000
    ref = _ref(x, a=a)
    lo, hi = float(x.min()), float(x.max())
    for q in QS + GRID:
        lib = ref.get_quantile_value(q)
        assert lib is not None
        assert ours.quantile(q) == pytest.approx(min(max(lib, lo), hi), rel=REL_TOL)
        true = float(np.quantile(x, q, method="lower"))
        est = ours.quantile(q)
        assert est is not None and abs(est - true) <= a * true * (1 + SLACK)


def test_differential_fractional_weights() -> None:
    rng = _rng(10)
    x = rng.lognormal(3.0, 1.0, 5_000)
    w = rng.uniform(0.0, 3.0, 5_000)
    w[::7] = 0.0
    ours = DDSketch()
    for start in range(0, len(x), 500):
        ours.add(x[start : start + 500], weights=w[start : start + 500])
    ref = _ref(x, w)
    assert ours.count == pytest.approx(ref.count, rel=1e-12)
    kept = x[w > 0]
    lo, hi = float(kept.min()), float(kept.max())
    assert (ours.min, ours.max) == (lo, hi)
    for q in QS + GRID:
        lib = ref.get_quantile_value(q)
        assert lib is not None
        assert ours.quantile(q) == pytest.approx(min(max(lib, lo), hi), rel=REL_TOL)


def test_rank_convention_is_numpy_lower() -> None:
    # 10 values a factor 2 apart (distinct buckets): quantile(q) must be the
    # item of index floor(q * 9), the "lower" rule, not "nearest" or interpolation.
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0])
    s = DDSketch(0.01)
    s.add(x)
    ref = _ref(x, a=0.01)
    for q in [0.05, 0.1, 0.11, 0.5, 0.55, 0.88, 0.89, 0.95]:
        true = float(np.quantile(x, q, method="lower"))
        assert true == x[math.floor(q * 9)]
        for est in (s.quantile(q), ref.get_quantile_value(q)):
            assert est == pytest.approx(true, rel=0.01)


# --------------------------------------------------------------------------- merge


def _wide() -> np.ndarray:
    return _rng(11).lognormal(0.0, 4.0, 6_000)  # about 1e-7 .. 1e7


@pytest.mark.parametrize("max_buckets", [2048, 64])
@pytest.mark.parametrize(
    "split",
    [
        pytest.param(lambda n: [slice(0, n // 2), slice(n // 2, n)], id="halves"),
        pytest.param(lambda n: [slice(0, 7), slice(7, n)], id="uneven"),
        pytest.param(lambda n: [slice(0, 0), slice(0, n)], id="empty_first"),
        pytest.param(lambda n: [slice(i, i + 1000) for i in range(0, n, 1000)], id="six_parts"),
    ],
)
def test_merge_equals_union(split: Callable[[int], list[slice]], max_buckets: int) -> None:
    x = np.sort(_wide()) if max_buckets == 64 else _wide()  # sorted: collapse in every part
    union = _sketch(x, max_buckets=max_buckets)
    parts = [_sketch(x[s], max_buckets=max_buckets) for s in split(len(x))]
    for order in (parts, parts[::-1]):
        merged = DDSketch(0.01, max_buckets)
        for p in order:
            merged.merge(p)
        _assert_same_except_sum(merged, union)
    # merging into the first part (not into an empty sketch) too
    into_first = parts[0].copy()
    for p in parts[1:]:
        into_first.merge(p)
    _assert_same_except_sum(into_first, union)
    if max_buckets == 64:
        assert union.n_buckets == 64  # the case really collapsed


def test_merge_does_not_change_other() -> None:
    a, b = _sketch(_wide()[:100]), _sketch(_wide()[100:])
    before = b.to_json()
    a.merge(b)
    assert b.to_json() == before


@pytest.mark.parametrize("first_empty", [True, False])
def test_merge_with_empty(first_empty: bool) -> None:
    full = _sketch(_wide())
    empty = DDSketch()
    if first_empty:
        empty.merge(full)
        assert empty.to_json() == full.to_json()
    else:
        before = full.to_json()
        full.merge(empty)
        assert full.to_json() == before
    both = DDSketch()
    both.merge(DDSketch())
    assert both.count == 0 and both.quantile(0.5) is None


def test_merge_self_doubles() -> None:
    x = _wide()
    s = _sketch(x)
    s.merge(s)
    _assert_same_except_sum(s, _sketch(np.r_[x, x]))


def test_merge_rejects_other_accuracy() -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        DDSketch(0.01).merge(DDSketch(0.02))


def test_batching_does_not_change_state() -> None:
    x = _wide()
    one = _sketch(x, max_buckets=64, batch=len(x))
    for batch in (1, 13, 500):
        _assert_same_except_sum(_sketch(x, max_buckets=64, batch=batch), one)


# --------------------------------------------------------------------------- weights


def test_weight_two_equals_adding_twice() -> None:
    x = _wide()
    weighted = DDSketch()
    weighted.add(x, weights=np.full(len(x), 2.0))
    twice = DDSketch()
    twice.add(x)
    twice.add(x)
    _assert_same_except_sum(weighted, twice)


def test_integer_weights_equal_repeats() -> None:
    rng = _rng(12)
    x = rng.exponential(20.0, 2_000)
    k = rng.integers(0, 5, 2_000)
    weighted = DDSketch()
    weighted.add(x, weights=k.astype(np.float64))
    repeated = DDSketch()
    repeated.add(np.repeat(x, k))
    _assert_same_except_sum(weighted, repeated)


def test_zero_weight_adds_nothing() -> None:
    s = DDSketch()
    s.add(np.array([1.0, 1000.0, 0.0, 5.0]), weights=np.array([1.0, 0.0, 0.0, 2.0]))
    assert (s.count, s.min, s.max, s.sum) == (3.0, 1.0, 5.0, 11.0)
    s.add(np.array([7.0]), weights=np.array([0.0]))
    assert s.count == 3.0 and s.max == 5.0


# --------------------------------------------------------------------------- JSON state


def _jsonable_only(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _jsonable_only(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_jsonable_only(v) for v in obj)
    return obj is None or type(obj) in (int, float)


ROUND_TRIP_CASES: dict[str, Callable[[], DDSketch]] = {
    "empty": DDSketch,
    "zeros_only": lambda: _sketch(np.zeros(10)),
    "latency": lambda: _sketch(DISTRIBUTIONS["lognormal_latency_ms"]()),
    "with_zeros": lambda: _sketch(DISTRIBUTIONS["with_zeros"]()),
    "collapsed": lambda: _sketch(_wide(), max_buckets=32),
    "other_params": lambda: _sketch(_wide(), a=0.05, max_buckets=100),
}


def _fractional() -> DDSketch:
    s = DDSketch()
    s.add(_wide(), weights=_rng(13).uniform(0.1, 2.0, 6_000))
    return s


ROUND_TRIP_CASES["fractional_weights"] = _fractional


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CASES))
def test_json_round_trip(name: str) -> None:
    s = ROUND_TRIP_CASES[name]()
    state = s.to_json()
    assert _jsonable_only(state)
    text = json.dumps(state, allow_nan=False)
    back = DDSketch.from_json(json.loads(text))
    assert back.to_json() == state
    assert (back.count, back.sum, back.min, back.max) == (s.count, s.sum, s.min, s.max)
    assert back.quantiles([*QS, 0.0, 1.0]) == s.quantiles([*QS, 0.0, 1.0])
    assert back.relative_accuracy == s.relative_accuracy and back.max_buckets == s.max_buckets


def test_json_is_compact() -> None:
    state = _sketch(DISTRIBUTIONS["lognormal_latency_ms"]()).to_json()
    assert all(type(c) is int for c in state["counts"])  # unweighted counts written as ints
    assert len(json.dumps(state)) < 8 * len(state["counts"]) + 200


def test_from_json_trims_empty_edges() -> None:
    state = _sketch(np.array([1.0, 2.0])).to_json()
    padded = dict(state, offset=state["offset"] - 2, counts=[0, 0, *state["counts"], 0.0])
    assert DDSketch.from_json(padded).to_json() == state


def _valid_state() -> dict[str, Any]:
    return _sketch(np.array([0.0, 1.0, 2.0, 3.0, 100.0])).to_json()


def _without(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda d: {k: v for k, v in d.items() if k != key}


def _with(**changes: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: {**d, **changes}


MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    **{f"missing_{k}": _without(k) for k in ["a", "m", "zero", "offset", "counts", "n", "sum", "min", "max"]},
    "extra_key": _with(version=2),
    "not_a_mapping": lambda d: list(d.items()),
    "none": lambda d: None,
    "a_string": _with(a="0.01"),
    "a_bool": _with(a=True),
    "a_zero": _with(a=0.0),
    "a_one": _with(a=1.0),
    "a_nan": _with(a=math.nan),
    "m_float": _with(m=2048.0),
    "m_string": _with(m="2048"),
    "m_zero": _with(m=0),
    "m_negative": _with(m=-3),
    "m_too_large": _with(m=10**12),
    "offset_float": _with(offset=1.5),
    "offset_string": _with(offset="0"),
    "offset_bool": _with(offset=True),
    "offset_out_of_key_range": _with(offset=10**9),
    "offset_below_key_range": _with(offset=-(10**9)),
    "counts_dict": _with(counts={"0": 1}),
    "counts_string": _with(counts="1,2"),
    "counts_item_string": lambda d: {**d, "counts": [*d["counts"][:-1], "1"]},
    "counts_item_bool": lambda d: {**d, "counts": [True] * len(d["counts"])},
    "counts_item_none": lambda d: {**d, "counts": [*d["counts"][:-1], None]},
    "counts_negative": lambda d: {**d, "counts": [-1, *d["counts"]], "offset": d["offset"] - 1},
    "counts_nan": lambda d: {**d, "counts": [*d["counts"][:-1], math.nan]},
    "counts_inf": lambda d: {**d, "counts": [*d["counts"][:-1], math.inf]},
    "counts_longer_than_m": lambda d: {**d, "m": 2},
    "counts_inconsistent_with_n": lambda d: {**d, "counts": [c * 2 for c in d["counts"]]},
    "zero_negative": _with(zero=-1.0),
    "zero_string": _with(zero="1"),
    "zero_nan": _with(zero=math.nan),
    "n_negative": _with(n=-5.0),
    "n_inf": _with(n=math.inf),
    "n_wrong": _with(n=6.0),
    "sum_nan": _with(sum=math.nan),
    "sum_negative": _with(sum=-1.0),
    "sum_list": _with(sum=[106.0]),
    "min_none_when_not_empty": _with(min=None),
    "max_string": _with(max="100"),
    "min_above_max": _with(min=200.0),
    "min_negative": _with(min=-1.0),
    "max_inf": _with(max=math.inf),
    "empty_with_min": lambda d: {**DDSketch().to_json(), "min": 0.0},
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_from_json_rejects_malformed(name: str) -> None:
    state = _valid_state()
    DDSketch.from_json(state)  # the base payload is valid
    with pytest.raises(ValueError):
        DDSketch.from_json(MALFORMED[name](state))


# --------------------------------------------------------------------------- collapsing


def _latency_with_tiny_tail() -> np.ndarray:
    """80 % of values in [100, 110) ms (5 buckets wide), 20 % spread far below (~1e-5 to 1 ms)."""
    rng = _rng(14)
    return rng.permutation(np.r_[rng.uniform(100.0, 110.0, 8_000), rng.lognormal(-5.0, 2.0, 2_000)])


@pytest.mark.parametrize("max_buckets", [8, 32, 100])
def test_collapsing_keeps_high_quantiles(max_buckets: int) -> None:
    x = _latency_with_tiny_tail()
    s = DDSketch(0.01, max_buckets)
    for start in range(0, len(x), 250):
        s.add(x[start : start + 250])
        assert 1 <= s.n_buckets <= max_buckets
    assert s.n_buckets == max_buckets  # it did collapse
    # p50..p999 fall in the top max_buckets keys: still within the relative error.
    for q in [*QS, 0.999]:
        true = float(np.quantile(x, q, method="lower"))
        est = s.quantile(q)
        assert est is not None and abs(est - true) <= 0.01 * true * (1 + SLACK), q
    # low quantiles land in the collapsed lowest bucket: over-estimated, never under.
    true_low = float(np.quantile(x, 0.01, method="lower"))
    low = s.quantile(0.01)
    assert low is not None and low > true_low * 1.01
    # same quantiles as the library's collapsing-lowest sketch with the same bin limit
    ref = _ref_collapsing([x], 0.01, max_buckets)
    lo, hi = float(x.min()), float(x.max())
    for q in QS + GRID:
        lib = ref.get_quantile_value(q)
        assert lib is not None
        assert s.quantile(q) == pytest.approx(min(max(lib, lo), hi), rel=REL_TOL)


@pytest.mark.parametrize("max_buckets", [8, 64, 300])
def test_collapsing_wide_data_matches_library(max_buckets: int) -> None:
    x = _wide()
    s = _sketch(x, max_buckets=max_buckets, batch=250)
    assert s.n_buckets == max_buckets
    ref = _ref_collapsing([x], 0.01, max_buckets)
    lo, hi = float(x.min()), float(x.max())
    for q in QS + GRID:
        lib = ref.get_quantile_value(q)
        assert lib is not None
        assert s.quantile(q) == pytest.approx(min(max(lib, lo), hi), rel=REL_TOL)


COLLAPSE_SEQUENCES: dict[str, list[np.ndarray]] = {
    "small_then_huge": [np.array([1e-6, 2e-6, 1.0]), np.array([1e12, 5e12])],
    "huge_then_small": [np.array([1e12, 5e12]), np.array([1e-6, 2e-6, 1.0])],
    "interleaved": [np.array([1.0]), np.array([1e9]), np.array([1e-3]), np.array([1e15]), np.array([1e2])],
    "single_far_outlier": [np.geomspace(1.0, 10.0, 50), np.array([1e30])],
}


@pytest.mark.parametrize("name", sorted(COLLAPSE_SEQUENCES))
def test_collapsing_sequences_match_library(name: str) -> None:
    batches = COLLAPSE_SEQUENCES[name]
    s = DDSketch(0.01, 16)
    for b in batches:
        s.add(b)
        assert s.n_buckets <= 16
    ref = _ref_collapsing(batches, 0.01, 16)
    x = np.concatenate(batches)
    lo, hi = float(x.min()), float(x.max())
    for q in QS + GRID:
        lib = ref.get_quantile_value(q)
        assert lib is not None
        assert s.quantile(q) == pytest.approx(min(max(lib, lo), hi), rel=REL_TOL), q
    # order independence of the collapsed state
    _assert_same_except_sum(s, _sketch(x[::-1], max_buckets=16, batch=len(x)))


# --------------------------------------------------------------------------- errors


BAD_ADDS: dict[str, tuple[Any, Any, str]] = {
    "negative": ([1.0, -0.5, 2.0], None, "negative"),
    "nan": ([1.0, math.nan], None, "NaN"),
    "inf": ([math.inf, 1.0], None, "infinite"),
    "minus_inf": ([-math.inf], None, "infinite"),
    "two_d": ([[1.0, 2.0]], None, "1-D"),
    "weights_shorter": ([1.0, 2.0, 3.0], [1.0, 1.0], "shape"),
    "weights_longer": ([1.0], [1.0, 1.0], "shape"),
    "weights_negative": ([1.0, 2.0], [1.0, -1.0], "negative"),
    "weights_nan": ([1.0, 2.0], [math.nan, 1.0], "NaN"),
    "weights_inf": ([1.0, 2.0], [1.0, math.inf], "infinite"),
    "weights_bad_with_empty_values": ([], [1.0], "shape"),
}


@pytest.mark.parametrize("name", sorted(BAD_ADDS))
def test_add_rejects_bad_input(name: str) -> None:
    values, weights, message = BAD_ADDS[name]
    s = _sketch(np.array([1.0, 5.0]))
    before = s.to_json()
    with pytest.raises(ValueError, match=message):
        s.add(np.asarray(values, dtype=np.float64), None if weights is None else np.asarray(weights))
    assert s.to_json() == before  # unchanged


def test_add_error_names_first_bad_index() -> None:
    with pytest.raises(
        ValueError, match=r"values must be finite and >= 0; got 2 negative \(first at index 1"
    ):
        DDSketch().add(np.array([1.0, -2.0, 3.0, -4.0]))


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan, math.inf, "0.5", True, None])
def test_quantile_rejects_bad_q(q: Any) -> None:
    s = _sketch(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="quantile"):
        s.quantile(q)
    with pytest.raises(ValueError, match="quantile"):
        s.quantiles([0.5, q])
    with pytest.raises(ValueError, match="quantile"):
        DDSketch().quantile(q)  # even when empty


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relative_accuracy": 0.0}, "open interval"),
        ({"relative_accuracy": 1.0}, "open interval"),
        ({"relative_accuracy": -0.1}, "open interval"),
        ({"relative_accuracy": math.nan}, "open interval"),
        ({"relative_accuracy": math.inf}, "open interval"),
        ({"relative_accuracy": 1e-300}, "too small"),
        ({"relative_accuracy": "0.01"}, "must be a float"),
        ({"relative_accuracy": True}, "must be a float"),
        ({"max_buckets": 0}, r"in \[1, 1048576\]"),
        ({"max_buckets": -5}, r"in \[1, 1048576\]"),
        ({"max_buckets": MAX_BUCKETS_LIMIT + 1}, r"in \[1, 1048576\]"),
        ({"max_buckets": 2.5}, "must be an int"),
        ({"max_buckets": "10"}, "must be an int"),
        ({"max_buckets": True}, "must be an int"),
    ],
)
def test_constructor_rejects_bad_params(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DDSketch(**kwargs)


# --------------------------------------------------------------------------- edge cases


def test_empty_sketch() -> None:
    s = DDSketch()
    assert s.quantile(0.5) is None
    assert s.quantiles(QS) == [None] * len(QS)
    assert (s.count, s.sum, s.min, s.max, s.mean, s.n_buckets) == (0.0, 0.0, None, None, None, 0)
    s.add(np.array([], dtype=np.float64))
    s.add(np.array([3.0, 4.0]), weights=np.zeros(2))
    assert s.count == 0 and s.quantile(0.99) is None


def test_values_below_min_indexable_are_zeros() -> None:
    s = DDSketch()
    s.add(np.array([1e-12, 5e-10, 0.0]))
    assert s.n_buckets == 0 and s.count == 3
    est = s.quantile(0.5)
    assert est is not None and 0.0 <= est < MIN_INDEXABLE_VALUE  # absolute, not relative, error
    assert s.quantile(0.0) == 0.0 and s.quantile(1.0) == 5e-10


def test_endpoints_exact_and_clamped() -> None:
    s = DDSketch()
    s.add(np.array([7.3] * 10))
    assert s.quantiles([0.0, 0.5, 1.0]) == [7.3, 7.3, 7.3]  # representative 7.3157 clamped
    assert s.mean == pytest.approx(7.3)


def test_copy_is_independent() -> None:
    s = _sketch(np.array([1.0, 2.0, 3.0]))
    c = s.copy()
    c.add(np.array([1.0, 2.0, 3.0]))
    assert s.count == 3 and c.count == 6
    assert s.to_json()["counts"] != c.to_json()["counts"]
