"""The current window of a model, folded into the reference's bins.

A drift window is summarised by counts in the bins of its
:class:`~streams.core.drift.profile.ReferenceProfile`, which is all the tests of
:mod:`streams.core.drift.twosample` need. The summary is written to a Kafka
changelog after every flush, so it must be small: per numeric feature
``n_bins`` counts, the missing and invalid counts and two sums; per
categorical feature one count per reference category plus ``other``; a
bounded summary of the categories the reference never saw; and a sample of
at most ``sample_rows`` rows (numbers rounded to 7 significant digits) for
the multivariate domain classifier. A few
hundred numbers per feature whatever the window size, instead of the raw
events.

It is a fold in the manner of quix-streams' window aggregations:
:meth:`WindowHistogram.initialize` (or the constructor), :meth:`~WindowHistogram.add`
per batch, then read it (:meth:`~WindowHistogram.bins`, :meth:`~WindowHistogram.sample`)
or persist it (:meth:`~WindowHistogram.to_state` / :meth:`~WindowHistogram.from_state`).
Counts do not depend on how the events were split into batches.

Binning is exactly the profile's: numeric values go to bin
``np.searchsorted(edges, x, side="left")``, that is ``(e[i-1], e[i]]``;
categorical values are labelled by :func:`~streams.core.drift.profile.category_label`.
A value of the wrong kind (a string in a numeric feature) is *invalid*:
counted apart, tested as missing. NaN and infinities are missing, as in the
profile.

Cost: one ``np.array`` conversion, ``searchsorted`` and ``bincount`` per
numeric column and one ``Counter`` per categorical column, per batch; no
Python loop over events unless a column mixes types.

The row sample is a bottom-k sample (Cohen and Kaplan, PODC 2007): each row
gets a 53-bit key from ``(rows_seed, row position in the batch)``, and the
sample is the ``sample_rows`` rows of smallest key. The caller derives
``rows_seed`` from the record's Kafka position, so a record replayed after a
crash gets the same keys and the restarted worker keeps the same rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streams.core.batches import top_class
from streams.core.columns import TEXT_TYPES, FeatureColumns
from streams.core.drift._json import as_count, as_finite, as_label, as_object, exact_keys
from streams.core.drift.profile import (
    PREDICTION,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
    batch_len,
    category_label,
    numeric_column,
    row_keys,
    smallest_keys,
)

__all__ = ["NEW_CATEGORIES_CAP", "STATE_KIND", "CategoricalBins", "NumericBins", "WindowHistogram"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Kind tag of the JSON state; its version is ``STATE_VERSION``.
STATE_KIND: Final = "window_histogram"
STATE_VERSION: Final = 1
#: Unseen categories kept per categorical feature (Misra-Gries counters), for evidence.
NEW_CATEGORIES_CAP: Final = 20

_KEY_BITS = 53  # row keys stay exact in JSON numbers
# Sampled numbers keep 7 significant digits (float32 precision): plenty for the domain
# classifier, and it halves the JSON of the sample, the bulk of the state.
_SAMPLE_DIGITS = 7
_STATE_KEYS = frozenset({"v", "kind", "profile", "sample_rows", "n", "untracked", "features", "sample"})
_NUM_KEYS = frozenset({"counts", "missing", "invalid", "sum", "sumsq"})
_CAT_KEYS = frozenset({"counts", "missing", "new", "new_err"})
_BOOLISH = (bool, np.bool_)
_NUMBERISH = (int, float, np.integer, np.floating)


@dataclass(frozen=True, slots=True)
class NumericBins:
    """Current counts of a numeric feature in the reference bins, and its moments.

    ``mean`` and ``std`` (population) are those of the present values, ``None`` when there are none.
    """

    counts: tuple[int, ...]
    missing: int
    invalid: int
    mean: float | None
    std: float | None

    @property
    def n(self) -> int:
        """Number of present (binned) values."""
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class CategoricalBins:
    """Current counts of a categorical feature: per reference category (profile order), then ``other``.

    ``new_categories`` holds the most frequent categories the reference does
    not know (at most :data:`NEW_CATEGORIES_CAP`, most frequent first, counts
    under-estimated by at most ``new_error``); they are counted in ``other``.
    """

    counts: tuple[int, ...]
    other: int
    missing: int
    new_categories: dict[str, int]
    new_error: int

    @property
    def n(self) -> int:
        """Number of present values."""
        return sum(self.counts) + self.other


def _round_significant(x: FloatArray) -> FloatArray:
    """``x`` rounded to ``_SAMPLE_DIGITS`` significant digits, vectorised.

    ``round(x * 10**d) / 10**d`` with ``10**d`` exact (``d`` at most 22) is the double
    nearest to a short decimal, so its ``repr`` (and its JSON) is short too; values whose
    scale needs more than 22 decimals (below about 1e-16) are left as they are.

    >>> _round_significant(np.array([0.123456789, 1234567.89, -2.5e-7, 0.0, 6.02e23])).tolist()
    [0.1234568, 1234568.0, -2.5e-07, 0.0, 6.02e+23]
    """
    out = x.copy()
    nz = (x != 0) & np.isfinite(x)
    if not nz.any():
        return out
    v = x[nz]
    d = (_SAMPLE_DIGITS - 1) - np.floor(np.log10(np.abs(v)))
    up = (d >= 0) & (d <= 22)
    down = (d < 0) & (d >= -22)
    r = v.copy()
    s_up = 10.0 ** d[up]
    r[up] = np.round(v[up] * s_up) / s_up
    s_down = 10.0 ** -d[down]
    r[down] = np.round(v[down] / s_down) * s_down
    out[nz] = r
    return out


def _sample_values(x: FloatArray) -> list[list[float | None]]:
    """Rows of ``x`` as sample values: rounded (short JSON), ``None`` where not finite."""
    ok = np.isfinite(x)
    vals = _round_significant(np.where(ok, x, 0.0)).tolist()
    if ok.all():
        return vals  # type: ignore[no-any-return]
    return [[v if f else None for v, f in zip(row, oks, strict=True)]
            for row, oks in zip(vals, ok.tolist(), strict=True)]


class _Num:
    __slots__ = ("counts", "edges", "invalid", "missing", "mu", "sum", "sumsq")

    def __init__(self, fp: NumericProfile) -> None:
        self.edges = np.asarray(fp.edges, dtype=np.float64)
        self.mu = fp.mean or 0.0  # sums are of x - reference mean: no cancellation on large means
        self.counts: IntArray = np.zeros(fp.n_bins, dtype=np.int64)
        self.missing = 0
        self.invalid = 0
        self.sum = 0.0
        self.sumsq = 0.0

    @staticmethod
    def prepare(col: Sequence[Any]) -> tuple[FloatArray, BoolArray | None]:
        return numeric_column(col)

    @staticmethod
    def prepare_from(columns: FeatureColumns, name: str) -> tuple[FloatArray, BoolArray | None]:
        return columns.numeric(name)

    def add(self, prepared: tuple[FloatArray, BoolArray | None]) -> None:
        _fold_numeric([self], [prepared])

    def bins(self) -> NumericBins:
        n = int(self.counts.sum())
        if n == 0:
            return NumericBins(tuple(self.counts.tolist()), self.missing, self.invalid, None, None)
        m = self.sum / n
        var = max(self.sumsq / n - m * m, 0.0)
        counts = tuple(self.counts.tolist())
        return NumericBins(counts, self.missing, self.invalid, self.mu + m, math.sqrt(var))

    def state(self) -> dict[str, Any]:
        return {
            "counts": self.counts.tolist(),
            "missing": self.missing,
            "invalid": self.invalid,
            "sum": self.sum,
            "sumsq": self.sumsq,
        }

    def load(self, st: Mapping[str, Any], where: str) -> None:
        exact_keys(st, _NUM_KEYS, where)
        self.counts = np.asarray(_ints(st["counts"], len(self.counts), f"{where}.counts"), dtype=np.int64)
        self.missing = as_count(st["missing"], f"{where}.missing")
        self.invalid = as_count(st["invalid"], f"{where}.invalid")
        self.sum = as_finite(st["sum"], f"{where}.sum")
        self.sumsq = as_finite(st["sumsq"], f"{where}.sumsq")
        if self.sumsq < 0:
            raise ValueError(f"{where}.sumsq: must be >= 0, got {self.sumsq!r}")


def _fold_numeric(trackers: Sequence[_Num], prepared: Sequence[tuple[FloatArray, BoolArray | None]]
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Fold one batch into several numeric trackers at once; return the batch's values and moments.

    The moments are taken for all features in a few calls on one 2-D array
    (numpy's per-call cost paid once per batch, not once per feature); only
    the binning (``searchsorted`` against each feature's own edges) is per
    feature. Returns ``(x, n, sum, sumsq)``: the values (features x rows) and,
    per feature, the count of finite values and the sums of ``x - mu`` and
    its square over them.
    """
    x = np.stack([p[0] for p in prepared])
    fin = np.isfinite(x)
    all_fin = bool(fin.all())
    nf = fin.sum(axis=1)
    mu = np.array([tr.mu for tr in trackers])
    d = x - mu[:, None]
    if not all_fin:
        d[~fin] = 0.0
    sums = d.sum(axis=1)
    sumsq = np.einsum("ij,ij->i", d, d)
    n = x.shape[1]
    for r, tr in enumerate(trackers):
        other = prepared[r][1]
        inv = 0 if other is None else int(np.count_nonzero(other))
        k = int(nf[r])
        tr.invalid += inv
        tr.missing += n - k - inv
        if k:
            xs = x[r] if all_fin or k == n else x[r][fin[r]]
            tr.counts += np.bincount(np.searchsorted(tr.edges, xs, side="left"), minlength=len(tr.counts))
            tr.sum += float(sums[r])
            tr.sumsq += float(sumsq[r])
    return x, nf, sums, sumsq


def _label_counts(col: Sequence[Any], types: frozenset[type] | set[type] | None = None,
                  counts: Counter[Any] | None = None) -> Counter[str | None]:
    """Count of each label of a column, in C where the values are their own labels.

    ``types`` and ``counts`` (the column's value types and ``Counter``) are
    used when the caller has them already (:class:`FeatureColumns`).
    """
    if types is None:
        types = set(map(type, col))
    if types <= TEXT_TYPES:
        return Counter(col) if counts is None else counts
    if any(issubclass(t, _BOOLISH) for t in types) and any(
        issubclass(t, _NUMBERISH) and not issubclass(t, _BOOLISH) for t in types
    ):  # True == 1 == 1.0 under hashing: label value by value
        return Counter(map(category_label, col))
    try:
        raw = Counter(col)
    except TypeError:
        bad = next(t for t in types if t.__hash__ is None)
        raise ValueError(f"unsupported value type {bad.__name__}") from None
    out: Counter[str | None] = Counter()
    for k, c in raw.items():
        out[k if type(k) is str else category_label(k)] += c
    return out


class _Cat:
    __slots__ = ("counts", "index", "missing", "new", "new_err")

    def __init__(self, fp: CategoricalProfile) -> None:
        self.index = {k: i for i, k in enumerate(fp.categories)}
        self.counts = [0] * (len(self.index) + 1)  # last: other
        self.missing = 0
        self.new: dict[str, int] = {}
        self.new_err = 0

    @staticmethod
    def prepare(col: Sequence[Any]) -> tuple[Sequence[Any], Counter[str | None]]:
        return col, _label_counts(col)

    @staticmethod
    def prepare_from(columns: FeatureColumns, name: str) -> tuple[Sequence[Any], Counter[str | None]]:
        col = columns[name]
        counts = columns.counts(name) if columns.is_text(name) else None
        return col, _label_counts(col, columns.types(name), counts)

    def add(
        self, prepared: tuple[Sequence[Any], Counter[str | None]], cand: list[int]
    ) -> list[float | str | None]:
        col, label_counts = prepared
        counts, index, new = self.counts, self.index, self.new
        other = len(counts) - 1
        for lab, c in label_counts.items():
            if lab is None:
                self.missing += c
                continue
            j = index.get(lab)
            if j is None:
                counts[other] += c
                new[lab] = new.get(lab, 0) + c
            else:
                counts[j] += c
        if len(new) > NEW_CATEGORIES_CAP:
            # Misra-Gries: subtract the (cap+1)-th largest count from all and drop the non-positive;
            # a count is then under-estimated by at most new_err (Misra and Gries, 1982).
            cut = sorted(new.values(), reverse=True)[NEW_CATEGORIES_CAP]
            self.new_err += cut
            self.new = {k: c - cut for k, c in new.items() if c > cut}
        return [v if type(v) is str else category_label(v) for v in map(col.__getitem__, cand)]

    def bins(self) -> CategoricalBins:
        ranked = dict(sorted(self.new.items(), key=lambda kv: (-kv[1], kv[0])))
        return CategoricalBins(tuple(self.counts[:-1]), self.counts[-1], self.missing, ranked, self.new_err)

    def state(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts),
            "missing": self.missing,
            "new": dict(self.new),
            "new_err": self.new_err,
        }

    def load(self, st: Mapping[str, Any], where: str) -> None:
        exact_keys(st, _CAT_KEYS, where)
        self.counts = _ints(st["counts"], len(self.counts), f"{where}.counts")
        self.missing = as_count(st["missing"], f"{where}.missing")
        new = st["new"]
        if not isinstance(new, Mapping) or len(new) > NEW_CATEGORIES_CAP:
            raise ValueError(f"{where}.new: must be an object of at most {NEW_CATEGORIES_CAP} counts")
        self.new = {as_label(k, f"{where}.new"): as_count(v, f"{where}.new[{k!r}]") for k, v in new.items()}
        self.new_err = as_count(st["new_err"], f"{where}.new_err")


def _tracker(fp: FeatureProfile) -> _Num | _Cat:
    return _Num(fp) if isinstance(fp, NumericProfile) else _Cat(fp)


class WindowHistogram:
    """Fold of a window's batches into the bins of a reference profile.

    Parameters
    ----------
    profile
        The reference whose bins are counted. Features it does not know are
        ignored (their values are counted in ``untracked``).
    sample_rows
        Rows kept for the domain classifier. 256 current rows against the 500
        of the reference keep its AUC's standard error near 0.02 under no
        drift (Hanley and McNeil, Radiology 143(1), 1982). The sample is the bulk of the
        state: about 2.5 kB of JSON per feature (75 kB for 25 features), against about
        200 bytes for the counts.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.drift.profile import ProfileBuilder
    >>> rng = np.random.default_rng(0)
    >>> b = ProfileBuilder(n_bins=4)
    >>> b.add({"x": rng.normal(size=1000).tolist(), "c": ["a", "b"] * 500})
    >>> prof = b.build("m", None, created_ms=0, source="doc")
    >>> w = WindowHistogram.initialize(prof, sample_rows=5)
    >>> w.add({"x": [0.1, None, 5.0, "oops"], "c": ["a", "z", "z", None], "extra": [1, 2, 3, 4]},
    ...       predictions=None, rows_seed=42)
    >>> w.n, w.untracked
    (4, 4)
    >>> x = w.bins("x")
    >>> x.counts, x.missing, x.invalid
    ((0, 0, 1, 1), 1, 1)
    >>> c = w.bins("c")
    >>> c.counts, c.other, c.missing, c.new_categories
    ((1, 0), 2, 1, {'z': 2})
    >>> w2 = WindowHistogram.from_state(prof, w.to_state())
    >>> w2.to_state() == w.to_state(), len(w2.sample()["x"])
    (True, 4)
    """

    def __init__(self, profile: ReferenceProfile, sample_rows: int = 256) -> None:
        if not isinstance(profile, ReferenceProfile):
            raise ValueError(f"profile: must be a ReferenceProfile, got {type(profile).__name__}")
        self.profile = profile
        self.sample_rows = as_count(sample_rows, "sample_rows")
        self._n = 0
        self._untracked = 0
        self._features: dict[str, _Num | _Cat] = {k: _tracker(fp) for k, fp in profile.features.items()}
        self._pred: _Num | _Cat | None = None if profile.prediction is None else _tracker(profile.prediction)
        self._s_keys: list[int] = []
        self._s_cols: dict[str, list[float | str | None]] = {k: [] for k in self._features}
        self._s_threshold: int | None = None
        self._last_moments: dict[str, tuple[int, float, float]] = {}

    @classmethod
    def initialize(cls, profile: ReferenceProfile, sample_rows: int = 256) -> WindowHistogram:
        """An empty window binned by ``profile`` (same as the constructor)."""
        return cls(profile, sample_rows)

    @property
    def n(self) -> int:
        """Events added."""
        return self._n

    @property
    def untracked(self) -> int:
        """Values of features the profile does not know (ignored)."""
        return self._untracked

    # -- fold ----------------------------------------------------------------------------------

    def add(
        self, features: Mapping[str, Sequence[Any]], predictions: Sequence[Any] | None, rows_seed: int
    ) -> None:
        """Fold one batch of columns (and the parallel predictions, if any).

        ``rows_seed`` seeds the row sample; pass something derived from the
        batch's source position (topic partition and offset) so that a replay
        keeps the same rows. A tracked feature absent from the batch is missing
        for all its rows; a batch with neither features nor predictions adds nothing.
        """
        if isinstance(rows_seed, bool) or not isinstance(rows_seed, int | np.integer):
            raise ValueError(f"rows_seed: must be an int, got {rows_seed!r}")
        n = batch_len(features, predictions)
        if n == 0:
            return
        keys: list[int] = []
        cand: list[int] = []
        if self.sample_rows:
            k = row_keys(int(rows_seed), 0, n, bits=_KEY_BITS)
            if self._s_threshold is None:
                cand = smallest_keys(k, self.sample_rows)
                keys = k[cand].tolist()
            else:
                sel = np.flatnonzero(k < np.uint64(self._s_threshold))
                cand = sel.tolist()
                keys = k[sel].tolist()
        # convert and check every column first: a bad batch is refused whole, never half folded
        memo = features if isinstance(features, FeatureColumns) else None
        prepared: dict[str, Any] = {}
        for name, tr in self._features.items():
            col = features.get(name)
            if col is not None:
                try:
                    prepared[name] = tr.prepare(col) if memo is None else tr.prepare_from(memo, name)
                except ValueError as exc:
                    raise ValueError(f"features[{name!r}]: {exc}") from None
        pred: Any = None
        if self._pred is not None and predictions is not None:
            if any(issubclass(t, Mapping) for t in set(map(type, predictions))):
                predictions = [
                    (top_class(p) if p else None) if isinstance(p, Mapping) else p for p in predictions
                ]
            try:
                pred = self._pred.prepare(predictions)
            except ValueError as exc:
                raise ValueError(f"predictions: {exc}") from None
        s_cols = self._s_cols
        num_names: list[str] = []
        num_trackers: list[_Num] = []
        for name, tr in self._features.items():
            prep = prepared.get(name)
            if prep is None:
                tr.missing += n
                if cand:
                    s_cols[name].extend([None] * len(cand))
            elif isinstance(tr, _Num):
                num_names.append(name)
                num_trackers.append(tr)
            else:
                vals = tr.add(prep, cand)
                if cand:
                    s_cols[name].extend(vals)
        self._last_moments = {}
        if num_trackers:
            x, nf, sums, sumsq = _fold_numeric(num_trackers, [prepared[k] for k in num_names])
            self._last_moments = dict(zip(num_names, zip(nf.tolist(), sums.tolist(), sumsq.tolist(),
                                                          strict=True), strict=True))
            if cand:  # rounded together: one vectorised pass per batch, not one per feature
                for name, column in zip(num_names, _sample_values(x[:, cand]), strict=True):
                    s_cols[name].extend(column)
        if len(features) > len(self._features) or any(k not in self._features for k in features):
            self._untracked += sum(len(c) for k, c in features.items() if k not in self._features)
        if self._pred is not None:
            if pred is None:
                self._pred.missing += n
            elif isinstance(self._pred, _Num):
                self._pred.add(pred)
            else:
                self._pred.add(pred, [])
        self._n += n
        if cand:
            self._s_keys.extend(keys)
            if len(self._s_keys) > 2 * self.sample_rows:
                self._compact()

    def _compact(self) -> None:
        """Cut the sample back to the rows of the smallest keys (ties: first added), in key order."""
        keys = self._s_keys
        order = sorted(range(len(keys)), key=keys.__getitem__)[: self.sample_rows]
        self._s_keys = [keys[i] for i in order]
        self._s_cols = {k: [col[i] for i in order] for k, col in self._s_cols.items()}
        if self.sample_rows and len(order) == self.sample_rows:
            self._s_threshold = self._s_keys[-1]

    # -- read ----------------------------------------------------------------------------------

    def bins(self, name: str) -> NumericBins | CategoricalBins:
        """Counts of a feature, or of the prediction under the name ``"__prediction__"``."""
        tr = self._pred if name == PREDICTION else self._features.get(name)
        if tr is None:
            raise ValueError(f"name: {name!r} is not tracked by the profile")
        return tr.bins()

    def moments(self, name: str) -> tuple[int, float, float]:
        """``(n, sum, sum of squares)`` of a numeric feature's present values.

        The sums are of ``x - reference mean`` (no cancellation on large means), over the
        whole window; :meth:`batch_moments` has those of the last batch alone.
        """
        tr = self._features.get(name)
        if not isinstance(tr, _Num):
            raise ValueError(f"name: {name!r} is not a numeric feature of the profile")
        return int(tr.counts.sum()), tr.sum, tr.sumsq

    def batch_moments(self) -> dict[str, tuple[int, float, float]]:
        """:meth:`moments` of the last batch alone, per numeric feature it held (sums of ``x - mu``)."""
        return self._last_moments

    def sample(self) -> dict[str, list[float | str | None]]:
        """The row sample, column by column (floats for numeric features, labels for categorical ones)."""
        self._compact()
        return {k: list(v) for k, v in self._s_cols.items()}

    # -- state ---------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: ints, finite floats, and the feature names and labels."""
        self._compact()
        features = {k: tr.state() for k, tr in self._features.items()}
        if self._pred is not None:
            features[PREDICTION] = self._pred.state()
        return {
            "v": STATE_VERSION,
            "kind": STATE_KIND,
            "profile": self.profile.fingerprint,
            "sample_rows": self.sample_rows,
            "n": self._n,
            "untracked": self._untracked,
            "features": features,
            "sample": {"keys": list(self._s_keys), "columns": {k: list(v) for k, v in self._s_cols.items()}},
        }

    @classmethod
    def from_state(cls, profile: ReferenceProfile, state: Mapping[str, Any]) -> WindowHistogram:
        """Rebuild a window from :meth:`to_state`; ``ValueError`` (naming the field) when impossible.

        The state must have been written against ``profile`` (same fingerprint):
        counts are meaningless in another profile's bins.
        """
        w = "window state"
        if not isinstance(state, Mapping):
            raise ValueError(f"{w}: must be a mapping, got {type(state).__name__}")
        if state.get("v") != STATE_VERSION or state.get("kind") != STATE_KIND:
            got = f"{state.get('v')!r}/{state.get('kind')!r}"
            raise ValueError(f"{w}.v/kind: expected {STATE_VERSION}/{STATE_KIND!r}, got {got}")
        exact_keys(state, _STATE_KEYS, w)
        if state["profile"] != profile.fingerprint:
            raise ValueError(
                f"{w}.profile: written against profile {state['profile']!r}, not {profile.fingerprint!r}"
            )
        win = cls(profile, as_count(state["sample_rows"], f"{w}.sample_rows"))
        win._n = as_count(state["n"], f"{w}.n")
        win._untracked = as_count(state["untracked"], f"{w}.untracked")
        feats = state["features"]
        expected = set(win._features) | ({PREDICTION} if win._pred is not None else set())
        if not isinstance(feats, Mapping) or set(feats) != expected:
            raise ValueError(f"{w}.features: must hold exactly the profile's features {sorted(expected)}")
        trackers = dict(win._features)
        if win._pred is not None:
            trackers[PREDICTION] = win._pred
        for name, tr in trackers.items():
            where = f"{w}.features[{name!r}]"
            tr.load(as_object(feats[name], where), where)
        win._load_sample(state["sample"], f"{w}.sample")
        return win

    def _load_sample(self, doc: Any, where: str) -> None:
        doc = as_object(doc, where)
        exact_keys(doc, frozenset({"keys", "columns"}), where)
        keys = doc["keys"]
        if not isinstance(keys, list) or len(keys) > self.sample_rows:
            raise ValueError(f"{where}.keys: must be a list of at most sample_rows ({self.sample_rows}) keys")
        keys = [as_count(k, f"{where}.keys[{i}]") for i, k in enumerate(keys)]
        if any(k >= 2**_KEY_BITS for k in keys) or keys != sorted(keys):
            raise ValueError(f"{where}.keys: must be sorted {_KEY_BITS}-bit keys")
        cols = as_object(doc["columns"], f"{where}.columns")
        if set(cols) != set(self._features):
            raise ValueError(f"{where}.columns: must hold exactly the profile's features")
        out: dict[str, list[float | str | None]] = {}
        for name, tr in self._features.items():
            col = cols[name]
            f = f"{where}.columns[{name!r}]"
            if not isinstance(col, list) or len(col) != len(keys):
                raise ValueError(f"{f}: must be a list of {len(keys)} values")
            if isinstance(tr, _Num):
                out[name] = [None if v is None else as_finite(v, f) for v in col]
            else:
                out[name] = [None if v is None else as_label(v, f) for v in col]
        self._s_keys = keys
        self._s_cols = out
        if self.sample_rows and len(keys) == self.sample_rows:
            self._s_threshold = keys[-1]


# -- strict state decoding -------------------------------------------------------------------


def _ints(v: Any, n: int, where: str) -> list[int]:
    if not isinstance(v, list) or len(v) != n:
        raise ValueError(f"{where}: must be a list of {n} ints (the profile's bins)")
    return [as_count(x, f"{where}[{i}]") for i, x in enumerate(v)]
