"""Page-Hinkley: a CUSUM test on deviations from the running mean, vectorised over a batch.

Why Page-Hinkley: it is the cheapest sequential test for a shift in the mean
(a handful of sums per value) and, among tests that do not know the post-change
mean, the CUSUM family has the shortest worst-case detection delay for a given
false-alarm rate (Lorden 1971). It accumulates ``dev_t - delta`` where
``dev_t = x_t - mean(x_1..x_t)`` and ``delta`` is the magnitude of change that
is tolerated; it fires when the sum has risen more than ``threshold`` above its
running minimum (an increase) or, symmetrically, fallen below its running
maximum (a decrease).

This is an exact re-implementation of ``river.drift.PageHinkley`` (same
parameters, same defaults, same quirks: the decrease maximum starts at ``-1``,
the ``alpha`` forgetting factor multiplies the sums, nothing fires before
``min_instances`` values, the detector resets after an alarm), so that a stream
fed to river one value at a time and to :meth:`PageHinkley.update_many` raises
alarms at the same positions, up to float rounding. river's version costs a few
µs per value in Python; here the recurrences are solved for a whole batch:
cumulative sums for the running mean (and for the sums when ``alpha == 1``),
``scipy.signal.lfilter`` for the first-order recurrence ``s_t = alpha *
s_{t-1} + u_t`` when ``alpha < 1``, ``np.minimum.accumulate`` /
``np.maximum.accumulate`` for the running extrema. After an alarm the pass is
restarted from the next value on a reset state.

Not scale-invariant: ``delta`` and ``threshold`` are in the units of the data,
so river's defaults (0.005 and 50) fire continually on data of unit variance
and never on data of variance 1e-6. Driftline therefore runs it on z-scores
(``streams.core.drift.sequential.Standardized``).

References: E. S. Page, "Continuous Inspection Schemes", Biometrika 41(1/2),
1954, pp. 100-115, doi:10.2307/2333009. G. Lorden, "Procedures for Reacting to
a Change in Distribution", Annals of Mathematical Statistics 42(6), 1971,
doi:10.1214/aoms/1177693055. M. Basseville and I. Nikiforov, *Detection of
Abrupt Changes: Theory and Application*, Prentice Hall, 1993, §2.2 (the
change-time estimate used for ``mean_before``/``mean_after``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np
from scipy.signal import lfilter

from streams.core.drift.base import (
    Detection,
    FloatArray,
    as_batch,
    best_split,
    check_envelope,
    param_float,
    param_int,
    restore_params,
    state_float,
    state_int,
)

__all__ = ["PageHinkley"]

_KIND = "page_hinkley"
_PARAMS = ("min_instances", "delta", "threshold", "alpha", "mode")
_MODES = ("up", "down", "both")
Mode = Literal["up", "down", "both"]


class PageHinkley:
    """Page-Hinkley change detector (river-exact), fed in numpy batches, with a JSON state.

    Parameters
    ----------
    min_instances
        No alarm before this many values since the last reset.
    delta
        Tolerated magnitude of change, in data units (subtracted from / added to
        each deviation), ``>= 0``.
    threshold
        Alarm when the cumulative statistic exceeds this (``lambda``), in data
        units, ``> 0``.
    alpha
        Forgetting factor of the cumulative sums, in ``(0, 1]``; 1 forgets nothing.
    mode
        ``"up"`` watches increases of the mean, ``"down"`` decreases, ``"both"`` both.

    Notes
    -----
    A :class:`~streams.core.drift.base.Detection` reports ``statistic``, the test
    value that crossed ``threshold`` (with ``mode="both"`` and both tests over
    the threshold at once, the larger), and the means before and after the
    likeliest change point (:func:`~streams.core.drift.base.best_split`, in the
    alarm's direction) among: the values of the current batch since the last
    reset, and the CUSUM's classical change-time estimate, the last value at which
    the cumulative sum hit its running minimum (maximum for a decrease), which is
    kept across batches. That estimate alone tends to precede the change by
    O((sd / delta)**2) values and would dilute ``mean_after``.

    Examples
    --------
    A unit-variance stream whose mean steps from 0 to 1 at value 1000:

    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> x = np.concatenate([rng.normal(0, 1, 1000), rng.normal(1, 1, 1000)])
    >>> ph = PageHinkley(delta=0.25, threshold=20)
    >>> [(d.index, d.direction, round(d.mean_before, 2), round(d.mean_after, 2)) for d in ph.update_many(x)]
    [(1034, 1, 0.04, 0.97)]
    >>> PageHinkley.from_state(ph.to_state()).n_seen
    2000
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "both",
    ) -> None:
        self.min_instances = param_int("min_instances", min_instances, 0)
        self.delta = param_float("delta", delta, 0.0, math.inf, high_open=True)
        self.threshold = param_float("threshold", threshold, 0.0, math.inf, low_open=True, high_open=True)
        self.alpha = param_float("alpha", alpha, 0.0, 1.0, low_open=True)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode: Mode = mode
        self._n_seen = 0
        self._n_detections = 0
        self._reset()

    def _reset(self) -> None:
        self._n = 0  # values since the last reset (river's stats.Mean().n)
        self._mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0  # sic: river starts the maximum at -1, not -inf
        # Change-time estimates: count and running mean at the last new extremum.
        self._n_at_min = 0
        self._mean_at_min = 0.0
        self._n_at_max = 0
        self._mean_at_max = 0.0

    @property
    def n_seen(self) -> int:
        """Values fed since construction (across state round trips)."""
        return self._n_seen

    @property
    def n_detections(self) -> int:
        """Alarms raised since construction (across state round trips)."""
        return self._n_detections

    def params(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {name: getattr(self, name) for name in _PARAMS}

    def update_many(self, values: FloatArray) -> list[Detection]:
        """Feed a batch of finite values; return the alarms, ``index`` relative to this batch."""
        x = as_batch(values)
        detections: list[Detection] = []
        pos = 0
        while pos < len(x):
            hit = self._scan(x[pos:], pos)
            if hit is None:
                break
            detections.append(hit)
            self._reset()  # river resets on the update after an alarm; doing it now is the same
            pos = hit.index + 1
        self._n_seen += len(x)
        self._n_detections += len(detections)
        return detections

    def update_one(self, value: float) -> list[Detection]:
        """``update_many([value])`` without numpy when it does not alarm (same results, bit for bit)."""
        if math.isfinite(value) and self._step(value):
            self._n_seen += 1
            return []
        return self.update_many(np.asarray([value], dtype=np.float64))

    def _step(self, x: float) -> bool:
        """One value without numpy (chunk statistics arrive one at a time); False if it would alarm.

        The same arithmetic as :meth:`_scan` on a one-value segment, so results
        are bit-identical to it; an alarm is left to :meth:`_scan`, which also estimates
        the change point, and nothing is changed here in that case.
        """
        n = self._n + 1
        mean = self._mean + (x - self._mean) / n
        dev = x - mean
        s_inc = self.alpha * self._sum_increase + (dev - self.delta)
        s_dec = self.alpha * self._sum_decrease + (dev + self.delta)
        if self.alpha == 1.0:
            s_inc, s_dec = self._sum_increase + (dev - self.delta), self._sum_decrease + (dev + self.delta)
        run_min, run_max = min(self._min_increase, s_inc), max(self._max_decrease, s_dec)
        up = s_inc - run_min > self.threshold and self.mode != "down"
        down = run_max - s_dec > self.threshold and self.mode != "up"
        if (up or down) and n >= self.min_instances:
            return False
        if s_inc < self._min_increase:
            self._n_at_min, self._mean_at_min = n, mean
        if s_dec > self._max_decrease:
            self._n_at_max, self._mean_at_max = n, mean
        self._n, self._mean = n, mean
        self._sum_increase, self._sum_decrease = s_inc, s_dec
        self._min_increase, self._max_decrease = run_min, run_max
        return True

    def _scan(self, seg: FloatArray, offset: int) -> Detection | None:
        """Run the recurrences over ``seg``; stop at the first alarm (returned) or at its end."""
        m = len(seg)
        if m == 1 and self._step(float(seg[0])):
            return None
        n0, mean0 = self._n, self._mean
        count = n0 + np.arange(1, m + 1, dtype=np.float64)
        mean = mean0 + np.cumsum(seg - mean0) / count
        dev = seg - mean
        if self.alpha == 1.0:
            s_inc = self._sum_increase + np.cumsum(dev - self.delta)
            s_dec = self._sum_decrease + np.cumsum(dev + self.delta)
        else:
            u = np.vstack([dev - self.delta, dev + self.delta])
            zi = self.alpha * np.array([[self._sum_increase], [self._sum_decrease]])
            y, _ = lfilter([1.0], [1.0, -self.alpha], u, axis=1, zi=zi)
            s_inc, s_dec = y[0], y[1]
        prev_min = np.minimum.accumulate(np.concatenate(([self._min_increase], s_inc)))
        prev_max = np.maximum.accumulate(np.concatenate(([self._max_decrease], s_dec)))
        run_min, run_max = prev_min[1:], prev_max[1:]
        test_inc = s_inc - run_min
        test_dec = run_max - s_dec
        if self.mode == "up":
            fire = test_inc > self.threshold
        elif self.mode == "down":
            fire = test_dec > self.threshold
        else:
            fire = (test_inc > self.threshold) | (test_dec > self.threshold)
        fire &= count >= self.min_instances
        end = int(np.argmax(fire)) if fire.any() else m - 1

        # Last new extremum (strict, as river) at or before `end`, for the change-time estimate.
        new_min = np.flatnonzero(s_inc[: end + 1] < prev_min[: end + 1])
        new_max = np.flatnonzero(s_dec[: end + 1] > prev_max[: end + 1])
        if new_min.size:
            j = int(new_min[-1])
            self._n_at_min, self._mean_at_min = self._n + j + 1, float(mean[j])
        if new_max.size:
            j = int(new_max[-1])
            self._n_at_max, self._mean_at_max = self._n + j + 1, float(mean[j])
        self._n += end + 1
        self._mean = float(mean[end])
        self._sum_increase = float(s_inc[end])
        self._sum_decrease = float(s_dec[end])
        self._min_increase = float(run_min[end])
        self._max_decrease = float(run_max[end])
        if not fire[end]:
            return None

        up = float(test_inc[end]) if self.mode != "down" else -math.inf
        down = float(test_dec[end]) if self.mode != "up" else -math.inf
        direction = 1 if up >= down else -1  # the larger test is over the threshold
        if direction > 0:
            n_at, mean_at = self._n_at_min, self._mean_at_min
        else:
            n_at, mean_at = self._n_at_max, self._mean_at_max
        # Candidate change points: before this segment, after each of its values, and the CUSUM's own
        # estimate (the last running extremum, possibly in an earlier batch); keep the likeliest.
        sums = count * mean
        split = best_split(
            np.concatenate(([n0], count[:end], [n_at])),
            np.concatenate(([n0 * mean0], sums[:end], [n_at * mean_at])),
            float(count[end]),
            float(sums[end]),
            direction,
        )
        _, mean_before, mean_after = split if split is not None else (0.0, self._mean, self._mean)
        return Detection(
            index=offset + end,
            direction=direction,
            mean_before=mean_before,
            mean_after=mean_after,
            statistic=up if direction > 0 else down,
            threshold=self.threshold,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: parameters, counters and the running sums (``min_increase`` is
        ``None`` right after a reset, where river holds ``inf``)."""
        return {
            "v": 1,
            "kind": _KIND,
            "params": self.params(),
            "n_seen": self._n_seen,
            "n_detections": self._n_detections,
            "n": self._n,
            "mean": self._mean,
            "sum_increase": self._sum_increase,
            "sum_decrease": self._sum_decrease,
            "min_increase": None if math.isinf(self._min_increase) else self._min_increase,
            "max_decrease": self._max_decrease,
            "n_at_min": self._n_at_min,
            "mean_at_min": self._mean_at_min,
            "n_at_max": self._n_at_max,
            "mean_at_max": self._mean_at_max,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from ``to_state``; ``ValueError("page_hinkley state: ...")`` when malformed."""
        s = check_envelope(state, _KIND)
        det = restore_params(cls, s, _KIND, _PARAMS)
        det._n_seen = state_int(s, "n_seen", _KIND)
        det._n_detections = state_int(s, "n_detections", _KIND)
        det._n = state_int(s, "n", _KIND)
        det._n_at_min = state_int(s, "n_at_min", _KIND)
        det._n_at_max = state_int(s, "n_at_max", _KIND)
        if det._n_detections > det._n_seen or det._n > det._n_seen:
            raise ValueError("page_hinkley state: counts exceed n_seen")
        if max(det._n_at_min, det._n_at_max) > det._n:
            raise ValueError("page_hinkley state: change-time estimate after the last value")
        det._mean = state_float(s, "mean", _KIND)
        det._sum_increase = state_float(s, "sum_increase", _KIND)
        det._sum_decrease = state_float(s, "sum_decrease", _KIND)
        det._max_decrease = state_float(s, "max_decrease", _KIND)
        det._mean_at_min = state_float(s, "mean_at_min", _KIND)
        det._mean_at_max = state_float(s, "mean_at_max", _KIND)
        min_increase = state_float(s, "min_increase", _KIND, allow_none=True)
        if math.isnan(min_increase) != (det._n == 0):
            raise ValueError("page_hinkley state: min_increase must be None exactly when n is 0")
        det._min_increase = math.inf if det._n == 0 else min_increase
        return det

