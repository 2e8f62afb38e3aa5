"""Parameter and state validation shared by the operational detectors (errors name the field)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["check_state", "count_field", "float_param", "int_param", "opt_int_field", "state_params"]


def int_param(name: str, x: Any, minimum: int) -> int:
    """Validate an int parameter (bools refused, numpy ints accepted) ``>= minimum``."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def float_param(name: str, x: Any, lo: float, hi: float) -> float:
    """Validate a finite number parameter (bools refused) in ``[lo, hi]``."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {type(x).__name__}")
    f = float(x)
    if not (lo <= f <= hi) or math.isnan(f) or math.isinf(f):
        raise ValueError(f"{name} must be finite and in [{lo}, {hi}], got {x!r}")
    return f


def check_state(raw: Any, what: str, kind: str, version: int, keys: frozenset[str]) -> Mapping[str, Any]:
    """Check the envelope of a state (a mapping, its ``v`` and ``kind``, exactly ``keys``); return it.

    ``what`` starts every error message, e.g. ``"leak state"``.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(raw).__name__}")
    if raw.get("v") != version or raw.get("kind") != kind:
        raise ValueError(
            f"{what} must have v={version} and kind={kind!r}, got "
            f"v={raw.get('v')!r}, kind={raw.get('kind')!r}"
        )
    present = set(raw)
    if present != keys:
        raise ValueError(
            f"{what} keys differ: missing {sorted(keys - present)}, "
            f"unexpected {sorted(map(str, present - keys))}"
        )
    return raw


def state_params(raw: Mapping[str, Any], names: tuple[str, ...], what: str) -> dict[str, Any]:
    """``raw["params"]``, which must hold exactly ``names``, as constructor keyword arguments."""
    params = raw["params"]
    if not isinstance(params, Mapping) or set(params) != set(names):
        raise ValueError(f"{what} 'params' must be an object with keys {sorted(names)}")
    return {name: params[name] for name in names}


def opt_int_field(raw: Mapping[str, Any], name: str, where: str) -> int | None:
    """``raw[name]`` as an int (bools refused) or ``None``."""
    x = raw[name]
    if x is not None and (isinstance(x, bool) or not isinstance(x, int)):
        raise ValueError(f"{where} {name!r} must be an int or null, got {type(x).__name__}")
    return x


def count_field(raw: Mapping[str, Any], name: str, where: str) -> int:
    """``raw[name]`` as an int ``>= 0`` (bools refused)."""
    x = raw[name]
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"{where} {name!r} must be an int >= 0, got {x!r}")
    return x
