"""Tests of streams.core.drift.domain: the multivariate domain-classifier test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from streams.core.drift.domain import DomainResult, _auc, domain_auc
from streams.core.drift.histogram import WindowHistogram
from streams.core.drift.profile import ProfileBuilder

N_NUM, N_CAT = 35, 5  # 40 features in all


def _rows(
    rng: np.random.Generator,
    n: int,
    *,
    corr: float = 0.8,
    shift: float = 0.0,
    scale: float = 1.0,
    new_category: float = 0.0,
    missing: float = 0.02,
) -> dict[str, list[Any]]:
    """40 features: f0 and f1 correlated, f2 possibly shifted/scaled, 5 categorical, some missing."""
    x = rng.normal(size=(n, N_NUM))
    x[:, 1] = corr * x[:, 0] + np.sqrt(1 - corr**2) * x[:, 1]
    x[:, 2] = x[:, 2] * scale + shift
    rows: dict[str, list[Any]] = {}
    for i in range(N_NUM):
        miss = rng.random(n) < missing
        rows[f"f{i}"] = [None if m else v for v, m in zip(x[:, i].tolist(), miss.tolist(), strict=True)]
    for j in range(N_CAT):
        col = rng.choice(list("abcdef"), n).tolist()
        if j == 0 and new_category:
            col = ["zz" if u < new_category else c for c, u in zip(col, rng.random(n).tolist(), strict=True)]
        rows[f"c{j}"] = col
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_same_distribution_gives_chance_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = domain_auc(_rows(rng, 500), _rows(rng, 256), seed=seed)
    assert r.auc < 0.6
    assert (r.n_ref, r.n_cur) == (500, 256)


def test_null_auc_is_centred_on_one_half() -> None:
    aucs = []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        aucs.append(domain_auc(_rows(rng, 500), _rows(rng, 256), seed=seed).auc)
    assert abs(float(np.mean(aucs)) - 0.5) < 0.03


# drift -> (how, the features that drifted). The best possible AUC of each (a classifier that
# knows the change): mean shift 1.5 sd: Phi(1.5 / sqrt(2)) = 0.86; spread x4: (2 / pi) atan(4) = 0.84;
# 60 % of a new category: 0.5 + 0.6 / 2 = 0.80; correlation 0.8 -> -0.8: about 0.9.
DRIFTS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "mean shift": ({"shift": 1.5}, {"f2"}),
    "variance": ({"scale": 4.0}, {"f2"}),
    "correlation flip": ({"corr": -0.8}, {"f0", "f1"}),
    "new category": ({"new_category": 0.6}, {"c0"}),
}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_drift_gives_high_auc_and_names_the_features(drift: str, seed: int) -> None:
    kwargs, culprits = DRIFTS[drift]
    rng = np.random.default_rng(seed)
    r = domain_auc(_rows(rng, 500), _rows(rng, 256, **kwargs), seed=seed)
    assert r.auc > 0.7
    top = {name for name, _ in r.top_features[: len(culprits)]}
    assert top == culprits
    importances = [v for _, v in r.top_features]
    assert importances == sorted(importances, reverse=True) and len(r.top_features) <= 10


def test_correlation_change_is_invisible_to_the_marginals_but_not_to_the_classifier() -> None:
    rng = np.random.default_rng(7)
    ref, cur = _rows(rng, 500, missing=0.0), _rows(rng, 256, corr=-0.8, missing=0.0)
    for f in ("f0", "f1"):
        assert stats.ks_2samp(ref[f], cur[f]).pvalue > 0.01  # same marginal distributions
    assert domain_auc(ref, cur, seed=0).auc > 0.7


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    ref, cur = _rows(rng, 500), _rows(rng, 256, shift=0.5)
    assert domain_auc(ref, cur, seed=5) == domain_auc(ref, cur, seed=5)
    assert domain_auc(ref, cur, seed=5, folds=3).n_cur == 256


def test_pure_ridge_is_available() -> None:
    rng = np.random.default_rng(4)
    ref, cur = _rows(rng, 500), _rows(rng, 256, shift=1.5)
    ridge = domain_auc(ref, cur, seed=0, l1=0.0)
    assert ridge.auc > 0.6 and ridge.top_features[0][0] == "f2"
    assert len(ridge.top_features) == 10  # no sparsity: every feature has some weight


def test_with_profile_and_window_samples() -> None:
    rng = np.random.default_rng(5)
    b = ProfileBuilder(sample_rows=500)
    b.add(_rows(rng, 5000))
    prof = b.build("m", None, 0, "t")
    w = WindowHistogram(prof, sample_rows=256)
    for i in range(6):
        w.add(_rows(rng, 500, shift=1.0), None, rows_seed=i)
    r = domain_auc(prof.sample, w.sample(), seed=1)
    assert (r.n_ref, r.n_cur) == (500, 256)
    assert r.auc > 0.7 and r.top_features[0][0] == "f2"


def test_degenerate_inputs() -> None:
    assert domain_auc({"a": [1.0, 1.0]}, {"b": [2.0, 2.0]}, seed=0) == DomainResult(0.5, 2, 2, [])
    assert domain_auc({"a": [1.0] * 4}, {"a": [1.0] * 4}, seed=0).auc == 0.5  # nothing varies
    r = domain_auc({"a": [0.0] * 20}, {"a": [1.0] * 20}, seed=0)  # perfectly separable
    assert r.auc == 1.0 and r.top_features[0][0] == "a"
    r = domain_auc({"b": [True, False] * 10}, {"b": [None, "x"] * 10}, seed=0)  # booleans, None, labels
    assert r.auc == 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "auc"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # ties count one half
        ([0.2, 0.2, 0.9], [0, 1, 1], 0.75),
        ([3.0, 2.0, 1.0], [0, 1, 1], 0.0),
    ],
)
def test_auc_is_the_mann_whitney_probability(scores: list[float], labels: list[int], auc: float) -> None:
    assert _auc(np.asarray(scores), np.asarray(labels, dtype=np.float64)) == pytest.approx(auc)


@pytest.mark.parametrize(
    ("ref", "cur", "kwargs", "match"),
    [
        ({"a": [1.0] * 5}, {"a": [1.0] * 5}, {"folds": 1}, r"^folds:"),
        ({"a": [1.0] * 5}, {"a": [1.0] * 5}, {"seed": 1.5}, r"^seed:"),
        ({"a": [1.0] * 5}, {"a": [1.0] * 5}, {"l2": 0.0}, r"^l2:"),
        ({"a": [1.0] * 5}, {"a": [1.0] * 5}, {"l1": -1.0}, r"^l1:"),
        ({"a": [1.0] * 5}, {"a": [1.0] * 5}, {"max_categories": 0}, r"^max_categories:"),
        ({"a": [1.0]}, {"a": [1.0] * 5}, {}, r"^ref_rows: 1 rows, need at least folds = 2"),
        ({"a": [1.0] * 5}, {"a": [1.0] * 5, "b": [1.0]}, {}, r"^cur_rows\['b'\]: 1 rows"),
        ({"a": [[1], "x"] * 3}, {"a": ["x"] * 5}, {}, r"^rows\['a'\]: unsupported value type list"),
    ],
)
def test_misuse_is_refused(ref: Any, cur: Any, kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        domain_auc(ref, cur, **kwargs)
