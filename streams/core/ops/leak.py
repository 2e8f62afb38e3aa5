"""Memory leak: sustained growth of a process's resident memory (RSS) over a trailing window.

A leaking model server grows until the kernel or the orchestrator kills it
(OOM), usually at peak traffic. The growth is slow and buried in noise:
allocator caches, request bursts, and garbage collection, whose sawtooth
rises for minutes and then drops. The detector asks two questions of the last
``window_ms`` of samples and requires both answers:

* **How fast?** The Theil-Sen estimator, the median of the slopes between
  pairs of points (Theil 1950; Sen, "Estimates of the regression coefficient
  based on Kendall's tau", JASA 63(324):1379-1389, 1968). Its breakdown point
  is about 29 %: GC drops and bursts move it little, where least squares
  would follow them. The slope must reach both an absolute rate
  (``min_growth_bytes_per_h``) and a rate relative to the process's size
  (``min_relative_growth_per_h``), so that neither a small process's jitter
  nor a large process's cache warm-up qualifies.
* **Is it monotonic?** The Mann-Kendall trend statistic (Mann, "Nonparametric
  tests against trend", Econometrica 13(3):245-259, 1945; Kendall, *Rank
  Correlation Methods*, 4th ed., 1975) ``S = sum sign(y_j - y_i)`` over the
  same pairs (``t_i < t_j``), its variance under the null of no trend, and
  the normal approximation with continuity correction, ``Z = (S - sign(S)) /
  sqrt(Var S)`` (Gilbert, *Statistical Methods for Environmental Pollution
  Monitoring*, 1987, §16.4), one-sided (growth only): ``p = P(N(0,1) >= Z)``.
  The approximation is adequate from about ten points (Gilbert), hence
  ``min_points=10``.

**The GC sawtooth.** Textbook Theil-Sen and Mann-Kendall use *all* pairs. On a
sawtooth, every pair inside one GC cycle rises, so both statistics are biased
upwards by about ``1/k`` of the pairs for ``k`` cycles in the window: a flat
process with a 5-minute, 15 % sawtooth reads as a "significant" growth of
several %/h, at every evaluation. Two departures from the textbook remove
this, and both can be switched off (``min_pair_lag_ms=0``, ``confirm_ms=0``)
to get the classic procedure:

1. Only pairs at least ``min_pair_lag_ms`` apart are used (default
   ``window_ms / 6``), so pairs inside one GC cycle of up to that length do
   not count. A linear trend has the same slope on every pair, so the slope
   is unchanged, and long-lag pairs carry the most signal anyway (this is in
   the spirit of Theil's own "abbreviated" estimator, which pairs points half
   the sample apart). The variance of ``S`` over an arbitrary set of pairs
   follows from the U-statistic covariances under the permutation null: two
   pairs sharing a point as their earlier (or as their later) element have
   covariance ``c``, a chain (one's later point is the other's earlier) has
   ``-c``, disjoint pairs 0, with ``c = 1/3`` without ties; ties are
   accounted for exactly (``c`` and ``Var sign`` are computed from the
   observed tie structure). With all pairs this is the classic tie-corrected
   ``[n(n-1)(2n+5) - sum_g t_g(t_g-1)(2t_g+5)] / 18``; the tests check both
   that and, for restricted pairs, a Monte-Carlo permutation variance.
2. What remains is an edge effect: a window that ends on a peak of the
   sawtooth tilts up. It comes and goes with the phase of the window (once
   per cycle, for one or two evaluations), while a leak holds at every
   evaluation. So activation needs the test to hold at every evaluation for
   ``confirm_ms`` (default 5 minutes); clearing needs it to fail at every
   evaluation for ``clear_after_ms`` (hysteresis, so the condition cannot
   flap either).

Caveat: serial correlation beyond the GC cycle still makes the p-value
optimistic (Hamed & Rao, "A modified Mann-Kendall trend test for
autocorrelated data", J. Hydrology 204:182-196, 1998); the magnitude
thresholds are the main guard, the p-value a second one. A cycle as long as
the window (a batch job loading and freeing every 20 minutes) is not a GC
sawtooth this detector can tell from growth: use a longer ``window_ms``.

**Bounded cost.** Samples are aggregated into time buckets of
``ceil(window_ms / (max_points - 1))`` ms aligned on the epoch (mean time,
mean RSS), so the window holds at most ``max_points`` points whatever the
sampling rate (the window starts at the first bucket boundary inside it, up
to one bucket later than ``window_ms`` ago). The buckets do not depend on how
samples are batched (exactly so for whole-byte RSS values, whose sums are
exact). The O(n²) evaluation (about 1.3 ms at 256 points) runs at most once
per ``eval_every_ms`` of event time; an update between evaluations costs
about 50-100 µs (numpy call overhead on a few hundred buckets).

**Out-of-order samples.** Event time may go backwards between batches (several
producers, retries). A late sample still inside the trailing window (measured
from the largest event time seen) joins its bucket as if it had come in
order; one older than the window is dropped and counted in
:attr:`LeakDetector.stale_samples`. Evaluations are triggered by the largest
event time only, so late samples never trigger one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.core.ops._checks import (
    check_state,
    count_field,
    float_param,
    int_param,
    opt_int_field,
    state_params,
)
from streams.core.ops.condition import Condition

__all__ = ["LeakDetector"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MS_PER_H = 3_600_000
_MIB = 2**20
_KIND = "leak"
_VERSION = 1
_PARAMS = (
    "window_ms",
    "min_points",
    "min_growth_bytes_per_h",
    "min_relative_growth_per_h",
    "max_p_value",
    "clear_after_ms",
    "eval_every_ms",
    "limit_bytes",
    "max_points",
    "min_pair_lag_ms",
    "confirm_ms",
)
_STATE_KEYS = frozenset(
    {
        "v",
        "kind",
        "params",
        "keys",
        "offset_sum_ms",
        "rss_sum_bytes",
        "counts",
        "max_time_ms",
        "last_eval_ms",
        "active",
        "since_ms",
        "holding_since_ms",
        "failing_since_ms",
        "last_held_ms",
        "stale_samples",
        "invalid_samples",
    }
)


class LeakDetector:
    """Sustained RSS growth of one process: robust slope plus monotonic-trend test over a trailing window.

    An evaluation *holds* when, over the samples of the last ``window_ms``
    (at least ``min_points`` buckets spanning at least ``window_ms / 2``),
    using the pairs of points at least ``min_pair_lag_ms`` apart:

    * the Theil-Sen slope is ``>= max(min_growth_bytes_per_h,
      min_relative_growth_per_h * median RSS)`` (bytes per hour), and
    * the one-sided Mann-Kendall p-value is ``<= max_p_value``.

    The condition becomes *active* once evaluations have held without a
    failure for ``confirm_ms``, and *clears* once they have failed without a
    hold for ``clear_after_ms``. Evaluations without enough data neither hold
    nor fail (a telemetry gap neither raises nor clears a leak). ``since_ms``
    is the first evaluation of the confirming run (of holds, or of failures);
    ``evidence["detected_ms"]`` the evaluation that confirmed it. ``value`` is
    the slope and ``threshold`` the effective threshold, both in bytes per hour.

    Parameters
    ----------
    window_ms
        Trailing window of event time. 30 minutes covers several GC cycles
        yet reacts within the hour to a leak that would kill a process in a day.
    min_points
        Fewest buckets (points) to evaluate; 10 is where the normal
        approximation of Mann-Kendall becomes adequate.
    min_growth_bytes_per_h
        Absolute slope threshold. 50 MiB/h exhausts a typical 1-4 GiB
        headroom within a day or two: worth an alert, not noise.
    min_relative_growth_per_h
        Slope threshold relative to the median RSS of the window. 5 %/h
        doubles the process in about 14 hours; on a 20 GiB process it asks
        for 1 GiB/h, far above the warm-up of its caches.
    max_p_value
        Largest one-sided Mann-Kendall p-value accepted. Strict (0.01) because
        the serial correlation of RSS makes p-values optimistic (see module).
    clear_after_ms
        How long evaluations must fail, without holding once, before the
        condition clears. Default: half the window, so that the window has
        renewed half its content; a sawtooth or a pause in growth does not flap.
    eval_every_ms
        Minimum event time between two evaluations (0: every update). A
        minute of event time bounds the O(n²) work at one evaluation per
        process per minute.
    limit_bytes
        Memory limit of the process (container limit), if known: the
        evidence then projects the time until the fitted RSS reaches it.
    max_points
        Most buckets in the window (>= 3); sets the bucket width.
    min_pair_lag_ms
        Shortest time between the two points of a pair used by both
        statistics; ``None`` means ``window_ms // 6`` (5 minutes by default),
        longer than usual GC cycles. 0 gives the textbook all-pairs statistics.
    confirm_ms
        How long evaluations must hold, without failing once, before the
        condition becomes active (5 minutes: longer than the few evaluations
        a sawtooth's edge effect lasts). 0 activates on the first hold.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.ops.leak import LeakDetector
    >>> rng = np.random.default_rng(7)
    >>> t_ms = np.arange(0, 60 * 60_000, 5_000, dtype=np.int64)  # an hour, every 5 s
    >>> rss = 2.0 * 2**30 + 300 * 2**20 * t_ms / 3_600_000 + rng.normal(0, 20 * 2**20, t_ms.size)
    >>> detector = LeakDetector(limit_bytes=4 * 2**30)
    >>> for i in range(0, t_ms.size, 12):  # one batch a minute
    ...     c = detector.update(t_ms[i:i + 12], rss[i:i + 12])
    ...     if c is not None:
    ...         print(c.active, c.since_ms // 60_000, c.evidence["detected_ms"] // 60_000,
    ...               round(c.value / 2**20), "MiB/h >=", round(c.threshold / 2**20),
    ...               c.evidence["p_value"] < 1e-6, round(c.evidence["time_to_limit_ms"] / 3_600_000), "h")
    True 15 20 300 MiB/h >= 105 True 6 h

    Flat but noisy RSS does not qualify, and the state survives a JSON round trip:

    >>> flat = LeakDetector()
    >>> y = 2.0 * 2**30 + rng.normal(0, 50 * 2**20, t_ms.size)
    >>> [c for i in range(0, t_ms.size, 12) if (c := flat.update(t_ms[i:i + 12], y[i:i + 12]))]
    []
    >>> LeakDetector.from_state(detector.to_state()).to_state() == detector.to_state()
    True
    """

    def __init__(
        self,
        window_ms: int = 30 * 60_000,
        min_points: int = 10,
        min_growth_bytes_per_h: float = 50.0 * _MIB,
        min_relative_growth_per_h: float = 0.05,
        max_p_value: float = 0.01,
        clear_after_ms: int = 15 * 60_000,
        eval_every_ms: int = 60_000,
        limit_bytes: int | None = None,
        max_points: int = 256,
        min_pair_lag_ms: int | None = None,
        confirm_ms: int = 5 * 60_000,
    ) -> None:
        self.window_ms = int_param("window_ms", window_ms, minimum=1)
        self.max_points = int_param("max_points", max_points, minimum=3)
        self.min_points = int_param("min_points", min_points, minimum=3)
        if self.min_points > self.max_points:
            raise ValueError(f"min_points must be <= max_points={self.max_points}, got {self.min_points}")
        self.min_growth_bytes_per_h = float_param(
            "min_growth_bytes_per_h", min_growth_bytes_per_h, 0.0, math.inf
        )
        self.min_relative_growth_per_h = float_param(
            "min_relative_growth_per_h", min_relative_growth_per_h, 0.0, math.inf
        )
        self.max_p_value = float_param("max_p_value", max_p_value, 0.0, 1.0)
        if self.max_p_value <= 0.0:
            raise ValueError(f"max_p_value must be in (0, 1], got {max_p_value!r}")
        self.clear_after_ms = int_param("clear_after_ms", clear_after_ms, minimum=0)
        self.eval_every_ms = int_param("eval_every_ms", eval_every_ms, minimum=0)
        self.limit_bytes = None if limit_bytes is None else int_param("limit_bytes", limit_bytes, minimum=1)
        self.min_pair_lag_ms = (
            self.window_ms // 6
            if min_pair_lag_ms is None
            else int_param("min_pair_lag_ms", min_pair_lag_ms, 0)
        )
        if self.min_pair_lag_ms > self.window_ms // 2:
            # Pairs must exist once the window spans window_ms / 2, the least span evaluated.
            half_ms = self.window_ms // 2
            raise ValueError(
                f"min_pair_lag_ms must be <= window_ms // 2 = {half_ms}, got {self.min_pair_lag_ms}"
            )
        self.confirm_ms = int_param("confirm_ms", confirm_ms, minimum=0)

        self._bucket_ms = -(-self.window_ms // (self.max_points - 1))  # ceil: at most max_points buckets
        # Buckets, in increasing key order: key = t // _bucket_ms; per bucket the sum of
        # (t - key * _bucket_ms) (exact ints), the sum of RSS and the count of samples.
        self._keys: IntArray = np.zeros(0, dtype=np.int64)
        self._offset_sum_ms: IntArray = np.zeros(0, dtype=np.int64)
        self._rss_sum_bytes: FloatArray = np.zeros(0, dtype=np.float64)
        self._counts: IntArray = np.zeros(0, dtype=np.int64)
        self._max_time_ms: int | None = None
        self._last_eval_ms: int | None = None
        self._active = False
        self._since_ms: int | None = None  # when the current state began (None: never active)
        self._holding_since_ms: int | None = None  # first holding evaluation since the last failing one
        self._failing_since_ms: int | None = None  # first failing evaluation since the last holding one
        self._last_held_ms: int | None = None
        self._stale_samples = 0
        self._invalid_samples = 0

    # ------------------------------------------------------------------ queries

    @property
    def active(self) -> bool:
        """Whether a leak is currently reported."""
        return self._active

    @property
    def stale_samples(self) -> int:
        """Samples dropped because they were older than the trailing window when they arrived."""
        return self._stale_samples

    @property
    def invalid_samples(self) -> int:
        """Samples dropped because their RSS was NaN, infinite or negative."""
        return self._invalid_samples

    @property
    def n_points(self) -> int:
        """Buckets currently in the window (at most ``max_points``)."""
        return int(self._keys.shape[0])

    # ------------------------------------------------------------------ update

    def update(self, times_ms: IntArray, rss_bytes: FloatArray) -> Condition | None:
        """Add samples of one process and, at most every ``eval_every_ms``, re-evaluate.

        Parameters
        ----------
        times_ms
            Event times of the samples (integer ms since the epoch), in any order.
        rss_bytes
            Resident set size of each sample, bytes. NaN, infinite and negative
            values are dropped and counted (:attr:`invalid_samples`).

        Returns
        -------
        Condition or None
            A transition (leak found or cleared), else ``None``.

        Raises
        ------
        ValueError
            If the arrays are not 1-D of equal length or ``times_ms`` is not integer.
        """
        t = np.asarray(times_ms)
        y = np.asarray(rss_bytes, dtype=np.float64)
        if t.ndim != 1 or (t.shape[0] > 0 and t.dtype.kind not in "iu"):
            raise ValueError(f"times_ms must be a 1-D integer array, got shape {t.shape} of {t.dtype}")
        if y.shape != t.shape:
            raise ValueError(f"rss_bytes must have the shape of times_ms {t.shape}, got {y.shape}")
        ok = np.isfinite(y) & (y >= 0.0)
        if not bool(ok.all()):
            self._invalid_samples += int(t.shape[0] - np.count_nonzero(ok))
            t, y = t[ok], y[ok]
        if t.shape[0] == 0:
            return None
        t = t.astype(np.int64, copy=False)
        width = self._bucket_ms
        batch_max = int(t.max())
        max_ms = batch_max if self._max_time_ms is None else max(self._max_time_ms, batch_max)
        first_key = -(-(max_ms - self.window_ms) // width)  # first bucket starting inside the window
        keys = t // width
        fresh = keys >= first_key
        if not bool(fresh.all()):
            self._stale_samples += int(t.shape[0] - np.count_nonzero(fresh))
            t, y, keys = t[fresh], y[fresh], keys[fresh]
        self._absorb(t, y, keys, first_key)
        self._max_time_ms = max_ms
        if self._last_eval_ms is not None and max_ms - self._last_eval_ms < self.eval_every_ms:
            return None
        self._last_eval_ms = max_ms
        return self._evaluate(max_ms)

    def _absorb(self, t: IntArray, y: FloatArray, keys: IntArray, first_key: int) -> None:
        """Add samples to their buckets and drop the buckets that left the window.

        Sums are accumulated in a fixed order (a bucket's previous sum, then the
        batch's samples in order), so the state is a deterministic function of
        the previous state and the batch. Offsets within a bucket are below the
        bucket width, so their float64 sums are exact integers.
        """
        start = int(np.searchsorted(self._keys, first_key))  # keys are sorted: the window is a suffix
        old_keys, old_off, old_rss, old_n = (
            self._keys[start:],
            self._offset_sum_ms[start:],
            self._rss_sum_bytes[start:],
            self._counts[start:],
        )
        width = self._bucket_ms
        if t.shape[0] > 0 and (old_keys.shape[0] == 0 or int(keys.min()) >= int(old_keys[-1])):
            # In order (the usual case): aggregate the batch alone, then append it.
            uniq, inverse = np.unique(keys, return_inverse=True)
            off = np.rint(np.bincount(inverse, weights=(t - keys * width).astype(np.float64))).astype(
                np.int64
            )
            rss = np.bincount(inverse, weights=y).astype(np.float64, copy=False)
            n = np.bincount(inverse).astype(np.int64, copy=False)
            if old_keys.shape[0] > 0 and int(uniq[0]) == int(old_keys[-1]):
                old_off, old_rss, old_n = old_off.copy(), old_rss.copy(), old_n.copy()
                old_off[-1] += off[0]
                old_rss[-1] += rss[0]
                old_n[-1] += n[0]
                uniq, off, rss, n = uniq[1:], off[1:], rss[1:], n[1:]
            old_keys = np.concatenate((old_keys, uniq.astype(np.int64, copy=False)))
            old_off = np.concatenate((old_off, off))
            old_rss = np.concatenate((old_rss, rss))
            old_n = np.concatenate((old_n, n))
        elif t.shape[0] > 0:
            # Some samples fall into or before existing buckets: merge everything.
            uniq, inverse = np.unique(np.concatenate((old_keys, keys)), return_inverse=True)
            m = int(uniq.shape[0])
            all_off = np.concatenate((old_off, t - keys * width)).astype(np.float64)
            all_n = np.concatenate((old_n, np.ones(t.shape[0], dtype=np.int64))).astype(np.float64)
            old_off = np.rint(np.bincount(inverse, weights=all_off, minlength=m)).astype(np.int64)
            old_rss = np.bincount(inverse, weights=np.concatenate((old_rss, y)), minlength=m).astype(
                np.float64
            )
            old_n = np.rint(np.bincount(inverse, weights=all_n, minlength=m)).astype(np.int64)
            old_keys = uniq.astype(np.int64, copy=False)
        self._keys, self._offset_sum_ms, self._rss_sum_bytes, self._counts = old_keys, old_off, old_rss, old_n

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, now_ms: int) -> Condition | None:
        n = int(self._keys.shape[0])
        if n < self.min_points:
            return None  # not enough data: neither holds nor fails
        base_key = int(self._keys[0])
        rel_t_ms = (self._keys - base_key) * float(self._bucket_ms) + self._offset_sum_ms / self._counts
        y = self._rss_sum_bytes / self._counts
        span_ms = float(rel_t_ms[-1] - rel_t_ms[0])
        if span_ms < self.window_ms / 2:
            return None
        trend = _trend(rel_t_ms, y, float(self.min_pair_lag_ms))
        if trend is None:
            return None
        slope_per_ms, s, var_s, n_pairs = trend
        p_value = _mk_p_greater(s, var_s)
        slope_per_h = slope_per_ms * _MS_PER_H
        level_bytes = float(np.median(y))
        threshold_per_h = max(self.min_growth_bytes_per_h, self.min_relative_growth_per_h * level_bytes)
        holds = slope_per_h >= threshold_per_h and p_value <= self.max_p_value

        # Theil-Sen line through (median t, median y), as scipy.stats.theilslopes (Conover 1980).
        fitted_bytes = level_bytes + slope_per_ms * (float(rel_t_ms[-1]) - float(np.median(rel_t_ms)))
        evidence: dict[str, float | str | int] = {
            "slope_bytes_per_h": slope_per_h,
            "relative_growth_per_h": slope_per_h / max(level_bytes, 1.0),
            "p_value": p_value,
            "mann_kendall_s": s,
            "pairs": n_pairs,
            "points": n,
            "span_ms": round(span_ms),
            "window_start_ms": base_key * self._bucket_ms + round(float(rel_t_ms[0])),
            "median_rss_bytes": level_bytes,
            "fitted_rss_bytes": fitted_bytes,
            "detected_ms": now_ms,
        }
        if self.limit_bytes is not None:
            evidence["limit_bytes"] = self.limit_bytes
            if slope_per_ms > 0.0:
                evidence["time_to_limit_ms"] = max(0, round((self.limit_bytes - fitted_bytes) / slope_per_ms))

        if holds:
            self._failing_since_ms = None
            self._last_held_ms = now_ms
            if self._holding_since_ms is None:
                self._holding_since_ms = now_ms
            if self._active or now_ms - self._holding_since_ms < self.confirm_ms:
                return None
            self._active, self._since_ms = True, self._holding_since_ms
            return Condition(True, self._holding_since_ms, slope_per_h, threshold_per_h, evidence)
        self._holding_since_ms = None
        if self._failing_since_ms is None:
            self._failing_since_ms = now_ms
        if not self._active or now_ms - self._failing_since_ms < self.clear_after_ms:
            return None
        if self._last_held_ms is not None:
            evidence["last_held_ms"] = self._last_held_ms
        self._active, self._since_ms = False, self._failing_since_ms
        return Condition(False, self._failing_since_ms, slope_per_h, threshold_per_h, evidence)

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON state: parameters, buckets and the hysteresis state (exact round trip)."""
        return {
            "v": _VERSION,
            "kind": _KIND,
            "params": {name: getattr(self, name) for name in _PARAMS},
            "keys": self._keys.tolist(),
            "offset_sum_ms": self._offset_sum_ms.tolist(),
            "rss_sum_bytes": self._rss_sum_bytes.tolist(),
            "counts": self._counts.tolist(),
            "max_time_ms": self._max_time_ms,
            "last_eval_ms": self._last_eval_ms,
            "active": self._active,
            "since_ms": self._since_ms,
            "holding_since_ms": self._holding_since_ms,
            "failing_since_ms": self._failing_since_ms,
            "last_held_ms": self._last_held_ms,
            "stale_samples": self._stale_samples,
            "invalid_samples": self._invalid_samples,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> LeakDetector:
        """Rebuild a detector from :meth:`to_state` output, validating every field.

        Raises
        ------
        ValueError
            On any payload :meth:`to_state` cannot have written, naming the field.
        """
        raw = check_state(raw, "leak state", _KIND, _VERSION, _STATE_KEYS)
        det = cls(**state_params(raw, _PARAMS, "leak state"))

        columns = {}
        for name in ("keys", "offset_sum_ms", "rss_sum_bytes", "counts"):
            col = raw[name]
            if not isinstance(col, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in col
            ):
                raise ValueError(f"leak state {name!r} must be a list of numbers")
            columns[name] = col
        n = len(columns["keys"])
        if any(len(c) != n for c in columns.values()):
            raise ValueError("leak state 'keys', 'offset_sum_ms', 'rss_sum_bytes', 'counts' differ in length")
        if n > det.max_points:
            raise ValueError(f"leak state holds {n} buckets, more than max_points={det.max_points}")
        for name in ("keys", "offset_sum_ms", "counts"):
            if not all(isinstance(x, int) for x in columns[name]):
                raise ValueError(f"leak state {name!r} must hold ints")
        key_arr = np.asarray(columns["keys"], dtype=np.int64)
        off_arr = np.asarray(columns["offset_sum_ms"], dtype=np.int64)
        rss_arr = np.asarray(columns["rss_sum_bytes"], dtype=np.float64)
        cnt_arr = np.asarray(columns["counts"], dtype=np.int64)
        if n > 0 and not (
            bool(np.all(np.diff(key_arr) > 0))
            and bool(np.all(cnt_arr >= 1))
            and bool(np.all(off_arr >= 0))
            and bool(np.all(off_arr <= (det._bucket_ms - 1) * cnt_arr))
            and bool(np.all(np.isfinite(rss_arr)))
            and bool(np.all(rss_arr >= 0))
        ):
            raise ValueError(
                "leak state buckets must have increasing keys, counts >= 1, offsets within "
                "the bucket and finite RSS sums >= 0"
            )

        max_time = opt_int_field(raw, "max_time_ms", "leak state")
        if n > 0:
            if max_time is None:
                raise ValueError("leak state 'max_time_ms' must be an int when buckets are held")
            first_key = -(-(max_time - det.window_ms) // det._bucket_ms)
            if int(key_arr[0]) < first_key or int(key_arr[-1]) > max_time // det._bucket_ms:
                raise ValueError("leak state buckets must lie within the window ending at 'max_time_ms'")
        active = raw["active"]
        if not isinstance(active, bool):
            raise ValueError(f"leak state 'active' must be a bool, got {type(active).__name__}")
        det._keys, det._offset_sum_ms, det._rss_sum_bytes, det._counts = key_arr, off_arr, rss_arr, cnt_arr
        det._max_time_ms = max_time
        det._last_eval_ms = opt_int_field(raw, "last_eval_ms", "leak state")
        det._active = active
        det._since_ms = opt_int_field(raw, "since_ms", "leak state")
        if active and det._since_ms is None:
            raise ValueError("leak state 'since_ms' must be an int when 'active' is true")
        det._holding_since_ms = opt_int_field(raw, "holding_since_ms", "leak state")
        det._failing_since_ms = opt_int_field(raw, "failing_since_ms", "leak state")
        det._last_held_ms = opt_int_field(raw, "last_held_ms", "leak state")
        det._stale_samples = count_field(raw, "stale_samples", "leak state")
        det._invalid_samples = count_field(raw, "invalid_samples", "leak state")
        return det

    # Aliases, for callers that persist objects generically through ``to_json``/``from_json``.
    to_json = to_state
    from_json = from_state

    def __repr__(self) -> str:
        return (
            f"LeakDetector(window_ms={self.window_ms}, active={self._active}, points={self.n_points}, "
            f"max_time_ms={self._max_time_ms})"
        )


@functools.lru_cache(maxsize=4)
def _pairs(n: int) -> tuple[IntArray, IntArray]:
    """Index pairs ``i < j`` of ``n`` points (cached: ``n`` is ``max_points`` in the steady state)."""
    i, j = np.triu_indices(n, k=1)
    i.setflags(write=False)
    j.setflags(write=False)
    return i.astype(np.int64, copy=False), j.astype(np.int64, copy=False)


def _trend(t: FloatArray, y: FloatArray, min_lag: float) -> tuple[float, int, float, int] | None:
    """Theil-Sen slope, Mann-Kendall ``S``, ``Var S`` and the pair count, over pairs ``min_lag`` apart.

    ``t`` must be strictly increasing (bucket mean times are). ``None`` when
    no pair is ``min_lag`` apart.

    ``Var S`` is exact under the permutation null (the values in random
    order), ties included: with ``a_k`` (``b_k``) the number of pairs in which
    point ``k`` is the earlier (later) element,
    ``Var S = m v + 2 c sum_k [C(a_k, 2) + C(b_k, 2) - a_k b_k]``, where ``m``
    is the number of pairs, ``v = Var sign(y_j - y_i)`` and ``c`` the
    covariance of two signs sharing their earlier point, both over random
    distinct indices of the observed values (``v = 1``, ``c = 1/3`` without
    ties). All pairs give the classic tie-corrected variance.
    """
    n = int(t.shape[0])
    i, j = _pairs(n)
    if min_lag > 0.0:
        keep = (t[j] - t[i]) >= min_lag
        i, j = i[keep], j[keep]
    m = int(i.shape[0])
    if m == 0:
        return None
    dy = y[j] - y[i]
    slope = float(np.median(dy / (t[j] - t[i])))
    s = int(np.count_nonzero(dy > 0)) - int(np.count_nonzero(dy < 0))

    ordered = np.sort(y)
    below = np.searchsorted(ordered, y, side="left").astype(np.float64)  # values strictly below y_k
    above = n - np.searchsorted(ordered, y, side="right").astype(np.float64)  # strictly above
    tied = (n - 1) - below - above  # other values equal to y_k
    v = 1.0 - float(tied.sum()) / (n * (n - 1))
    c = float(np.sum(below * (below - 1) + above * (above - 1) - 2.0 * below * above)) / (
        n * (n - 1) * (n - 2)
    )
    a = np.bincount(i, minlength=n).astype(np.float64)
    b = np.bincount(j, minlength=n).astype(np.float64)
    shared = float(np.sum(a * (a - 1) / 2 + b * (b - 1) / 2 - a * b))
    return slope, s, m * v + 2.0 * c * shared, m


def _mk_p_greater(s: int, var_s: float) -> float:
    """One-sided p-value of Mann-Kendall against an increasing trend (continuity-corrected)."""
    if var_s <= 0.0:
        return 1.0  # all values tied: no evidence of a trend
    z = (s - (s > 0) + (s < 0)) / math.sqrt(var_s)
    return 0.5 * math.erfc(z / math.sqrt(2.0))
