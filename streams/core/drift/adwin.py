"""ADWIN (ADaptive WINdowing): a change detector on the mean with a false-alarm guarantee.

Why ADWIN: it needs no window size and no scale. It keeps the longest recent
window ``W`` whose two halves ``W0 | W1`` (at every split) have means closer than
a Bernstein-type bound ``eps_cut(|W0|, |W1|, var(W), delta)``; when some split
violates the bound, the older part is dropped and a change is reported. The
probability of a false alarm at any given time is bounded by ``delta`` (Bifet &
Gavaldà 2007, Theorem 3), which is what makes it fit the 0/1 error stream of a
classifier, values in ``[0, 1]`` being the setting of that bound.

Why a wrapper: the per-value work (bucket insert, exponential-histogram
compression, the cut scan every ``clock`` values) is done by river's Rust
helper ``river._river_rust.drift.AdaptiveWindowing`` at about 0.2 µs per value,
which a numpy port cannot beat (the cut scan is sequential). ``Adwin`` adds the
batch interface, the alarm description (direction and the two means) and a
versioned JSON state.

Parity with river: after a detection ``river.drift.ADWIN.update`` throws the
whole helper away and starts a fresh one on the next value; ``Adwin`` does the
same (eagerly, right after the alarm), so that a stream fed to
``river.drift.ADWIN`` with the same parameters and to ``Adwin.update_many``
raises alarms on exactly the same values (the tests check this).

Reference: Albert Bifet and Ricard Gavaldà, "Learning from Time-Changing Data
with Adaptive Windowing", SIAM International Conference on Data Mining (SDM),
2007, pp. 443-448, doi:10.1137/1.9781611972771.42.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import math
import operator
import struct
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from river._river_rust.drift import AdaptiveWindowing

from streams.core.drift.base import (
    Detection,
    FloatArray,
    as_batch,
    best_split,
    check_envelope,
    param_float,
    param_int,
    restore_params,
    state_int,
    state_str,
)

__all__ = ["DEFAULT_DELTA", "RIVER_VERSION", "Adwin"]

_KIND = "adwin"
#: The helper's binary state is only read back by the river version that wrote it.
RIVER_VERSION = importlib.metadata.version("river")
_PARAMS = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")

#: Driftline's default significance, 20x below river's 0.002. On stationary 0/1 error streams both
#: raise no false alarm (``loadtest/bench_drift.py``, 3M values); the difference is on unbounded
#: input, where ADWIN's ``[0, 1]`` assumption fails: on heavy-tailed |2 t5| "regression errors"
#: river's value raised 12 false alarms per million and this one 2, on N(100, 15) 3 and 0. The
#: price is ~40% more delay (error rate 0.1 -> 0.2: a median 439 values instead of 311).
DEFAULT_DELTA = 1e-4

# Layout of the helper's serde/bincode state (river 0.26, fixed-int little endian,
# ``usize`` as u64, ``Vec`` as u64 length + items). Parsed before ``__setstate__``
# because the helper panics (a BaseException that also prints a Rust backtrace)
# on truncated bytes and indexes out of bounds later on inconsistent ones.
_HEAD = struct.Struct("<diQdd")  # delta, clock, max_buckets, min_window_length, grace_period
_SUMS = struct.Struct("<dddd")  # total, variance, width, total_width
_COUNTS = struct.Struct("<iiii")  # n_buckets, max_n_buckets, tick, n_detections
_LEN = struct.Struct("<Q")
_BUCKET = struct.Struct("<QQ")  # max_size, current_idx
_TAIL = struct.Struct("<diQii")  # the Python wrapper's copy of the constructor arguments
_MAX_LEVELS = 64  # bucket level i holds summaries of 2**i values (u64 sizes)


class Adwin:
    """ADWIN change detector fed in numpy batches, with a JSON state.

    Parameters
    ----------
    delta
        Significance of the cut test, in ``(0, 1)``: smaller means fewer false
        alarms and later detections. Driftline's default is ``DEFAULT_DELTA``
        (river's is 0.002).
    clock
        The cut test runs every ``clock`` values (river's default, 32): the
        detection is at most ``clock - 1`` values late, and the test costs 32x less.
    max_buckets
        Summaries kept per bucket level before two are merged (ADWIN2's ``M``);
        more is a finer window at more memory.
    min_window_length
        Smallest sub-window length considered for a cut.
    grace_period
        No cut is tested before the window holds more than this many values.

    Notes
    -----
    The bound assumes values in ``[0, 1]`` (its ``2/3 * delta' * m`` term is in
    the units of the data), so feed it 0/1 errors; regression errors in arbitrary
    units are better served by the standardized Page-Hinkley of
    ``streams.core.drift.sequential``.

    A :class:`~streams.core.drift.base.Detection` describes the window ADWIN held
    when it fired (every value since its last reset), split at the
    maximum-likelihood change point (:func:`~streams.core.drift.base.best_split`;
    candidate splits are the positions in the current batch and, before it, the
    boundaries of ADWIN's buckets, exponentially coarser with age): ``mean_before`` and
    ``mean_after`` are the means of the two parts, ``statistic`` their absolute
    difference and ``threshold`` ADWIN's cut bound ``eps_cut`` for that split
    and that window's variance. The helper does not say which split it cut at, so
    this describes the alarm rather than re-running the test; the means of what
    ADWIN dropped and kept would mix both regimes (it drops old buckets until no
    split is significant any more).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> errors = np.concatenate([rng.random(4000) < 0.1, rng.random(4000) < 0.3]).astype(float)
    >>> det = Adwin()
    >>> alarms = [(k, d) for k, batch in enumerate(np.split(errors, 16)) for d in det.update_many(batch)]
    >>> [(k * 500 + d.index, d.direction, round(d.mean_before, 2), round(d.mean_after, 2)) for k, d in alarms]
    [(4095, 1, 0.1, 0.4)]
    >>> Adwin.from_state(det.to_state()).n_seen
    8000
    """

    def __init__(
        self,
        delta: float = DEFAULT_DELTA,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        self.delta = param_float("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
        self.clock = param_int("clock", clock, 1)
        self.max_buckets = param_int("max_buckets", max_buckets, 1, 1024)
        self.min_window_length = param_int("min_window_length", min_window_length, 1)
        self.grace_period = param_int("grace_period", grace_period, 0)
        self._n_seen = 0
        self._n_detections = 0
        self._helper = self._new_helper()

    @property
    def n_seen(self) -> int:
        """Values fed since construction (across state round trips)."""
        return self._n_seen

    @property
    def n_detections(self) -> int:
        """Alarms raised since construction (across state round trips)."""
        return self._n_detections

    @property
    def width(self) -> int:
        """Length of the current adaptive window (values since the last cut or reset)."""
        return int(self._helper.get_width())

    def params(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {name: getattr(self, name) for name in _PARAMS}

    def _new_helper(self) -> Any:
        return AdaptiveWindowing(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )

    def update_many(self, values: FloatArray) -> list[Detection]:
        """Feed a batch of finite values; return the alarms, ``index`` relative to this batch."""
        x = as_batch(values)
        xs = x.tolist()
        n = len(xs)
        detections: list[Detection] = []
        # Width, sum and M2 of the window when this batch started (or at the last reset), to know
        # the window before the cut at an alarm: the helper only exposes it after the cut.
        seg_start = 0
        window0 = self._window()
        # And its bucket summaries (serialised, ~1 µs), parsed only at an alarm for candidate splits.
        buckets0 = bytes(self._helper.__getstate__()) if window0[0] > 0 else b""
        it = iter(xs)
        # any() over map() runs the loop in C and stops right after the first alarm.
        while any(map(self._helper.update, it)):
            i = n - operator.length_hint(it) - 1
            detections.append(self._describe(x[seg_start : i + 1], window0, buckets0, i))
            # river resets the whole detector on the update after an alarm; doing it now is the same.
            self._helper = self._new_helper()
            seg_start, window0, buckets0 = i + 1, (0.0, 0.0, 0.0), b""
        self._n_seen += n
        self._n_detections += len(detections)
        return detections

    def _window(self) -> tuple[float, float, float]:
        return (
            float(self._helper.get_width()),
            float(self._helper.get_total()),
            float(self._helper.get_variance()),
        )

    def _describe(
        self, seg: FloatArray, window0: tuple[float, float, float], buckets0: bytes, i: int
    ) -> Detection:
        """Describe an alarm on ``seg[-1]`` (batch index ``i``); ``seg`` follows a window ``window0``
        whose serialised helper is ``buckets0``."""
        width0, total0, m2_0 = window0
        prefix = total0 + np.cumsum(seg)
        width = width0 + len(seg)
        # Candidate splits: the bucket boundaries of the older window, then before each value of seg.
        old_counts, old_sums = _bucket_prefixes(buckets0, self.max_buckets)
        counts = np.concatenate((old_counts, width0 + np.arange(len(seg), dtype=np.float64)))
        sums = np.concatenate((old_sums, [total0], prefix[:-1]))
        split = best_split(counts, sums, width, float(prefix[-1]))
        if split is None:  # no split inside the window: fall back to what ADWIN dropped and kept
            kept_n, kept_sum = float(self._helper.get_width()), float(self._helper.get_total())
            dropped = max(width - kept_n, 1.0)
            split = (dropped, (float(prefix[-1]) - kept_sum) / dropped, kept_sum / max(kept_n, 1.0))
        n1, mean_before, mean_after = split
        # M2 of the window before the cut (Chan et al.'s merge), for the bound's variance.
        mean_seg = float(np.mean(seg))
        m2 = m2_0 + float(np.sum((seg - mean_seg) ** 2))
        if width0 > 0:
            d = mean_seg - total0 / width0
            m2 += d * d * width0 * len(seg) / width
        return Detection(
            index=i,
            direction=1 if mean_after >= mean_before else -1,
            mean_before=mean_before,
            mean_after=mean_after,
            statistic=abs(mean_after - mean_before),
            threshold=self._epsilon(width, n1, width - n1, m2 / width),
        )

    def _epsilon(self, width: float, n0: float, n1: float, variance: float) -> float:
        """ADWIN's cut bound (river's ``evaluate_cut``) for sub-windows of ``n0`` and ``n1`` values."""
        delta_prime = math.log(2.0 * math.log(max(width, 2.0)) / self.delta)
        m_recip = 1.0 / max(n0 - self.min_window_length + 1.0, 1.0) + 1.0 / max(
            n1 - self.min_window_length + 1.0, 1.0
        )
        return math.sqrt(2.0 * m_recip * max(variance, 0.0) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: parameters, counters and the helper's bytes in base64.

        The helper's bytes are its own serde/bincode encoding (``__getstate__``),
        tied to the river version that wrote them, which is recorded.
        """
        raw = bytes(self._helper.__getstate__())
        return {
            "v": 1,
            "kind": _KIND,
            "river": RIVER_VERSION,
            "params": self.params(),
            "n_seen": self._n_seen,
            "n_detections": self._n_detections,
            "helper": base64.b64encode(raw).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from ``to_state``.

        Raises ``ValueError("adwin state: ...")`` when the state was written by
        another river version (the helper's binary layout may differ) or is
        malformed; the caller then starts a fresh detector.
        """
        s = check_envelope(state, _KIND)
        version = state_str(s, "river", _KIND)
        if version != RIVER_VERSION:
            raise ValueError(f"adwin state: written by river {version}, this is river {RIVER_VERSION}")
        det = restore_params(cls, s, _KIND, _PARAMS)
        det._n_seen = state_int(s, "n_seen", _KIND)
        det._n_detections = state_int(s, "n_detections", _KIND)
        if det._n_detections > det._n_seen:
            raise ValueError("adwin state: n_detections exceeds n_seen")
        encoded = state_str(s, "helper", _KIND)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("adwin state: helper is not valid base64") from None
        _check_helper_bytes(raw, det)
        try:
            det._helper.__setstate__(raw)
        except Exception as exc:  # the helper's own decoding error, whatever its type
            raise ValueError(f"adwin state: helper rejected its bytes ({exc})") from None
        return det


def _bucket_prefixes(raw: bytes, max_buckets: int) -> tuple[FloatArray, FloatArray]:
    """Count and sum of the window before each bucket boundary, oldest first, from the helper's bytes.

    Level ``i`` holds summaries of ``2**i`` values, oldest in the highest level
    and, within a level, at index 0 (the helper's own scan order in ``detect_change``).
    """
    empty = np.zeros(0)
    if not raw:
        return empty, empty
    cap = max_buckets + 1
    bucket_size = _BUCKET.size + 2 * (_LEN.size + 8 * cap)
    fixed = _HEAD.size + _SUMS.size + _COUNTS.size + _LEN.size
    (levels,) = _LEN.unpack_from(raw, fixed - _LEN.size)
    sizes: list[float] = []
    totals: list[float] = []
    for level in reversed(range(levels)):
        off = fixed + level * bucket_size
        _, current = _BUCKET.unpack_from(raw, off)
        t = np.frombuffer(raw, dtype="<f8", count=current, offset=off + _BUCKET.size + _LEN.size)
        sizes += [float(1 << level)] * current
        totals += t.tolist()
    return np.cumsum(sizes)[:-1], np.cumsum(totals)[:-1]


def _check_helper_bytes(raw: bytes, det: Adwin) -> None:
    """Walk the helper's bincode layout; ``ValueError`` unless it is complete and consistent with ``det``."""
    problem = _helper_bytes_problem(raw, det)
    if problem:
        raise ValueError(f"adwin state: helper {problem}")


def _helper_bytes_problem(raw: bytes, det: Adwin) -> str:
    size = len(raw)
    fixed = _HEAD.size + _SUMS.size + _COUNTS.size + _LEN.size
    if size < fixed + _TAIL.size:
        return f"is truncated ({size} bytes)"
    head = _HEAD.unpack_from(raw, 0)
    total, variance, width, total_width = _SUMS.unpack_from(raw, _HEAD.size)
    counts = _COUNTS.unpack_from(raw, _HEAD.size + _SUMS.size)
    (levels,) = _LEN.unpack_from(raw, fixed - _LEN.size)
    if not 1 <= levels <= _MAX_LEVELS:
        return f"has {levels} bucket levels"
    cap = det.max_buckets + 1
    bucket_size = _BUCKET.size + 2 * (_LEN.size + 8 * cap)
    if size != fixed + levels * bucket_size + _TAIL.size:
        return f"has {size} bytes, expected {fixed + levels * bucket_size + _TAIL.size} for {levels} levels"
    off = fixed
    counted = 0
    for level in range(levels):
        max_size, current = _BUCKET.unpack_from(raw, off)
        (n_totals,) = _LEN.unpack_from(raw, off + _BUCKET.size)
        (n_variances,) = _LEN.unpack_from(raw, off + _BUCKET.size + _LEN.size + 8 * cap)
        if max_size != det.max_buckets or current > det.max_buckets or n_totals != cap or n_variances != cap:
            return f"bucket level {level} is inconsistent with max_buckets={det.max_buckets}"
        totals = np.frombuffer(raw, dtype="<f8", count=cap, offset=off + _BUCKET.size + _LEN.size)
        variances = np.frombuffer(raw, dtype="<f8", count=cap, offset=off + bucket_size - 8 * cap)
        if not (np.isfinite(totals).all() and np.isfinite(variances).all()):
            return f"bucket level {level} holds non-finite numbers"
        counted += current << level
        off += bucket_size
    if not all(map(math.isfinite, (total, variance, width, total_width))):
        return "holds non-finite window sums"
    if width != counted or min(counts) < 0:
        return "has a window width inconsistent with its buckets"
    expected_head = (
        det.delta,
        det.clock,
        det.max_buckets,
        float(det.min_window_length),
        float(det.grace_period),
    )
    expected_tail = (det.delta, det.clock, det.max_buckets, det.min_window_length, det.grace_period)
    if head != expected_head or _TAIL.unpack_from(raw, off) != expected_tail:
        return "was written with parameters other than params"
    return ""
