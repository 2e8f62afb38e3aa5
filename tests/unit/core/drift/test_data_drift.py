"""Tests of streams.core.drift.histogram (the window fold) and streams.core.drift.data_drift (the verdict)."""

from __future__ import annotations

import itertools
import json
import math
from functools import cache
from typing import Any

import numpy as np
import pytest

from streams.core.drift.data_drift import DataDriftConfig, DriftReport, NumericTest, evaluate
from streams.core.drift.histogram import (
    NEW_CATEGORIES_CAP,
    CategoricalBins,
    NumericBins,
    WindowHistogram,
)
from streams.core.drift.profile import (
    PREDICTION,
    CategoricalProfile,
    NumericProfile,
    ProfileBuilder,
    ReferenceProfile,
    row_keys,
)

N_NUMERIC, N_CATEGORICAL = 20, 5
CATEGORIES = [f"k{i}" for i in range(8)]
CAT_P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])


def _batch(rng: np.random.Generator, n: int, drift: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """20 numeric features of assorted shapes (2 % missing) and 5 categorical ones."""
    drift = drift or {}
    out: dict[str, list[Any]] = {}
    for i in range(N_NUMERIC):
        name = f"n{i:02d}"
        shift, scale = drift.get(name, (0.0, 1.0))
        if i % 3 == 0:
            x = rng.normal(10.0 * i, 1.0 + i, n)
        elif i % 3 == 1:
            x = rng.lognormal(0.0, 0.5, n) * (1 + i)
        else:
            x = rng.integers(0, 5 + i, n).astype(np.float64)
        x = x.mean() + (x - x.mean()) * scale + shift * (1.0 + i)
        miss = rng.random(n) < 0.02
        out[name] = [None if m else v for v, m in zip(x.tolist(), miss.tolist(), strict=True)]
    for j in range(N_CATEGORICAL):
        name = f"c{j}"
        p = drift.get(name, CAT_P)
        out[name] = rng.choice(CATEGORIES + ["new1", "new2"][: len(p) - len(CATEGORIES)], n, p=p).tolist()
    return out


def _predictions(rng: np.random.Generator, n: int, p_yes: float = 0.3) -> list[dict[str, float]]:
    yes = (rng.random(n) < p_yes).astype(float) * 0.5 + rng.random(n) * 0.5
    return [{"yes": float(a), "no": float(1 - a)} for a in yes]


@cache
def _reference() -> ReferenceProfile:
    rng = np.random.default_rng(2024)
    b = ProfileBuilder()
    for _ in range(20):
        b.add(_batch(rng, 1000), _predictions(rng, 1000))
    return b.build("model", "v1", created_ms=0, source="test")


def _window(seed: int, n_batches: int = 4, drift: dict[str, Any] | None = None, p_yes: float = 0.3,
            batch: int = 500) -> WindowHistogram:
    rng = np.random.default_rng(seed)
    w = WindowHistogram(_reference())
    for i in range(n_batches):
        w.add(_batch(rng, batch, drift), _predictions(rng, batch, p_yes), rows_seed=seed * 1000 + i)
    return w


# -- WindowHistogram -----------------------------------------------------------------------------


def _comparable(w: WindowHistogram) -> dict[str, Any]:
    """Everything of the state except the row sample (seeded per batch) and float sums (rounding)."""
    st = w.to_state()
    feats = {}
    for k, f in st["features"].items():
        f = dict(f)
        for key in ("sum", "sumsq"):
            f.pop(key, None)
        feats[k] = f
    return {"n": st["n"], "untracked": st["untracked"], "features": feats}


@pytest.mark.parametrize("splits", [(), (1,), (250, 251), (3, 999, 1000, 1500), tuple(range(97, 2000, 97))])
def test_window_fold_equals_one_shot_on_the_concatenation(splits: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    data, preds = _batch(rng, 2000, {"c0": [0.1] * 8 + [0.1, 0.1]}), _predictions(rng, 2000)
    data["untracked"] = [1.0] * 2000
    one = WindowHistogram(_reference())
    one.add(data, preds, rows_seed=1)
    many = WindowHistogram(_reference())
    bounds = [0, *splits, 2000]
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        many.add({k: v[lo:hi] for k, v in data.items()}, preds[lo:hi], rows_seed=i)
    assert _comparable(many) == _comparable(one)
    a, b = one.to_state()["features"], many.to_state()["features"]
    for k, f in a.items():
        if "sum" in f:
            assert b[k]["sum"] == pytest.approx(f["sum"], rel=1e-9, abs=1e-6)
            assert b[k]["sumsq"] == pytest.approx(f["sumsq"], rel=1e-9)
    assert one.untracked == 2000 and one.n == 2000


def test_window_bins_match_the_profile_convention() -> None:
    b = ProfileBuilder(n_bins=4)
    b.add({"x": [1.0, 2.0, 3.0, 4.0, 5.0] * 20, "c": ["a", "b"] * 50})
    prof = b.build("m", None, 0, "t")
    assert isinstance(prof.features["x"], NumericProfile) and prof.features["x"].edges == (2.0, 3.0, 4.0)
    w = WindowHistogram(prof)
    w.add({"x": [2.0, 2.0000001, 3.0, -math.inf, math.nan, None, "3", True, 100, 4]}, None, rows_seed=0)
    x = w.bins("x")
    assert isinstance(x, NumericBins)
    # (-inf, 2]: 2.0 | (2, 3]: 2.0000001, 3.0 | (3, 4]: 4 | (4, inf): 100
    assert x.counts == (1, 2, 1, 1)
    assert (x.missing, x.invalid, x.n) == (3, 2, 5)  # -inf, nan, None | "3", True
    c = w.bins("c")
    assert isinstance(c, CategoricalBins) and c.missing == 10  # absent from the batch


def test_window_moments_and_missing_feature() -> None:
    b = ProfileBuilder()
    b.add({"big": (1e12 + np.arange(100.0)).tolist(), "other": [1.0] * 100})
    prof = b.build("m", None, 0, "t")
    w = WindowHistogram(prof)
    x = 1e12 + np.random.default_rng(0).normal(50, 3, 1000)
    w.add({"big": x.tolist()}, None, rows_seed=0)
    big = w.bins("big")
    assert isinstance(big, NumericBins)
    assert big.mean == pytest.approx(float(x.mean()), rel=1e-15)
    assert big.std == pytest.approx(float(x.std()), rel=1e-6)  # no cancellation around 1e12
    other = w.bins("other")
    assert isinstance(other, NumericBins) and (other.missing, other.mean, other.std) == (1000, None, None)
    n, s, ss = w.moments("big")
    big_ref = prof.features["big"]
    assert isinstance(big_ref, NumericProfile) and big_ref.mean is not None
    ref_mean = big_ref.mean
    assert n == 1000 and s == pytest.approx(float((x - ref_mean).sum()), rel=1e-9)
    assert ss == pytest.approx(float(((x - ref_mean) ** 2).sum()), rel=1e-9)
    with pytest.raises(ValueError, match=r"^name: 'nope' is not a numeric feature"):
        w.moments("nope")


def test_new_categories_are_counted_in_other_and_summarised() -> None:
    b = ProfileBuilder()
    b.add({"c": ["a", "b"] * 50})
    w = WindowHistogram(b.build("m", None, 0, "t"))
    w.add({"c": ["a", "x", "x", "y", True, 3, None]}, None, rows_seed=0)
    c = w.bins("c")
    assert isinstance(c, CategoricalBins)
    assert (c.counts, c.other, c.missing) == ((1, 0), 5, 1)
    assert c.new_categories == {"x": 2, "3": 1, "true": 1, "y": 1} and c.new_error == 0
    # many distinct unseen categories: the summary is capped, the heavy ones survive
    w.add({"c": [f"id{i}" for i in range(500)] + ["heavy"] * 300}, None, rows_seed=1)
    c = w.bins("c")
    assert isinstance(c, CategoricalBins)
    assert len(c.new_categories) <= NEW_CATEGORIES_CAP
    assert next(iter(c.new_categories)) == "heavy" and c.new_error > 0
    assert c.other == 805


def test_predictions_are_binned_under_their_name() -> None:
    w = WindowHistogram(_reference())
    w.add({}, [{"yes": 0.9, "no": 0.1}, {"yes": 0.2, "no": 0.8}, None], rows_seed=0)
    w.add({"n00": [1.0, 2.0]}, None, rows_seed=1)  # no predictions: missing
    w.add({}, [{}], rows_seed=2)  # an empty probability map is missing too
    p = w.bins(PREDICTION)
    assert isinstance(p, CategoricalBins)
    ref_p = _reference().prediction
    assert isinstance(ref_p, CategoricalProfile)
    got = dict(zip(ref_p.categories, p.counts, strict=True))
    assert got == {"no": 1, "yes": 1} and p.missing == 4
    assert w.n == 6 and w.bins("n00").missing == 4


def test_state_round_trip_through_json_and_resume() -> None:
    rng = np.random.default_rng(1)
    batches = [(_batch(rng, 500), _predictions(rng, 500)) for _ in range(6)]
    straight = WindowHistogram(_reference())
    for i, (f, p) in enumerate(batches):
        straight.add(f, p, rows_seed=i)
    resumed = WindowHistogram(_reference())
    for i, (f, p) in enumerate(batches[:3]):
        resumed.add(f, p, rows_seed=i)
    raw = json.dumps(resumed.to_state(), allow_nan=False)
    resumed = WindowHistogram.from_state(_reference(), json.loads(raw))
    assert resumed.to_state() == json.loads(raw)
    for i, (f, p) in enumerate(batches[3:], start=3):
        resumed.add(f, p, rows_seed=i)
    a, b = straight.to_state(), resumed.to_state()
    assert b["sample"] == a["sample"]  # the replayed row sample is the same
    assert _comparable(resumed) == _comparable(straight)


def test_row_sample_is_the_bottom_k_of_the_seeded_keys() -> None:
    rng = np.random.default_rng(2)
    w = WindowHistogram(_reference(), sample_rows=50)
    values: list[float] = []
    keys: list[int] = []
    for i in range(7):
        x = rng.normal(size=300)
        w.add({"n00": x.tolist()}, None, rows_seed=100 + i)
        values += x.tolist()
        keys += row_keys(100 + i, 0, 300, bits=53).tolist()
    order = np.argsort(keys, kind="stable")[:50]
    expected = [float(f"{values[i]:.7g}") for i in order]
    sample = w.sample()
    np.testing.assert_allclose(np.asarray(sample["n00"], dtype=np.float64), expected, rtol=1e-15)
    assert max(len(repr(v)) for v in sample["n00"]) <= len("-0.0001234568")  # short in JSON
    assert sample["c0"] == [None] * 50  # absent feature: missing in the sample
    assert w.to_state()["sample"]["keys"] == sorted(keys)[:50]


def _n00(s: dict[str, Any]) -> dict[str, Any]:
    return s["features"]["n00"]  # type: ignore[no-any-return]


def _c0(s: dict[str, Any]) -> dict[str, Any]:
    return s["features"]["c0"]  # type: ignore[no-any-return]


STATE_CASES: list[tuple[str, Any, str]] = [
    ("version", lambda s: s.update(v=2), r"^window state\.v/kind:"),
    ("kind", lambda s: s.update(kind="adwin"), r"^window state\.v/kind:"),
    ("unknown field", lambda s: s.update(extra=1), r"^window state\.extra: unknown field"),
    ("profile", lambda s: s.update(profile="0" * 16), r"^window state\.profile: written against"),
    ("n", lambda s: s.update(n=-1), r"^window state\.n:"),
    ("features", lambda s: s["features"].pop("n00"), r"^window state\.features:"),
    ("counts length", lambda s: _n00(s).update(counts=[1, 2]), r"features\['n00'\]\.counts: must be"),
    ("count float", lambda s: _n00(s)["counts"].__setitem__(0, 1.5), r"features\['n00'\]\.counts\[0\]"),
    ("sum nan", lambda s: _n00(s).update(sum=math.nan), r"features\['n00'\]\.sum: must be a finite number"),
    ("cat field", lambda s: _c0(s).pop("new_err"), r"features\['c0'\]\.new_err: missing field"),
    ("new type", lambda s: _c0(s).update(new={"x": "1"}), r"features\['c0'\]\.new\['x'\]"),
    ("sample keys", lambda s: s["sample"].update(keys=[3, 1]), r"^window state\.sample\.keys:"),
    ("sample column", lambda s: s["sample"]["columns"]["n00"].append(1.0), r"columns\['n00'\]: must be"),
    ("sample label", lambda s: s["sample"]["columns"]["c0"].__setitem__(0, 1), r"columns\['c0'\]: labels"),
]


@pytest.mark.parametrize(("case", "mutate", "match"), STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_from_state_rejects_with_the_field_name(case: str, mutate: Any, match: str) -> None:
    state = json.loads(json.dumps(_window(3, n_batches=1).to_state()))
    mutate(state)
    with pytest.raises(ValueError, match=match):
        WindowHistogram.from_state(_reference(), state)


@pytest.mark.parametrize(
    ("features", "predictions", "seed", "match"),
    [
        ({"n00": [1.0, 2.0], "n01": [1.0]}, None, 0, r"^features\['n01'\]: 1 values"),
        ({"n00": [1.0]}, [1, 2], 0, r"^predictions: 2 values"),
        ({"c0": [["a"]]}, None, 0, r"^features\['c0'\]: unsupported value type list"),
        ({"n00": [1.0]}, None, 1.5, r"^rows_seed: must be an int"),
    ],
)
def test_window_add_rejects_bad_batches(features: Any, predictions: Any, seed: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WindowHistogram(_reference()).add(features, predictions, rows_seed=seed)


def test_a_refused_batch_leaves_the_window_untouched() -> None:
    w = _window(4, n_batches=1)
    before = w.to_state()
    bad = _batch(np.random.default_rng(0), 10)
    bad["c4"] = [object()] * 10  # the last categorical feature: the others come first
    with pytest.raises(ValueError, match=r"^features\['c4'\]: unsupported value type object"):
        w.add(bad, _predictions(np.random.default_rng(0), 10), rows_seed=1)
    with pytest.raises(ValueError, match=r"^predictions: unsupported value type list"):
        w.add(_batch(np.random.default_rng(0), 1), [[1.0]], rows_seed=1)
    assert w.to_state() == before


# -- evaluate -----------------------------------------------------------------------------------


def test_stationary_windows_raise_no_alarm() -> None:
    # 30 windows x 26 tests (20 numeric, 5 categorical, the prediction) of a stationary stream
    significant = 0
    for seed in range(30):
        report = evaluate(_reference(), _window(seed))
        assert report.drifted == [] and report.prediction is not None and not report.prediction.drifted
        assert len(report.features) == N_NUMERIC + N_CATEGORICAL
        significant += sum(f.p_adjusted < 0.01 for f in report.features)
    # BH at alpha = 0.01 alone (without the PSI gate) leaves at most a few false discoveries
    assert significant <= 3


@pytest.mark.parametrize("feature", ["n00", "n04", "n08"])
@pytest.mark.parametrize("test", ["ks", "mann_whitney"])
def test_shifted_feature_is_drifted_and_ranked_first(feature: str, test: NumericTest) -> None:
    cfg = DataDriftConfig(numeric_test=test)
    report = evaluate(_reference(), _window(5, drift={feature: (0.6, 1.0)}), cfg)
    assert report.drifted == [feature]
    top = report.features[0]
    assert (top.feature, top.kind, top.test, top.drifted) == (feature, "numeric", test, True)
    assert top.score == top.psi >= 0.1 and top.p_adjusted < 0.01
    assert top.evidence["cur_mean"] > top.evidence["ref_mean"]
    if test == "mann_whitney":
        assert top.statistic > 0.5  # the current values tend to be larger
    scores = [f.score for f in report.features]
    assert scores == sorted(scores, reverse=True)


def test_change_of_spread_is_seen_by_ks_not_by_mann_whitney() -> None:
    window = _window(6, drift={"n03": (0.0, 2.0)})
    ks = evaluate(_reference(), window)
    mw = evaluate(_reference(), window, DataDriftConfig(numeric_test="mann_whitney"))
    assert ks.drifted == ["n03"]
    assert mw.drifted == []
    n03 = next(f for f in ks.features if f.feature == "n03")
    assert n03.evidence["cur_std"] == pytest.approx(2 * n03.evidence["ref_std"], rel=0.15)


def test_categorical_shift_and_new_categories_are_detected() -> None:
    shifted = np.array([0.1, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02, 0.15, 0.05])
    report = evaluate(_reference(), _window(8, drift={"c2": shifted}))
    assert report.drifted == ["c2"]
    c2 = report.features[0]
    assert (c2.feature, c2.kind, c2.test) == ("c2", "categorical", "chi_squared")
    moved = [m["category"] for m in c2.evidence["top_changed"][:2]]
    assert set(moved) == {"k0", "other"}
    assert set(c2.evidence["new_categories"]) == {"new1", "new2"}
    assert c2.evidence["new_categories"]["new1"] > c2.evidence["new_categories"]["new2"]
    assert 0.0 < c2.js <= 1.0


def test_prediction_drift_is_reported_apart() -> None:
    report = evaluate(_reference(), _window(9, p_yes=0.6))
    assert report.drifted == []
    assert report.prediction is not None
    assert report.prediction.feature == PREDICTION and report.prediction.drifted


def test_effect_size_gate_keeps_huge_windows_quiet() -> None:
    # 100k events with a 0.05 sd shift: overwhelming evidence, immaterial change
    b = ProfileBuilder()
    rng = np.random.default_rng(10)
    b.add({"x": rng.normal(size=50_000).tolist()})
    prof = b.build("m", None, 0, "t")
    w = WindowHistogram(prof, sample_rows=0)
    for i in range(50):
        w.add({"x": rng.normal(0.05, 1.0, 2000).tolist()}, None, rows_seed=i)
    (x,) = evaluate(prof, w).features
    assert x.p_adjusted < 1e-6 and x.psi < 0.01 and not x.drifted
    loose = evaluate(prof, w, DataDriftConfig(min_psi=0.0))
    assert loose.drifted == ["x"]


def test_no_verdict_below_min_events() -> None:
    report = evaluate(_reference(), _window(11, n_batches=1, batch=499))
    assert report == DriftReport(499, [], [], None)
    # enough events, but a feature mostly missing: listed, not tested
    w = _window(12, n_batches=2)
    w.add({"n01": [None] * 600}, None, rows_seed=99)
    report = evaluate(_reference(), w, DataDriftConfig(min_events=1200))
    n01 = next(f for f in report.features if f.feature == "n01")
    assert (n01.test, n01.p_value, n01.p_adjusted, n01.drifted) == ("none", 1.0, 1.0, False)
    assert n01.evidence["cur_missing_rate"] > 0.3


def test_corrections() -> None:
    window = _window(13, drift={"n00": (0.15, 1.0), "n06": (0.15, 1.0)})
    raw = {f.feature: f for f in evaluate(_reference(), window, DataDriftConfig(correction="none")).features}
    bh = {f.feature: f for f in evaluate(_reference(), window).features}
    hm = {f.feature: f for f in evaluate(_reference(), window, DataDriftConfig(correction="holm")).features}
    for k, f in raw.items():
        assert f.p_adjusted == f.p_value
        assert f.p_value <= bh[k].p_adjusted <= hm[k].p_adjusted + 1e-15


def test_window_of_another_profile_is_refused() -> None:
    b = ProfileBuilder()
    b.add({"x": [1.0, 2.0]})
    other = b.build("m", None, 0, "t")
    with pytest.raises(ValueError, match=r"^window: was binned by another profile"):
        evaluate(other, _window(0, n_batches=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, r"^alpha:"),
        ({"alpha": 1.0}, r"^alpha:"),
        ({"alpha": True}, r"^alpha:"),
        ({"correction": "bonferroni"}, r"^correction:"),
        ({"min_psi": -0.1}, r"^min_psi:"),
        ({"min_psi": math.inf}, r"^min_psi:"),
        ({"min_events": 0}, r"^min_events:"),
        ({"min_events": 10.0}, r"^min_events:"),
        ({"numeric_test": "t"}, r"^numeric_test:"),
    ],
)
def test_config_is_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataDriftConfig(**kwargs)
