"""Comparing snapshots of two runs that folded the same data in another order."""

from __future__ import annotations

from typing import Any

import pytest


def assert_same(a: Any, b: Any, path: str = "", rel: float = 1e-9) -> None:
    """Equal, floats to ``rel`` (sums folded in another order after a replay).

    ``revision`` and ``reason`` are not compared: they count and name emissions, not results.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k not in ("revision", "reason"):
                assert_same(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12), path
    else:
        assert a == b, path
