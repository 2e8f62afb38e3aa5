"""A batch's feature columns, with the conversions every stage needs computed once.

Metrics (feature statistics) and detection (histograms against the reference
profile, the profile built at warm-up) all read the same 20-odd feature columns
of each batch. Each needs the set of value types of a column (to tell numbers
from categories exactly, see :mod:`streams.core.features`), the numbers as a
float array, and the counts of each value. Done by each stage on its own,
those conversions were a third of the worker's time (``loadtest/benchmark.py
--profile``); :class:`FeatureColumns` does each once per column and hands the
result to every stage that asks.

The columns must not change after construction: results are memoised by
feature name. The codec builds one per decoded batch; code that makes new
columns (sampling, ``take``) makes a new :class:`FeatureColumns`, or a plain
dict, which the stages accept too (they then convert for themselves).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_FAST_NUMERIC_TYPES = frozenset({float, int, type(None)})
#: Value types of a column whose values are their own category labels (None is missing).
TEXT_TYPES = frozenset({str, type(None)})
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)


def is_number(v: Any) -> bool:
    """Numbers are ints and floats (numpy's too), never booleans."""
    return isinstance(v, _NUMBER_TYPES) and not isinstance(v, _BOOL_TYPES)


def numeric_column(
    col: Sequence[Any], types: frozenset[type] | None = None
) -> tuple[FloatArray, BoolArray | None]:
    """A column as float64 values plus the mask of its non-numeric values.

    Returns ``(x, other)``: ``x`` holds the numbers, NaN where the value is
    missing (``None``, NaN) or not a number; ``other`` flags the present values
    that are not numbers (strings, booleans), or is ``None`` when there are
    none. Infinities are kept in ``x``; callers treat them as missing.
    ``types`` is the set of the column's value types when the caller knows it.

    The common case, a column of Python floats, ints and ``None``, is one
    ``np.array`` call (numpy turns ``None`` into NaN); only a column holding
    other types is looked at value by value. Booleans are never numbers here
    (``float(True)`` would silently be 1.0).

    >>> x, other = numeric_column([1, None, 2.5])
    >>> x.tolist(), other
    ([1.0, nan, 2.5], None)
    >>> x, other = numeric_column([1, "a", True, None])
    >>> x.tolist(), other.tolist()
    ([1.0, nan, nan, nan], [False, True, True, False])
    """
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiu":
        return np.asarray(col, dtype=np.float64), None
    if types is None:
        types = frozenset(map(type, col))
    if types <= _FAST_NUMERIC_TYPES:
        try:
            return np.array(col, dtype=np.float64), None
        except OverflowError:  # an int beyond the float range: the value loop below makes it inf
            pass
    n = len(col)
    x = np.full(n, np.nan)
    if not any(issubclass(t, _NUMBER_TYPES) and not issubclass(t, _BOOL_TYPES) for t in types):
        other = np.fromiter((v is not None for v in col), dtype=np.bool_, count=n)  # no number at all
        return x, (other if other.any() else None)
    other = np.zeros(n, dtype=np.bool_)
    for i, v in enumerate(col):
        if v is None:
            continue
        if is_number(v):
            try:
                x[i] = float(v)
            except OverflowError:
                x[i] = np.inf if v > 0 else -np.inf
        else:
            other[i] = True
    return x, (other if other.any() else None)


_NUMBERS_OR_NONE = list[float | None]


def _numbers_check(col: Sequence[Any]) -> bool:
    """Whether msgspec takes ``col`` as ``list[float | None]`` (ints and floats, not booleans or strings)."""
    try:
        msgspec.convert(col, _NUMBERS_OR_NONE)
    except msgspec.ValidationError:
        return False
    return True


class FeatureColumns(dict[str, list[Any]]):
    """Feature name -> column (one value per row), plus memoised conversions of each column.

    Examples
    --------
    >>> cols = FeatureColumns({"x": [1.0, None, 3], "c": ["a", "b", "a"]})
    >>> sorted(t.__name__ for t in cols.types("x"))
    ['NoneType', 'float', 'int']
    >>> cols.numeric("x")[0].tolist(), cols.counts("c")
    ([1.0, nan, 3.0], Counter({'a': 2, 'b': 1}))
    >>> cols.numeric("x") is cols.numeric("x")  # computed once
    True
    """

    __slots__ = ("_counts", "_numbers", "_numeric", "_types")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._types: dict[str, frozenset[type]] = {}
        self._numbers: dict[str, bool] = {}
        self._numeric: dict[str, tuple[FloatArray, BoolArray | None]] = {}
        self._counts: dict[str, Counter[Any]] = {}

    def numbers_only(self, name: str) -> bool:
        """Whether every value of a column is a number (an int or a float, never a boolean) or None.

        The common question about a feature column, answered without the set of
        its value types: msgspec checks the values against ``list[float | None]``
        in C, four times faster than a Python pass over their types (booleans,
        strings and ints beyond the float range fail the check; the column is
        then asked the long way, by :meth:`types`).

        >>> cols = FeatureColumns({"x": [1.0, None, 3], "b": [1.0, True], "s": [1.0, "2"], "n": [None]})
        >>> [cols.numbers_only(k) for k in cols]
        [True, False, False, True]
        """
        got = self._numbers.get(name)
        if got is None:
            got = self._numbers[name] = _numbers_check(self[name])
        return got

    def types(self, name: str) -> frozenset[type]:
        """The set of value types of a column (``KeyError`` for an absent name)."""
        t = self._types.get(name)
        if t is None:
            t = self._types[name] = frozenset(map(type, self[name]))
        return t

    def numeric(self, name: str) -> tuple[FloatArray, BoolArray | None]:
        """:func:`numeric_column` of a column. The arrays are shared: do not write to them."""
        got = self._numeric.get(name)
        if got is None:
            col = self[name]
            if self.numbers_only(name):
                try:
                    got = (np.array(col, dtype=np.float64), None)
                except OverflowError:  # an int beyond the float range (not from the decoder): inf
                    got = numeric_column(col, self.types(name))
            else:
                got = numeric_column(col, self.types(name))
            self._numeric[name] = got
        return got

    def is_text(self, name: str) -> bool:
        """Whether a column holds only strings and None (its values are their own labels)."""
        return self.types(name) <= TEXT_TYPES

    def take(self, index: Sequence[int]) -> FeatureColumns:
        """The rows at ``index`` (in that order); float conversions already made are taken, not redone.

        A conversion is value by value, so the rows of a converted column are
        the conversion of those rows: sampling a batch that one stage already
        converted costs the sample, not the batch.

        >>> cols = FeatureColumns({"x": [1.0, None, 3], "c": ["a", "b", "a"]})
        >>> _ = cols.numeric("x")
        >>> part = cols.take([2, 0])
        >>> part["x"], part.numeric("x")[0].tolist(), part["c"]
        ([3, 1.0], [3.0, 1.0], ['a', 'a'])
        """
        out = FeatureColumns({k: list(map(v.__getitem__, index)) for k, v in self.items()})
        if self._numeric:
            rows = np.asarray(index, dtype=np.intp)
            self._carry_numeric(out, lambda a: a[rows])
        return out

    def slice(self, start: int, stop: int) -> FeatureColumns:
        """Rows ``start:stop``, keeping the float conversions already made (as views).

        >>> cols = FeatureColumns({"x": [1.0, "a", 3]})
        >>> part = cols.slice(1, 3)
        >>> _ = cols.numeric("x"); part2 = cols.slice(2, 3)
        >>> part["x"], part.numeric("x")[1].tolist(), part2.numeric("x")[0].tolist(), part2.numeric("x")[1]
        (['a', 3], [True, False], [3.0], None)
        """
        out = FeatureColumns({k: v[start:stop] for k, v in self.items()})
        self._carry_numeric(out, lambda a: a[start:stop])
        return out

    def _carry_numeric(self, out: FeatureColumns, pick: Callable[[Any], Any]) -> None:
        """Give ``out`` (rows of this one, chosen by ``pick``) the float conversions made so far."""
        for name, (x, other) in self._numeric.items():
            mask = None if other is None else pick(other)
            out._numeric[name] = (pick(x), mask if mask is not None and mask.any() else None)

    def counts(self, name: str) -> Counter[Any]:
        """``Counter`` of a column's values (as they are: ``1`` and ``True`` collide, callers check types)."""
        c = self._counts.get(name)
        if c is None:
            c = self._counts[name] = Counter(self[name])
        return c
