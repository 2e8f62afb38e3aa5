"""Tests of loadtest.timeline: the PNG timeline that the benchmark and the scenario runner draw."""

from __future__ import annotations

import math
from pathlib import Path

from loadtest.timeline import render_timeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_renders_a_png_of_nonzero_size(tmp_path: Path) -> None:
    series = {
        "produced events/s": [(float(t), 1000.0) for t in range(20)],
        "processed events/s": [(float(t), 900.0 + t) for t in range(20)],
        "lag (records)": [(float(t), float(t % 5)) for t in range(20)],
        "RSS (MB)": [(float(t), 100.0 + t) for t in range(20)],
    }
    out = render_timeline(
        tmp_path / "sub" / "timeline.png",
        "test run",
        series,
        spans=[(3.0, 8.0, "drift on m0"), (12.0, 14.0, "")],
        markers=[(5.5, "alert drift m0"), (13.0, "")],
        axes={"produced events/s": "events/s", "processed events/s": "events/s"},
    )
    assert out == tmp_path / "sub" / "timeline.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000


def test_default_axes_and_awkward_input(tmp_path: Path) -> None:
    """One subplot per series by default; NaN samples, empty series and many markers still render."""
    series = {"a": [(0.0, 1.0), (1.0, math.nan), (2.0, 3.0)], "b": []}
    markers = [(i * 0.01, f"alert {i}") for i in range(200)]
    out = render_timeline(tmp_path / "t.png", "awkward", series, [], markers)
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_no_series_at_all(tmp_path: Path) -> None:
    out = render_timeline(tmp_path / "empty.png", "nothing measured", {}, [], [])
    assert out.stat().st_size > 0
