"""Multivariate drift: can a classifier tell current rows from reference rows?

Per-feature tests miss a change of the *joint* distribution whose marginals
stay put (two features that used to move together stop doing so). The
domain-classifier test catches it: label reference rows 0 and current rows 1,
train a classifier, and measure with held-out rows how well it separates them
(Lopez-Paz and Oquab, *Revisiting classifier two-sample tests*, ICLR 2017;
Rabanser, Guennemann and Lipton, *Failing loudly*, NeurIPS 2019). Without
drift no classifier can do better than chance and the out-of-fold ROC AUC is
about 0.5; the further above 0.5, the more the two samples differ, and the
classifier's coefficients say which features tell them apart.

The classifier is a regularised logistic regression fitted with numpy and
``scipy.optimize`` (L-BFGS-B): a few hundred rows, a few dozen features, tens
of milliseconds, deterministic. Linear in what, though? The encoding decides
what it can see:

* numeric features standardised by the reference (missing: 0 plus a missing
  indicator), so a mean shift is a linear signal;
* their squares, so a change of variance is one too;
* the squares of the reference's principal components (of the standardised
  numeric features), so a change of *correlation* is: if ``x`` and ``y`` were
  positively correlated, the reference's component along ``x - y`` has a small
  variance that a decorrelated window inflates;
* one-hot indicators of the most frequent categories of categorical features
  (the reference's and the window's: a new category gets its own column).

Every column is then standardised, so the penalty treats them alike and the
coefficients are comparable: a feature's importance is the largest absolute
coefficient among its columns (a principal component's coefficient is shared
out by its squared loadings), averaged over the folds.

The penalty is an elastic net: a small ridge (L2) term keeps the problem
strictly convex, and an L1 term at the *universal threshold*
``sqrt(2 log p) * sqrt(n q (1 - q))`` -- about the largest gradient a pure-noise
column reaches at the null model (Donoho and Johnstone, Biometrika 81(3),
1994) -- zeroes the ~100 columns that carry nothing. Drift usually moves a
few features; with ridge alone the noise of the others drowns it. Measured
on 500 + 256 rows of 40 features (35 numeric, seeds 0-9): a 1 sd shift of one
feature gives a mean AUC of 0.59 with ridge only and 0.72 with the L1 term
(the best possible is 0.76), a flipped correlation 0.67 and 0.78, and no drift
0.51 and 0.50. ``l1=0`` gives the pure ridge.

Rows are split into ``folds`` stratified folds by a seeded permutation; each
fold is scored by the model fitted on the others (cross-fitting) and the AUC
is computed on the pooled out-of-fold scores with the Mann-Whitney formula,
ties counting one half (Hanley and McNeil, Radiology 143(1), 1982). Every
transform (standardisation, principal components, the choice of categories)
is fitted on the training folds only: see ``_encode`` for the leak this avoids.

Cost: dominated by the matrix-vector products of L-BFGS, ``O(n p)`` each; 20 to
35 ms for 756 rows and 40 features on one core. The products are small, so a
multi-threaded BLAS only adds synchronisation: run workers with
``OPENBLAS_NUM_THREADS=1`` (or ``OMP_NUM_THREADS=1``). On an oversubscribed
two-core machine the default threading was measured 2 to 10 times slower
(BLAS worker threads waiting for a time slice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from streams.core.drift.profile import category_label, numeric_column

__all__ = ["DomainResult", "domain_auc"]

FloatArray = npt.NDArray[np.float64]

_Z_CLIP = 10.0  # standardised values beyond 10 sd are clipped: one wild value must not own the fit
_EIG_RTOL = 1e-9  # principal components with a relative variance below this are numerically void
_STD_MIN = 1e-12


@dataclass(frozen=True, slots=True)
class DomainResult:
    """Out-of-fold ROC AUC of reference (0) against current (1) rows, and what separates them.

    ``top_features`` lists up to ``top`` features with a non-zero importance (largest absolute
    standardised coefficient), most important first.
    """

    auc: float
    n_ref: int
    n_cur: int
    top_features: list[tuple[str, float]]


def _n_rows(rows: Mapping[str, Sequence[Any]], name: str) -> int:
    n: int | None = None
    for k, col in rows.items():
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise ValueError(f"{name}[{k!r}]: {len(col)} rows, other columns have {n}")
    return n or 0


@dataclass(slots=True)
class _Column:
    """One feature over all rows (reference then current), decoded once for every fold."""

    name: str
    x: FloatArray | None  # numeric values, NaN where missing
    codes: npt.NDArray[np.intp] | None  # categorical: label index, -1 where missing
    missing: npt.NDArray[np.bool_]


def _decode(
    ref_rows: Mapping[str, Sequence[Any]], cur_rows: Mapping[str, Sequence[Any]]
) -> list[_Column]:
    out: list[_Column] = []
    for name in sorted(set(ref_rows) & set(cur_rows)):
        col = [*ref_rows[name], *cur_rows[name]]
        x, other = numeric_column(col)
        if other is None:
            present = np.isfinite(x)
            if present.any():
                out.append(_Column(name, x, None, ~present))
            continue
        try:
            labels = [category_label(v) for v in col]
        except ValueError as exc:
            raise ValueError(f"rows[{name!r}]: {exc}") from None
        index: dict[str, int] = {}
        codes = np.fromiter(
            (-1 if lab is None else index.setdefault(lab, len(index)) for lab in labels),
            dtype=np.intp,
            count=len(col),
        )
        out.append(_Column(name, None, codes, codes < 0))
    return out


def _encode(
    columns: list[_Column],
    fit_ref: npt.NDArray[np.bool_],
    fit_all: npt.NDArray[np.bool_],
    max_categories: int,
) -> tuple[FloatArray, list[list[tuple[str, float]]]]:
    """Design matrix of all rows with a transform fitted on the rows of the training folds only.

    Numeric features are standardised by the training reference rows and the principal
    components are those of the training reference rows; categories are the most frequent
    of the training rows. Fitting any of this on held-out rows would leak: a transform
    fitted on reference rows makes exactly those rows look more typical than any other
    (the smallest sample eigenvalues of 250 rows in 35 dimensions are about a third of the
    true ones), an out-of-fold AUC well above 0.5 with no drift at all.
    Returns the columns and, per column, the features it belongs to with their shares.
    """
    cols: list[FloatArray] = []
    owners: list[list[tuple[str, float]]] = []
    z_block: list[FloatArray] = []
    z_names: list[str] = []
    for c in columns:
        if c.x is not None:
            base = c.x[fit_ref & ~c.missing]
            if len(base) == 0:
                base = c.x[fit_all & ~c.missing]
            if len(base) == 0:
                continue
            sd = float(base.std())
            z = np.clip((c.x - float(base.mean())) / (sd if sd > _STD_MIN else 1.0), -_Z_CLIP, _Z_CLIP)
            z[c.missing] = 0.0
            cols += [z, z * z]
            owners += [[(c.name, 1.0)], [(c.name, 1.0)]]
            z_block.append(z)
            z_names.append(c.name)
        elif c.codes is not None:
            counts = np.bincount(c.codes[fit_all & ~c.missing])
            order = np.lexsort((np.arange(len(counts)), -counts))[:max_categories]
            for code in order.tolist():
                if counts[code] > 0:
                    cols.append((c.codes == code).astype(np.float64))
                    owners.append([(c.name, 1.0)])
        if c.missing.any():
            cols.append(c.missing.astype(np.float64))
            owners.append([(c.name, 1.0)])
    if len(z_block) >= 2:
        z = np.stack(z_block, axis=1)
        zr = z[fit_ref]
        evals, evecs = np.linalg.eigh(zr.T @ zr / max(len(zr), 1))
        keep = evals > _EIG_RTOL * max(float(evals.max()), _STD_MIN)
        u = z @ evecs[:, keep]
        for j, k in enumerate(np.flatnonzero(keep).tolist()):
            cols.append(u[:, j] ** 2)
            owners.append([(f, float(evecs[i, k] ** 2)) for i, f in enumerate(z_names)])
    if not cols:
        return np.empty((len(fit_ref), 0)), []
    return np.stack(cols, axis=1), owners


def _fit(x: FloatArray, y: FloatArray, l2: float, l1: float) -> FloatArray:
    """Elastic-net logistic regression (intercept unpenalised); returns ``[intercept, coefs...]``.

    Minimises ``sum(log(1 + exp(eta)) - y * eta) + l1 * |w|_1 + l2 / 2 * |w|^2`` with
    L-BFGS-B on the split ``w = w_pos - w_neg`` (both >= 0), the standard smooth
    reformulation of the L1 penalty.
    """
    p = x.shape[1]

    def loss(v: FloatArray) -> tuple[float, FloatArray]:
        b, wp, wn = v[0], v[1 : p + 1], v[p + 1 :]
        w = wp - wn
        eta = b + x @ w
        r = special.expit(eta) - y
        gw = x.T @ r
        val = float(np.sum(np.logaddexp(0.0, eta) - y * eta))
        val += l1 * float(wp.sum() + wn.sum()) + 0.5 * l2 * float(np.dot(wp, wp) + np.dot(wn, wn))
        grad = np.concatenate([[r.sum()], gw + l1 + l2 * wp, -gw + l1 + l2 * wn])
        return val, grad

    prior = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    v0 = np.zeros(2 * p + 1)
    v0[0] = math.log(prior / (1.0 - prior))
    bounds = [(None, None)] + [(0.0, None)] * (2 * p)
    res = optimize.minimize(loss, v0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 500, "gtol": 1e-6})
    v = np.asarray(res.x, dtype=np.float64)
    return np.concatenate([[v[0]], v[1 : p + 1] - v[p + 1 :]])


def _auc(scores: FloatArray, y: FloatArray) -> float:
    """ROC AUC by the Mann-Whitney formula (average ranks: ties count one half)."""
    ranks = stats.rankdata(scores)
    n1 = float(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def domain_auc(
    ref_rows: Mapping[str, Sequence[Any]],
    cur_rows: Mapping[str, Sequence[Any]],
    seed: int,
    folds: int = 2,
    *,
    l2: float = 1.0,
    l1: float = 1.0,
    max_categories: int = 10,
    top: int = 10,
) -> DomainResult:
    """Out-of-fold AUC of a domain classifier between reference and current rows.

    Parameters
    ----------
    ref_rows, cur_rows
        Row-aligned columns (``ReferenceProfile.sample`` and ``WindowHistogram.sample()``):
        numbers, strings, booleans or ``None``. Only features present in both are used.
    seed
        Seed of the fold assignment.
    folds
        Number of cross-fitting folds; 2 trains on half the rows, which is plenty for
        a linear model and halves the cost of more folds.
    l2
        Ridge penalty on the standardised coefficients (the loss is a *sum* over rows):
        a small one, to keep the fit well posed when columns are collinear.
    l1
        L1 penalty, in units of the universal threshold (see the module docstring);
        1 removes pure-noise columns with high probability, 0 disables it.
    max_categories
        One-hot columns per categorical feature (the most frequent categories over both samples).
    top
        Length of ``top_features``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = {"x": rng.normal(size=500).tolist(), "y": rng.normal(size=500).tolist()}
    >>> same = {"x": rng.normal(size=256).tolist(), "y": rng.normal(size=256).tolist()}
    >>> bool(domain_auc(ref, same, seed=1).auc < 0.6)
    True
    >>> shifted = {"x": rng.normal(size=256).tolist(), "y": rng.normal(1.0, 1.0, size=256).tolist()}
    >>> r = domain_auc(ref, shifted, seed=1)
    >>> bool(r.auc > 0.7), r.top_features[0][0], (r.n_ref, r.n_cur)
    (True, 'y', (500, 256))
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed: must be an int, got {seed!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: must be an int >= 2, got {folds!r}")
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not 0.0 < l2 < math.inf:
        raise ValueError(f"l2: must be a finite number > 0, got {l2!r}")
    if isinstance(l1, bool) or not isinstance(l1, int | float) or not 0.0 <= l1 < math.inf:
        raise ValueError(f"l1: must be a finite number >= 0, got {l1!r}")
    if isinstance(max_categories, bool) or not isinstance(max_categories, int) or max_categories < 1:
        raise ValueError(f"max_categories: must be an int >= 1, got {max_categories!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top: must be an int >= 0, got {top!r}")
    n_ref = _n_rows(ref_rows, "ref_rows")
    n_cur = _n_rows(cur_rows, "cur_rows")
    if n_ref < folds:
        raise ValueError(f"ref_rows: {n_ref} rows, need at least folds = {folds}")
    if n_cur < folds:
        raise ValueError(f"cur_rows: {n_cur} rows, need at least folds = {folds}")
    columns = _decode(ref_rows, cur_rows)
    y = np.concatenate([np.zeros(n_ref), np.ones(n_cur)])
    is_ref = y == 0
    rng = np.random.default_rng(int(seed))
    fold = np.empty(n_ref + n_cur, dtype=np.intp)
    fold[rng.permutation(n_ref)] = np.arange(n_ref) % folds
    fold[n_ref + rng.permutation(n_cur)] = np.arange(n_cur) % folds
    scores = np.zeros(n_ref + n_cur)
    importance: dict[str, float] = {}
    for k in range(folds):
        test = fold == k
        train = ~test
        x, owners = _encode(columns, train & is_ref, train, max_categories)
        mu = x[train].mean(axis=0)
        sd = x[train].std(axis=0)
        live = sd > _STD_MIN
        if not live.any():
            continue  # nothing varies: every score of this fold stays 0
        x = (x[:, live] - mu[live]) / sd[live]
        n_tr = int(train.sum())
        q = float(y[train].mean())
        l1_k = l1 * math.sqrt(2.0 * math.log(max(x.shape[1], 2)) * n_tr * q * (1.0 - q))
        w = _fit(x[train], y[train], float(l2), l1_k)
        scores[test] = w[0] + x[test] @ w[1:]
        live_owners = (o for o, keep in zip(owners, live.tolist(), strict=True) if keep)
        fold_imp: dict[str, float] = {}
        for c, own in zip(np.abs(w[1:]).tolist(), live_owners, strict=False):
            for name, share in own:
                fold_imp[name] = max(fold_imp.get(name, 0.0), c * share)
        for name, v in fold_imp.items():
            importance[name] = importance.get(name, 0.0) + v / folds
    ranked = sorted(((k, v) for k, v in importance.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    return DomainResult(_auc(scores, y), n_ref, n_cur, ranked[:top])
