"""What every sequential drift detector in Driftline looks like, and the helpers they share.

A *sequential* detector watches one stream of numbers (a feature, the 0/1
correctness of a classifier, the absolute error of a regressor) and says *when*
its distribution changed. Driftline feeds it the events of a batch at once
(``update_many``; batches are ~500 events), so the hot path takes a numpy array
and the answer is a list of :class:`Detection`, one per alarm, positioned in that
batch.

The detector's state must survive a worker restart and a partition moving to
another worker, so it is written to a Kafka changelog as JSON. The JSON is a
versioned envelope ``{"v": 1, "kind": ..., ...}`` holding only str, int, finite
float, bool, None, list and dict, never pickle: a changelog can outlive the code
that wrote it, and unpickling data read from a topic would execute it. A state
that cannot be read back raises ``ValueError`` whose message starts with the
kind (``"adwin state: ..."``): the caller decides to start that detector afresh.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "STATE_VERSION",
    "Detection",
    "FloatArray",
    "SequentialDetector",
    "as_batch",
    "best_split",
    "check_envelope",
    "param_float",
    "param_int",
    "restore_params",
    "state_bool",
    "state_float",
    "state_int",
    "state_str",
]

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")

#: Version of the JSON envelope written by ``to_state``; bumped when its layout changes.
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Detection:
    """One alarm raised by a sequential detector.

    Parameters
    ----------
    index
        Position, in the batch passed to ``update_many``, of the value on which the
        detector fired (the alarm time, not the estimated change time).
    direction
        ``+1`` when the mean went up, ``-1`` when it went down.
    mean_before
        Mean of the stream before the estimated change point (detector-specific
        estimate, see each detector).
    mean_after
        Mean of the stream after the estimated change point, up to the alarm.
    statistic
        The detector's test statistic at the alarm.
    threshold
        The value the statistic had to exceed.

    Examples
    --------
    >>> d = Detection(index=3, direction=1, mean_before=0.1, mean_after=0.3, statistic=5.2, threshold=5.0)
    >>> d.direction, d.mean_after > d.mean_before
    (1, True)
    """

    index: int
    direction: int
    mean_before: float
    mean_after: float
    statistic: float
    threshold: float


@runtime_checkable
class SequentialDetector(Protocol):
    """A detector fed a stream in batches, whose state is a JSON-able dict.

    ``n_seen`` counts every value ever fed, ``n_detections`` every alarm raised,
    both across ``to_state``/``from_state`` round trips.
    """

    @property
    def n_seen(self) -> int: ...

    @property
    def n_detections(self) -> int: ...

    def update_many(self, values: FloatArray) -> list[Detection]:
        """Feed a batch of finite values; return the alarms it raised, in batch order."""
        ...

    def to_state(self) -> dict[str, Any]:
        """The detector as a JSON-able dict (str/int/finite float/bool/None/list/dict)."""
        ...

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a detector from ``to_state``; raise ``ValueError`` when that is impossible."""
        ...


def as_batch(values: Any, name: str = "values") -> FloatArray:
    """``values`` as a 1-D float64 array, refusing what would silently poison a detector.

    A NaN or an infinity fed to a running sum stays there for ever (every later
    mean is NaN and no alarm can fire again), so it is refused here rather than
    discovered days later.

    >>> as_batch([1, 2.5]).tolist()
    [1.0, 2.5]
    >>> as_batch([1.0, float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: values: must be finite, got nan at index 1
    """
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: must be numbers convertible to float64 ({exc})") from None
    if x.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(f"{name}: must be finite, got {float(x[bad])!r} at index {bad}")
    return x


def check_envelope(state: Any, kind: str) -> Mapping[str, Any]:
    """Check the ``{"v": STATE_VERSION, "kind": kind}`` envelope of a state; return it as a mapping."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{kind} state: must be a mapping, got {type(state).__name__}")
    if state.get("v") != STATE_VERSION:
        raise ValueError(f"{kind} state: unsupported version {state.get('v')!r}, expected {STATE_VERSION}")
    if state.get("kind") != kind:
        raise ValueError(f"{kind} state: kind is {state.get('kind')!r}, expected {kind!r}")
    return state


def restore_params(cls: Callable[..., T], state: Mapping[str, Any], kind: str, names: tuple[str, ...]) -> T:
    """``cls(**state["params"])``, where the params must hold exactly ``names``.

    Errors start with ``"{kind} state: "``, the constructor's own ``ValueError``
    included, so that a caller restoring from a changelog sees which state was bad.
    """
    params = state.get("params")
    if not isinstance(params, Mapping) or set(params) != set(names):
        raise ValueError(f"{kind} state: params must be a mapping with keys {list(names)}")
    try:
        return cls(**params)
    except ValueError as exc:
        raise ValueError(f"{kind} state: params: {exc}") from None


def state_int(state: Mapping[str, Any], key: str, kind: str, minimum: int = 0) -> int:
    """``state[key]`` as an int ``>= minimum`` (bools refused), else ``ValueError``."""
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{kind} state: {key} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{kind} state: {key} must be >= {minimum}, got {value}")
    return value


def state_float(state: Mapping[str, Any], key: str, kind: str, allow_none: bool = False) -> float:
    """``state[key]`` as a finite float (ints accepted); ``None`` maps to NaN when ``allow_none``."""
    value = state.get(key)
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{kind} state: {key} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{kind} state: {key} must be finite, got {value!r}")
    return float(value)


def state_bool(state: Mapping[str, Any], key: str, kind: str) -> bool:
    """``state[key]`` as a bool, else ``ValueError``."""
    value = state.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{kind} state: {key} must be a bool, got {type(value).__name__}")
    return value


def state_str(state: Mapping[str, Any], key: str, kind: str) -> str:
    """``state[key]`` as a str, else ``ValueError``."""
    value = state.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{kind} state: {key} must be a str, got {type(value).__name__}")
    return value


def param_int(name: str, value: Any, minimum: int, maximum: int = 2**31 - 1) -> int:
    """Validate an int parameter (bools refused) in ``[minimum, maximum]``; the error names it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return int(value)


def param_float(
    name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """Validate a finite float parameter in the interval ``low..high`` (ends open on request)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def best_split(
    counts: FloatArray, sums: FloatArray, n_total: float, sum_total: float, direction: int = 0
) -> tuple[float, float, float] | None:
    """``(count_before, mean_before, mean_after)`` at the maximum-likelihood change point among splits.

    A candidate split is given by the count and the sum of the values before it
    (``counts[k]``, ``sums[k]``); ``n_total``/``sum_total`` cover the whole run.
    The split maximising ``n1 * n2 / n * (mean1 - mean2) ** 2`` is the
    maximum-likelihood change point of a Gaussian mean shift (Hinkley 1970,
    doi:10.1093/biomet/57.1.1). With ``direction`` +1 (-1) only splits where the
    mean went up (down) are considered. ``None`` when no candidate qualifies.

    Detectors use it to describe an alarm: their own change-time estimates (the
    CUSUM's last running minimum, ADWIN's kept window) precede or straddle the
    change by O((sd / delta)**2) values and dilute ``mean_after``.

    >>> x = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    >>> c = np.arange(1.0, 5.0)
    >>> best_split(c, np.cumsum(x)[:4], 5.0, 2.0)
    (3.0, 0.0, 1.0)
    """
    n2 = n_total - counts
    ok = (counts > 0) & (n2 > 0)
    if not ok.any():
        return None
    n1, s1, n2 = counts[ok], sums[ok], n2[ok]
    m1 = s1 / n1
    m2 = (sum_total - s1) / n2
    score = n1 * n2 / n_total * (m1 - m2) ** 2
    if direction:
        score = np.where(np.sign(m2 - m1) == direction, score, -1.0)
    k = int(np.argmax(score))
    if score[k] < 0:
        return None
    return float(n1[k]), float(m1[k]), float(m2[k])
