"""Mergeable per-window statistics of a model's input features.

Every pane of a window keeps one :class:`FeatureStats` per model version; a
window's statistics are the merge of its panes (see :mod:`streams.core.windows`).
So the summary has to be *mergeable*: merging the summaries of two parts of a
stream must give (exactly for counts and sums, up to rounding for moments) the
summary of the whole stream, whatever the split.

Numeric features keep the weighted count, mean and sum of squared deviations
``M2`` and combine them with the pairwise update of Chan, Golub and LeVeque,
*Updating formulae and a pairwise algorithm for computing sample variances*
(Stanford STAN-CS-79-773, 1979), in the weighted form of West, *Updating mean
and variance estimates: an improved method* (CACM 22(9), 1979). A batch's own
mean and ``M2`` are computed with numpy (two passes, so no cancellation), then
merged into the running state; the naive ``sum(x**2) - n * mean**2`` would lose
every significant digit on features with a large mean and a small spread.

Categorical features keep a Misra-Gries summary (Misra and Gries, *Finding
repeated elements*, Sci. Comput. Program. 2(2), 1982) of ``4 * top_k``
weighted counters, merged as in Agarwal, Cormode, Huang, Phillips, Wei and Yi,
*Mergeable summaries* (PODS 2012): add the counters, then subtract the
``(capacity + 1)``-th largest count from all of them and drop those that are
not positive. Every such subtraction removes at least ``capacity + 1`` times its
amount from the total, so a count is underestimated by at most
``W / (capacity + 1)``, ``W`` being the summarised weight; the summary tracks
the sum of the subtractions, a tighter bound, and reports it as
``max_count_error``. While a feature has at most ``capacity`` distinct values
the counts are exact.

Throughput: the worker must take about 200k events/s with about 20 features
each, so the work is per batch column and in C. A column whose first value is
a string or boolean is counted with ``collections.Counter`` and only its
distinct keys are type-checked. Any other column gets one
``set(map(type, column))`` to learn its value types exactly: a cheaper guess
from the first value is not enough, since ``np.array(column, dtype=float)``
silently turns ``True`` into 1.0 and ``"2.5"`` into 2.5. All numeric columns
of the batch are converted into one 2-D float array (``None`` becomes NaN) and
their moments taken row-wise, so numpy's per-call overhead is paid once per
batch, not once per feature. Only a column that mixes numbers with strings or
booleans goes through a Python loop over its values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from streams.core.columns import FeatureColumns

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_JSON_VERSION = 1
_JSON_KEYS = frozenset({"version", "max_features", "top_k", "untracked_features", "features"})
_FEATURE_KEYS = frozenset(
    {
        "name",
        "missing",
        "num_w",
        "mean",
        "m2",
        "min",
        "max",
        "num_unsummarized",
        "cat_w",
        "mg_err",
        "counters",
    }
)

# Value kinds. Classification is per distinct type of a column, never per value.
_MISSING, _NUMERIC, _BOOL, _TEXT = 0, 1, 2, 3
_KNOWN_KINDS: dict[type, int] = {
    type(None): _MISSING,
    float: _NUMERIC,
    int: _NUMERIC,
    bool: _BOOL,
    str: _TEXT,
    np.bool_: _BOOL,
    np.float64: _NUMERIC,
    np.int64: _NUMERIC,
}
_NUMERIC_KINDS = frozenset({_MISSING, _NUMERIC})
_CATEGORY_KEY_TYPES = frozenset({str, bool, type(None)})  # keys that need no value-by-value check
_TEXT_KEY_TYPES = frozenset({str, type(None)})  # keys that are their own labels
_FLOAT_INT_LIMIT = 2.0**53  # integers below this are exact in float64


def _kind_of(t: type) -> int:
    """Kind of a value type; ``TypeError`` for types outside the event contract."""
    kind = _KNOWN_KINDS.get(t)
    if kind is not None:
        return kind
    if issubclass(t, int | float | np.integer | np.floating):  # bool and np.bool_ are known above
        return _NUMERIC
    if issubclass(t, str):
        return _TEXT
    raise TypeError(f"feature values must be numbers, strings, booleans or None, got {t.__name__}")


def _number_label(x: float) -> str:
    """Category label of a number: ``3`` and ``3.0`` both become ``"3"``, ``1.5`` ``"1.5"``.

    Canonical so that the label of a value does not depend on whether it came
    as an int or a float, or on which one the counter saw first.
    """
    if x.is_integer() and abs(x) < _FLOAT_INT_LIMIT:
        return str(int(x))
    return repr(x)


def _label(key: Any) -> str:
    """Category label of a string or boolean value (booleans are ``"true"``/``"false"``)."""
    if type(key) is str:
        return key
    if isinstance(key, bool | np.bool_):
        return "true" if key else "false"
    return str(key)


def _weighted_counts(values: Sequence[Any], w: FloatArray | None, scale: float) -> dict[Any, float]:
    """Weighted count of each distinct hashable value, in C.

    Unweighted (or uniformly weighted) columns use ``Counter``; per-row weights
    map each value to the index of its distinct value and sum with
    ``np.bincount``. Callers make sure the values cannot collide under ``==``
    (``True == 1 == 1.0``), i.e. never mix booleans with numbers here.
    """
    if w is None:
        counts = Counter(values)
        if scale == 1.0:  # int counts are fine: every consumer adds them to floats
            return cast(dict[Any, float], counts)
        return dict(zip(counts.keys(), map(scale.__mul__, counts.values()), strict=True))
    keys = list(dict.fromkeys(values))
    pos = dict(zip(keys, range(len(keys)), strict=True))
    codes = np.fromiter(map(pos.__getitem__, values), dtype=np.intp, count=len(values))
    sums = np.bincount(codes, weights=w, minlength=len(keys))
    return dict(zip(keys, sums.tolist(), strict=True))


def _block_moments(
    x: FloatArray, w: FloatArray | None, scale: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, BoolArray | None]:
    """Row-wise weighted count, mean, M2, min, max and missing weight of ``x``.

    Non-finite entries (``None`` converted to NaN, or an infinity) are
    missing; ``x`` is scratch and its missing entries are overwritten with 0.
    ``M2`` is taken around the row's own mean (two passes), which is what makes
    the later pairwise merge numerically stable. Also returns the finite mask
    (``None`` when everything is finite), so that callers can pick the present
    values later without recomputing it.
    """
    k, n = x.shape
    fin = np.isfinite(x)
    if fin.all():
        if w is None:
            count = np.full(k, float(n))
            mean = x.mean(axis=1)
            dev = x - mean[:, None]
            m2 = np.einsum("ij,ij->i", dev, dev)
        else:
            count = np.full(k, float(w.sum()))
            mean = (x @ w) / count
            dev = x - mean[:, None]
            m2 = (dev * dev) @ w
        return count * scale, mean, m2 * scale, x.min(axis=1), x.max(axis=1), np.zeros(k), None
    bad = ~fin
    if np.isinf(x).any():
        x[bad] = np.nan
    lo = np.fmin.reduce(x, axis=1)  # fmin/fmax skip NaN (an all-NaN row has count 0 and is ignored)
    hi = np.fmax.reduce(x, axis=1)
    x[bad] = 0.0
    if w is None:
        count = fin.sum(axis=1).astype(np.float64)
        missing = n - count
        mean = x.sum(axis=1) / np.maximum(count, 1.0)
    else:
        count = fin.astype(np.float64) @ w
        missing = bad.astype(np.float64) @ w
        mean = (x @ w) / np.where(count > 0.0, count, 1.0)
    dev = x - mean[:, None]
    dev[bad] = 0.0
    m2 = np.einsum("ij,ij->i", dev, dev) if w is None else (dev * dev) @ w
    return count * scale, mean, m2 * scale, lo, hi, missing * scale, fin


def _number_counts(
    values: FloatArray, present: BoolArray | None, w: FloatArray | None, scale: float
) -> dict[str, float]:
    """Weighted counts of the present numbers under their category labels (``np.unique`` + ``bincount``)."""
    if present is not None:
        values = values[present]
        w = None if w is None else w[present]
    uniq, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=w, minlength=uniq.shape[0]).astype(np.float64)
    if w is None:
        sums *= scale
    out: dict[str, float] = {}
    for x, c in zip(uniq.tolist(), sums.tolist(), strict=True):
        label = _number_label(x)
        out[label] = out.get(label, 0.0) + c
    return out


class _Part:
    """What one batch column contributes to one feature (computed before any state changes)."""

    __slots__ = ("cat_w", "cats", "missing", "num", "num_present", "num_values", "num_weights", "scale")

    def __init__(self, scale: float) -> None:
        self.missing = 0.0
        self.num: tuple[float, float, float, float, float] | None = None  # (w, mean, m2, min, max)
        # The numeric values, for category labels (only needed in a mostly categorical
        # feature, so the present ones are picked lazily with the mask).
        self.num_values: FloatArray | None = None
        self.num_present: BoolArray | None = None  # None: all present
        self.num_weights: FloatArray | None = None  # per-row weights of num_values (None: all ``scale``)
        self.scale = scale
        self.cats: dict[str, float] = {}
        self.cat_w = 0.0

    def set_categorical(self, counts: dict[Any, float], key_types: set[type] | None = None) -> None:
        """Take weighted counts of strings, booleans and None (None is missing); owns ``counts``.

        ``key_types`` is ``set(map(type, counts))`` when the caller has it already.
        """
        missing = counts.pop(None, None)
        if missing is not None:
            self.missing += missing
        if key_types is None:
            key_types = set(map(type, counts))
        if key_types <= _TEXT_KEY_TYPES:  # the common case: no relabelling, no per-key loop
            self.cats = counts
        else:
            cats: dict[str, float] = {}
            for key, c in counts.items():
                label = _label(key)
                cats[label] = cats.get(label, 0.0) + c
            self.cats = cats
        self.cat_w = sum(self.cats.values(), 0.0)

    def set_numeric(
        self,
        moments: tuple[float, float, float, float, float],
        values: FloatArray,
        present: BoolArray | None,
        w: FloatArray | None,
    ) -> None:
        self.num = moments
        self.num_values = values
        self.num_present = present
        self.num_weights = w

    def set_mixed(self, col: Sequence[Any], w: FloatArray | None) -> None:
        """Per-value path for a column mixing numbers with strings or booleans (or odd numbers)."""
        kind = {t: _kind_of(t) for t in set(map(type, col))}
        num_i: list[int] = []
        num_v: list[float] = []
        cat_i: list[int] = []
        cat_v: list[str] = []
        miss_i: list[int] = []
        for i, v in enumerate(col):
            k = kind[type(v)]
            if k == _NUMERIC:
                try:
                    f = float(v)
                except OverflowError:
                    f = math.inf
                if math.isfinite(f):
                    num_i.append(i)
                    num_v.append(f)
                else:
                    miss_i.append(i)
            elif k == _MISSING:
                miss_i.append(i)
            elif k == _BOOL:
                cat_i.append(i)
                cat_v.append("true" if v else "false")
            else:
                cat_i.append(i)
                cat_v.append(v if type(v) is str else str(v))
        if w is None:
            self.missing = len(miss_i) * self.scale
        elif miss_i:
            self.missing = float(w[miss_i].sum())
        if num_v:
            vals = np.array(num_v, dtype=np.float64)
            nw = None if w is None else w[num_i]
            c, mean, m2, lo, hi, _, _ = _block_moments(vals[None, :], nw, self.scale)
            self.set_numeric(
                (float(c[0]), float(mean[0]), float(m2[0]), float(lo[0]), float(hi[0])), vals, None, nw
            )
        if cat_v:
            self.set_categorical(_weighted_counts(cat_v, None if w is None else w[cat_i], self.scale))


def _summarize(columns: FeatureColumns, names: list[str], w: FloatArray | None, scale: float) -> list[_Part]:
    """Per-column contributions of one batch; pure, so it raises before any state changes.

    Value types, value counts and float conversions come from ``columns``
    (the batch's :class:`FeatureColumns`): computed once per batch for every
    stage that reads the columns.
    """
    parts = [_Part(scale) for _ in names]
    numeric: list[int] = []
    for j, name in enumerate(names):
        col = columns[name]
        t0 = type(col[0])
        counts: dict[Any, float] | None = None
        if t0 is str or t0 is bool:
            # Most likely categorical: count in C first, then check the distinct keys only.
            if w is None and scale == 1.0:
                counts = dict(columns.counts(name))  # set_categorical owns (and edits) its counts
            else:
                counts = _weighted_counts(col, w, scale)
            key_types = set(map(type, counts))
            if key_types <= _CATEGORY_KEY_TYPES:
                parts[j].set_categorical(counts, key_types)
                continue
        if columns.numbers_only(name):  # the common case, checked in C without the types
            numeric.append(j)
            continue
        kinds = {_kind_of(t) for t in columns.types(name)}
        if kinds <= _NUMERIC_KINDS:
            numeric.append(j)
        elif _NUMERIC not in kinds:
            parts[j].set_categorical(counts if counts is not None else _weighted_counts(col, w, scale))
        else:
            parts[j].set_mixed(col, w)  # True == 1 in a Counter: numbers and booleans need the value loop

    if numeric:
        # One row per numeric column (None is NaN, an int beyond the float range an infinity:
        # both missing in the moments), converted once for all stages.
        x = np.stack([columns.numeric(names[j])[0] for j in numeric])  # a copy: scratch for the moments
        count, mean, m2, lo, hi, missing, fin = _block_moments(x, w, scale)
        for r, j in enumerate(numeric):
            part = parts[j]
            part.missing = float(missing[r])
            if count[r] > 0.0:
                moments = (float(count[r]), float(mean[r]), float(m2[r]), float(lo[r]), float(hi[r]))
                part.set_numeric(moments, x[r], None if fin is None else fin[r], w)
    return parts


class _Feature:
    """Running state of one feature."""

    __slots__ = (
        "cat_w",
        "counters",
        "m2",
        "max",
        "mean",
        "mg_err",
        "min",
        "missing",
        "num_unsummarized",
        "num_w",
    )

    def __init__(self) -> None:
        self.missing = 0.0  # weight of None / NaN values
        self.num_w = 0.0  # weight of numeric values
        self.mean = 0.0
        self.m2 = 0.0  # weighted sum of squared deviations from the mean
        self.min = math.inf
        self.max = -math.inf
        self.num_unsummarized = 0.0  # numeric weight never fed to the Misra-Gries counters
        self.cat_w = 0.0  # weight of string / boolean values
        self.mg_err = 0.0  # sum of Misra-Gries subtractions: bound on any count's underestimate
        self.counters: dict[str, float] = {}

    def copy(self) -> _Feature:
        out = _Feature()
        for name in _Feature.__slots__:
            setattr(out, name, getattr(self, name))
        out.counters = dict(self.counters)
        return out

    def total(self) -> float:
        return self.missing + self.num_w + self.cat_w

    def merge_moments(self, w: float, mean: float, m2: float, lo: float, hi: float) -> None:
        """Chan-Golub-LeVeque pairwise update, weighted as in West (1979)."""
        if w <= 0.0:
            return
        na = self.num_w
        if na == 0.0:
            self.mean, self.m2 = mean, m2
            self.num_w = w
        else:
            n = na + w
            delta = mean - self.mean
            self.mean += delta * (w / n)
            self.m2 += m2 + delta * delta * (na * w / n)
            self.num_w = n
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    def absorb_counts(self, counts: Mapping[str, float], capacity: int, err: float = 0.0) -> None:
        """Merge weighted counts (a summary whose error is ``err``) into the Misra-Gries counters.

        Agarwal et al. (2012), section 3: add the counters, then subtract the
        ``(capacity + 1)``-th largest count from every counter and keep the
        positive ones. When the union of keys overflows, only the tracked keys
        are handled one by one; the (possibly many) new keys of a batch are
        ranked and filtered with numpy, so a high-cardinality feature costs
        C-speed work per value and Python work per counter.
        """
        self.mg_err += err
        counters = self.counters
        if len(counters) + len(counts) <= capacity:  # cannot overflow
            get = counters.get
            for key, c in counts.items():
                counters[key] = get(key, 0.0) + c
            return
        new = dict(counts)
        pop = new.pop
        tracked_keys = list(counters)
        tracked = [c + pop(key, 0.0) for key, c in counters.items()]
        if len(tracked) + len(new) <= capacity:
            merged = dict(zip(tracked_keys, tracked, strict=True))
            for key, c in new.items():
                merged[key] = float(c)
            self.counters = merged
            return
        new_keys = list(new)
        new_vals = np.fromiter(new.values(), dtype=np.float64, count=len(new))
        values = np.concatenate((np.array(tracked, dtype=np.float64), new_vals))
        kth = values.shape[0] - 1 - capacity  # ascending position of the (capacity + 1)-th largest
        cut = float(np.partition(values, kth)[kth])
        out = {key: c - cut for key, c in zip(tracked_keys, tracked, strict=True) if c > cut}
        for i in np.flatnonzero(new_vals > cut).tolist():  # at most capacity of them
            out[new_keys[i]] = float(new_vals[i]) - cut
        self.counters = out
        self.mg_err += cut

    def apply(self, part: _Part, capacity: int) -> None:
        """Fold one batch column's contribution into the state."""
        self.missing += part.missing
        counts: Mapping[str, float] = part.cats
        if part.num is not None:
            self.merge_moments(*part.num)
            if self.cat_w + part.cat_w >= self.num_w and part.num_values is not None:
                # Mostly categorical (now): the numbers count as their labels.
                numbers = _number_counts(part.num_values, part.num_present, part.num_weights, part.scale)
                merged = dict(part.cats)
                for key, c in numbers.items():
                    merged[key] = merged.get(key, 0.0) + c
                counts = merged
            else:
                self.num_unsummarized += part.num[0]
        if counts:
            self.absorb_counts(counts, capacity)
        self.cat_w += part.cat_w

    def to_json(self, name: str) -> dict[str, Any]:
        has_num = self.num_w > 0.0
        return {
            "name": name,
            "missing": self.missing,
            "num_w": self.num_w,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if has_num else None,
            "max": self.max if has_num else None,
            "num_unsummarized": self.num_unsummarized,
            "cat_w": self.cat_w,
            "mg_err": self.mg_err,
            "counters": [[key, c] for key, c in _ranked(self.counters)],
        }

    @classmethod
    def from_json(cls, raw: Any, capacity: int) -> tuple[str, _Feature]:
        if not isinstance(raw, Mapping):
            raise ValueError(f"feature state must be a JSON object, got {type(raw).__name__}")
        keys = set(raw)
        if keys != _FEATURE_KEYS:
            missing, extra = sorted(_FEATURE_KEYS - keys), sorted(map(str, keys - _FEATURE_KEYS))
            raise ValueError(f"feature state keys: missing {missing}, unexpected {extra}")
        name = raw["name"]
        if not isinstance(name, str):
            raise ValueError(f"feature state 'name' must be a string, got {type(name).__name__}")
        st = cls()
        where = f"feature {name!r}"
        st.missing = _real(raw, "missing", where, nonneg=True)
        st.num_w = _real(raw, "num_w", where, nonneg=True)
        st.mean = _real(raw, "mean", where)
        st.m2 = _real(raw, "m2", where, nonneg=True)
        st.num_unsummarized = _real(raw, "num_unsummarized", where, nonneg=True)
        st.cat_w = _real(raw, "cat_w", where, nonneg=True)
        st.mg_err = _real(raw, "mg_err", where, nonneg=True)
        if st.num_w > 0.0:
            st.min = _real(raw, "min", where)
            st.max = _real(raw, "max", where)
            if not st.min <= st.max:
                raise ValueError(f"{where}: needs min <= max, got min={st.min!r}, max={st.max!r}")
        elif raw["min"] is not None or raw["max"] is not None or st.mean != 0.0 or st.m2 != 0.0:
            raise ValueError(f"{where}: with num_w=0, min and max must be null and mean and m2 zero")
        if st.num_unsummarized > st.num_w * (1.0 + 1e-9):
            raise ValueError(f"{where}: num_unsummarized={st.num_unsummarized!r} exceeds num_w={st.num_w!r}")
        counters_raw = raw["counters"]
        if not isinstance(counters_raw, list):
            raise ValueError(f"{where}: 'counters' must be a list, got {type(counters_raw).__name__}")
        if len(counters_raw) > capacity:
            raise ValueError(f"{where}: {len(counters_raw)} counters, more than the capacity {capacity}")
        for item in counters_raw:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise ValueError(f"{where}: each counter must be [label, count], got {item!r}")
            c = item[1]
            if isinstance(c, bool) or not isinstance(c, int | float) or not 0.0 < c < math.inf:
                raise ValueError(f"{where}: counter {item[0]!r} must have a finite count > 0, got {c!r}")
            if item[0] in st.counters:
                raise ValueError(f"{where}: counter {item[0]!r} appears twice")
            st.counters[item[0]] = float(c)
        return name, st


def _ranked(counters: Mapping[str, float]) -> list[tuple[str, float]]:
    """Most frequent first, ties by value: a deterministic order for results and JSON."""
    return sorted(counters.items(), key=lambda kv: (-kv[1], kv[0]))


def _real(raw: Mapping[str, Any], key: str, where: str, nonneg: bool = False) -> float:
    x = raw[key]
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"{where}: {key!r} must be a number, got {type(x).__name__}")
    f = float(x)
    if not math.isfinite(f) or (nonneg and f < 0.0):
        raise ValueError(f"{where}: {key!r} must be finite{' and >= 0' if nonneg else ''}, got {x!r}")
    return f


class FeatureStats:
    """Mergeable statistics of the input features of one model version in one pane.

    Per numeric feature: weighted count, missing weight, mean, population
    standard deviation, exact min and max. Per categorical feature (strings and
    booleans): the ``top_k`` most frequent values with weighted counts, from a
    Misra-Gries summary of ``4 * top_k`` counters. See the module docstring for
    the algorithms and their sources.

    Parameters
    ----------
    max_features
        Most features tracked. The first ones seen win; values of later
        features are only counted (weighted) in :attr:`untracked_features`, so
        that a producer sending ever new feature names cannot grow the state
        without bound.
    top_k
        Number of most frequent values reported per categorical feature. The
        summary keeps ``4 * top_k`` counters: more counters than reported values
        make the reported ones accurate (error at most ``W / (4 * top_k + 1)``).

    Notes
    -----
    * ``None``, NaN and infinities are missing values (the event contract only
      admits finite numbers, so an infinity can only come from a direct caller;
      it would turn the moments into NaN and cannot be written to JSON).
    * Booleans are the categories ``"true"`` and ``"false"``, never 1.0 and 0.0
      (so the boolean ``True`` and the string ``"true"`` are one category).
    * A feature that has seen both numbers and strings/booleans is ``"mixed"``
      and reported as the kind with the larger weight (categorical on a tie,
      since a category can stand for any value). Numbers count as categories
      under a canonical string (``3`` and ``3.0`` as ``"3"``), but only from the
      batches in which the categorical side weighs at least as much, so that a
      numeric feature with a rare sentinel string stays cheap; the weight of
      numbers that never reached the counters is added to ``max_count_error``.
      A mostly numeric mixed feature reports its string/boolean weight as
      ``"non_numeric"`` (``count`` is then the numeric weight only).
    * A feature seen only with missing values is reported as categorical with
      no top values.
    * Merging is exact for counts and weights (sums of the same numbers) and
      stable for the moments; the Misra-Gries counters may differ with the
      merge order once they overflow, always within ``max_count_error``.

    Examples
    --------
    >>> fs = FeatureStats(top_k=2)
    >>> fs.add({"amount": [12.5, None, 7.5, 10.0],
    ...         "country": ["FR", "DE", "FR", None],
    ...         "vip": [True, False, True, True]})
    >>> r = fs.result()
    >>> r["amount"]["kind"], r["amount"]["mean"], r["amount"]["missing"], r["amount"]["max"]
    ('numeric', 10.0, 1.0, 12.5)
    >>> r["country"]["top"], r["country"]["missing_rate"]
    ([['FR', 2.0], ['DE', 1.0]], 0.25)
    >>> r["vip"]["kind"], r["vip"]["top"]
    ('categorical', [['true', 3.0], ['false', 1.0]])

    Merging two parts of a seeded stream gives the single-pass statistics, and
    the state survives a JSON round trip exactly:

    >>> import json
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, 1000)
    >>> a, b = FeatureStats(), FeatureStats()
    >>> a.add({"x": x[:300].tolist()})
    >>> b.add({"x": x[300:].tolist()}, weights=np.full(700, 1.0))
    >>> a.merge(b)
    >>> r = a.result()["x"]
    >>> r["count"], bool(np.isclose(r["mean"], x.mean())), bool(np.isclose(r["std"], x.std()))
    (1000.0, True, True)
    >>> FeatureStats.from_json(json.loads(json.dumps(a.to_json()))).result() == a.result()
    True
    """

    def __init__(self, max_features: int = 100, top_k: int = 20) -> None:
        for name, value in (("max_features", max_features), ("top_k", top_k)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.max_features = max_features
        self.top_k = top_k
        self._features: dict[str, _Feature] = {}
        self._untracked = 0.0

    @property
    def capacity(self) -> int:
        """Number of Misra-Gries counters per categorical feature (``4 * top_k``)."""
        return 4 * self.top_k

    @property
    def untracked_features(self) -> float:
        """Weighted number of values dropped because their feature was beyond ``max_features``."""
        return self._untracked

    def __repr__(self) -> str:
        return (
            f"FeatureStats(max_features={self.max_features}, top_k={self.top_k}, "
            f"features={len(self._features)}, untracked_features={self._untracked!r})"
        )

    def add(self, features: Mapping[str, Sequence[Any]], weights: npt.ArrayLike | None = None) -> None:
        """Add one column batch.

        Parameters
        ----------
        features
            Feature name -> one value per row (number, string, boolean or None).
        weights
            Per-row sampling weights (the inverse of the sampling rate), finite
            and > 0, so that counts estimate the unsampled stream; ``None``
            means 1 for every row. Every column must have this many rows.

        Raises
        ------
        ValueError
            On a column length that does not match, bad weights or a non-string
            feature name.
        TypeError
            On a value that is not a number, string, boolean or None.

        Notes
        -----
        The whole batch is checked and summarised before the state changes, so
        a rejected batch leaves it as it was.
        """
        if not features:
            return
        columns = list(features.items())
        scale = 1.0
        w: FloatArray | None = None
        if weights is None:
            n = len(columns[0][1])
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.ndim != 1:
                raise ValueError(f"weights must be 1-D, got shape {w.shape}")
            n = int(w.shape[0])
            if n:
                lo, hi = float(w.min()), float(w.max())
                if not (lo > 0.0 and hi < math.inf):  # NaN fails both comparisons
                    raise ValueError("weights must be finite and > 0")
                if lo == hi:  # uniform weights: keep the unweighted fast paths
                    scale, w = lo, None
        for name, col in columns:
            if not isinstance(name, str):
                raise ValueError(f"feature names must be strings, got {type(name).__name__}")
            if len(col) != n:
                raise ValueError(f"feature {name!r} has {len(col)} values, expected {n}")
        if n == 0:
            return

        tracked: list[tuple[str, Sequence[Any]]] = []
        dropped = 0
        free = self.max_features - len(self._features)
        for name, col in columns:
            if name in self._features:
                tracked.append((name, col))
            elif free > 0:
                tracked.append((name, col))
                free -= 1
            else:
                dropped += 1
        memo = features if isinstance(features, FeatureColumns) else FeatureColumns(tracked)
        parts = _summarize(memo, [name for name, _ in tracked], w, scale)

        capacity = self.capacity
        for (name, _), part in zip(tracked, parts, strict=True):
            st = self._features.get(name)
            if st is None:
                st = self._features[name] = _Feature()
            st.apply(part, capacity)
        if dropped:
            self._untracked += dropped * (n * scale if w is None else float(w.sum()))

    def merge(self, other: FeatureStats) -> None:
        """Merge ``other`` (the statistics of another part of the stream) into this one, in place.

        Features new to this summary are added in ``other``'s order while there
        is room; the rest count as untracked.

        Raises
        ------
        ValueError
            If the parameters differ (the summaries would not be comparable).
        """
        if not isinstance(other, FeatureStats):
            raise TypeError(f"can only merge FeatureStats, got {type(other).__name__}")
        if (other.max_features, other.top_k) != (self.max_features, self.top_k):
            raise ValueError(
                f"cannot merge FeatureStats(max_features={other.max_features}, top_k={other.top_k}) into "
                f"FeatureStats(max_features={self.max_features}, top_k={self.top_k})"
            )
        items = [(name, st.copy()) for name, st in other._features.items()]
        untracked = other._untracked
        capacity = self.capacity
        for name, theirs in items:
            st = self._features.get(name)
            if st is None:
                if len(self._features) < self.max_features:
                    self._features[name] = theirs
                else:
                    untracked += theirs.total()
                continue
            st.missing += theirs.missing
            st.merge_moments(theirs.num_w, theirs.mean, theirs.m2, theirs.min, theirs.max)
            st.num_unsummarized += theirs.num_unsummarized
            st.cat_w += theirs.cat_w
            st.absorb_counts(theirs.counters, capacity, theirs.mg_err)
        self._untracked += untracked

    def result(self) -> dict[str, dict[str, Any]]:
        """Statistics per feature, in the order the features were first seen.

        Numeric: ``kind``, ``count`` (weighted count of present values),
        ``missing`` (weighted), ``missing_rate``, ``mean``, ``std``
        (population), ``min``, ``max``. Categorical: ``kind``, ``count``,
        ``missing``, ``missing_rate``, ``top`` (``[value, weighted_count]``, at
        most ``top_k``, most frequent first, ties by value; counts are
        underestimates by at most ``max_count_error``), ``distinct_tracked``
        (counters held), ``max_count_error``. Both get ``"mixed": True`` when
        the feature has seen numbers and strings/booleans.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, st in self._features.items():
            present = st.num_w + st.cat_w
            total = present + st.missing
            rate = st.missing / total if total > 0.0 else 0.0
            mixed = st.num_w > 0.0 and st.cat_w > 0.0
            r: dict[str, Any]
            if st.num_w > st.cat_w:
                r = {
                    "kind": "numeric",
                    "count": st.num_w,
                    "missing": st.missing,
                    "missing_rate": rate,
                    "mean": st.mean,
                    "std": math.sqrt(max(st.m2, 0.0) / st.num_w),
                    "min": st.min,
                    "max": st.max,
                }
                if mixed:
                    r["mixed"] = True
                    r["non_numeric"] = st.cat_w
            else:
                r = {
                    "kind": "categorical",
                    "count": present,
                    "missing": st.missing,
                    "missing_rate": rate,
                    "top": [[key, c] for key, c in _ranked(st.counters)[: self.top_k]],
                    "distinct_tracked": len(st.counters),
                    "max_count_error": st.mg_err + st.num_unsummarized,
                }
                if mixed:
                    r["mixed"] = True
            out[name] = r
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready state (plain dicts, lists, strings and finite floats), for the changelog."""
        return {
            "version": _JSON_VERSION,
            "max_features": self.max_features,
            "top_k": self.top_k,
            "untracked_features": self._untracked,
            "features": [st.to_json(name) for name, st in self._features.items()],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FeatureStats:
        """Rebuild from :meth:`to_json` output, validating every field.

        The state comes back from Kafka changelogs, so it is checked, not
        trusted: exact key sets, types, finite numbers, non-negative weights,
        ``min <= max``, at most ``max_features`` distinct features and
        ``capacity`` positive counters each.

        Raises
        ------
        ValueError
            On any malformed payload, naming the offending field.
        """
        if not isinstance(raw, Mapping):
            raise ValueError(f"feature stats state must be a JSON object, got {type(raw).__name__}")
        keys = set(raw)
        if keys != _JSON_KEYS:
            missing, extra = sorted(_JSON_KEYS - keys), sorted(map(str, keys - _JSON_KEYS))
            raise ValueError(f"feature stats state keys: missing {missing}, unexpected {extra}")
        if raw["version"] != _JSON_VERSION or isinstance(raw["version"], bool):
            raise ValueError(f"feature stats state version {raw['version']!r} is not {_JSON_VERSION}")
        out = cls(raw["max_features"], raw["top_k"])  # validates the parameters
        out._untracked = _real(raw, "untracked_features", "feature stats state", nonneg=True)
        feats = raw["features"]
        if not isinstance(feats, list):
            raise ValueError(f"feature stats state 'features' must be a list, got {type(feats).__name__}")
        if len(feats) > out.max_features:
            raise ValueError(f"feature stats state has {len(feats)} features, more than {out.max_features}")
        for item in feats:
            name, st = _Feature.from_json(item, out.capacity)
            if name in out._features:
                raise ValueError(f"feature stats state has feature {name!r} twice")
            out._features[name] = st
        return out
