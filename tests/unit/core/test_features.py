"""Tests of streams.core.features.FeatureStats.

Oracles: numpy on the present values (numeric moments), ``collections.Counter``
on the raw stream (categorical counts), and the same stream fed in one pass
(merges). Every random stream is seeded.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streams.core.features import FeatureStats

REL = 1e-9  # merge vs single pass: same numbers, different rounding order


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _approx_result(expected: dict[str, dict[str, Any]], rel: float = REL) -> Any:
    """``pytest.approx`` on every float of a result (lists of [label, count] included)."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, float):
            return pytest.approx(v, rel=rel, abs=1e-12)
        return v

    return conv(expected)


def _stream(seed: int, n: int) -> dict[str, list[Any]]:
    """A mixed batch: numeric with missing values, low-cardinality strings, booleans."""
    rng = _rng(seed)
    miss = rng.random((3, n)) < 0.1
    amount = rng.lognormal(3.0, 1.0, n)
    age = rng.integers(18, 90, n)
    big = 1e9 + rng.normal(0.0, 1e-3, n)  # large mean, tiny spread: naive variance fails here
    country = rng.choice(["FR", "DE", "US", "JP", "BR"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    return {
        "amount": [None if m else float(v) for m, v in zip(miss[0], amount, strict=True)],
        "age": [None if m else int(v) for m, v in zip(miss[1], age, strict=True)],
        "big": [float(v) for v in big],
        "country": [None if m else str(v) for m, v in zip(miss[2], country, strict=True)],
        "vip": [bool(v) for v in rng.random(n) < 0.2],
    }


def _slice(batch: dict[str, list[Any]], lo: int, hi: int) -> dict[str, list[Any]]:
    return {k: v[lo:hi] for k, v in batch.items()}


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_features": 0},
        {"max_features": -1},
        {"max_features": 1.5},
        {"max_features": True},
        {"top_k": 0},
        {"top_k": "20"},
        {"top_k": False},
    ],
)
def test_bad_parameters_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FeatureStats(**kwargs)


def test_parameters_are_public() -> None:
    fs = FeatureStats(max_features=7, top_k=3)
    assert (fs.max_features, fs.top_k, fs.capacity) == (7, 3, 12)


# ------------------------------------------------------------------ numeric


NUMERIC_CASES: dict[str, list[Any]] = {
    "floats": _rng(1).normal(10.0, 3.0, 500).tolist(),
    "with_none": [None if i % 7 == 0 else float(x) for i, x in enumerate(_rng(2).normal(0.0, 1.0, 500))],
    "with_nan": [math.nan if i % 5 == 0 else float(x) for i, x in enumerate(_rng(3).exponential(2.0, 500))],
    "none_first": [None, None, *_rng(4).uniform(-5.0, 5.0, 100).tolist()],
    "ints": _rng(5).integers(-1000, 1000, 300).tolist(),
    "ints_and_floats": [1, 2.5, None, 4, -3.25, 7],
    "single_value": [None, 42.0, None],
    "constant": [3.5] * 50,
    "large_offset": (1e9 + _rng(6).normal(0.0, 1e-3, 1000)).tolist(),
    "infinity_is_missing": [1.0, math.inf, 2.0, -math.inf, 3.0],
    "numpy_scalars": [np.float64(1.5), np.int64(2), None, np.float32(4.0)],
}


@pytest.mark.parametrize("name", list(NUMERIC_CASES))
def test_numeric_matches_numpy(name: str) -> None:
    values = NUMERIC_CASES[name]
    fs = FeatureStats()
    fs.add({"x": values})
    r = fs.result()["x"]

    arr = np.array([math.nan if v is None else float(v) for v in values])
    present = arr[np.isfinite(arr)]
    assert r["kind"] == "numeric"
    assert "mixed" not in r
    assert r["count"] == float(present.size)
    assert r["missing"] == float(len(values) - present.size)
    assert r["missing_rate"] == pytest.approx((len(values) - present.size) / len(values), rel=1e-15)
    assert r["mean"] == pytest.approx(float(present.mean()), rel=1e-12, abs=1e-12)
    assert r["std"] == pytest.approx(float(present.std()), rel=1e-9, abs=1e-12)
    assert r["min"] == float(present.min())
    assert r["max"] == float(present.max())


@pytest.mark.parametrize(
    "column",
    [
        pytest.param([1.0, 10**400, 2.0], id="int_beyond_float_range"),
        pytest.param(["x", 10**400, 1.0, 2.0, 3.0], id="mixed_int_beyond_float_range"),
    ],
)
def test_numbers_beyond_float_range_are_missing(column: list[Any]) -> None:
    fs = FeatureStats()
    fs.add({"x": column})
    r = fs.result()["x"]
    assert (r["missing"], r["min"], r["max"]) == (1.0, 1.0, 3.0 if "x" in column else 2.0)


def test_numpy_array_columns() -> None:
    fs, ref = FeatureStats(), FeatureStats()
    x = _rng(12).normal(size=100)
    s = np.array(["a", "b"] * 50)
    arrays: dict[str, Any] = {"x": x, "s": s}  # not Sequences to the type checker, but they work
    fs.add(arrays)
    ref.add({"x": x.tolist(), "s": s.tolist()})
    assert fs.result() == ref.result()


def test_all_missing_feature_is_categorical_without_values() -> None:
    fs = FeatureStats()
    fs.add({"x": [None, math.nan, None]})
    assert fs.result()["x"] == {
        "kind": "categorical",
        "count": 0.0,
        "missing": 3.0,
        "missing_rate": 1.0,
        "top": [],
        "distinct_tracked": 0,
        "max_count_error": 0.0,
    }


def test_input_columns_are_not_modified() -> None:
    batch = _stream(11, 200)
    before = copy.deepcopy(batch)
    FeatureStats().add(batch, weights=_rng(0).uniform(1.0, 3.0, 200))
    assert batch == before


# ------------------------------------------------------------------ weights


def _duplicate(batch: dict[str, list[Any]], reps: np.ndarray) -> dict[str, list[Any]]:
    return {
        k: [v for v, r in zip(col, reps.tolist(), strict=True) for _ in range(r)] for k, col in batch.items()
    }


@pytest.mark.parametrize(
    "reps_of",
    [
        pytest.param(lambda n: np.full(n, 2), id="uniform_2"),
        pytest.param(lambda n: _rng(7).integers(1, 4, n), id="random_1_to_3"),
        pytest.param(lambda n: np.where(np.arange(n) % 2 == 0, 1, 5), id="alternating_1_5"),
    ],
)
def test_integer_weights_equal_duplicated_rows(reps_of: Callable[[int], np.ndarray]) -> None:
    batch = _stream(8, 400)
    reps = reps_of(400)
    weighted, duplicated = FeatureStats(), FeatureStats()
    weighted.add(batch, weights=reps.astype(np.float64))
    duplicated.add(_duplicate(batch, reps))
    got, want = weighted.result(), duplicated.result()
    assert got == _approx_result(want, rel=1e-12)
    for name in ("amount", "age", "country", "vip"):  # counts are exact sums of integers
        assert got[name]["count"] == want[name]["count"]
        assert got[name]["missing"] == want[name]["missing"]
    assert got["country"]["top"] == want["country"]["top"]


def test_fractional_weights_match_weighted_numpy() -> None:
    rng = _rng(9)
    x = rng.normal(5.0, 2.0, 1000)
    w = rng.uniform(0.5, 20.0, 1000)
    values: list[Any] = x.tolist()
    values[::10] = [None] * 100
    fs = FeatureStats()
    fs.add({"x": values}, weights=w)
    r = fs.result()["x"]
    present = np.ones(1000, dtype=bool)
    present[::10] = False
    mean = np.average(x[present], weights=w[present])
    var = np.average((x[present] - mean) ** 2, weights=w[present])
    assert r["count"] == pytest.approx(float(w[present].sum()), rel=1e-12)
    assert r["missing"] == pytest.approx(float(w[~present].sum()), rel=1e-12)
    assert r["mean"] == pytest.approx(float(mean), rel=1e-12)
    assert r["std"] == pytest.approx(math.sqrt(var), rel=1e-9)


def test_weighted_categorical_counts() -> None:
    values = ["a", "b", None, "a", True, "b", "a"]
    w = np.array([1.0, 2.0, 3.0, 0.5, 4.0, 1.5, 2.5])
    fs = FeatureStats()
    fs.add({"c": values}, weights=w)
    r = fs.result()["c"]
    assert r["top"] == [["a", 4.0], ["true", 4.0], ["b", 3.5]]
    assert (r["count"], r["missing"]) == (11.5, 3.0)


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([1.0, -1.0], id="negative"),
        pytest.param([1.0, 0.0], id="zero"),
        pytest.param([1.0, math.nan], id="nan"),
        pytest.param([1.0, math.inf], id="inf"),
        pytest.param([[1.0, 1.0]], id="2d"),
        pytest.param([1.0, 1.0, 1.0], id="wrong_length"),
    ],
)
def test_bad_weights_raise_and_leave_state_unchanged(weights: list[Any]) -> None:
    fs = FeatureStats()
    fs.add({"x": [1.0, 2.0], "c": ["a", "b"]})
    before = fs.to_json()
    with pytest.raises(ValueError):
        fs.add({"x": [3.0, 4.0], "c": ["c", "d"]}, weights=np.array(weights))
    assert fs.to_json() == before


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        pytest.param({"x": [1.0, 2.0], "y": [1.0]}, ValueError, id="length_mismatch"),
        pytest.param({"x": [1.0, 2.0], "y": [1.0, {"a": 1}]}, TypeError, id="dict_value"),
        pytest.param({"x": [1.0, 2.0], "y": ["a", [1]]}, TypeError, id="list_value"),
        pytest.param({"x": [1.0, 2.0], 3: [1.0, 2.0]}, ValueError, id="non_string_name"),
    ],
)
def test_bad_batches_raise_and_leave_state_unchanged(batch: dict[Any, list[Any]], error: type) -> None:
    fs = FeatureStats()
    fs.add({"x": [0.5, 1.5]})
    before = fs.to_json()
    with pytest.raises(error):
        fs.add(batch)
    assert fs.to_json() == before


# ------------------------------------------------------------------ merge


def _split_points(rng: np.random.Generator, n: int, parts: int) -> list[int]:
    return [0, *sorted(rng.choice(np.arange(1, n), parts - 1, replace=False).tolist()), n]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_merge_of_random_splits_equals_single_pass(seed: int, weighted: bool) -> None:
    rng = _rng(100 + seed)
    n = 3000
    batch = _stream(seed, n)
    w = rng.integers(1, 5, n).astype(np.float64) if weighted else None
    single = FeatureStats()
    single.add(batch, weights=w)

    cuts = _split_points(rng, n, int(rng.integers(2, 12)))
    pieces = []
    for lo, hi in itertools.pairwise(cuts):
        fs = FeatureStats()
        fs.add(_slice(batch, lo, hi), weights=None if w is None else w[lo:hi])
        pieces.append(fs)

    # left fold in a random order
    order = rng.permutation(len(pieces)).tolist()
    folded = FeatureStats()
    for i in order:
        folded.merge(pieces[i])
    # balanced tree in the original order
    level = [FeatureStats.from_json(p.to_json()) for p in pieces]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            level[i].merge(level[i + 1])
            nxt.append(level[i])
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    # sequential batches into one summary
    sequential = FeatureStats()
    for lo, hi in itertools.pairwise(cuts):
        sequential.add(_slice(batch, lo, hi), weights=None if w is None else w[lo:hi])

    want = single.result()
    for got in (folded.result(), level[0].result(), sequential.result()):
        assert set(got) == set(want)
        # "big" (mean 1e9, std 1e-3) is ill-conditioned: float64 holds its deviations to only about
        # eps * mean / std = 1e-4 relative, so any two summation orders differ far above 1e-9.
        big_got, big_want = dict(got["big"]), dict(want["big"])
        assert big_got.pop("std") == pytest.approx(big_want.pop("std"), rel=1e-4)
        assert big_got == _approx_result(big_want, rel=1e-15)
        assert {k: v for k, v in got.items() if k != "big"} == _approx_result(
            {k: v for k, v in want.items() if k != "big"}
        )
        for name in want:  # counts and weights are exact
            assert got[name]["count"] == want[name]["count"]
            assert got[name]["missing"] == want[name]["missing"]
        assert got["country"]["top"] == want["country"]["top"]
        assert got["vip"]["top"] == want["vip"]["top"]
    if not weighted:  # large mean, tiny spread: the merged std is as accurate as float64 allows
        big = np.array(batch["big"])
        std = folded.result()["big"]["std"]
        assert std == pytest.approx(float(big.std()), rel=1e-4)
        naive = math.sqrt(max(float(np.mean(big**2) - big.mean() ** 2), 0.0))  # E[x^2] - mean^2
        assert abs(naive - float(big.std())) > 100 * abs(std - float(big.std()))


def test_merge_with_empty_and_self() -> None:
    fs = FeatureStats()
    fs.add({"x": [1.0, 3.0], "c": ["a", "b"]})
    want = fs.result()
    fs.merge(FeatureStats())
    assert fs.result() == want
    empty = FeatureStats()
    empty.merge(fs)
    assert empty.result() == want
    fs.merge(fs)
    r = fs.result()
    assert (r["x"]["count"], r["x"]["mean"], r["x"]["std"]) == (4.0, 2.0, 1.0)
    assert r["c"]["top"] == [["a", 2.0], ["b", 2.0]]


def test_merge_does_not_alias_other() -> None:
    a, b = FeatureStats(), FeatureStats()
    b.add({"c": ["x", "y"]})
    a.merge(b)
    a.add({"c": ["x", "x"]})
    assert b.result()["c"]["top"] == [["x", 1.0], ["y", 1.0]]


def test_merge_with_other_type_raises() -> None:
    bad: Any = {"x": [1.0]}
    with pytest.raises(TypeError):
        FeatureStats().merge(bad)


def test_repr() -> None:
    fs = FeatureStats(max_features=2, top_k=3)
    fs.add({"a": [1.0], "b": ["x"], "c": [None]})
    assert repr(fs) == "FeatureStats(max_features=2, top_k=3, features=2, untracked_features=1.0)"


@pytest.mark.parametrize("kwargs", [{"max_features": 5}, {"top_k": 3}])
def test_merge_with_other_parameters_raises(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FeatureStats().merge(FeatureStats(**kwargs))


# ------------------------------------------------------------------ categorical


@pytest.mark.parametrize("top_k", [1, 3, 10])
@pytest.mark.parametrize("seed", range(3))
def test_categorical_counts_exact_up_to_capacity(top_k: int, seed: int) -> None:
    rng = _rng(200 + seed)
    capacity = 4 * top_k
    values = [f"v{int(i)}" for i in rng.zipf(1.5, 5000) % capacity]  # exactly capacity distinct (or fewer)
    truth = Counter(values)
    fs = FeatureStats(top_k=top_k)
    for lo in range(0, len(values), 500):
        fs.add({"c": values[lo : lo + 500]})
    r = fs.result()["c"]
    want = sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    assert r["top"] == [[k, float(c)] for k, c in want]
    assert r["distinct_tracked"] == len(truth)
    assert r["max_count_error"] == 0.0
    assert r["count"] == 5000.0


def test_top_ties_broken_by_value() -> None:
    fs = FeatureStats(top_k=3)
    fs.add({"c": ["b", "c", "a", "d", "a", "b", "c", "d"]})
    assert fs.result()["c"]["top"] == [["a", 2.0], ["b", 2.0], ["c", 2.0]]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("how", ["sequential", "merged", "weighted"])
def test_misra_gries_error_bound_on_zipf_stream(seed: int, how: str) -> None:
    rng = _rng(300 + seed)
    top_k = 5
    capacity = 4 * top_k
    n = 20_000
    values = [f"item{int(i)}" for i in rng.zipf(1.3, n)]
    w = rng.integers(1, 4, n).astype(np.float64) if how == "weighted" else np.ones(n)
    truth: dict[str, float] = {}
    for v, x in zip(values, w.tolist(), strict=True):
        truth[v] = truth.get(v, 0.0) + x
    assert len(truth) > 10 * capacity  # many more distinct values than counters

    fs = FeatureStats(top_k=top_k)
    cuts = [*range(0, n, 500), n]
    if how == "merged":
        for lo, hi in itertools.pairwise(cuts):
            part = FeatureStats(top_k=top_k)
            part.add({"c": values[lo:hi]})
            fs.merge(part)
    else:
        for lo, hi in itertools.pairwise(cuts):
            fs.add({"c": values[lo:hi]}, weights=None if how != "weighted" else w[lo:hi])

    r = fs.result()["c"]
    total = float(w.sum())
    err = r["max_count_error"]
    assert r["count"] == total
    assert 0.0 < err <= total / (capacity + 1)
    assert r["distinct_tracked"] <= capacity
    est = dict(fs.to_json()["features"][0]["counters"])
    for value, true in truth.items():
        got = est.get(value, 0.0)
        assert got <= true + 1e-9
        assert true - got <= err + 1e-9
    # every value heavier than the bound is kept, and the reported top is the true top
    for value, true in truth.items():
        if true > err:
            assert value in est
    true_top = sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert [k for k, _ in r["top"][:3]] == [k for k, _ in true_top]


def test_booleans_are_categorical() -> None:
    fs = FeatureStats()
    fs.add({"b": [True, False, None, True], "late_b": [None, None, False, True]})
    r = fs.result()
    assert r["b"]["kind"] == "categorical"
    assert r["b"]["top"] == [["true", 2.0], ["false", 1.0]]
    assert (r["b"]["count"], r["b"]["missing"]) == (3.0, 1.0)
    assert "mixed" not in r["b"]
    assert r["late_b"]["top"] == [["false", 1.0], ["true", 1.0]]
    fs.add({"b": [np.bool_(True), np.bool_(False)]})
    assert fs.result()["b"]["top"] == [["true", 3.0], ["false", 2.0]]


def test_numeric_looking_strings_stay_categorical() -> None:
    fs = FeatureStats()
    fs.add({"s": ["1.5", "2", None, "1.5"]})
    r = fs.result()["s"]
    assert r["kind"] == "categorical" and "mixed" not in r
    assert r["top"] == [["1.5", 2.0], ["2", 1.0]]


# ------------------------------------------------------------------ mixed features

MIXED_CASES: list[tuple[str, list[list[Any]], dict[str, Any]]] = [
    (
        "mostly_numeric",
        [[1.0, 2.0, 3.0, "n/a", None]],
        {"kind": "numeric", "mixed": True, "count": 3.0, "non_numeric": 1.0, "mean": 2.0, "missing": 1.0},
    ),
    (
        "mostly_numeric_bool",
        [[1.0, True, 5.0]],
        {"kind": "numeric", "mixed": True, "count": 2.0, "non_numeric": 1.0, "min": 1.0, "max": 5.0},
    ),
    (
        "mostly_categorical_numbers_as_str",
        [["a", "b", "a", 3, 3.0, 2.5]],
        {
            "kind": "categorical",
            "mixed": True,
            "count": 6.0,
            "max_count_error": 0.0,
            "top": [["3", 2.0], ["a", 2.0], ["2.5", 1.0], ["b", 1.0]],
        },
    ),
    (
        "tie_is_categorical",
        [[1, True]],
        {"kind": "categorical", "mixed": True, "count": 2.0, "top": [["1", 1.0], ["true", 1.0]]},
    ),
    (
        "string_first_then_number",
        [["x", 1.0, "x"]],
        {"kind": "categorical", "mixed": True, "top": [["x", 2.0], ["1", 1.0]]},
    ),
    (
        "numbers_with_missing_in_categorical",
        [["x", "y", "x", "z"], [7.0, None, 7.0]],
        {
            "kind": "categorical",
            "mixed": True,
            "count": 6.0,
            "missing": 1.0,
            "max_count_error": 0.0,
            "top": [["7", 2.0], ["x", 2.0], ["y", 1.0], ["z", 1.0]],
        },
    ),
    (
        "flips_to_categorical_across_batches",
        [[1.0, 2.0], ["x", "y", "x", "x", None]],
        # the two numbers were never counted as categories: they widen the error bound
        {
            "kind": "categorical",
            "mixed": True,
            "count": 6.0,
            "missing": 1.0,
            "max_count_error": 2.0,
            "top": [["x", 3.0], ["y", 1.0]],
        },
    ),
    (
        "numbers_counted_once_categorical",
        [["x", "y", "x"], [7.0, 7.0]],
        {
            "kind": "categorical",
            "mixed": True,
            "count": 5.0,
            "max_count_error": 0.0,
            "top": [["7", 2.0], ["x", 2.0], ["y", 1.0]],
        },
    ),
]


@pytest.mark.parametrize(("name", "batches", "expected"), MIXED_CASES, ids=[c[0] for c in MIXED_CASES])
def test_mixed_feature(name: str, batches: list[list[Any]], expected: dict[str, Any]) -> None:
    fs = FeatureStats()
    for b in batches:
        fs.add({"f": b})
    r = fs.result()["f"]
    for key, value in expected.items():
        assert r[key] == value, key
    # the mixed state round-trips too
    assert FeatureStats.from_json(json.loads(json.dumps(fs.to_json()))).result()["f"] == r


def test_mixed_across_merge() -> None:
    a, b = FeatureStats(), FeatureStats()
    a.add({"f": [1.0, 2.0, 3.0]})
    b.add({"f": ["z"]})
    a.merge(b)
    r = a.result()["f"]
    assert (r["kind"], r["mixed"], r["count"], r["non_numeric"]) == ("numeric", True, 3.0, 1.0)


# ------------------------------------------------------------------ bounds


def test_max_features_bound() -> None:
    fs = FeatureStats(max_features=3)
    fs.add({f"f{i}": [float(i), None] for i in range(5)})
    assert list(fs.result()) == ["f0", "f1", "f2"]
    assert fs.untracked_features == 4.0  # 2 features x 2 rows
    fs.add({"f9": ["a", "b", "c"], "f1": [1.0, 2.0, 3.0]}, weights=np.array([1.0, 2.0, 3.0]))
    assert list(fs.result()) == ["f0", "f1", "f2"]
    assert fs.untracked_features == 10.0
    assert fs.result()["f1"]["count"] == 1.0 + 6.0

    other = FeatureStats(max_features=3)
    other.add({"g": [1.0, 2.0, 3.0], "f0": [5.0, 6.0, 7.0]})
    fs.merge(other)
    assert list(fs.result()) == ["f0", "f1", "f2"]
    assert fs.untracked_features == 13.0
    assert len(fs.to_json()["features"]) == 3

    room = FeatureStats(max_features=3)
    room.add({"a": [1.0]})
    room.merge(other)  # room for both of other's features
    assert list(room.result()) == ["a", "g", "f0"]
    assert room.untracked_features == 0.0


def test_first_seen_wins_within_a_batch() -> None:
    fs = FeatureStats(max_features=2)
    fs.add({"z": [1.0], "a": [2.0], "m": [3.0]})
    assert list(fs.result()) == ["z", "a"]


@pytest.mark.parametrize(
    ("features", "weights"),
    [
        pytest.param({}, None, id="no_features"),
        pytest.param({"x": [], "c": []}, None, id="no_rows"),
        pytest.param({"x": []}, np.zeros(0), id="no_rows_weighted"),
        pytest.param({}, np.ones(3), id="no_features_weighted"),
    ],
)
def test_empty_input(features: dict[str, list[Any]], weights: np.ndarray | None) -> None:
    fs = FeatureStats()
    fs.add(features, weights=weights)
    assert fs.result() == {}
    assert fs.untracked_features == 0.0
    assert FeatureStats.from_json(fs.to_json()).result() == {}


def test_state_stays_bounded_on_high_cardinality() -> None:
    fs = FeatureStats(top_k=2)
    for seed in range(20):
        fs.add({"id": [f"id-{seed}-{i}" for i in range(500)], "x": _rng(seed).normal(size=500).tolist()})
    state = fs.to_json()
    assert len(state["features"][0]["counters"]) <= fs.capacity
    assert len(json.dumps(state)) < 5_000


# ------------------------------------------------------------------ JSON


def _rich_state() -> FeatureStats:
    fs = FeatureStats(max_features=7, top_k=2)
    rng = _rng(42)
    for seed in range(5):
        batch = _stream(seed, 300)
        batch["id"] = [f"u{int(i)}" for i in rng.zipf(1.2, 300)]  # overflows the 8 counters
        batch["mixed"] = [1.0, "a", None] * 100
        fs.add(batch, weights=rng.uniform(1.0, 3.0, 300))
    fs.add({"late": [1.0]})  # beyond max_features
    return fs


def test_json_round_trip_is_exact() -> None:
    fs = _rich_state()
    raw = fs.to_json()
    text = json.dumps(raw, allow_nan=False)  # plain JSON, finite floats only
    back = FeatureStats.from_json(json.loads(text))
    assert back.to_json() == raw
    assert back.result() == fs.result()  # exact, not approximate
    assert back.untracked_features == fs.untracked_features > 0.0
    # the state is complete: both continue identically
    more = _stream(99, 200)
    fs.add(more)
    back.add(more)
    assert back.result() == fs.result()


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    def setf(key: str, value: Any, i: int = 0) -> Callable[[dict[str, Any]], Any]:
        def f(raw: dict[str, Any]) -> Any:
            raw["features"][i][key] = value
            return raw

        return f

    def top(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        def f(raw: dict[str, Any]) -> Any:
            raw[key] = value
            return raw

        return f

    def drop(key: str) -> Callable[[dict[str, Any]], Any]:
        def f(raw: dict[str, Any]) -> Any:
            del raw[key]
            return raw

        return f

    def numeric_feature(raw: dict[str, Any]) -> dict[str, Any]:
        return next(f for f in raw["features"] if f["num_w"] > 0)

    def with_numeric(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        def f(raw: dict[str, Any]) -> Any:
            numeric_feature(raw)[key] = value
            return raw

        return f

    def with_counters(value: Any) -> Callable[[dict[str, Any]], Any]:
        def f(raw: dict[str, Any]) -> Any:
            next(f for f in raw["features"] if f["counters"])["counters"] = value
            return raw

        return f

    return [
        ("not_a_dict", lambda raw: [raw]),
        ("none", lambda raw: None),
        ("missing_key", drop("features")),
        ("extra_key", top("extra", 1)),
        ("bad_version", top("version", 2)),
        ("bool_version", top("version", True)),
        ("bool_max_features", top("max_features", True)),
        ("zero_top_k", top("top_k", 0)),
        ("negative_untracked", top("untracked_features", -1.0)),
        ("string_untracked", top("untracked_features", "1")),
        ("features_not_list", top("features", {})),
        ("too_many_features", top("max_features", 1)),
        (
            "duplicate_feature",
            lambda raw: raw["features"].__setitem__(-1, copy.deepcopy(raw["features"][0])) or raw,
        ),
        ("feature_not_dict", lambda raw: raw["features"].__setitem__(-1, ["x"]) or raw),
        ("feature_missing_key", lambda raw: raw["features"][0].pop("m2", None) is None or raw),
        ("feature_extra_key", setf("extra", 1)),
        ("null_name", setf("name", None)),
        ("int_name", setf("name", 3)),
        ("negative_missing", setf("missing", -1.0)),
        ("nan_mean", with_numeric("mean", math.nan)),
        ("inf_max", with_numeric("max", math.inf)),
        ("negative_m2", with_numeric("m2", -0.5)),
        ("min_above_max", with_numeric("min", 1e300)),
        ("null_min_with_values", with_numeric("min", None)),
        ("bool_num_w", with_numeric("num_w", True)),
        ("unsummarized_above_num_w", with_numeric("num_unsummarized", 1e300)),
        ("negative_mg_err", setf("mg_err", -1.0)),
        (
            "min_without_values",
            lambda raw: next(f for f in raw["features"] if f["num_w"] == 0).update(min=1.0) or raw,
        ),
        ("counters_not_list", with_counters({"a": 1.0})),
        ("counter_not_pair", with_counters([["a", 1.0, 2.0]])),
        ("counter_label_not_str", with_counters([[1, 1.0]])),
        ("counter_zero", with_counters([["a", 0.0]])),
        ("counter_negative", with_counters([["a", -2.0]])),
        ("counter_bool", with_counters([["a", True]])),
        ("counter_nan", with_counters([["a", math.nan]])),
        ("counter_duplicate", with_counters([["a", 1.0], ["a", 2.0]])),
        ("too_many_counters", with_counters([[f"v{i}", 1.0] for i in range(9)])),
    ]


MUTATIONS = _mutations()


@pytest.mark.parametrize(("name", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_malformed_json_raises_value_error(name: str, mutate: Callable[[dict[str, Any]], Any]) -> None:
    raw = json.loads(json.dumps(_rich_state().to_json()))
    FeatureStats.from_json(copy.deepcopy(raw))  # the unmutated state is valid
    with pytest.raises(ValueError):
        FeatureStats.from_json(mutate(raw))


def test_json_round_trip_of_odd_names_and_labels() -> None:
    fs = FeatureStats()
    fs.add({"": ["", "é", "a\u0000b", None], "∑": [1.0, 2.0, None, 4.0]})
    back = FeatureStats.from_json(json.loads(json.dumps(fs.to_json())))
    assert back.result() == fs.result()
    assert back.result()[""]["top"] == [["", 1.0], ["a\u0000b", 1.0], ["é", 1.0]]


def test_json_accepts_integer_numbers() -> None:
    """Another encoder may write 2.0 as 2."""

    def ints(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ints(x) for x in v]
        return int(v) if isinstance(v, float) and v.is_integer() else v

    fs = FeatureStats()
    fs.add({"x": [1.0, 3.0], "c": ["a", "a"]})
    raw = ints(fs.to_json())
    assert raw["features"][0]["mean"] == 2 and type(raw["features"][0]["mean"]) is int
    assert FeatureStats.from_json(raw).result() == fs.result()
