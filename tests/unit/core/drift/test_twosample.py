"""Tests of streams.core.drift.twosample against scipy's tests on raw samples and hand computations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from streams.core.drift.twosample import (
    benjamini_hochberg,
    chi_squared,
    holm,
    jensen_shannon,
    ks_binned,
    mann_whitney_binned,
    psi,
)

Sampler = Callable[[np.random.Generator, int], np.ndarray]

# name -> (reference sampler, current sampler)
SCENARIOS: dict[str, tuple[Sampler, Sampler]] = {
    "same": (lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0, 1, n)),
    "shift_0.3": (lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0.3, 1, n)),
    "shift_-0.5": (lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(-0.5, 1, n)),
    "scale_1.5": (lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0, 1.5, n)),
    "lognormal_same": (lambda r, n: r.lognormal(0, 1, n), lambda r, n: r.lognormal(0, 1, n)),
    "lognormal_tail": (lambda r, n: r.lognormal(0, 1, n), lambda r, n: r.lognormal(0.2, 1.3, n)),
    "uniform_vs_triangular": (lambda r, n: r.uniform(0, 1, n), lambda r, n: r.triangular(0, 0.5, 1, n)),
}


def _binned(ref: np.ndarray, cur: np.ndarray, n_bins: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins))
    ref_c = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1)
    cur_c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1)
    return edges, ref_c / ref_c.sum(), cur_c


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ks_binned_against_scipy(scenario: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_s, cur_s = SCENARIOS[scenario]
    ref, cur = ref_s(rng, 5000), cur_s(rng, 1500)
    _, ref_p, cur_c = _binned(ref, cur)
    got = ks_binned(ref_p, cur_c, n_ref=len(ref))
    exact = stats.ks_2samp(ref, cur, method="asymp")
    # binning evaluates the ECDFs on a subset of points: D is a lower bound of the exact statistic,
    # short of it by at most the largest mass of one bin (reference or current)
    bin_mass = max(float(ref_p.max()), float(cur_c.max() / cur_c.sum()))
    assert got.statistic <= exact.statistic + 1e-12
    assert exact.statistic - got.statistic <= bin_mass
    assert got.p_value >= exact.pvalue - 1e-12  # so the test is conservative
    if scenario in ("same", "lognormal_same"):
        assert got.p_value > 0.01
    else:
        assert exact.pvalue < 1e-4 and got.p_value < 0.01  # the same decision


def test_ks_binned_is_the_asymptotic_ks_on_binned_values() -> None:
    # on values that are exactly the bin indices, binned and raw KS coincide
    rng = np.random.default_rng(3)
    ref, cur = rng.integers(0, 10, 4000), rng.integers(1, 10, 700)
    ref_p = np.bincount(ref, minlength=10) / len(ref)
    got = ks_binned(ref_p, np.bincount(cur, minlength=10), n_ref=len(ref))
    exact = stats.ks_2samp(ref, cur, method="asymp")
    assert got.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(exact.pvalue, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_mann_whitney_binned_equals_scipy_on_discrete_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.integers(0, 8, 3000), rng.binomial(7, 0.5 + 0.02 * seed, 900)
    ref_p = np.bincount(ref, minlength=8) / len(ref)
    got = mann_whitney_binned(ref_p, np.bincount(cur, minlength=8), n_ref=len(ref))
    exact = stats.mannwhitneyu(cur, ref, method="asymptotic", use_continuity=True)
    assert got.statistic * len(ref) * len(cur) == pytest.approx(exact.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scenario", ["same", "shift_0.3", "shift_-0.5", "lognormal_tail"])
def test_mann_whitney_binned_close_to_scipy_on_continuous_data(scenario: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_s, cur_s = SCENARIOS[scenario]
    ref, cur = ref_s(rng, 5000), cur_s(rng, 1500)
    _, ref_p, cur_c = _binned(ref, cur)
    got = mann_whitney_binned(ref_p, cur_c, n_ref=len(ref))
    exact = stats.mannwhitneyu(cur, ref, method="asymptotic")
    # within-bin order is lost: the effect size moves by at most a fraction of one bin's pairs
    assert got.statistic == pytest.approx(exact.statistic / (len(ref) * len(cur)), abs=0.01)
    assert (got.p_value < 0.01) == (exact.pvalue < 0.01)


def test_mann_whitney_direction_and_degenerate_input() -> None:
    up = mann_whitney_binned([0.5, 0.5], [0, 100], n_ref=100)
    down = mann_whitney_binned([0.5, 0.5], [100, 0], n_ref=100)
    assert up.statistic == pytest.approx(0.75) and down.statistic == pytest.approx(0.25)
    assert up.p_value == pytest.approx(down.p_value)
    one_bin = mann_whitney_binned([1.0], [10], n_ref=10)  # everything tied: no information
    assert (one_bin.statistic, one_bin.p_value) == (0.5, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_chi_squared_goodness_of_fit_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_p = rng.dirichlet(np.ones(6) * 3)
    cur = rng.multinomial(2000, rng.dirichlet(np.ones(6) * 50))
    got = chi_squared(ref_p, cur)
    exact = stats.chisquare(cur, ref_p * cur.sum())
    assert got.dof == 5
    assert got.statistic == pytest.approx(exact.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(exact.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", range(4))
def test_chi_squared_homogeneity_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.multinomial(3000, [0.4, 0.3, 0.2, 0.1])
    cur = rng.multinomial(800, [0.35, 0.3, 0.2, 0.15])
    got = chi_squared(ref / ref.sum(), cur, n_ref=ref.sum())
    exact = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert got.dof == exact.dof == 3
    assert got.statistic == pytest.approx(exact.statistic, rel=1e-9)
    assert got.p_value == pytest.approx(exact.pvalue, rel=1e-6)


def test_chi_squared_merges_small_expected_counts() -> None:
    # expected counts 60, 30, 6, 2, 2 (n = 100): the two bins of 2 are pooled (4 < 5), then the
    # pool takes the smallest remaining bin (6): 3 bins, dof 2
    ref_p = [0.6, 0.3, 0.06, 0.02, 0.02]
    cur = [55, 30, 5, 5, 5]
    got = chi_squared(ref_p, cur)
    assert got.dof == 2
    obs, exp = np.array([55, 30, 15]), np.array([60, 30, 10])
    assert got.statistic == pytest.approx(float(((obs - exp) ** 2 / exp).sum()))
    # nothing left to compare
    assert chi_squared([0.5, 0.5], [2, 1]) == type(got)(0.0, 1.0, 0)
    # a category unseen in the reference (floored "other", expected 0.1) is pooled with the
    # smallest bin: 600 observed against 500 expected there, still a clear alarm
    alarm = chi_squared([0.5, 0.4999, 0.0001], [400, 400, 200])
    assert alarm.dof == 1 and alarm.p_value < 1e-8


def test_psi_against_hand_computation() -> None:
    ref, cur = [0.2, 0.3, 0.5], [0.25, 0.25, 0.5]
    hand = (0.25 - 0.2) * math.log(0.25 / 0.2) + (0.25 - 0.3) * math.log(0.25 / 0.3)
    assert psi(ref, cur) == pytest.approx(hand, rel=1e-12)
    assert psi(ref, cur) == pytest.approx(psi(cur, ref), rel=1e-12)  # symmetric
    assert psi(ref, ref) == 0.0
    # an empty current bin is clipped at the floor, not infinite
    floor = 1e-4
    hand0 = (floor - 0.5) * math.log(floor / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(hand0, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_jensen_shannon_is_scipys_base2_distance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
    p[0], q[1] = 0.0, 0.0  # zero bins need no floor
    p, q = p / p.sum(), q / q.sum()
    assert jensen_shannon(p, q) == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-9)
    assert jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p), rel=1e-12)


def test_jensen_shannon_hand_values() -> None:
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert jensen_shannon([0.3, 0.7], [0.3, 0.7]) == 0.0
    m = [0.7, 0.3]
    kl1 = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl2 = 0.9 * math.log2(0.9 / m[0]) + 0.1 * math.log2(0.1 / m[1])
    assert jensen_shannon([0.5, 0.5], [0.9, 0.1]) == pytest.approx(math.sqrt((kl1 + kl2) / 2), rel=1e-12)


def _bh_by_hand(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def _holm_by_hand(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


@pytest.mark.parametrize("seed", range(6))
def test_multiple_testing_adjustments_against_hand_implementations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 20), rng.uniform(0, 0.001, 5)])
    p[3] = p[4]  # a tie
    np.testing.assert_allclose(benjamini_hochberg(p), _bh_by_hand(p.tolist()), rtol=1e-12)
    np.testing.assert_allclose(holm(p), _holm_by_hand(p.tolist()), rtol=1e-12)
    assert (holm(p) >= benjamini_hochberg(p) - 1e-15).all()  # FWER control is the stricter


def test_adjustments_of_known_values_and_empty_families() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg([]).shape == (0,) and holm([]).shape == (0,)


def test_binned_tests_hold_their_level_under_the_null() -> None:
    # windows drawn from the reference bin distribution itself: rejections at 5 % stay near 5 %
    rng = np.random.default_rng(11)
    ref_p = np.full(20, 0.05)
    rejections = {"ks": 0, "mw": 0, "chi2": 0}
    reps = 600
    for cur in rng.multinomial(500, ref_p, size=reps):
        rejections["ks"] += ks_binned(ref_p, cur, n_ref=10_000).p_value < 0.05
        rejections["mw"] += mann_whitney_binned(ref_p, cur, n_ref=10_000).p_value < 0.05
        rejections["chi2"] += chi_squared(ref_p, cur).p_value < 0.05
    assert rejections["ks"] / reps < 0.05  # conservative (a lower-bounded D)
    assert 0.03 < rejections["mw"] / reps < 0.07
    assert 0.03 < rejections["chi2"] / reps < 0.07


BAD_INPUTS: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
    (ks_binned, ([0.5, 0.6], [1, 1], 10), r"^ref_proportions: must sum to 1"),
    (ks_binned, ([0.5, 0.5], [1, 1, 1], 10), r"^cur_counts: must be 1-D with 2 bins"),
    (ks_binned, ([0.5, 0.5], [0, 0], 10), r"^cur_counts: must hold at least one event"),
    (ks_binned, ([0.5, 0.5], [1, -1], 10), r"^cur_counts: must be finite and >= 0"),
    (ks_binned, ([0.5, 0.5], [1, 1], 0), r"^n_ref: must be a number > 0"),
    (ks_binned, ([], [], 10), r"^ref_proportions: must be a non-empty"),
    (mann_whitney_binned, ([0.5, 0.5], [1, 1], math.inf), r"^n_ref: must be finite"),
    (mann_whitney_binned, ([1.5, -0.5], [1, 1], 10), r"^ref_proportions: must be finite and >= 0"),
    (chi_squared, ([0.5, 0.5], [1, math.nan]), r"^cur_counts: must be finite"),
    (psi, ([0.5, 0.5], [1.0]), r"^cur_proportions: 1 bins"),
    (jensen_shannon, ([0.5, 0.5], [0.5, 0.6]), r"^cur_proportions: must sum to 1"),
    (benjamini_hochberg, ([0.5, 1.5],), r"^p_values: must be finite and in \[0, 1\]"),
    (holm, ([[0.5]],), r"^p_values: must be 1-D"),
]


@pytest.mark.parametrize(("fn", "args", "match"), BAD_INPUTS)
def test_misuse_names_the_argument(fn: Callable[..., Any], args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)
