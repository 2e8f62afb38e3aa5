"""Tests of streams.core.drift.profile: the reference profile, its strict JSON, and its builder."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streams.core.drift.profile import (
    PREDICTION,
    PROPORTION_FLOOR,
    SCHEMA,
    CategoricalProfile,
    NumericProfile,
    ProfileBuilder,
    ReferenceProfile,
    category_label,
    floor_proportions,
    numeric_column,
    row_keys,
)


def _data(seed: int, n: int) -> tuple[dict[str, list[Any]], list[Any]]:
    """A mixed reference batch: numeric with missing values, integers, strings, booleans, predictions."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    features: dict[str, list[Any]] = {
        "age": [None if m else float(v) for v, m in zip(age, rng.random(n) < 0.1, strict=True)],
        "visits": rng.poisson(3, n).tolist(),
        "city": rng.choice(["paris", "rome", "oslo", "lima"], n, p=[0.4, 0.3, 0.2, 0.1]).tolist(),
        "premium": (rng.random(n) < 0.3).tolist(),
    }
    p = rng.random(n)
    predictions = [{"yes": float(a), "no": float(1 - a)} for a in p]
    return features, predictions


def _profile(seed: int = 0, n: int = 3000, **kw: Any) -> ReferenceProfile:
    b = ProfileBuilder(**kw)
    features, predictions = _data(seed, n)
    b.add(features, predictions)
    return b.build("churn", "v1", created_ms=1_700_000_000_000, source="test")


# -- value helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("x", "x"),
        (True, "true"),
        (False, "false"),
        (np.bool_(True), "true"),
        (3, "3"),
        (3.0, "3"),
        (np.int64(7), "7"),
        (2.5, "2.5"),
        (float("inf"), "inf"),
        (None, None),
        (float("nan"), None),
        ({"a": 0.3, "b": 0.7}, "b"),
        ({}, None),
    ],
)
def test_category_label(value: Any, label: str | None) -> None:
    assert category_label(value) == label


@pytest.mark.parametrize(
    ("col", "x", "other"),
    [
        ([1, 2.5, None], [1.0, 2.5, math.nan], None),
        ([np.float64(1.5), np.int64(2)], [1.5, 2.0], None),
        (["a", None, "b"], [math.nan, math.nan, math.nan], [True, False, True]),
        ([True, 1.0], [math.nan, 1.0], [True, False]),
        ([None, None], [math.nan, math.nan], None),
        (np.array([1, 2], dtype=np.int32), [1.0, 2.0], None),
        (np.array([True, False]), [math.nan, math.nan], [True, True]),
    ],
)
def test_numeric_column(col: list[Any], x: list[float], other: list[bool] | None) -> None:
    got_x, got_other = numeric_column(col)
    np.testing.assert_array_equal(got_x, np.asarray(x))
    assert (got_other.tolist() if got_other is not None else None) == other


def test_row_keys_are_a_counter_based_stream() -> None:
    whole = row_keys(123, 0, 1000)
    parts = np.concatenate([row_keys(123, lo, 250) for lo in range(0, 1000, 250)])
    np.testing.assert_array_equal(whole, parts)
    assert len(set(whole.tolist())) == 1000
    assert not np.array_equal(whole, row_keys(124, 0, 1000))
    assert int(row_keys(-5, 0, 100, bits=53).max()) < 2**53
    # roughly uniform: the top bit is set about half of the time
    assert 0.45 < float((row_keys(9, 0, 10_000) >> np.uint64(63)).mean()) < 0.55


def test_floor_proportions() -> None:
    p = floor_proportions([0, 0, 10])
    assert math.isclose(sum(p), 1.0)
    assert p[0] == p[1] > 0.0
    assert p[0] == pytest.approx(PROPORTION_FLOOR, rel=1e-3)
    assert floor_proportions([0, 0]) == (0.5, 0.5)


# -- profile classes and JSON --------------------------------------------------------------------


def test_json_round_trip_is_exact() -> None:
    prof = _profile()
    raw = prof.to_json()
    back = ReferenceProfile.from_json(raw)
    assert back == prof
    assert back.to_json() == raw
    assert ReferenceProfile.from_json(raw.decode()) == prof
    doc = json.loads(raw)
    assert doc["schema"] == SCHEMA
    assert b"NaN" not in raw and b"Infinity" not in raw


def test_profile_kinds_and_contents() -> None:
    prof = _profile()
    age, visits, city, premium = (prof.features[k] for k in ("age", "visits", "city", "premium"))
    assert isinstance(age, NumericProfile) and isinstance(visits, NumericProfile)
    assert isinstance(city, CategoricalProfile) and isinstance(premium, CategoricalProfile)
    assert age.n_bins == 20 and age.missing_rate == pytest.approx(0.1, abs=0.02)
    assert visits.n_bins < 20  # integer feature: tied quantiles are deduplicated
    assert list(city.categories) == ["paris", "rome", "oslo", "lima"]  # most frequent first
    assert set(premium.categories) == {"true", "false"}
    assert isinstance(prof.prediction, CategoricalProfile)
    assert set(prof.prediction.categories) == {"yes", "no"}  # top class of probability maps
    assert prof.n_events == 3000 and prof.model_version == "v1"
    assert all(len(col) == 500 for col in prof.sample.values())
    assert all(v is None or isinstance(v, float) for v in prof.sample["age"])
    assert all(v in {"true", "false"} for v in prof.sample["premium"])


def _doc() -> dict[str, Any]:
    return json.loads(_profile(n=600, sample_rows=5).to_json())  # type: ignore[no-any-return]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], Any]:
    def f(d: dict[str, Any]) -> Any:
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return d

    return f


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], Any]:
    def f(d: dict[str, Any]) -> Any:
        node = d
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
        return d

    return f


STRICT_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("schema", _set(["schema"], "driftline.profile/v2"), r"^schema: unsupported"),
    ("unknown top field", _set(["extra"], 1), r"^profile\.extra: unknown field"),
    ("missing top field", _delete(["source"]), r"^profile\.source: missing field"),
    ("model empty", _set(["model"], ""), r"^model:"),
    ("model_version type", _set(["model_version"], 3), r"^model_version:"),
    ("created_ms float", _set(["created_ms"], 1.5), r"^created_ms:"),
    ("created_ms bool", _set(["created_ms"], True), r"^created_ms:"),
    ("n_events negative", _set(["n_events"], -1), r"^n_events:"),
    ("features not object", _set(["features"], []), r"^features:"),
    ("feature kind", _set(["features", "age", "kind"], "text"), r"^features\['age'\]\.kind:"),
    ("feature unknown field", _set(["features", "age", "p99"], 1.0), r"^features\['age'\]\.p99: unkn"),
    ("feature missing field", _delete(["features", "age", "std"]), r"^features\['age'\]\.std: miss"),
    ("edges decreasing", _set(["features", "age", "edges"], [2.0, 1.0]), r"^features\['age'\]\.edges:"),
    ("edges string", _set(["features", "age", "edges", 0], "1"), r"^features\['age'\]\.edges\[0\]:"),
    ("proportions length", _set(["features", "age", "proportions"], [1.0]), r"^features\['age'\]\.proport"),
    ("proportions sum", _set(["features", "age", "proportions", 0], 0.9), r"^features\['age'\]\.proport"),
    ("count negative", _set(["features", "age", "count"], -3), r"^features\['age'\]\.count:"),
    ("count float", _set(["features", "age", "count"], 3.0), r"^features\['age'\]\.count:"),
    ("missing_rate", _set(["features", "age", "missing_rate"], 1.5), r"^features\['age'\]\.missing_rate:"),
    ("mean null", _set(["features", "age", "mean"], None), r"^features\['age'\]\.mean:"),
    ("std negative", _set(["features", "age", "std"], -1.0), r"^features\['age'\]\.std"),
    ("categories sum", _set(["features", "city", "other"], 0.5), r"^features\['city'\]\.categories: must"),
    ("category value", _set(["features", "city", "categories", "rome"], "x"), r"^features\['city'\]\.cat"),
    ("prediction kind", _set(["prediction", "kind"], None), r"^prediction\.kind:"),
    ("reserved name", lambda d: d["features"].update({PREDICTION: d["features"]["age"]}) or d, r"^features:"),
    ("sample unknown", _set(["sample", "nope"], [1.0] * 5), r"^sample\['nope'\]: not a feature"),
    ("sample length", _set(["sample", "age"], [1.0]), r"^sample\['city'\]: 5 rows, sample\['age'\] has 1"),
    ("sample type", _set(["sample", "age", 0], "old"), r"^sample\['age'\]\[0\]:"),
    ("sample label type", _set(["sample", "city", 0], 3.0), r"^sample\['city'\]\[0\]:"),
]


@pytest.mark.parametrize(("case", "mutate", "match"), STRICT_CASES, ids=[c[0] for c in STRICT_CASES])
def test_from_json_rejects_with_the_field_name(case: str, mutate: Callable[[Any], Any], match: str) -> None:
    doc = mutate(_doc())
    with pytest.raises(ValueError, match=match):
        ReferenceProfile.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"not json", r"^profile: not valid JSON"),
        (b"[1, 2]", r"^profile: must be a JSON object"),
        (b"\xff\xfe\x00", r"^profile: not valid JSON"),
    ],
)
def test_from_json_rejects_garbage(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReferenceProfile.from_json(raw)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ('"missing_rate":0.0', '"missing_rate":NaN', r"NaN is not allowed"),
        ('"missing_rate":0.0', '"missing_rate":Infinity', r"Infinity is not allowed"),
        ('"missing_rate":0.0', '"missing_rate":1e999', r"missing_rate: must be a finite number"),
        ('"missing_rate":0.0', '"missing_rate":0.0,"missing_rate":0.0', r"missing_rate: duplicated key"),
    ],
)
def test_from_json_rejects_non_finite_and_duplicates(old: str, new: str, match: str) -> None:
    raw = _profile(n=600, sample_rows=5).to_json().decode()
    assert old in raw
    with pytest.raises(ValueError, match=match):
        ReferenceProfile.from_json(raw.replace(old, new, 1))


def test_hand_written_ints_are_accepted_as_floats() -> None:
    doc = {
        "schema": SCHEMA,
        "model": "m",
        "model_version": None,
        "created_ms": 0,
        "source": "hand",
        "n_events": 10,
        "features": {
            "x": {"kind": "numeric", "edges": [0], "proportions": [0.5, 0.5], "count": 10, "mean": 0,
                  "std": 1, "missing_rate": 0, "min": -1, "max": 1},
        },
        "prediction": None,
        "sample": {"x": [1, None]},
    }
    prof = ReferenceProfile.from_json(json.dumps(doc))
    x = prof.features["x"]
    assert isinstance(x, NumericProfile) and x.edges == (0.0,) and x.mean == 0.0
    assert prof.sample == {"x": [1.0, None]}


# -- builder ----------------------------------------------------------------------------------


def test_builder_is_deterministic_and_seeded() -> None:
    a, b = _profile(), _profile()
    assert a.to_json() == b.to_json()
    c = _profile(n=3000, seed=0)  # data seed 0, builder seed 0
    d = ProfileBuilder(seed=1)
    features, predictions = _data(0, 3000)
    d.add(features, predictions)
    other = d.build("churn", "v1", created_ms=1_700_000_000_000, source="test")
    assert other.features == c.features  # all the data fit in the reservoir: exact, seed-free
    assert other.sample != c.sample  # the row sample depends on the seed


@pytest.mark.parametrize("splits", [(1,), (500, 501), (7, 1500, 2999), tuple(range(100, 3000, 100))])
def test_builder_does_not_depend_on_batch_boundaries(splits: tuple[int, ...]) -> None:
    features, predictions = _data(3, 3000)
    one = ProfileBuilder(reservoir=1000, sample_rows=50)  # reservoir smaller than the data
    one.add(features, predictions)
    many = ProfileBuilder(reservoir=1000, sample_rows=50)
    bounds = [0, *splits, 3000]
    for lo, hi in itertools.pairwise(bounds):
        many.add({k: v[lo:hi] for k, v in features.items()}, predictions[lo:hi])
    a = one.build("m", None, 0, "t")
    b = many.build("m", None, 0, "t")
    assert a.sample == b.sample
    assert a.prediction == b.prediction
    for name, fa in a.features.items():
        fb = b.features[name]
        if isinstance(fa, NumericProfile):
            assert isinstance(fb, NumericProfile)
            assert (fa.edges, fa.proportions, fa.count, fa.min, fa.max) == (
                fb.edges, fb.proportions, fb.count, fb.min, fb.max)
            assert fa.mean == pytest.approx(fb.mean, rel=1e-12)
            assert fa.std == pytest.approx(fb.std, rel=1e-9)
        else:
            assert fa == fb


def test_edges_are_exact_quantiles_when_the_data_fit() -> None:
    x = np.random.default_rng(5).lognormal(0, 1, 4000)
    b = ProfileBuilder(n_bins=10)
    b.add({"x": x.tolist()})
    prof = b.build("m", None, 0, "t").features["x"]
    assert isinstance(prof, NumericProfile)
    np.testing.assert_array_equal(prof.edges, np.quantile(x, np.arange(1, 10) / 10))
    assert prof.mean == pytest.approx(float(x.mean()), rel=1e-12)
    assert prof.std == pytest.approx(float(x.std()), rel=1e-12)
    assert (prof.min, prof.max) == (float(x.min()), float(x.max()))
    np.testing.assert_allclose(prof.proportions, 0.1, atol=1e-3)


def test_reservoir_estimates_quantiles_of_large_data() -> None:
    x = np.random.default_rng(6).normal(size=60_000)
    b = ProfileBuilder(n_bins=10, reservoir=5_000)
    for lo in range(0, 60_000, 500):
        b.add({"x": x[lo : lo + 500].tolist()})
    prof = b.build("m", None, 0, "t").features["x"]
    assert isinstance(prof, NumericProfile)
    assert prof.count == 60_000
    true = np.quantile(x, np.arange(1, 10) / 10)
    np.testing.assert_allclose(prof.edges, true, atol=0.06)  # 5000-value sample: about 0.02 sd


def test_bins_are_right_closed() -> None:
    b = ProfileBuilder(n_bins=4)
    b.add({"x": [1.0, 2.0, 3.0, 4.0, 5.0] * 20})
    prof = b.build("m", None, 0, "t").features["x"]
    assert isinstance(prof, NumericProfile)
    assert prof.edges == (2.0, 3.0, 4.0)
    # (-inf, 2] holds 1 and 2; (2, 3] holds 3; (3, 4] holds 4; (4, inf) holds 5
    np.testing.assert_allclose(prof.proportions, [0.4, 0.2, 0.2, 0.2], atol=1e-3)


def test_constant_and_all_missing_features() -> None:
    b = ProfileBuilder()
    b.add({"const": [7.0] * 100, "empty": [None] * 100, "inf": [math.inf] * 50 + [1.0] * 50})
    prof = b.build("m", None, 0, "t")
    const, empty, inf = prof.features["const"], prof.features["empty"], prof.features["inf"]
    assert isinstance(const, NumericProfile) and const.edges == (7.0,)
    assert const.proportions[1] == pytest.approx(PROPORTION_FLOOR, rel=1e-3)  # floored empty bin
    assert const.std == 0.0
    assert isinstance(empty, NumericProfile)
    assert (empty.count, empty.mean, empty.missing_rate, empty.proportions) == (0, None, 1.0, (1.0,))
    assert isinstance(inf, NumericProfile) and inf.missing_rate == 0.5 and inf.max == 1.0
    assert ReferenceProfile.from_json(prof.to_json()) == prof


def test_feature_absent_from_a_batch_is_missing_there() -> None:
    b = ProfileBuilder()
    b.add({"a": [1.0] * 10})
    b.add({"a": [2.0] * 10, "late": ["x"] * 10})
    b.add({"late": ["y"] * 20})
    prof = b.build("m", None, 0, "t")
    assert prof.n_events == 40
    assert prof.features["a"].missing_rate == 0.5
    assert prof.features["late"].missing_rate == 0.25
    assert prof.prediction is None


def test_mixed_column_is_categorical_with_canonical_labels() -> None:
    b = ProfileBuilder()
    b.add({"mix": [1, 1.0, "1", "a", True, None, 2.5, 2]})
    f = b.build("m", None, 0, "t").features["mix"]
    assert isinstance(f, CategoricalProfile)
    assert f.count == 7 and f.missing_rate == 1 / 8
    raw = {"1": 3, "a": 1, "true": 1, "2.5": 1, "2": 1}
    assert set(f.categories) == set(raw)
    for k, c in raw.items():
        assert f.categories[k] == pytest.approx(c / 7, abs=1e-3)


def test_top_k_keeps_the_most_frequent_and_the_rest_is_other() -> None:
    col = [f"c{i:02d}" for i in range(30) for _ in range(30 - i)]  # c00 most frequent
    b = ProfileBuilder(top_k=5)
    b.add({"c": col})
    f = b.build("m", None, 0, "t").features["c"]
    assert isinstance(f, CategoricalProfile)
    assert list(f.categories) == ["c00", "c01", "c02", "c03", "c04"]
    top = sum(30 - i for i in range(5))
    assert f.other == pytest.approx(1 - top / len(col), abs=1e-3)


def test_numeric_predictions_give_a_numeric_prediction_profile() -> None:
    b = ProfileBuilder()
    b.add({"x": [1.0] * 100}, predictions=np.linspace(0, 1, 100).tolist())
    b.add({"x": [1.0] * 100})  # a batch without predictions: missing there
    pred = b.build("m", None, 0, "t").prediction
    assert isinstance(pred, NumericProfile) and pred.missing_rate == 0.5
    b = ProfileBuilder()
    b.add({}, predictions=[{"a": 0.9, "b": 0.1}, {}, None, {"a": 0.1, "b": 0.9}])
    pred = b.build("m", None, 0, "t").prediction
    assert isinstance(pred, CategoricalProfile) and pred.missing_rate == 0.5
    assert set(pred.categories) == {"a", "b"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bins": 1}, r"^n_bins:"),
        ({"n_bins": 2.0}, r"^n_bins:"),
        ({"top_k": 0}, r"^top_k:"),
        ({"sample_rows": -1}, r"^sample_rows:"),
        ({"reservoir": 10}, r"^reservoir:"),
        ({"seed": "0"}, r"^seed:"),
        ({"seed": True}, r"^seed:"),
    ],
)
def test_builder_rejects_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProfileBuilder(**kwargs)


@pytest.mark.parametrize(
    ("features", "predictions", "match"),
    [
        ({"a": [1, 2], "b": [1]}, None, r"^features\['b'\]: 1 values"),
        ({"a": [1, 2]}, [1], r"^predictions: 1 values"),
        ({PREDICTION: [1]}, None, r"^features: invalid feature name"),
        ({"": [1]}, None, r"^features: invalid feature name"),
        ({"a": [[1], "x"]}, None, r"^features\['a'\]: unsupported value type list"),
    ],
)
def test_builder_rejects_bad_batches(features: dict[str, Any], predictions: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProfileBuilder().add(features, predictions)


def test_a_refused_batch_leaves_the_builder_untouched() -> None:
    b = ProfileBuilder(sample_rows=10)
    b.add({"a": [1.0, 2.0], "b": ["x", "y"]}, [1, 0])
    before = b.build("m", None, 0, "t")
    with pytest.raises(ValueError, match=r"^features\['b'\]: unsupported value type set"):
        b.add({"a": [3.0, 4.0], "b": ["x", {1}]}, [1, 0])
    with pytest.raises(ValueError, match=r"^predictions: unsupported value type tuple"):
        b.add({"a": [3.0, 4.0], "b": ["x", "y"]}, [1, (0,)])
    assert b.n_events == 2 and b.build("m", None, 0, "t") == before


def test_build_needs_events() -> None:
    with pytest.raises(ValueError, match=r"^build: no events"):
        ProfileBuilder().build("m", None, 0, "t")


def test_fingerprint_follows_the_content() -> None:
    a, b = _profile(), _profile()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert _profile(seed=1).fingerprint != a.fingerprint


def test_fingerprint_comes_with_to_json_and_is_the_digest_of_its_bytes() -> None:
    import hashlib

    first = _profile()
    raw = first.to_json()  # serialise first: the fingerprint is cached from these bytes
    assert "fingerprint" in vars(first)
    assert first.fingerprint == hashlib.blake2b(raw, digest_size=8).hexdigest()
    assert first.fingerprint == _profile().fingerprint == ReferenceProfile.from_json(raw).fingerprint
