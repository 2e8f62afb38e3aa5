"""Strict decoding of JSON fields, shared by the profile and the window histogram.

Each helper checks one decoded value and returns it typed, or raises
``ValueError("<where>: ...")`` naming the field, so that a malformed profile or
state is refused with a message that points at the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["as_count", "as_finite", "as_int", "as_label", "as_object", "as_str", "exact_keys"]


def exact_keys(doc: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    """``doc`` must have exactly ``keys``; the error names the first unknown, else missing, field."""
    unknown = sorted(set(doc) - keys)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field")
    absent = sorted(keys - set(doc))
    if absent:
        raise ValueError(f"{where}.{absent[0]}: missing field")


def as_object(v: Any, where: str) -> Mapping[str, Any]:
    """A JSON object (any mapping)."""
    if not isinstance(v, Mapping):
        raise ValueError(f"{where}: must be an object, got {type(v).__name__}")
    return v


def as_count(v: Any, where: str) -> int:
    """An int ``>= 0`` (bools refused)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where}: must be an int >= 0, got {v!r}")
    return v


def as_int(v: Any, where: str) -> int:
    """An int of any sign (bools refused)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: must be an integer, got {v!r}")
    return v


def as_finite(v: Any, where: str) -> float:
    """A finite number (ints accepted, bools refused), as a float."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: must be a finite number, got {v!r}")
    return float(v)


def as_str(v: Any, where: str) -> str:
    """A string."""
    if not isinstance(v, str):
        raise ValueError(f"{where}: must be a string, got {type(v).__name__}")
    return v


def as_label(v: Any, where: str) -> str:
    """A category label (a string); the error shows the offending value."""
    if not isinstance(v, str):
        raise ValueError(f"{where}: labels must be strings, got {v!r}")
    return v
