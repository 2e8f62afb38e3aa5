"""DDSketch: a mergeable quantile sketch with relative-error guarantees, fed per batch.

Why this sketch: latency and delay quantiles (p50/p95/p99) must be computed per
window over ~200k events/s, merged across partitions and windows, and stored in
Kafka changelogs. Sample-based or rank-error sketches (t-digest, KLL) give a
p99 whose error is relative to the *rank*; on a heavy-tailed latency
distribution a rank error of 0.1 % can move p99 by a factor of two. DDSketch
bounds the error relative to the *value*, its merge is exact (bucket counts
add up), and its state is a small dense array of counts, cheap to serialise.

Reference: Charles Masson, Jee E. Rim, Homin K. Lee, "DDSketch: A Fast and
Fully-Mergeable Quantile Sketch with Relative-Error Guarantees", PVLDB 12(12):
2195-2205, 2019, doi:10.14778/3352063.3352135 (arXiv:1908.10693). The key mapping and the bucket
representative are those of Datadog's reference implementation
(``ddsketch`` on PyPI, ``LogarithmicMapping``), so that both give the same
quantiles; the tests check that differentially.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_BUCKETS_LIMIT", "MIN_INDEXABLE_VALUE", "DDSketch"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Values strictly below this are counted in the zero bucket. A latency of
#: 1e-9 (ms or s) is zero for every purpose here, and the floor keeps the key
#: range small: with ``relative_accuracy=0.01`` key(1e-9) is about -1036.
MIN_INDEXABLE_VALUE = 1e-9

#: Upper bound on ``max_buckets`` (8 MiB of counts): the bound is also read back from
#: changelogs, where a corrupt value must not be able to lift the memory cap.
MAX_BUCKETS_LIMIT = 2**20

_LN2 = math.log(2.0)
# Largest count for which the JSON form writes integer-valued counts as ints
# (exact in float64 below 2**53).
_EXACT_INT_LIMIT = float(2**53)
_MAX_ABS_KEY = float(2**53)
_JSON_KEYS = frozenset({"a", "m", "zero", "offset", "counts", "n", "sum", "min", "max"})


class DDSketch:
    """Quantile sketch with relative accuracy, batch (numpy) ingestion and exact merge.

    A positive value ``x`` is counted in the bucket of key
    ``k = ceil(log(x) / log(gamma))`` with ``gamma = (1 + a) / (1 - a)``, that is
    the interval ``(gamma**(k-1), gamma**k]``. Every point of that interval is
    within relative distance ``a`` of the bucket representative
    ``2 * gamma**k / (gamma + 1)`` (Masson et al., 2019), hence the
    guarantee below. Counts are kept densely in a float64 array indexed by
    ``key - offset``; values below ``MIN_INDEXABLE_VALUE`` (zeros included) go to
    a separate zero bucket.

    ``add`` works on a whole batch: one vectorised ``log``/``ceil`` for the keys,
    then one ``np.bincount`` to accumulate them, so the cost per value is a few
    tens of nanoseconds instead of nearly a microsecond for a per-value Python loop.

    **Guarantee.** Quantiles use the lower-rank convention of the reference
    library: with ``n`` the total weight, ``quantile(q)`` estimates the item of
    0-based rank ``floor(q * (n - 1))`` in sorted order (``np.quantile(x, q,
    method="lower")`` for unit weights). For every ``q`` whose rank falls in an
    uncollapsed bucket, ``|estimate - true| <= relative_accuracy * true``. When
    the true value is below ``MIN_INDEXABLE_VALUE`` the estimate is in
    ``[0, MIN_INDEXABLE_VALUE)`` (absolute error instead). The estimate is clamped
    to the exact ``[min, max]``, which can only reduce the error; ``q=0`` and
    ``q=1`` return the exact ``min`` and ``max``.

    **Bounded memory.** At most ``max_buckets`` buckets are kept. When a batch or
    a merge would need more, the LOWEST buckets are collapsed into the lowest
    kept one, as in the paper's bounded-memory variant (which collapses the
    lowest buckets, so that the error is lost on low quantiles, not on the
    tail). The store is dense, so the bound is on the key *span*, as in the
    library's ``CollapsingLowestDenseStore`` (``LogCollapsingLowestDenseDDSketch``):
    the kept window is always the ``max_buckets`` keys ending at the largest
    key seen. High quantiles (p99 latency) keep their guarantee; only ranks
    that fall in the lowest kept bucket lose it, and they are over-estimated. Collapse only happens when
    the data span more than ``gamma**max_buckets``: about 6e17 for the defaults,
    so for latencies it is a safety net, not a regime. The final state depends
    only on the multiset of (value, weight) pairs, not on batch boundaries or
    merge order (for sketches of equal parameters).

    Parameters
    ----------
    relative_accuracy
        Relative accuracy ``a`` of the quantiles, in (0, 1). Memory grows as
        ``1 / a``: covering 1 ms to 1 min takes about 550 buckets at 0.01.
    max_buckets
        Upper bound on the key span of the dense buckets, so ``8 * max_buckets``
        bytes of counts at most; in ``[1, MAX_BUCKETS_LIMIT]``.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.sketch import DDSketch
    >>> rng = np.random.default_rng(42)
    >>> latency_ms = rng.lognormal(mean=3.0, sigma=0.6, size=10_000)
    >>> sketch = DDSketch(relative_accuracy=0.01)
    >>> for batch in np.array_split(latency_ms, 20):
    ...     sketch.add(batch)
    >>> sketch.count
    10000.0
    >>> p99_ms = sketch.quantile(0.99)
    >>> true_p99_ms = float(np.quantile(latency_ms, 0.99, method="lower"))
    >>> abs(p99_ms - true_p99_ms) <= 0.01 * true_p99_ms
    True
    >>> sketch.quantile(1.0) == float(latency_ms.max())
    True

    Sketches of two partitions merge exactly, and the state survives a JSON
    round trip (as through a changelog topic):

    >>> other = DDSketch(relative_accuracy=0.01)
    >>> other.add(np.array([0.0, 250.0, 1000.0]), weights=np.array([1.0, 2.0, 1.0]))
    >>> sketch.merge(other)
    >>> sketch.count, sketch.max
    (10004.0, 1000.0)
    >>> DDSketch.from_json(sketch.to_json()).to_json() == sketch.to_json()
    True
    >>> DDSketch().quantile(0.5) is None
    True

    """

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if isinstance(relative_accuracy, bool) or not isinstance(relative_accuracy, int | float):
            raise ValueError(f"relative_accuracy must be a float, got {type(relative_accuracy).__name__}")
        if not (0.0 < relative_accuracy < 1.0):
            raise ValueError(
                f"relative_accuracy must be in the open interval (0, 1), got {relative_accuracy!r}"
            )
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int | np.integer):
            raise ValueError(f"max_buckets must be an int, got {type(max_buckets).__name__}")
        if not (1 <= max_buckets <= MAX_BUCKETS_LIMIT):
            raise ValueError(f"max_buckets must be in [1, {MAX_BUCKETS_LIMIT}], got {max_buckets}")
        # Same arithmetic, in the same order, as ddsketch.mapping.LogarithmicMapping,
        # so that keys and representatives agree bit for bit with the library.
        gamma_mantissa = 2.0 * relative_accuracy / (1.0 - relative_accuracy)
        log_gamma = math.log1p(gamma_mantissa)
        # Keys must stay exact integers in float64 (and fit int64) for every finite value.
        if log_gamma == 0.0 or math.log(sys.float_info.max) / log_gamma >= _MAX_ABS_KEY:
            raise ValueError(
                f"relative_accuracy={relative_accuracy!r} is too small: "
                "bucket keys of finite values would exceed 2**53"
            )

        self.relative_accuracy = float(relative_accuracy)
        self.max_buckets = int(max_buckets)

        self._gamma = 1.0 + gamma_mantissa
        # log2(x) * _multiplier == log_gamma(x)
        self._multiplier = (1.0 / log_gamma) * _LN2
        self._representative_factor = 2.0 / (1.0 + self._gamma)

        self._offset = 0  # key of _counts[0]
        self._counts: FloatArray = np.zeros(0, dtype=np.float64)
        self._zero_count = 0.0
        self._count = 0.0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    # ------------------------------------------------------------------ stats

    @property
    def count(self) -> float:
        """Total weight added (the number of values when unweighted)."""
        return self._count

    @property
    def sum(self) -> float:
        """Weighted sum of the values added (exact, up to float rounding)."""
        return self._sum

    @property
    def min(self) -> float | None:
        """Smallest value added with a positive weight; ``None`` when empty."""
        return self._min if self._count > 0 else None

    @property
    def max(self) -> float | None:
        """Largest value added with a positive weight; ``None`` when empty."""
        return self._max if self._count > 0 else None

    @property
    def mean(self) -> float | None:
        """Weighted mean of the values added; ``None`` when empty."""
        return self._sum / self._count if self._count > 0 else None

    @property
    def n_buckets(self) -> int:
        """Number of dense buckets held (at most ``max_buckets``; the zero bucket excluded)."""
        return int(self._counts.shape[0])

    # ------------------------------------------------------------------ ingest

    def _keys(self, values: FloatArray) -> IntArray:
        """Bucket keys of values >= MIN_INDEXABLE_VALUE, vectorised.

        ``math.log(x, 2)`` is ``log(x) / log(2)`` in CPython; the library then
        multiplies by its multiplier and takes ``ceil``. Same steps here.
        """
        k = np.log(values)
        k /= _LN2
        k *= self._multiplier
        np.ceil(k, out=k)
        return k.astype(np.int64)

    def add(self, values: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> None:
        """Add a batch of values, optionally with non-negative weights.

        Parameters
        ----------
        values
            1-D array of finite values ``>= 0`` (latencies, delays).
        weights
            Optional 1-D array of the same length, finite and ``>= 0`` (e.g.
            inverse sampling rates). A zero weight adds nothing, not even to
            ``min``/``max``.

        Raises
        ------
        ValueError
            On a negative, NaN or infinite value or weight, a shape mismatch,
            or a non 1-D input. The sketch is left unchanged.

        """
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"values must be a 1-D array, got shape {v.shape}")
        w: FloatArray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != v.shape:
                raise ValueError(f"weights must have the shape of values {v.shape}, got {w.shape}")
        if v.shape[0] == 0:
            return
        vmin = float(v.min())
        vmax = float(v.max())
        # NaN fails both comparisons, so one test covers NaN, inf and negatives.
        if not (vmin >= 0.0 and vmax < math.inf):
            _raise_bad_array("values", v)
        if w is not None:
            wmin = float(w.min())
            if not (wmin >= 0.0 and float(w.max()) < math.inf):
                _raise_bad_array("weights", w)
            if wmin == 0.0:
                keep = w > 0.0
                v = v[keep]
                w = w[keep]
                if v.shape[0] == 0:
                    return
                vmin = float(v.min())
                vmax = float(v.max())

        batch_count = float(v.shape[0]) if w is None else float(w.sum())
        batch_sum = float(v.sum()) if w is None else float(v @ w)

        zero = 0.0
        if vmin < MIN_INDEXABLE_VALUE:
            is_zero = v < MIN_INDEXABLE_VALUE
            if w is None:
                zero = float(np.count_nonzero(is_zero))
            else:
                zero = float(w[is_zero].sum())
                w = w[~is_zero]
            v = v[~is_zero]

        if v.shape[0] > 0:
            keys = self._keys(v)
            lo = int(keys.min())
            hi = int(keys.max())
            if self._counts.shape[0] > 0:
                hi = max(hi, self._offset + self._counts.shape[0] - 1)
            floor = hi - self.max_buckets + 1
            if lo < floor:  # collapse the lowest keys of the batch already
                np.maximum(keys, floor, out=keys)
                lo = floor
            keys -= lo
            block = np.bincount(keys, weights=w).astype(np.float64, copy=False)
            self._absorb(lo, block)

        self._zero_count += zero
        self._count += batch_count
        self._sum += batch_sum
        self._min = min(self._min, vmin)
        self._max = max(self._max, vmax)

    def _absorb(self, lo: int, block: FloatArray) -> None:
        """Add dense counts ``block`` (key of ``block[0]`` is ``lo``), collapsing the lowest keys.

        ``block`` is not modified, but may be kept as the new storage; callers
        pass arrays they own or copies.
        """
        n_self = self._counts.shape[0]
        top = lo + block.shape[0] - 1
        if n_self > 0:
            top = max(top, self._offset + n_self - 1)
        floor = top - self.max_buckets + 1
        lo, block = _collapse_below(lo, block, floor)
        if n_self == 0:
            self._offset, self._counts = lo, block
            return
        s_lo, s_counts = _collapse_below(self._offset, self._counts, floor)
        s_hi = s_lo + s_counts.shape[0] - 1
        if lo >= s_lo and top <= s_hi:
            # In place (s_counts is self._counts unless collapsed): the common case once warm.
            s_counts[lo - s_lo : lo - s_lo + block.shape[0]] += block
            self._offset, self._counts = s_lo, s_counts
            return
        new_lo = min(lo, s_lo)
        out = np.zeros(top - new_lo + 1, dtype=np.float64)
        out[s_lo - new_lo : s_lo - new_lo + s_counts.shape[0]] = s_counts
        out[lo - new_lo : lo - new_lo + block.shape[0]] += block
        self._offset, self._counts = new_lo, out

    def merge(self, other: DDSketch) -> None:
        """Add the content of ``other`` to this sketch, in place (``other`` is unchanged).

        The result has exactly the counts that adding both inputs to one sketch
        would give, whatever the order. ``self.max_buckets`` bounds the result.

        Raises
        ------
        ValueError
            If the relative accuracies differ: bucket boundaries would not line up.

        """
        if not isinstance(other, DDSketch):
            raise TypeError(f"can only merge a DDSketch, got {type(other).__name__}")
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError(
                "cannot merge sketches of different relative_accuracy: "
                f"{self.relative_accuracy!r} and {other.relative_accuracy!r}"
            )
        if other._count == 0:
            return
        # Snapshot first, so that s.merge(s) doubles s.
        o_offset, o_counts = other._offset, other._counts.copy()
        o_zero, o_count, o_sum, o_min, o_max = (
            other._zero_count,
            other._count,
            other._sum,
            other._min,
            other._max,
        )
        if o_counts.shape[0] > 0:
            self._absorb(o_offset, o_counts)
        self._zero_count += o_zero
        self._count += o_count
        self._sum += o_sum
        self._min = min(self._min, o_min)
        self._max = max(self._max, o_max)

    # ------------------------------------------------------------------ query

    def _check_q(self, q: float) -> None:
        if isinstance(q, bool) or not isinstance(q, int | float | np.floating | np.integer):
            raise ValueError(f"quantile must be a number in [0, 1], got {type(q).__name__}")
        if not (0.0 <= q <= 1.0):  # NaN fails too
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")

    def _value_at(self, q: float, cumulative: FloatArray) -> float:
        if q == 0.0:
            return self._min
        if q == 1.0:
            return self._max
        rank = q * (self._count - 1)
        if rank < self._zero_count or cumulative.shape[0] == 0:
            estimate = 0.0
        else:
            index = int(np.searchsorted(cumulative, rank - self._zero_count, side="right"))
            key = self._offset + min(index, cumulative.shape[0] - 1)
            estimate = math.pow(2.0, key / self._multiplier) * self._representative_factor
        return min(max(estimate, self._min), self._max)

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q``-quantile (lower rank convention); ``None`` when empty.

        Raises
        ------
        ValueError
            If ``q`` is not a number in [0, 1].

        """
        self._check_q(q)
        if self._count <= 0:
            return None
        return self._value_at(float(q), np.cumsum(self._counts))

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Estimate several quantiles at once (one cumulative sum); ``None`` entries when empty."""
        for q in qs:
            self._check_q(q)
        if self._count <= 0:
            return [None for _ in qs]
        cumulative = np.cumsum(self._counts)
        return [self._value_at(float(q), cumulative) for q in qs]

    # ------------------------------------------------------------------ state

    def copy(self) -> DDSketch:
        """Independent copy (the counts array is not shared)."""
        new = DDSketch(self.relative_accuracy, self.max_buckets)
        new._offset = self._offset
        new._counts = self._counts.copy()
        new._zero_count = self._zero_count
        new._count = self._count
        new._sum = self._sum
        new._min = self._min
        new._max = self._max
        return new

    def to_json(self) -> dict[str, Any]:
        """Compact JSON-able state: numbers, a list of counts, and ``null`` min/max when empty.

        Integer-valued counts (the unweighted case) are written as ints. The
        exact float state is restored by :meth:`from_json`.
        """
        counts = self._counts
        counts_out: list[int] | list[float]
        if (
            counts.shape[0] > 0
            and float(counts.max()) < _EXACT_INT_LIMIT
            and bool(np.all(counts == np.floor(counts)))
        ):
            counts_out = counts.astype(np.int64).tolist()
        else:
            counts_out = counts.tolist()
        empty = self._count <= 0
        return {
            "a": self.relative_accuracy,
            "m": self.max_buckets,
            "zero": self._zero_count,
            "offset": self._offset,
            "counts": counts_out,
            "n": self._count,
            "sum": self._sum,
            "min": None if empty else self._min,
            "max": None if empty else self._max,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DDSketch:
        """Rebuild a sketch from :meth:`to_json` output, validating every field.

        The state comes back from Kafka changelogs, so it is checked rather than
        trusted: exact key set, types, finite non-negative numbers, counts
        consistent with the total, keys within the range reachable from finite
        values, ``min <= max``.

        Raises
        ------
        ValueError
            On any malformed payload, naming the offending field.

        """
        if not isinstance(raw, Mapping):
            raise ValueError(f"sketch state must be a JSON object, got {type(raw).__name__}")
        keys = set(raw)
        missing = _JSON_KEYS - keys
        if missing:
            raise ValueError(f"sketch state is missing keys {sorted(missing)}")
        extra = keys - _JSON_KEYS
        if extra:
            raise ValueError(f"sketch state has unexpected keys {sorted(map(str, extra))}")

        a = _real(raw, "a")
        m = raw["m"]
        if isinstance(m, bool) or not isinstance(m, int):
            raise ValueError(f"sketch state 'm' must be an int, got {type(m).__name__}")
        sketch = cls(a, m)  # validates a and m

        offset = raw["offset"]
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ValueError(f"sketch state 'offset' must be an int, got {type(offset).__name__}")
        counts_raw = raw["counts"]
        if not isinstance(counts_raw, list):
            raise ValueError(f"sketch state 'counts' must be a list, got {type(counts_raw).__name__}")
        if len(counts_raw) > m:
            raise ValueError(f"sketch state has {len(counts_raw)} counts, more than m={m}")
        for c in counts_raw:
            if isinstance(c, bool) or not isinstance(c, int | float):
                raise ValueError(f"sketch state 'counts' must hold numbers, got {type(c).__name__}")
        counts = np.asarray(counts_raw, dtype=np.float64)
        if counts.shape[0] > 0 and not (float(counts.min()) >= 0.0 and float(counts.max()) < math.inf):
            raise ValueError("sketch state 'counts' must be finite and >= 0")

        zero = _real(raw, "zero")
        n = _real(raw, "n")
        total = _real(raw, "sum", allow_inf=True)
        for name, x in (("zero", zero), ("n", n), ("sum", total)):
            if x < 0.0:
                raise ValueError(f"sketch state {name!r} must be >= 0, got {x!r}")
        expected = zero + float(counts.sum())
        if abs(n - expected) > 1e-9 * max(1.0, n):
            raise ValueError(f"sketch state 'n'={n!r} does not match zero + sum(counts) = {expected!r}")

        # Trim empty edge buckets so that counts[0] and counts[-1] are non-zero.
        nonzero = np.flatnonzero(counts)
        if nonzero.shape[0] == 0:
            counts = np.zeros(0, dtype=np.float64)
        else:
            first, last = int(nonzero[0]), int(nonzero[-1])
            counts = counts[first : last + 1].copy()
            offset += first
            key_lo, key_hi = (
                int(k) for k in sketch._keys(np.array([MIN_INDEXABLE_VALUE, sys.float_info.max]))
            )
            if offset < key_lo or offset + counts.shape[0] - 1 > key_hi:
                raise ValueError(
                    f"sketch state keys [{offset}, {offset + counts.shape[0] - 1}] are outside "
                    f"the range [{key_lo}, {key_hi}] of finite values for a={a!r}"
                )

        if n > 0:
            lo_v = _real(raw, "min")
            hi_v = _real(raw, "max")
            if not (0.0 <= lo_v <= hi_v):
                raise ValueError(f"sketch state needs 0 <= min <= max, got min={lo_v!r}, max={hi_v!r}")
        else:
            if raw["min"] is not None or raw["max"] is not None:
                raise ValueError("sketch state with n=0 must have null min and max")
            lo_v, hi_v = math.inf, -math.inf

        sketch._offset = offset if counts.shape[0] > 0 else 0
        sketch._counts = counts
        sketch._zero_count = zero
        sketch._count = n
        sketch._sum = total
        sketch._min = lo_v
        sketch._max = hi_v
        return sketch

    def __repr__(self) -> str:
        return (
            f"DDSketch(relative_accuracy={self.relative_accuracy!r}, max_buckets={self.max_buckets!r}, "
            f"count={self._count!r}, n_buckets={self.n_buckets})"
        )


def _collapse_below(lo: int, counts: FloatArray, floor: int) -> tuple[int, FloatArray]:
    """Move the counts of keys below ``floor`` into key ``floor``; returns the new (lo, counts).

    Returns ``counts`` itself when nothing is below ``floor``, a new array otherwise.
    """
    if lo >= floor:
        return lo, counts
    below = floor - lo
    if below >= counts.shape[0]:
        return floor, np.array([counts.sum()], dtype=np.float64)
    out = counts[below:].copy()
    out[0] += counts[:below].sum()
    return floor, out


def _raise_bad_array(name: str, x: FloatArray) -> None:
    """Raise a ValueError that names what is wrong in ``x`` (called off the hot path)."""
    problems = []
    for label, mask in (("NaN", np.isnan(x)), ("infinite", np.isinf(x)), ("negative", x < 0)):
        where = np.flatnonzero(mask)
        if where.shape[0] > 0:
            i = int(where[0])
            problems.append(f"{where.shape[0]} {label} (first at index {i}: {float(x[i])!r})")
    raise ValueError(f"{name} must be finite and >= 0; got " + ", ".join(problems))


def _real(raw: Mapping[str, Any], name: str, allow_inf: bool = False) -> float:
    x = raw[name]
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"sketch state {name!r} must be a number, got {type(x).__name__}")
    f = float(x)
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise ValueError(f"sketch state {name!r} must be finite, got {x!r}")
    return f
