"""Per-feature data drift of one window against the reference profile.

Each feature (and the prediction) is tested on its binned window counts
(:mod:`streams.core.drift.histogram`) against the reference proportions
(:mod:`streams.core.drift.profile`):

* numeric: Kolmogorov-Smirnov (default; any change of distribution) or
  Mann-Whitney (location only) on the bins;
* categorical: chi-squared test of homogeneity of the reference and window
  counts (which accounts for the reference's own sampling noise).

A window tests some 25 features at once, so p-values are adjusted for the
family (Benjamini-Hochberg by default: the expected share of false alarms
among the features flagged stays below ``alpha``; Holm for a family-wise
guarantee). A p-value alone measures evidence, not size: with 100 000
events a PSI of 0.01 is "significant" and irrelevant. So a feature is
*drifted* only when its adjusted p-value is below ``alpha`` **and** its PSI
is at least ``min_psi`` -- the effect-size gate that keeps large windows
from alarming on trivial differences, while the test keeps small windows
from alarming on PSI's small-sample bias.

Features are ranked by PSI, their ``score``: an effect size comparable across
features and window sizes (a p-value is not: it underflows to 0 for every
big change), with the conventional reading 0.1 / 0.25 (Siddiqi 2006).

The reference size given to the tests is the profile's ``count``. When the
reference held more values than the builder's reservoir (100 000 by
default), its proportions come from that reservoir and carry its (small)
sampling noise, which the tests then slightly understate; against windows of
a few thousand events it is negligible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streams.core.drift.histogram import CategoricalBins, NumericBins, WindowHistogram
from streams.core.drift.profile import (
    PREDICTION,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
)
from streams.core.drift.twosample import (
    benjamini_hochberg,
    chi_squared,
    holm,
    jensen_shannon,
    ks_binned,
    mann_whitney_binned,
    psi,
)

__all__ = ["Correction", "DataDriftConfig", "DriftReport", "FeatureDrift", "NumericTest", "evaluate"]

Correction = Literal["bh", "holm", "none"]
NumericTest = Literal["ks", "mann_whitney"]

_TOP_CHANGED = 5  # categories listed in the evidence of a categorical feature


@dataclass(frozen=True, slots=True)
class DataDriftConfig:
    """How a window is judged.

    Parameters
    ----------
    alpha
        Level of the adjusted p-values: the false discovery rate with ``"bh"``,
        the family-wise error rate with ``"holm"``. 0.01 because the test runs
        on every window, all day: at 0.05 a stationary model would raise a
        false alarm every few windows.
    correction
        ``"bh"`` (Benjamini-Hochberg), ``"holm"`` or ``"none"``.
    min_psi
        Effect-size gate: a feature is drifted only if its PSI is at least this.
        0.1 is the usual "material change" threshold, and above the PSI bias
        under no drift of a 500-event window with 20 bins (about 0.04).
    min_events
        No verdict below this many events in the window, nor for a feature with
        fewer present values: 500 events put 25 expected events in each of 20
        bins, enough for the asymptotic p-values.
    numeric_test
        ``"ks"`` (any change of distribution) or ``"mann_whitney"`` (location only,
        more power for a pure shift).

    Examples
    --------
    >>> DataDriftConfig(alpha=0.05).correction
    'bh'
    >>> DataDriftConfig(correction="bonferroni")
    Traceback (most recent call last):
    ...
    ValueError: correction: must be 'bh', 'holm' or 'none', got 'bonferroni'
    """

    alpha: float = 0.01
    correction: Correction = "bh"
    min_psi: float = 0.1
    min_events: int = 500
    numeric_test: NumericTest = "ks"

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 < a < 1.0:
            raise ValueError(f"alpha: must be in (0, 1), got {self.alpha!r}")
        if self.correction not in ("bh", "holm", "none"):
            raise ValueError(f"correction: must be 'bh', 'holm' or 'none', got {self.correction!r}")
        if (
            isinstance(self.min_psi, bool)
            or not isinstance(self.min_psi, int | float)
            or not 0.0 <= self.min_psi < float("inf")
        ):
            raise ValueError(f"min_psi: must be a finite number >= 0, got {self.min_psi!r}")
        if isinstance(self.min_events, bool) or not isinstance(self.min_events, int) or self.min_events < 1:
            raise ValueError(f"min_events: must be an int >= 1, got {self.min_events!r}")
        if self.numeric_test not in ("ks", "mann_whitney"):
            raise ValueError(f"numeric_test: must be 'ks' or 'mann_whitney', got {self.numeric_test!r}")


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """Verdict on one feature (or on the prediction, named ``"__prediction__"``).

    ``test`` is ``"ks"``, ``"mann_whitney"``, ``"chi_squared"``, or ``"none"`` when
    the feature could not be tested (too few present values in the window, or
    none in the reference); then ``statistic``, ``psi``, ``js`` and ``score`` are
    0, both p-values 1 and ``drifted`` false. ``statistic`` is the KS distance,
    the probability of superiority or the chi-squared statistic; ``js`` the
    Jensen-Shannon distance (base 2); ``score`` is the PSI. ``evidence`` is
    JSON-able detail for a human: means and standard deviations, missing
    rates, the categories that moved most, categories the reference never saw.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    test: str
    statistic: float
    p_value: float
    p_adjusted: float
    psi: float
    js: float
    score: float
    drifted: bool
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Verdict on one window.

    ``features`` is ranked by ``score`` (PSI, highest first; ties by name) and
    ``drifted`` lists the drifted input features in that order; the
    prediction's verdict is apart, in ``prediction`` (``None`` when the profile
    has no prediction distribution). Below ``min_events`` events there is no
    verdict: ``features`` and ``drifted`` are empty and ``prediction`` is ``None``.
    """

    n_events: int
    features: list[FeatureDrift]
    drifted: list[str]
    prediction: FeatureDrift | None


@dataclass(slots=True)
class _Pending:
    name: str
    kind: Literal["numeric", "categorical"]
    test: str
    statistic: float
    p_value: float
    psi: float
    js: float
    evidence: dict[str, Any]


def _rate(k: int, n: int) -> float:
    return k / n if n else 0.0


def _numeric(
    name: str, ref: NumericProfile, cur: NumericBins, n_events: int, cfg: DataDriftConfig
) -> _Pending:
    evidence: dict[str, Any] = {
        "n": cur.n,
        "ref_mean": ref.mean,
        "cur_mean": cur.mean,
        "ref_std": ref.std,
        "cur_std": cur.std,
        "ref_missing_rate": ref.missing_rate,
        "cur_missing_rate": _rate(cur.missing + cur.invalid, n_events),
        "invalid": cur.invalid,
    }
    if ref.count == 0 or cur.n < cfg.min_events:
        return _Pending(name, "numeric", "none", 0.0, 1.0, 0.0, 0.0, evidence)
    ref_p = ref.proportions
    counts = np.asarray(cur.counts, dtype=np.float64)
    test = ks_binned if cfg.numeric_test == "ks" else mann_whitney_binned
    r = test(ref_p, counts, ref.count)
    cur_p = counts / counts.sum()
    return _Pending(name, "numeric", cfg.numeric_test, r.statistic, r.p_value, psi(ref_p, cur_p),
                    jensen_shannon(ref_p, cur_p), evidence)


def _categorical(
    name: str, ref: CategoricalProfile, cur: CategoricalBins, n_events: int, cfg: DataDriftConfig
) -> _Pending:
    n = cur.n
    labels = [*ref.categories, "other"]
    ref_p = ref.proportions
    counts = np.asarray([*cur.counts, cur.other], dtype=np.float64)
    cur_p = counts / n if n else np.zeros(len(counts))
    moved = sorted(range(len(labels)), key=lambda i: (-abs(cur_p[i] - ref_p[i]), labels[i]))[:_TOP_CHANGED]
    evidence: dict[str, Any] = {
        "n": n,
        "top_changed": [
            {"category": labels[i], "ref": ref_p[i], "cur": float(cur_p[i])} for i in moved if n
        ],
        "new_categories": dict(cur.new_categories),
        "new_categories_error": cur.new_error,
        "ref_missing_rate": ref.missing_rate,
        "cur_missing_rate": _rate(cur.missing, n_events),
    }
    if ref.count == 0 or n < cfg.min_events:
        return _Pending(name, "categorical", "none", 0.0, 1.0, 0.0, 0.0, evidence)
    r = chi_squared(ref_p, counts, n_ref=ref.count)
    evidence["dof"] = r.dof
    return _Pending(name, "categorical", "chi_squared", r.statistic, r.p_value, psi(ref_p, cur_p),
                    jensen_shannon(ref_p, cur_p), evidence)


def _pending(name: str, ref: FeatureProfile, win: WindowHistogram, cfg: DataDriftConfig) -> _Pending:
    cur = win.bins(name)
    if isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalBins):
        return _categorical(name, ref, cur, win.n, cfg)
    if isinstance(ref, NumericProfile) and isinstance(cur, NumericBins):
        return _numeric(name, ref, cur, win.n, cfg)
    raise ValueError(f"window: {name!r} is binned as another kind than in the profile")


def evaluate(
    profile: ReferenceProfile, window: WindowHistogram, cfg: DataDriftConfig | None = None
) -> DriftReport:
    """Test every feature and the prediction of ``window`` against ``profile``.

    The family adjusted together is every feature *tested* in this window plus
    the prediction: one report, one error guarantee. Untested features keep
    ``p_adjusted = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.drift.profile import ProfileBuilder
    >>> from streams.core.drift.histogram import WindowHistogram
    >>> rng = np.random.default_rng(0)
    >>> def batch(n, shift):
    ...     return {"age": rng.normal(40 + shift, 10, n).tolist(), "income": rng.lognormal(3, 1, n).tolist(),
    ...             "plan": rng.choice(["free", "pro"], n, p=[0.8, 0.2]).tolist()}
    >>> b = ProfileBuilder()
    >>> b.add(batch(5000, 0))
    >>> prof = b.build("churn", None, created_ms=0, source="doc")
    >>> w = WindowHistogram(prof)
    >>> for i in range(4):
    ...     w.add(batch(500, 8), None, rows_seed=i)  # age shifted by 0.8 sd
    >>> report = evaluate(prof, w)
    >>> report.drifted, report.features[0].test
    (['age'], 'ks')
    >>> [(f.feature, f.drifted, round(f.psi, 2)) for f in report.features]
    [('age', True, 0.61), ('income', False, 0.01), ('plan', False, 0.0)]
    """
    cfg = cfg or DataDriftConfig()
    if window.profile is not profile and window.profile.fingerprint != profile.fingerprint:
        raise ValueError("window: was binned by another profile")
    if window.n < cfg.min_events:
        return DriftReport(window.n, [], [], None)
    pending = [_pending(name, fp, window, cfg) for name, fp in sorted(profile.features.items())]
    if profile.prediction is not None:
        pending.append(_pending(PREDICTION, profile.prediction, window, cfg))
    tested = [i for i, p in enumerate(pending) if p.test != "none"]
    raw = np.asarray([pending[i].p_value for i in tested], dtype=np.float64)
    if cfg.correction == "bh":
        adj = benjamini_hochberg(raw)
    elif cfg.correction == "holm":
        adj = holm(raw)
    else:
        adj = raw
    p_adj = [1.0] * len(pending)
    for i, a in zip(tested, adj.tolist(), strict=True):
        p_adj[i] = a
    results = [
        FeatureDrift(
            feature=p.name,
            kind=p.kind,
            test=p.test,
            statistic=p.statistic,
            p_value=p.p_value,
            p_adjusted=pa,
            psi=p.psi,
            js=p.js,
            score=p.psi,
            drifted=p.test != "none" and pa < cfg.alpha and p.psi >= cfg.min_psi,
            evidence=p.evidence,
        )
        for p, pa in zip(pending, p_adj, strict=True)
    ]
    prediction = results.pop() if profile.prediction is not None else None
    results.sort(key=lambda f: (-f.score, f.feature))
    return DriftReport(window.n, results, [f.feature for f in results if f.drifted], prediction)
