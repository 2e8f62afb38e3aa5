"""GPU saturation: utilization or memory of one GPU pinned near its maximum for minutes.

A saturated GPU queues requests: latency climbs while throughput stays
flat. Brief spikes to 100 % are normal (one large batch), so saturation is
a *sustained* condition, with hysteresis so that a GPU hovering around the
threshold does not flap:

* **active** when a metric is at or above its threshold continuously for
  ``sustained_ms`` of event time;
* **cleared** when every active metric is strictly below its (lower) clear
  level continuously for ``sustained_ms / 2``.

Utilization and memory are two independent state machines; the GPU is
saturated while either is. Utilization is NVML's
``nvmlDeviceGetUtilizationRates().gpu``: "percent of time over the past
sample period during which one or more kernels was executing on the GPU"
(NVIDIA NVML API Reference, ``nvmlUtilization_t``). It is a time fraction, not
an occupancy: a GPU running one small kernel back to back reads 100 %, so
treat the condition as "the GPU is never idle", which is what queueing needs.
Memory is ``used / total``; frameworks that pre-allocate (TensorFlow maps
nearly all memory by default; vLLM reserves ``gpu_memory_utilization=0.9``)
sit near their reservation forever, so ``memory_threshold`` can be ``None``
to watch utilization only.

**Missing values** (NaN: the SDK could not read NVML, or ``memory_total_bytes``
is 0) are skipped: they neither extend a run nor break it, so a missing
metric can neither trigger nor clear. A run does not bridge a gap longer than
``max_gap_ms`` between two reported values of the metric: continuity that was
not observed is not assumed, in either direction.

**Out-of-order samples.** Each batch is processed in event-time order;
samples older than the newest one already processed are dropped and counted
(:attr:`GpuSaturation.late_samples`): a hysteresis state machine cannot be
rewound, and telemetry of one GPU comes from one process in order anyway.

One detector per GPU (the worker keys them by model, host or pod, and GPU
index). ``update`` is a Python loop over the samples of a batch: about 1 µs
per sample plus about 25 µs of numpy overhead per call, for a telemetry
stream of one sample per GPU every few seconds.
"""

from __future__ import annotations

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

__all__ = ["GpuSaturation"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_KIND = "gpu_saturation"
_VERSION = 1
_PARAMS = (
    "util_threshold_percent",
    "memory_threshold",
    "sustained_ms",
    "clear_below_percent",
    "memory_clear_below",
    "max_gap_ms",
)
_STATE_KEYS = frozenset(
    {
        "v",
        "kind",
        "params",
        "utilization",
        "memory",
        "active",
        "since_ms",
        "last_ms",
        "late_samples",
        "collapsed_flips",
    }
)
_TRACK_KEYS = frozenset({"active", "since_ms", "run_start_ms", "last_ms", "last_value"})


class _Track:
    """Hysteresis state machine of one metric (values in percent)."""

    __slots__ = (
        "active",
        "clear_ms",
        "hi",
        "last_ms",
        "last_value",
        "lo",
        "max_gap_ms",
        "run_start_ms",
        "since_ms",
        "sustained_ms",
    )

    def __init__(self, hi: float, lo: float, sustained_ms: int, clear_ms: int, max_gap_ms: int) -> None:
        self.hi, self.lo = hi, lo
        self.sustained_ms, self.clear_ms, self.max_gap_ms = sustained_ms, clear_ms, max_gap_ms
        self.active = False
        self.since_ms: int | None = None  # start of the run that set the current state (None: never active)
        self.run_start_ms: int | None = None  # start of the current run towards the other state
        self.last_ms: int | None = None  # time of the last reported value
        self.last_value: float | None = None

    def step(self, t: int, x: float) -> bool:
        """Feed one reported value; whether the state flipped."""
        if self.last_ms is not None and t - self.last_ms > self.max_gap_ms:
            self.run_start_ms = None  # unobserved time is not part of any run
        self.last_ms, self.last_value = t, x
        towards = x < self.lo if self.active else x >= self.hi
        if not towards:
            self.run_start_ms = None
            return False
        if self.run_start_ms is None:
            self.run_start_ms = t
        if t - self.run_start_ms < (self.clear_ms if self.active else self.sustained_ms):
            return False
        self.active, self.since_ms, self.run_start_ms = not self.active, self.run_start_ms, None
        return True

    def to_state(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "since_ms": self.since_ms,
            "run_start_ms": self.run_start_ms,
            "last_ms": self.last_ms,
            "last_value": self.last_value,
        }

    def load(self, raw: Any, name: str) -> None:
        if not isinstance(raw, Mapping) or set(raw) != _TRACK_KEYS:
            raise ValueError(f"gpu state {name!r} must be an object with keys {sorted(_TRACK_KEYS)}")
        if not isinstance(raw["active"], bool):
            raise ValueError(f"gpu state {name!r}.active must be a bool")
        self.active = raw["active"]
        self.since_ms = opt_int_field(raw, "since_ms", name)
        self.run_start_ms = opt_int_field(raw, "run_start_ms", name)
        self.last_ms = opt_int_field(raw, "last_ms", name)
        v = raw["last_value"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise ValueError(f"gpu state {name!r}.last_value must be a finite number or null")
        self.last_value = None if v is None else float(v)
        if self.active and self.since_ms is None:
            raise ValueError(f"gpu state {name!r}.since_ms must be an int when active")
        if self.run_start_ms is not None and (self.last_ms is None or self.run_start_ms > self.last_ms):
            raise ValueError(f"gpu state {name!r}.run_start_ms must be <= last_ms")


class GpuSaturation:
    """Sustained saturation of one GPU (utilization or memory), with hysteresis on event time.

    Parameters
    ----------
    util_threshold_percent
        Utilization (percent of time busy) that counts as saturated. 95, not
        100: NVML samples over a period of 1/6 s to 1 s and a saturated GPU
        still shows idle slivers between batches.
    memory_threshold
        Fraction of memory used that counts as saturated, or ``None`` to
        ignore memory (pre-allocating frameworks). 0.95 leaves the
        allocator's usual fragmentation headroom.
    sustained_ms
        How long a metric must stay at or above its threshold to activate
        (5 minutes: longer than a burst or a model reload, short enough to act
        before a latency SLO burns); clearing needs ``sustained_ms // 2``.
    clear_below_percent
        Utilization below which a saturated GPU starts clearing; the 10-point
        band below the threshold absorbs the jitter of a busy GPU.
    memory_clear_below
        Memory fraction below which a memory-saturated GPU starts clearing.
    max_gap_ms
        Longest gap between two reported values that a run may span (a
        minute: a dozen missed telemetry periods).

    Notes
    -----
    :class:`Condition` values are in percent (memory as ``100 * used / total``):
    ``value`` is the last reported value of the metric whose run flipped the
    state (``evidence["metric"]``: ``"utilization"`` or ``"memory"``) and
    ``threshold`` its threshold (active) or clear level (cleared). ``since_ms``
    is the start of that run; ``evidence["detected_ms"]`` the sample that
    completed it. If one batch holds a whole episode (activates and clears),
    only the net change is reported, and the hidden flips are counted in
    :attr:`collapsed_flips`.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.ops.gpu import GpuSaturation
    >>> rng = np.random.default_rng(3)
    >>> t_ms = np.arange(0, 20 * 60_000, 5_000, dtype=np.int64)  # 20 minutes every 5 s
    >>> busy = (t_ms >= 2 * 60_000) & (t_ms < 12 * 60_000)  # saturated from minute 2 to 12
    >>> util = np.where(busy, rng.uniform(96, 100, t_ms.size), rng.uniform(20, 60, t_ms.size))
    >>> util[50] = np.nan  # not reported: neither breaks nor extends the run
    >>> used = np.full(t_ms.size, 30e9)
    >>> total = np.full(t_ms.size, 80e9)
    >>> gpu = GpuSaturation()
    >>> for i in range(0, t_ms.size, 6):  # a batch every 30 s
    ...     c = gpu.update(t_ms[i:i + 6], util[i:i + 6], used[i:i + 6], total[i:i + 6])
    ...     if c is not None:
    ...         print(c.active, c.since_ms // 1000, c.evidence["detected_ms"] // 1000, c.evidence["metric"])
    True 120 420 utilization
    False 720 870 utilization
    >>> GpuSaturation.from_state(gpu.to_state()).to_state() == gpu.to_state()
    True
    """

    def __init__(
        self,
        util_threshold_percent: float = 95.0,
        memory_threshold: float | None = 0.95,
        sustained_ms: int = 5 * 60_000,
        clear_below_percent: float = 85.0,
        memory_clear_below: float = 0.85,
        max_gap_ms: int = 60_000,
    ) -> None:
        self.util_threshold_percent = float_param(
            "util_threshold_percent", util_threshold_percent, 0.0, 100.0
        )
        if self.util_threshold_percent <= 0.0:
            raise ValueError(f"util_threshold_percent must be in (0, 100], got {util_threshold_percent!r}")
        self.clear_below_percent = float_param(
            "clear_below_percent", clear_below_percent, 0.0, self.util_threshold_percent
        )
        self.memory_threshold = (
            None if memory_threshold is None else float_param("memory_threshold", memory_threshold, 0.0, 1.0)
        )
        if self.memory_threshold is not None and self.memory_threshold <= 0.0:
            raise ValueError(f"memory_threshold must be in (0, 1] or None, got {memory_threshold!r}")
        self.memory_clear_below = float_param(
            "memory_clear_below",
            memory_clear_below,
            0.0,
            1.0 if self.memory_threshold is None else self.memory_threshold,
        )
        self.sustained_ms = int_param("sustained_ms", sustained_ms, minimum=1)
        self.max_gap_ms = int_param("max_gap_ms", max_gap_ms, minimum=1)

        clear_ms = self.sustained_ms // 2
        self._util = _Track(
            self.util_threshold_percent,
            self.clear_below_percent,
            self.sustained_ms,
            clear_ms,
            self.max_gap_ms,
        )
        self._memory = _Track(
            100.0 * (self.memory_threshold or 1.0),
            100.0 * self.memory_clear_below,
            self.sustained_ms,
            clear_ms,
            self.max_gap_ms,
        )
        self._active = False
        self._since_ms: int | None = None
        self._last_ms: int | None = None  # newest sample processed
        self._late_samples = 0
        self._collapsed_flips = 0

    @property
    def active(self) -> bool:
        """Whether the GPU is currently reported saturated."""
        return self._active

    @property
    def late_samples(self) -> int:
        """Samples dropped for being older than the newest sample already processed."""
        return self._late_samples

    @property
    def collapsed_flips(self) -> int:
        """State flips not reported because the batch ended in the state it began in."""
        return self._collapsed_flips

    def update(
        self,
        times_ms: IntArray,
        utilization_percent: FloatArray,
        memory_used_bytes: FloatArray,
        memory_total_bytes: FloatArray,
    ) -> Condition | None:
        """Feed samples of this GPU; returns the net transition over the batch, if any.

        Parameters
        ----------
        times_ms
            Event times (integer ms since the epoch); sorted here (stable).
        utilization_percent, memory_used_bytes, memory_total_bytes
            One value per sample; NaN (or a total <= 0) means not reported.

        Raises
        ------
        ValueError
            If the arrays are not 1-D of one length or ``times_ms`` is not integer.
        """
        t = np.asarray(times_ms)
        if t.ndim != 1 or (t.shape[0] > 0 and t.dtype.kind not in "iu"):
            raise ValueError(f"times_ms must be a 1-D integer array, got shape {t.shape} of {t.dtype}")
        cols = []
        for name, col in (
            ("utilization_percent", utilization_percent),
            ("memory_used_bytes", memory_used_bytes),
            ("memory_total_bytes", memory_total_bytes),
        ):
            a = np.asarray(col, dtype=np.float64)
            if a.shape != t.shape:
                raise ValueError(f"{name} must have the shape of times_ms {t.shape}, got {a.shape}")
            cols.append(a)
        util, used, total = cols
        if t.shape[0] == 0:
            return None
        order = np.argsort(t, kind="stable")
        with np.errstate(divide="ignore", invalid="ignore"):
            mem_pct = np.where(total > 0.0, 100.0 * used / total, np.nan)
        times = t[order].tolist()
        util_l = util[order].tolist()
        mem_l = mem_pct[order].tolist() if self.memory_threshold is not None else None

        start_active = self._active
        flips = 0
        flipped: tuple[str, _Track, int, float] | None = None  # metric, track, time, value of the last flip
        isfinite = math.isfinite
        for k, tk in enumerate(times):
            if self._last_ms is not None and tk < self._last_ms:
                self._late_samples += 1
                continue
            self._last_ms = tk
            x = util_l[k]
            if isfinite(x) and self._util.step(tk, x) and self._combine(self._util):
                flips, flipped = flips + 1, ("utilization", self._util, tk, x)
            if mem_l is not None:
                x = mem_l[k]
                if isfinite(x) and self._memory.step(tk, x) and self._combine(self._memory):
                    flips, flipped = flips + 1, ("memory", self._memory, tk, x)
        if self._active == start_active:
            self._collapsed_flips += flips
            return None
        assert flipped is not None and self._since_ms is not None
        self._collapsed_flips += flips - 1
        metric, track, detected_ms, value = flipped
        evidence: dict[str, float | str | int] = {
            "metric": metric,
            "detected_ms": detected_ms,
            "run_ms": detected_ms - self._since_ms,
        }
        if self._util.last_value is not None:
            evidence["utilization_percent"] = self._util.last_value
        if self.memory_threshold is not None and self._memory.last_value is not None:
            evidence["memory_used_percent"] = self._memory.last_value
        return Condition(
            self._active, self._since_ms, value, track.hi if self._active else track.lo, evidence
        )

    def _combine(self, track: _Track) -> bool:
        """Recompute the GPU state after ``track`` flipped; whether the GPU's state flipped."""
        active = self._util.active or self._memory.active
        if active == self._active:
            return False
        self._active = active
        if active:
            assert track.since_ms is not None
            self._since_ms = track.since_ms
        else:  # cleared once the last active metric cleared: the latest start of their clearing runs
            self._since_ms = max(s for s in (self._util.since_ms, self._memory.since_ms) if s is not None)
        return True

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON state: parameters and both metrics' hysteresis state."""
        return {
            "v": _VERSION,
            "kind": _KIND,
            "params": {name: getattr(self, name) for name in _PARAMS},
            "utilization": self._util.to_state(),
            "memory": self._memory.to_state(),
            "active": self._active,
            "since_ms": self._since_ms,
            "last_ms": self._last_ms,
            "late_samples": self._late_samples,
            "collapsed_flips": self._collapsed_flips,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> GpuSaturation:
        """Rebuild a detector from :meth:`to_state` output, validating every field.

        Raises
        ------
        ValueError
            On any payload :meth:`to_state` cannot have written, naming the field.
        """
        raw = check_state(raw, "gpu state", _KIND, _VERSION, _STATE_KEYS)
        det = cls(**state_params(raw, _PARAMS, "gpu state"))
        det._util.load(raw["utilization"], "utilization")
        det._memory.load(raw["memory"], "memory")
        active = raw["active"]
        if not isinstance(active, bool) or active != (det._util.active or det._memory.active):
            raise ValueError("gpu state 'active' must be a bool equal to utilization.active or memory.active")
        det._active = active
        det._since_ms = opt_int_field(raw, "since_ms", "gpu state")
        if active and det._since_ms is None:
            raise ValueError("gpu state 'since_ms' must be an int when 'active' is true")
        det._last_ms = opt_int_field(raw, "last_ms", "gpu state")
        det._late_samples = count_field(raw, "late_samples", "gpu state")
        det._collapsed_flips = count_field(raw, "collapsed_flips", "gpu state")
        return det

    # Aliases, for callers that persist objects generically through ``to_json``/``from_json``.
    to_json = to_state
    from_json = from_state

    def __repr__(self) -> str:
        return f"GpuSaturation(active={self._active}, since_ms={self._since_ms}, last_ms={self._last_ms})"
