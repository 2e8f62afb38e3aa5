"""Per-feature min/max scaling to ``[0, 1]``, fed per batch, for Half-Space Trees.

Why: Half-Space Trees (Tan, Ting & Liu, "Fast anomaly detection for streaming
data", IJCAI 2011) split a *fixed* work space chosen before any data is seen;
river's implementation (``river.anomaly.HalfSpaceTrees``) assumes that space is
``[0, 1]`` per feature and its documentation pipes
``preprocessing.MinMaxScaler()`` in front. Telemetry is not in ``[0, 1]``
(``rss_bytes`` is in the billions, ``cpu_percent`` in ``[0, 100 * cores]``),
so every detector input goes through this scaler first.

Two modes per feature, mixable:

* **fixed limits** ``(lo, hi)`` (from a reference profile, or known bounds such
  as ``(0, 100)`` for a percentage): ``(x - lo) / (hi - lo)``; no state, and a
  single extreme value cannot distort the scale. This is what the worker should
  use for every feature it has a reference profile for.
* **running min/max** (no limits given): exactly river's
  ``preprocessing.MinMaxScaler`` (``(x - min) / (max - min)``, and ``0.0`` while
  ``max == min``), over everything learned so far. Deterministic and
  persistable, but one outlier widens the range for good and squeezes every
  later normal value towards one end; use it only where no profile exists.

Values outside ``[0, 1]`` (beyond fixed limits, or a new running extreme scored
before it is learned) are not clipped: every split of a Half-Space Tree lies
strictly inside ``(0, 1)``, so such a value follows the same path as its
clipped counterpart, as in river.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MinMaxScaler"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_STATE_KEYS = frozenset({"v", "kind", "features", "limits", "n_seen", "min", "max"})


def _check_features(features: Any) -> tuple[str, ...]:
    """Validate a column list: a non-empty sequence of distinct, non-empty strings."""
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise ValueError(f"features must be a sequence of names, got {type(features).__name__}")
    names = tuple(features)
    if not names:
        raise ValueError("features must not be empty")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"features must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"features must be distinct, got duplicates {dup}")
    return names


def _finite_real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{what} must be finite, got {out!r}")
    return out


def _check_limits(limits: Any, features: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Validate ``{name: (lo, hi)}``: known names, finite bounds, ``lo < hi``; returned in column order."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise ValueError(f"limits must be a mapping of feature name to (lo, hi), got {type(limits).__name__}")
    unknown = sorted(str(k) for k in limits if k not in features)
    if unknown:
        raise ValueError(f"limits name features that are not in features: {unknown}")
    out: dict[str, tuple[float, float]] = {}
    for name in features:
        if name not in limits:
            continue
        pair = limits[name]
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"limits[{name!r}] must be a (lo, hi) pair, got {pair!r}")
        lo = _finite_real(pair[0], f"limits[{name!r}][0]")
        hi = _finite_real(pair[1], f"limits[{name!r}][1]")
        if not lo < hi:
            raise ValueError(f"limits[{name!r}] must have lo < hi, got ({lo!r}, {hi!r})")
        if not math.isfinite(hi - lo):
            raise ValueError(f"limits[{name!r}] span overflows float64: ({lo!r}, {hi!r})")
        out[name] = (lo, hi)
    return out


def _check_state(state: Any, keys: frozenset[str], kind: str, what: str) -> Mapping[str, Any]:
    """Check the envelope of a state (a mapping with exactly ``keys``, ``v`` 1, ``kind``); return it.

    ``what`` starts every error message, e.g. ``"hst state"``.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(state).__name__}")
    present = set(state)
    if present != keys:
        raise ValueError(
            f"{what} keys mismatch: missing {sorted(keys - present)}, "
            f"unexpected {sorted(map(str, present - keys))}"
        )
    if state["v"] != 1 or isinstance(state["v"], bool):
        raise ValueError(f"{what} 'v' must be 1, got {state['v']!r}")
    if state["kind"] != kind:
        raise ValueError(f"{what} 'kind' must be {kind!r}, got {state['kind']!r}")
    return state


def _check_matrix(X: Any, n_features: int, name: str = "X") -> FloatArray:
    """``X`` as a C-contiguous float64 ``(n, n_features)`` array of finite values."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns (one per feature), got {arr.shape[1]}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise ValueError(f"{name} must be finite; row {bad} holds NaN or inf (impute before scoring)")
    return out


def _scale(X: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """``(X - lo) / (hi - lo)`` where the span is positive, else ``0.0`` (river's rule, same float ops)."""
    span = hi - lo
    out = np.zeros(np.broadcast_shapes(X.shape, span.shape), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        np.divide(X - lo, span, out=out, where=span > 0.0)
    return out


class MinMaxScaler:
    """Scale each feature to ``[0, 1]`` by fixed limits or by the running min and max.

    Running features reproduce river's ``preprocessing.MinMaxScaler``
    (``(x - min) / (max - min)``, ``0.0`` when ``max == min``) with the same
    floating-point operations, so results are bit-identical. The batch methods
    keep river's *per-row* semantics: in :meth:`learn_transform_many`, row ``i``
    is scaled by the min/max of everything learned before it (what river's
    ``Pipeline.score_one`` sees) and by the min/max including it (what
    ``Pipeline.learn_one`` passes on), computed with one cumulative
    ``np.minimum``/``np.maximum`` per batch instead of a Python loop per row.
    So the result does not depend on how the stream is cut into batches.

    Parameters
    ----------
    features
        Column names, in the column order of every ``X`` passed in.
    limits
        Fixed ``(lo, hi)`` per feature name, ``lo < hi``; features not listed are
        scaled by their running min/max. Typically taken from a reference profile.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.core.anomaly.scaler import MinMaxScaler
    >>> scaler = MinMaxScaler(["cpu_percent", "rss_bytes"], limits={"cpu_percent": (0.0, 100.0)})
    >>> X = np.array([[50.0, 2e9], [25.0, 3e9], [75.0, 5e9]])
    >>> before, after = scaler.learn_transform_many(X)
    >>> after
    array([[0.5 , 0.  ],
           [0.25, 1.  ],
           [0.75, 1.  ]])
    >>> before[2]  # scaled by what was learned before it: a new maximum lands beyond 1
    array([0.75, 3.  ])
    >>> scaler.transform_many(np.array([[100.0, 3.5e9]]))
    array([[1. , 0.5]])
    >>> MinMaxScaler.from_state(scaler.to_state()).to_state() == scaler.to_state()
    True

    Before anything is learned, a running feature scales to ``0.0`` (river
    would give NaN there; Half-Space Trees ignore that row's score anyway).
    """

    def __init__(
        self, features: Sequence[str], limits: Mapping[str, tuple[float, float]] | None = None
    ) -> None:
        self.features: tuple[str, ...] = _check_features(features)
        self.limits: dict[str, tuple[float, float]] = _check_limits(limits, self.features)
        d = len(self.features)
        fixed = np.array([name in self.limits for name in self.features], dtype=np.bool_)
        self._fixed_cols = np.flatnonzero(fixed)
        self._running_cols = np.flatnonzero(~fixed)
        # Running columns start empty (+inf / -inf, as river's stats.Min / stats.Max).
        self._lo: FloatArray = np.full(d, math.inf)
        self._hi: FloatArray = np.full(d, -math.inf)
        for j in self._fixed_cols:
            self._lo[j], self._hi[j] = self.limits[self.features[j]]
        self._n_seen = 0

    @property
    def n_seen(self) -> int:
        """Number of rows learned so far."""
        return self._n_seen

    def transform_many(self, X: FloatArray) -> FloatArray:
        """Scale ``X`` (``n x d``) with the current state, learning nothing."""
        X = _check_matrix(X, len(self.features))
        return _scale(X, self._lo, self._hi)

    def learn_many(self, X: FloatArray) -> None:
        """Update the running min/max with the rows of ``X``."""
        self.learn_transform_many(X)

    def learn_transform_many(self, X: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Learn ``X`` row by row and return it scaled twice: ``(before, after)``.

        ``before[i]`` uses the state before row ``i`` was learned and ``after[i]``
        the state right after it, i.e. river's ``transform_one(x)`` followed by
        ``learn_one(x); transform_one(x)``, for every row, in one vectorised pass.
        For fixed-limit columns both are the same.
        """
        X = _check_matrix(X, len(self.features))
        n = X.shape[0]
        if n == 0:
            return X.copy(), X.copy()
        before = np.empty_like(X)
        after = np.empty_like(X)
        fixed = self._fixed_cols
        if fixed.size:
            scaled = _scale(X[:, fixed], self._lo[fixed], self._hi[fixed])
            before[:, fixed] = scaled
            after[:, fixed] = scaled
        run = self._running_cols
        if run.size:
            # Row k of lo/hi is the state after k rows of this batch (row 0: before the batch).
            cols = X[:, run]
            lo = np.minimum.accumulate(np.vstack([self._lo[run], cols]), axis=0)
            hi = np.maximum.accumulate(np.vstack([self._hi[run], cols]), axis=0)
            before[:, run] = _scale(cols, lo[:-1], hi[:-1])
            after[:, run] = _scale(cols, lo[1:], hi[1:])
            self._lo[run] = lo[-1]
            self._hi[run] = hi[-1]
        self._n_seen += n
        return before, after

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: ``{"v": 1, "kind": "minmax", ...}``, only strings, ints, finite floats, lists.

        ``min``/``max`` list the running features' extremes in column order,
        empty while nothing has been learned.
        """
        run = self._running_cols
        seen = self._n_seen > 0
        return {
            "v": 1,
            "kind": "minmax",
            "features": list(self.features),
            "limits": {name: [lo, hi] for name, (lo, hi) in self.limits.items()},
            "n_seen": self._n_seen,
            "min": self._lo[run].tolist() if seen else [],
            "max": self._hi[run].tolist() if seen else [],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MinMaxScaler:
        """Rebuild a scaler from :meth:`to_state` output, validating every field.

        Raises
        ------
        ValueError
            On any malformed or inconsistent state, naming the offending field.
        """
        state = _check_state(state, _STATE_KEYS, "minmax", "scaler state")
        scaler = cls(state["features"], state["limits"])
        n_seen = state["n_seen"]
        if type(n_seen) is not int or n_seen < 0:
            raise ValueError(f"scaler state 'n_seen' must be an int >= 0, got {n_seen!r}")
        run = scaler._running_cols
        expect = run.size if n_seen > 0 else 0
        bounds = []
        for key in ("min", "max"):
            raw = state[key]
            if not isinstance(raw, list) or len(raw) != expect:
                raise ValueError(f"scaler state {key!r} must be a list of {expect} numbers, got {raw!r:.80}")
            bounds.append(np.array([_finite_real(v, f"scaler state {key!r} item") for v in raw]))
        lo, hi = bounds
        if not np.all(lo <= hi):
            raise ValueError("scaler state must have min <= max for every running feature")
        if expect:
            scaler._lo[run] = lo
            scaler._hi[run] = hi
        scaler._n_seen = n_seen
        return scaler
