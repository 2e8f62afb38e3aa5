"""FeatureColumns: rows taken or sliced keep the conversions made so far, and equal fresh ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streams.core.columns import FeatureColumns, numeric_column

COLUMNS: dict[str, list[Any]] = {
    "floats": [0.5, -1.25, 3.0, 7.5, 1e300, -0.0],
    "ints and none": [1, None, 3, None, 5, 6],
    "huge int": [1, 10**400, 2.5, -(10**400), None, 0],
    "text": ["a", "b", None, "a", "c", "b"],
    "bools and numbers": [True, 1, 0.5, False, None, "x"],
    "all none": [None] * 6,
}
PICKS: list[tuple[str, Any]] = [
    ("take some", [4, 0, 2]),
    ("take repeated", [1, 1, 5]),
    ("take none", []),
    ("take all", list(range(6))),
    ("slice middle", (1, 4)),
    ("slice empty", (3, 3)),
    ("slice tail", (5, 6)),
]


def _pick(cols: FeatureColumns, how: Any) -> FeatureColumns:
    return cols.slice(*how) if isinstance(how, tuple) else cols.take(how)


@pytest.mark.parametrize("converted_first", [True, False])
@pytest.mark.parametrize(("pick_name", "how"), PICKS, ids=[p[0] for p in PICKS])
@pytest.mark.parametrize("name", list(COLUMNS))
def test_picked_rows_convert_as_a_fresh_column_of_those_rows(
    name: str, pick_name: str, how: Any, converted_first: bool
) -> None:
    cols = FeatureColumns(COLUMNS)
    if converted_first:
        cols.numeric(name)
    part = _pick(cols, how)
    rows = list(range(*how)) if isinstance(how, tuple) else how
    values = [COLUMNS[name][i] for i in rows]
    assert part[name] == values
    x, other = part.numeric(name)
    want_x, want_other = numeric_column(values)
    np.testing.assert_array_equal(x, want_x)
    assert (other is None) == (want_other is None)
    if other is not None and want_other is not None:
        np.testing.assert_array_equal(other, want_other)
    assert part.types(name) == frozenset(map(type, values))  # types are never carried: exact
    assert part.counts("text") == FeatureColumns({"text": [COLUMNS["text"][i] for i in rows]}).counts("text")


def test_conversions_are_carried_not_redone() -> None:
    cols = FeatureColumns(COLUMNS)
    x, _ = cols.numeric("floats")
    part = cols.slice(1, 4)
    assert np.shares_memory(part.numeric("floats")[0], x)  # a view of the batch's conversion
    assert "ints and none" not in part._numeric  # only what was converted before is carried


@pytest.mark.parametrize("name", list(COLUMNS))
def test_numbers_only_agrees_with_the_value_types(name: str) -> None:
    """msgspec's check in C and the Python pass over the types must tell numeric columns alike."""
    cols = FeatureColumns(COLUMNS)
    by_types = all((t in (int, float) or t is type(None)) for t in cols.types(name))
    expect = by_types and name != "huge int"  # beyond the float range: the long way (same result)
    assert cols.numbers_only(name) == expect
    x, other = cols.numeric(name)
    want_x, want_other = numeric_column(COLUMNS[name])
    np.testing.assert_array_equal(x, want_x)
    assert (other is None) == (want_other is None)
