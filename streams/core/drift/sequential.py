"""The sequential detectors Driftline runs on a stream, as configured, and its shipped defaults.

Two detectors, their defaults tuned with ``loadtest/bench_drift.py`` (which
prints its table and writes ``.driftline/bench/drift.json``):

* :class:`~streams.core.drift.adwin.Adwin` on the raw 0/1 error stream of a
  classifier (its bound is made for values in ``[0, 1]``).
* :class:`~streams.core.drift.page_hinkley.PageHinkley` on z-scores, for
  features and for error streams of any scale (regression absolute errors).
  Page-Hinkley is not scale-invariant, so Driftline always runs it behind
  :class:`Standardized`; its ``delta`` and ``threshold`` are then in standard
  deviations of the reference data, and one set of defaults fits every feature.

A mean-shift detector does not see a change of spread. For numeric features the
worker therefore runs a second standardized detector on the absolute z-scores
(``spread=True``, :data:`DEFAULT_FEATURE_SPREAD_PH`): the mean of ``|z|`` is
multiplied by ``k`` when the standard deviation is. Absolute rather than squared
z-scores: the variance of ``z**2`` is the reference's fourth moment, and on
skewed or heavy-tailed features (lognormal, exponential, Student t5) a
Page-Hinkley on ``(z**2 - 1) / sqrt(2)`` raised 40-230 false alarms per million
values where the same test on ``|z|`` raised none in 5M; the standard deviation
of ``|z|`` is ``sqrt(1 - (E|z|)**2) <= 1`` whatever the distribution (``E z**2 = 1``
on the reference), so thresholds in z units stay conservative without a second
warm-up to learn its scale. Page-Hinkley is shift-invariant (it tracks its own
running mean), so ``|z|`` needs no centring.

Driftline's Page-Hinkley defaults use ``alpha=1`` (no forgetting), not river's
``1 - 1e-4``: with forgetting the cumulative sum becomes an AR(1) process whose
stationary standard deviation is ``1 / sqrt(1 - alpha**2)``, about 71 standard
deviations, so it wanders past any useful threshold at a steady rate (20-70
false alarms per million on stationary normal data in the bench sweep, none in
20M with ``alpha=1``).

Everything here is pure and deterministic; state is versioned JSON (see
``streams.core.drift.base``) and :func:`restore` rebuilds any of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np

from streams.core.drift.adwin import DEFAULT_DELTA, Adwin
from streams.core.drift.base import (
    Detection,
    FloatArray,
    SequentialDetector,
    as_batch,
    check_envelope,
    param_float,
    param_int,
    state_bool,
    state_float,
    state_int,
)
from streams.core.drift.page_hinkley import PageHinkley

__all__ = [
    "DEFAULT_ERROR_ADWIN",
    "DEFAULT_ERROR_PH",
    "DEFAULT_FEATURE_PH",
    "DEFAULT_FEATURE_SPREAD_PH",
    "SequentialConfig",
    "Standardized",
    "build",
    "restore",
]

_KIND = "standardized"
# A standard deviation at or below this fraction of max(1, |mean|) is taken as zero: every
# value seen so far is the same number, and dividing by it would make any change infinite.
_STD_EPS = 1e-12


class Standardized:
    """Feed ``z = (x - mean) / std`` (or ``|z|``) to an inner detector, so that its thresholds are in sds.

    Parameters
    ----------
    detector
        The inner detector, fed z-scores; its ``delta``/``threshold`` are then in
        standard deviations.
    warmup
        Without a reference profile, the first ``warmup`` values (``>= 2``) are
        used to learn ``mean`` and ``std`` and are **not** fed to the inner
        detector: they are the reference the rest is compared to, and a detection
        can then only point at a value of the batch being processed. If all the
        warm-up values are equal, the warm-up goes on until a different value
        arrives (that value included), since a zero ``std`` carries no scale.
        Ignored when ``mean`` and ``std`` are given.
    mean, std
        Reference profile (e.g. from the training data); both or neither. With
        them there is no warm-up.
    spread
        Feed ``|z|`` instead of ``z``, to watch the spread around the reference
        mean rather than the location (see the module docstring).
    min_std
        Floor on ``std`` in data units (``>= 0``), for streams whose reference
        spread is known to be unrepresentatively small.

    Notes
    -----
    A detection's ``index`` is in the batch passed to :meth:`update_many`, and
    ``mean_before``/``mean_after`` are converted back to the data's units: the
    means of ``x`` (``spread=False``) or of ``|x - mean|`` (``spread=True``, the
    mean absolute deviation around the reference mean). ``statistic``
    and ``threshold`` stay in the inner detector's (standardized) units.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> x = np.concatenate([rng.normal(100, 15, 3000), rng.normal(110, 15, 3000)])
    >>> det = Standardized(PageHinkley(delta=0.1, threshold=80, alpha=1.0), warmup=1000)
    >>> [(d.index, d.direction, round(d.mean_before), round(d.mean_after)) for d in det.update_many(x)]
    [(3133, 1, 100, 109)]
    >>> det.reference is not None and round(det.reference[1])
    15
    """

    def __init__(
        self,
        detector: SequentialDetector,
        warmup: int,
        mean: float | None = None,
        std: float | None = None,
        *,
        spread: bool = False,
        min_std: float = 0.0,
    ) -> None:
        if not isinstance(detector, SequentialDetector):
            raise ValueError(f"detector must be a SequentialDetector, got {type(detector).__name__}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (a reference profile) or not at all")
        if not isinstance(spread, bool):
            raise ValueError(f"spread must be a bool, got {type(spread).__name__}")
        self.detector = detector
        self.spread = spread
        self.min_std = param_float("min_std", min_std, 0.0, math.inf, high_open=True)
        self._profile = mean is not None
        self.warmup = param_int("warmup", warmup, 0 if self._profile else 2)
        self._ref_mean = math.nan
        self._ref_std = math.nan
        if mean is not None and std is not None:
            self._ref_mean = param_float("mean", mean, -math.inf, math.inf, low_open=True, high_open=True)
            self._ref_std = param_float("std", std, 0.0, math.inf, high_open=True)
        # Warm-up accumulators (count, mean, sum of squared deviations), merged per batch.
        self._w_n = 0
        self._w_mean = 0.0
        self._w_m2 = 0.0
        self._n_seen = 0
        self._n_detections = 0

    @property
    def n_seen(self) -> int:
        """Values fed since construction, warm-up included (across state round trips)."""
        return self._n_seen

    @property
    def n_detections(self) -> int:
        """Alarms raised since construction (across state round trips)."""
        return self._n_detections

    @property
    def ready(self) -> bool:
        """Whether the reference is known (given, or the warm-up is over)."""
        return not math.isnan(self._ref_std)

    @property
    def reference(self) -> tuple[float, float] | None:
        """``(mean, std)`` of the reference before flooring, or ``None`` during the warm-up."""
        return (self._ref_mean, self._ref_std) if self.ready else None

    def _scale(self) -> float:
        return max(self._ref_std, self.min_std, _STD_EPS * max(1.0, abs(self._ref_mean)))

    def update_many(self, values: FloatArray) -> list[Detection]:
        """Feed a batch of finite values; return the alarms, ``index`` relative to this batch."""
        x = as_batch(values)
        used = 0 if self.ready else self._absorb(x)
        detections: list[Detection] = []
        if used < len(x):
            mu, sigma = self._ref_mean, self._scale()
            z = (x[used:] - mu) / sigma
            if self.spread:
                z = np.abs(z)
            detections = [self._in_units(d, used, mu, sigma) for d in self.detector.update_many(z)]
        self._n_seen += len(x)
        self._n_detections += len(detections)
        return detections

    def update_one(self, value: float) -> list[Detection]:
        """``update_many([value])`` without numpy once the reference is known (same results, bit for bit).

        Per-chunk statistics arrive one value at a time, for every feature of
        every batch: the array round trip of :meth:`update_many` was most of their cost.
        """
        inner = self.detector
        if not (self.ready and math.isfinite(value) and isinstance(inner, PageHinkley)):
            return self.update_many(np.asarray([value], dtype=np.float64))
        mu, sigma = self._ref_mean, self._scale()
        z = (value - mu) / sigma
        if self.spread:
            z = abs(z)
        detections = [self._in_units(d, 0, mu, sigma) for d in inner.update_one(z)]
        self._n_seen += 1
        self._n_detections += len(detections)
        return detections

    def _in_units(self, d: Detection, used: int, mu: float, sigma: float) -> Detection:
        return Detection(
            index=d.index + used,
            direction=d.direction,
            mean_before=self._to_units(d.mean_before, mu, sigma),
            mean_after=self._to_units(d.mean_after, mu, sigma),
            statistic=d.statistic,
            threshold=d.threshold,
        )

    def _to_units(self, m: float, mu: float, sigma: float) -> float:
        return sigma * m if self.spread else mu + sigma * m

    def _absorb(self, x: FloatArray) -> int:
        """Learn the reference from the head of ``x``; return how many values the warm-up used."""
        used = min(max(self.warmup - self._w_n, 0), len(x))
        self._merge(x[:used])
        if self._w_n < self.warmup:
            return used
        while self._degenerate() and used < len(x):
            tol = _STD_EPS * max(1.0, abs(self._w_mean))
            differs = np.flatnonzero(np.abs(x[used:] - self._w_mean) > tol)
            take = len(x) - used if differs.size == 0 else int(differs[0]) + 1
            self._merge(x[used : used + take])
            used += take
        if not self._degenerate():
            self._ref_mean = self._w_mean
            self._ref_std = math.sqrt(self._w_m2 / (self._w_n - 1))
        return used

    def _degenerate(self) -> bool:
        std = math.sqrt(self._w_m2 / (self._w_n - 1)) if self._w_n > 1 else 0.0
        return std <= _STD_EPS * max(1.0, abs(self._w_mean))

    def _merge(self, chunk: FloatArray) -> None:
        """Chan et al.'s pairwise update of (count, mean, M2) with a chunk of values."""
        nb = len(chunk)
        if nb == 0:
            return
        if nb == 1:  # one chunk statistic at a time: skip numpy's per-call overhead
            mb, m2b = float(chunk[0]), 0.0
        else:
            mb = float(np.mean(chunk))
            m2b = float(np.sum((chunk - mb) ** 2))
        na = self._w_n
        n = na + nb
        d = mb - self._w_mean
        self._w_mean += d * nb / n
        self._w_m2 += m2b + d * d * na * nb / n
        self._w_n = n

    def to_state(self) -> dict[str, Any]:
        """JSON-able state, the inner detector's state nested under ``"detector"``."""
        return {
            "v": 1,
            "kind": _KIND,
            "params": {"warmup": self.warmup, "spread": self.spread, "min_std": self.min_std},
            "profile": self._profile,
            "mean": self._ref_mean if self.ready else None,
            "std": self._ref_std if self.ready else None,
            "warmup_n": self._w_n,
            "warmup_mean": self._w_mean,
            "warmup_m2": self._w_m2,
            "n_seen": self._n_seen,
            "n_detections": self._n_detections,
            "detector": self.detector.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from ``to_state``; ``ValueError("standardized state: ...")`` when malformed."""
        s = check_envelope(state, _KIND)
        params = s.get("params")
        if not isinstance(params, Mapping) or set(params) != {"warmup", "spread", "min_std"}:
            raise ValueError("standardized state: params must map warmup, spread, min_std")
        inner = s.get("detector")
        if isinstance(inner, Mapping) and inner.get("kind") == _KIND:
            raise ValueError("standardized state: the inner detector cannot itself be standardized")
        detector = restore(inner)
        profile = state_bool(s, "profile", _KIND)
        mean = state_float(s, "mean", _KIND, allow_none=True)
        std = state_float(s, "std", _KIND, allow_none=True)
        if math.isnan(mean) != math.isnan(std) or (profile and math.isnan(std)):
            raise ValueError("standardized state: mean and std must both be set (or None during warm-up)")
        try:
            det = cls(
                detector,
                params["warmup"],
                mean if profile else None,
                std if profile else None,
                spread=params["spread"],
                min_std=params["min_std"],
            )
        except ValueError as exc:
            raise ValueError(f"standardized state: params: {exc}") from None
        if not math.isnan(std):
            if std < 0:
                raise ValueError("standardized state: std must be >= 0")
            det._ref_mean, det._ref_std = mean, std
        det._w_n = state_int(s, "warmup_n", _KIND)
        det._w_mean = state_float(s, "warmup_mean", _KIND)
        det._w_m2 = state_float(s, "warmup_m2", _KIND)
        if det._w_m2 < 0:
            raise ValueError("standardized state: warmup_m2 must be >= 0")
        det._n_seen = state_int(s, "n_seen", _KIND)
        det._n_detections = state_int(s, "n_detections", _KIND)
        if det._n_detections > det._n_seen or det._w_n > det._n_seen:
            raise ValueError("standardized state: counts exceed n_seen")
        return det


@dataclass(frozen=True, slots=True)
class SequentialConfig:
    """One configured sequential detector: its kind, parameters and standardization.

    ``delta`` means what the kind makes of it: ADWIN's significance, or
    Page-Hinkley's tolerated change (in standard deviations when standardized).
    Fields of the other kind are ignored. Page-Hinkley must be standardized
    (it is not scale-invariant); ``spread`` requires ``standardize``.

    Examples
    --------
    >>> cfg = SequentialConfig(kind="page_hinkley", delta=0.1, threshold=30.0, standardize=True, warmup=500)
    >>> det = build(cfg)
    >>> type(det).__name__, type(restore(det.to_state())).__name__
    ('Standardized', 'Standardized')
    >>> SequentialConfig(kind="page_hinkley", delta=0.1)
    Traceback (most recent call last):
    ...
    ValueError: standardize must be True for kind='page_hinkley' (Page-Hinkley is not scale-invariant)
    """

    kind: Literal["adwin", "page_hinkley"]
    delta: float
    # Page-Hinkley
    threshold: float = 50.0
    alpha: float = 1.0
    mode: Literal["up", "down", "both"] = "both"
    min_instances: int = 30
    # ADWIN
    clock: int = 32
    max_buckets: int = 5
    min_window_length: int = 5
    grace_period: int = 10
    # Standardization (z-scores fed to the detector)
    standardize: bool = False
    spread: bool = False
    warmup: int = 1000
    min_std: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("adwin", "page_hinkley"):
            raise ValueError(f"kind must be 'adwin' or 'page_hinkley', got {self.kind!r}")
        if not isinstance(self.standardize, bool) or not isinstance(self.spread, bool):
            raise ValueError("standardize and spread must be bools")
        if self.kind == "page_hinkley" and not self.standardize:
            raise ValueError(
                "standardize must be True for kind='page_hinkley' (Page-Hinkley is not scale-invariant)"
            )
        if self.spread and not self.standardize:
            raise ValueError("spread requires standardize=True")
        build(self)  # every parameter is checked by the constructor that will use it

    def inner(self) -> Adwin | PageHinkley:
        """A fresh unstandardized detector of this kind."""
        if self.kind == "adwin":
            return Adwin(
                delta=self.delta,
                clock=self.clock,
                max_buckets=self.max_buckets,
                min_window_length=self.min_window_length,
                grace_period=self.grace_period,
            )
        return PageHinkley(
            min_instances=self.min_instances,
            delta=self.delta,
            threshold=self.threshold,
            alpha=self.alpha,
            mode=self.mode,
        )


def build(
    cfg: SequentialConfig, *, mean: float | None = None, std: float | None = None
) -> SequentialDetector:
    """A fresh detector for ``cfg``; ``mean``/``std`` is the reference profile, when known."""
    if not cfg.standardize:
        if mean is not None or std is not None:
            raise ValueError("mean/std given for a config with standardize=False")
        return cfg.inner()
    return Standardized(cfg.inner(), cfg.warmup, mean, std, spread=cfg.spread, min_std=cfg.min_std)


def update_one(det: SequentialDetector, value: float) -> list[Detection]:
    """Feed one value to any detector (the numpy-free path where the detector has one)."""
    if isinstance(det, Standardized | PageHinkley):
        return det.update_one(value)
    return det.update_many(np.asarray([value], dtype=np.float64))


def restore(state: Any) -> SequentialDetector:
    """Rebuild any detector of this package from its ``to_state()``, dispatching on ``state["kind"]``."""
    kind = state.get("kind") if isinstance(state, Mapping) else None
    if kind == "adwin":
        return Adwin.from_state(state)
    if kind == "page_hinkley":
        return PageHinkley.from_state(state)
    if kind == _KIND:
        return Standardized.from_state(state)
    raise ValueError(f"state: unknown detector kind {kind!r}")




#: 0/1 errors of a classifier: ADWIN with Driftline's significance (``adwin.DEFAULT_DELTA``).
DEFAULT_ERROR_ADWIN = SequentialConfig(kind="adwin", delta=DEFAULT_DELTA)

#: Error streams of any scale (0/1, or a regressor's absolute error): standardized Page-Hinkley
#: watching increases only (an error rate going down is not an incident). delta=0.1 sd and
#: threshold=80 sd: no false alarm in 10M stationary Bernoulli(0.1) values, 0.5/M on
#: Bernoulli(0.02) and ~4/M on |Student t3| errors (sweeps); in the bench, none on 0/1 or
#: |2 t5| streams, and an error rate going 0.1 -> 0.2 is detected within a median 329 events.
DEFAULT_ERROR_PH = SequentialConfig(
    kind="page_hinkley", delta=0.1, threshold=80.0, mode="up", standardize=True, warmup=1000
)

#: Location of a numeric feature, or the 0/1 indicator of a category: standardized Page-Hinkley,
#: both ways. One-sided CUSUM theory (Siegmund's approximation) puts the mean time to a false
#: alarm near 3e8 values on normal data; sweeps saw none in 5-20M values each of normal,
#: lognormal, t5, exponential and Poisson data; the bench detects a 0.5 sd step within a
#: median 198 values (river's ADWIN: 87, with 3 false alarms per million).
DEFAULT_FEATURE_PH = SequentialConfig(
    kind="page_hinkley", delta=0.1, threshold=80.0, mode="both", standardize=True, warmup=1000
)

#: Spread of a numeric feature: Page-Hinkley on ``|z|`` (sd <= 1, about 0.6 on normal data,
#: hence the lower threshold); detects a doubled standard deviation within a median 66 values.
DEFAULT_FEATURE_SPREAD_PH = SequentialConfig(
    kind="page_hinkley", delta=0.1, threshold=50.0, mode="both", standardize=True, spread=True, warmup=1000
)
