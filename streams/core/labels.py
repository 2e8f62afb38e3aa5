"""Mergeable quality metrics of predictions joined with their ground-truth labels.

Labels arrive late and out of order, so quality is computed per window from
additive state: a weighted confusion matrix for classification and a handful
of float64 sums for regression. Additive state is what makes the metrics
mergeable: the merge of two windows (or two partitions of one window) is the
element-wise sum (after folding surplus classes by a rule that depends on
class names only), and gives the same result as one object fed both inputs,
in any order.
Ratios (precision, F1, MAE, ...) are only formed in ``result()``.

The definitions follow scikit-learn (``precision_recall_fscore_support`` with
``zero_division=0``, ``log_loss`` with probabilities clipped to
``[1e-15, 1 - 1e-15]``) so that numbers on a dashboard match what a data
scientist gets offline from the same rows.

The join of predictions with labels is not done here; callers pass aligned
columns. State is plain JSON (it is persisted to Kafka changelogs) and is
validated when loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

OTHER = "__other__"
"""Bucket for classes beyond ``max_classes``; never counts as one of them."""

LOG_LOSS_EPS = 1e-15
"""Probability clip of scikit-learn's historical ``log_loss(eps=1e-15)``."""

_STATE_VERSION = 1
_INT_NAME = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")  # class_key of an int small enough to rank numerically


def class_key(value: object) -> str:
    """Canonical class name of a label or of a predicted class.

    Labels come from two independent producers (the model's SDK and the
    labelling pipeline), and JSON does not keep ``1`` and ``1.0`` apart
    reliably, so classes are compared by a canonical string instead of by the
    decoded value: a model that predicts ``1`` and a label of ``1.0`` are the
    same class, ``True`` is ``"true"`` (not ``"1"``: a boolean is a category,
    not a number).

    Parameters
    ----------
    value : bool, int, float or str (numpy scalars of those kinds too)

    Returns
    -------
    str
        ``"true"``/``"false"`` for booleans, ``str(int)`` for integers and for
        integral floats, the shortest round-trip ``repr`` for other floats
        (``"nan"`` and ``"inf"`` included), the string itself for strings.

    Raises
    ------
    TypeError
        For anything else (``None``, containers, ...): such a label is a
        producer bug the caller should count, not a class.

    Examples
    --------
    >>> [class_key(v) for v in (True, 0, 1.0, -0.0, 2.5, "cat")]
    ['true', '0', '1', '0', '2.5', 'cat']
    """
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        x = float(value)
        return str(int(x)) if x.is_integer() else repr(x)
    raise TypeError(f"not a class label: {type(value).__name__}")


def class_rank(name: str) -> tuple[int, int, str]:
    """Sort key deciding which classes are kept when there are too many.

    Integer class names come first in numeric order, then every other name
    in string order; the name itself breaks ties, so the order is total. The
    rank depends on the name alone, never on when the class was seen: that
    is what makes folding independent of arrival order (labels arrive late
    and out of order) and merges exact.

    Examples
    --------
    >>> sorted(["b", "10", "2", "-1", "a", "2.5"], key=class_rank)
    ['-1', '2', '10', '2.5', 'a', 'b']
    """
    if _INT_NAME.fullmatch(name):
        return (0, int(name), name)
    return (1, 0, name)


def _weights(weights: npt.ArrayLike | None, n: int) -> FloatArray | None:
    """Validated float64 weights (finite, non-negative) or None."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights has shape {w.shape}, expected ({n},)")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    return w


def _number(raw: Mapping[str, Any], key: str, *, nonneg: bool = True, what: str | None = None) -> float:
    """A finite (optionally non-negative) JSON number from loaded state."""
    v = raw.get(key)
    what = what or key
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    if nonneg and v < 0:
        raise ValueError(f"{what} must be non-negative, got {v!r}")
    return float(v)


def _prf(tp: float, pred: float, true: float) -> tuple[float, float, float]:
    """Precision, recall and F1 with scikit-learn's ``zero_division=0``."""
    precision = tp / pred if pred > 0 else 0.0
    recall = tp / true if true > 0 else 0.0
    denom = pred + true  # 2*tp + fp + fn: sklearn's F1, which is 0 when tp == 0
    f1 = 2.0 * tp / denom if denom > 0 else 0.0
    return precision, recall, f1


class ClassificationMetrics:
    """Weighted confusion matrix with the usual classification metrics on top.

    The confusion matrix is the sufficient statistic for accuracy, per-class,
    macro, micro and binary precision/recall/F1, so it is the whole state
    (plus two sums for log-loss). Its size is bounded: of all classes seen,
    the ``max_classes`` first by :func:`class_rank` are kept and the others
    fold into ``"__other__"`` (a kept class is evicted into it when a
    better-ranked one shows up), so a model that emits free text as a
    "class" cannot grow the changelog without bound. A rank that depends on
    the name only is what lets a merge reproduce folding exactly: a class
    folded in one partition is folded in the union too, whereas "first
    seen" or "most frequent" would have to know how the other partition
    went. ``"__other__"`` then holds all folded classes; it appears in
    ``per_class`` and counts in ``macro`` like any class.

    Parameters
    ----------
    max_classes : int, default 64
        Distinct classes kept before folding into ``"__other__"``.
    positive_label : str or None
        Class (as :func:`class_key` spells it) reported under ``"binary"``.
        It is never folded. When None, binary metrics are reported only for
        0/1 and false/true label sets, with "1" or "true" as positive, which is
        scikit-learn's ``average="binary"`` default.

    Examples
    --------
    >>> m = ClassificationMetrics()
    >>> m.add(["1", "0", "1", "1"], ["1", "0", "0", "1"], p_true=np.array([0.9, 0.8, 0.4, np.nan]))
    >>> r = m.result()
    >>> r["n"], r["accuracy"], r["binary"]["recall"], r["log_loss_n"]
    (4.0, 0.75, 0.6666666666666666, 3.0)
    >>> ClassificationMetrics.from_json(m.to_json()).result() == r
    True
    """

    def __init__(self, max_classes: int = 64, positive_label: str | None = None) -> None:
        if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 1:
            raise ValueError(f"max_classes must be a positive int, got {max_classes!r}")
        if positive_label is not None and (not isinstance(positive_label, str) or positive_label == OTHER):
            raise ValueError(f"positive_label must be a class name other than {OTHER!r}")
        self.max_classes = max_classes
        self.positive_label = positive_label
        self._classes: list[str] = []  # kept classes, sorted by class_rank
        self._index: dict[str, int] = {}  # class -> position in _classes
        self._counts: dict[tuple[str, str], float] = {}  # (true, pred) -> total weight
        self._ll_sum = 0.0  # weighted sum of -log(p_true)
        self._ll_n = 0.0  # weight of the rows with a known p_true

    # -- state ---------------------------------------------------------------

    def _admit(self, new: Iterable[str]) -> None:
        """Make the kept classes the best-ranked of kept and ``new`` ones.

        Classes pushed out fold into ``"__other__"`` together with their
        counts. The positive label is always kept and takes no slot.
        """
        pos = self.positive_label
        names = {c for c in new if c != OTHER and c not in self._index}
        if not names:
            return
        names.update(self._classes)
        has_pos = pos is not None and pos in names
        if pos is not None:
            names.discard(pos)
        keep = sorted(names, key=class_rank)[: self.max_classes]
        if has_pos and pos is not None:
            keep.append(pos)
            keep.sort(key=class_rank)
        kept = set(keep)
        evicted = [c for c in self._classes if c not in kept]
        self._classes = keep
        self._index = {c: i for i, c in enumerate(keep)}
        if evicted:
            folded: dict[tuple[str, str], float] = {}
            for (t, p), c in self._counts.items():
                key = (self._fold(t), self._fold(p))
                folded[key] = folded.get(key, 0.0) + c
            self._counts = folded

    def _fold(self, c: str) -> str:
        return c if c in self._index else OTHER

    def add(
        self,
        y_true: Sequence[str],
        y_pred: Sequence[str],
        p_true: npt.ArrayLike | None = None,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """Count one batch of (label, prediction) pairs.

        Parameters
        ----------
        y_true, y_pred : sequences of str
            Classes already passed through :func:`class_key`, aligned row by row.
        p_true : array of float, optional
            Predicted probability of the *true* class per row, NaN where the
            model gave none. Log-loss covers the rows where it is known; it is
            clipped to ``[1e-15, 1 - 1e-15]`` so that one confident mistake
            costs about 34.5 nats instead of infinity.
        weights : array of float, optional
            Non-negative row weights (default 1). A weight of k is the same as
            k copies of the row; rows of weight 0 are ignored entirely.

        Raises
        ------
        ValueError
            On misaligned columns, bad weights or probabilities outside [0, 1].
        TypeError
            When a class is not a str. Nothing is counted when anything raises.
        """
        n = len(y_true)
        if len(y_pred) != n:
            raise ValueError(f"y_true has {n} rows, y_pred {len(y_pred)}")
        w = _weights(weights, n)
        p: FloatArray | None = None
        if p_true is not None:
            p = np.asarray(p_true, dtype=np.float64)
            if p.shape != (n,):
                raise ValueError(f"p_true has shape {p.shape}, expected ({n},)")
            known = p[~np.isnan(p)]
            if np.any((known < 0.0) | (known > 1.0)):
                raise ValueError("p_true must be a probability in [0, 1] or NaN")
        if w is not None and not np.all(w > 0):
            # Rare path: drop zero-weight rows so that they cannot admit a class.
            keep = np.flatnonzero(w)
            idx = keep.tolist()
            y_true = [y_true[i] for i in idx]
            y_pred = [y_pred[i] for i in idx]
            w = w[keep]
            p = None if p is None else p[keep]
            n = len(idx)
        if n == 0:
            return

        new = set(y_true)
        new.update(y_pred)
        new.difference_update(self._index)
        for c in new:
            if not isinstance(c, str):
                raise TypeError(f"classes must be str (see class_key), got {type(c).__name__}")
        self._admit(new)

        k = len(self._classes) + 1  # kept classes plus the OTHER bucket at index k - 1
        get = self._index.get
        ti = np.fromiter(map(get, y_true, repeat(k - 1)), dtype=np.intp, count=n)
        pi = np.fromiter(map(get, y_pred, repeat(k - 1)), dtype=np.intp, count=n)
        sums = np.bincount(ti * k + pi, weights=w, minlength=k * k)
        names = [*self._classes, OTHER]
        for code in np.flatnonzero(sums).tolist():
            key = (names[code // k], names[code % k])
            self._counts[key] = self._counts.get(key, 0.0) + float(sums[code])

        if p is not None:
            mask = ~np.isnan(p)
            if mask.any():
                loss = -np.log(np.clip(p[mask], LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS))
                if w is None:
                    self._ll_sum += float(loss.sum())
                    self._ll_n += float(np.count_nonzero(mask))
                else:
                    wk = w[mask]
                    self._ll_sum += float(np.dot(wk, loss))
                    self._ll_n += float(wk.sum())

    def merge(self, other: ClassificationMetrics) -> None:
        """Add ``other``'s counts: the same as one object fed both inputs.

        The kept classes become the best-ranked of both sides and the rest
        fold into ``"__other__"``, exactly as when fed row by row; a class
        ``other`` already folded ranks too low to be kept here as well.

        Raises
        ------
        ValueError
            When the two objects were built with different parameters.
        """
        if not isinstance(other, ClassificationMetrics):
            raise TypeError(f"cannot merge {type(other).__name__} into ClassificationMetrics")
        if (other.max_classes, other.positive_label) != (self.max_classes, self.positive_label):
            raise ValueError("cannot merge ClassificationMetrics with different parameters")
        items = list(other._counts.items())  # snapshot: other may be self
        self._admit(list(other._classes))
        for (t, p), c in items:
            key = (self._fold(t), self._fold(p))
            self._counts[key] = self._counts.get(key, 0.0) + c
        self._ll_sum += other._ll_sum
        self._ll_n += other._ll_n

    # -- metrics -------------------------------------------------------------

    def _positive(self, observed: set[str]) -> str | None:
        if self.positive_label is not None:
            return self.positive_label
        if observed <= {"0", "1"}:
            return "1"
        if observed <= {"false", "true"}:
            return "true"
        return None

    def result(self) -> dict[str, Any]:
        """Metrics of everything counted so far.

        Returns
        -------
        dict
            ``n`` (total weight), ``accuracy``, ``confusion`` ({true: {pred:
            weight}}, non-zero cells only), ``per_class`` ({class: precision,
            recall, f1, support}) over the classes present in labels or
            predictions, ``macro`` (unweighted mean over those classes),
            ``micro`` (equal to accuracy, as in scikit-learn for single-label
            data), ``binary`` (``positive``, precision, recall, f1; None when
            no positive class applies), ``log_loss`` (None without known
            probabilities) and ``log_loss_n``. With nothing counted, ``n`` is 0
            and every metric is None.
        """
        n = math.fsum(self._counts.values())
        if not self._counts or n <= 0:
            return {
                "n": 0.0,
                "accuracy": None,
                "confusion": {},
                "per_class": {},
                "macro": None,
                "micro": None,
                "binary": None,
                "log_loss": None,
                "log_loss_n": 0.0,
            }
        confusion: dict[str, dict[str, float]] = {}
        tp: dict[str, float] = {}
        true_sum: dict[str, float] = {}
        pred_sum: dict[str, float] = {}
        for (t, p), cell in self._counts.items():
            confusion.setdefault(t, {})[p] = cell
            true_sum[t] = true_sum.get(t, 0.0) + cell
            pred_sum[p] = pred_sum.get(p, 0.0) + cell
            if t == p:
                tp[t] = cell
        labels = sorted(true_sum.keys() | pred_sum.keys())
        per_class: dict[str, dict[str, float]] = {}
        for c in labels:
            pr, rc, f1 = _prf(tp.get(c, 0.0), pred_sum.get(c, 0.0), true_sum.get(c, 0.0))
            per_class[c] = {"precision": pr, "recall": rc, "f1": f1, "support": true_sum.get(c, 0.0)}
        macro = {
            m: math.fsum(per_class[c][m] for c in labels) / len(labels) for m in ("precision", "recall", "f1")
        }
        accuracy = math.fsum(tp.values()) / n
        binary: dict[str, Any] | None = None
        pos = self._positive(set(labels))
        if pos is not None:
            pr, rc, f1 = _prf(tp.get(pos, 0.0), pred_sum.get(pos, 0.0), true_sum.get(pos, 0.0))
            binary = {"positive": pos, "precision": pr, "recall": rc, "f1": f1}
        return {
            "n": n,
            "accuracy": accuracy,
            "confusion": {t: dict(sorted(row.items())) for t, row in sorted(confusion.items())},
            "per_class": per_class,
            "macro": macro,
            "micro": {"precision": accuracy, "recall": accuracy, "f1": accuracy},
            "binary": binary,
            "log_loss": self._ll_sum / self._ll_n if self._ll_n > 0 else None,
            "log_loss_n": self._ll_n,
        }

    # -- persistence ---------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """JSON-ready state: parameters, kept classes in order, non-zero cells, log-loss sums."""
        confusion: dict[str, dict[str, float]] = {}
        for (t, p), c in self._counts.items():
            confusion.setdefault(t, {})[p] = c
        return {
            "version": _STATE_VERSION,
            "max_classes": self.max_classes,
            "positive_label": self.positive_label,
            "classes": list(self._classes),
            "confusion": confusion,
            "log_loss_sum": self._ll_sum,
            "log_loss_n": self._ll_n,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ClassificationMetrics:
        """Rebuild from :meth:`to_json` output.

        Raises
        ------
        ValueError
            On anything :meth:`to_json` cannot have written: a changelog
            record that fails here must not silently reset or skew a window.

        Examples
        --------
        >>> ClassificationMetrics.from_json({"version": 1})
        Traceback (most recent call last):
        ...
        ValueError: max_classes must be a positive int, got None
        """
        if not isinstance(raw, Mapping):
            raise ValueError("ClassificationMetrics state must be an object")
        if raw.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported ClassificationMetrics state version {raw.get('version')!r}")
        max_classes: Any = raw.get("max_classes")
        self = cls(max_classes=max_classes, positive_label=raw.get("positive_label"))
        classes = raw.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) and c != OTHER for c in classes):
            raise ValueError(f"classes must be a list of class names other than {OTHER!r}")
        if len(set(classes)) != len(classes) or classes != sorted(classes, key=class_rank):
            raise ValueError("classes must be distinct and sorted by class_rank")
        if len(classes) > self.max_classes + (self.positive_label in classes):
            raise ValueError("more classes than max_classes")
        self._admit(classes)
        confusion = raw.get("confusion")
        if not isinstance(confusion, Mapping):
            raise ValueError("confusion must be an object")
        allowed = {*classes, OTHER}
        for t, row in confusion.items():
            if t not in allowed or not isinstance(row, Mapping):
                raise ValueError(f"confusion row {t!r} is not a known class with an object of counts")
            for p in row:
                if p not in allowed:
                    raise ValueError(f"confusion cell {t!r}/{p!r} is not a known class")
                c = _number(row, p, what=f"confusion cell {t!r}/{p!r}")
                if c > 0:
                    self._counts[(t, p)] = c
        full = len(classes) - (self.positive_label in classes) == self.max_classes
        if not full and any(OTHER in key for key in self._counts):
            raise ValueError(f"{OTHER!r} has counts although fewer than max_classes classes are kept")
        self._ll_sum = _number(raw, "log_loss_sum")
        self._ll_n = _number(raw, "log_loss_n")
        return self


class RegressionMetrics:
    """Weighted sums behind MAE, MSE, RMSE and bias.

    Four float64 sums and a skip count are the whole state, so merging is
    addition. Rows where the label or the prediction is NaN or infinite (or
    whose squared error overflows float64) are skipped and counted: one such
    row would otherwise turn every metric of the window into NaN or infinity,
    and state holding those values could not be written as JSON.

    Examples
    --------
    >>> m = RegressionMetrics()
    >>> m.add(np.array([1.0, 2.0, np.nan]), np.array([2.0, 0.0, 1.0]))
    >>> r = m.result()
    >>> r["n"], r["mae"], r["mse"], r["bias"], r["skipped"]
    (2.0, 1.5, 2.5, -0.5, 1)
    """

    def __init__(self) -> None:
        self._n = 0.0  # total weight of the counted rows
        self._sum_abs = 0.0  # sum w * |pred - true|
        self._sum_sq = 0.0  # sum w * (pred - true)^2
        self._sum_err = 0.0  # sum w * (pred - true)
        self._skipped = 0  # rows, not weight

    def add(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> None:
        """Count one batch of aligned labels and predictions (float64, NaN for missing).

        Raises
        ------
        ValueError
            On misaligned or non-1-D columns, or negative / non-finite weights.
        """
        t = np.asarray(y_true, dtype=np.float64)
        p = np.asarray(y_pred, dtype=np.float64)
        if t.ndim != 1 or p.shape != t.shape:
            raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be aligned 1-D arrays")
        w = _weights(weights, t.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            err = p - t
            sq = err * err
        ok = np.isfinite(sq)
        if not ok.all():
            self._skipped += int(ok.size - np.count_nonzero(ok))
            err, sq = err[ok], sq[ok]
            w = None if w is None else w[ok]
        if w is None:
            self._n += float(err.size)
            self._sum_abs += float(np.abs(err).sum())
            self._sum_sq += float(sq.sum())
            self._sum_err += float(err.sum())
        else:
            self._n += float(w.sum())
            self._sum_abs += float(np.dot(w, np.abs(err)))
            self._sum_sq += float(np.dot(w, sq))
            self._sum_err += float(np.dot(w, err))

    def merge(self, other: RegressionMetrics) -> None:
        """Add ``other``'s sums."""
        if not isinstance(other, RegressionMetrics):
            raise TypeError(f"cannot merge {type(other).__name__} into RegressionMetrics")
        self._n += other._n
        self._sum_abs += other._sum_abs
        self._sum_sq += other._sum_sq
        self._sum_err += other._sum_err
        self._skipped += other._skipped

    def result(self) -> dict[str, Any]:
        """``n`` (total weight), ``mae``, ``mse``, ``rmse``, ``bias`` (mean of pred - true), ``skipped``.

        Metrics are None while ``n`` is 0.
        """
        if self._n <= 0:
            return {"n": 0.0, "mae": None, "mse": None, "rmse": None, "bias": None, "skipped": self._skipped}
        mse = self._sum_sq / self._n
        return {
            "n": self._n,
            "mae": self._sum_abs / self._n,
            "mse": mse,
            "rmse": math.sqrt(mse),
            "bias": self._sum_err / self._n,
            "skipped": self._skipped,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready state (sums and counts)."""
        return {
            "version": _STATE_VERSION,
            "n": self._n,
            "sum_abs": self._sum_abs,
            "sum_sq": self._sum_sq,
            "sum_err": self._sum_err,
            "skipped": self._skipped,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RegressionMetrics:
        """Rebuild from :meth:`to_json` output; ValueError on malformed state.

        Examples
        --------
        >>> RegressionMetrics.from_json(RegressionMetrics().to_json()).result()["n"]
        0.0
        """
        if not isinstance(raw, Mapping):
            raise ValueError("RegressionMetrics state must be an object")
        if raw.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported RegressionMetrics state version {raw.get('version')!r}")
        self = cls()
        self._n = _number(raw, "n")
        self._sum_abs = _number(raw, "sum_abs")
        self._sum_sq = _number(raw, "sum_sq")
        self._sum_err = _number(raw, "sum_err", nonneg=False)
        skipped = raw.get("skipped")
        if isinstance(skipped, bool) or not isinstance(skipped, int) or skipped < 0:
            raise ValueError(f"skipped must be a non-negative int, got {skipped!r}")
        self._skipped = skipped
        if self._n == 0 and (self._sum_abs or self._sum_sq or self._sum_err):
            raise ValueError("sums must be 0 when n is 0")
        return self
