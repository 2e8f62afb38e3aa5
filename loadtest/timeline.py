"""A timeline picture of a load run: rates, lag, memory, incidents and alerts on one time axis.

Numbers in a JSON file say *how much*; a timeline says *when*: whether lag grew
before or after an incident was injected, whether memory climbs steadily or in
one step when reference profiles are installed, whether an alert came seconds
or minutes after its cause. The benchmark (``loadtest/benchmark.py``) and the
scenario runner draw their runs with :func:`render_timeline`, so both pictures
read the same way.

The output is a PNG drawn with matplotlib's Agg backend: no display, no browser
and no JavaScript needed, and the file can be attached to an issue as it is.

Examples
--------
>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "t.png"
>>> p = render_timeline(out, "demo", {"events/s": [(0, 1.0), (1, 2.0)]}, [(0.2, 0.5, "drift")],
...                     [(0.7, "alert")])
>>> p.stat().st_size > 0
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a window

import matplotlib.pyplot as plt

__all__ = ["render_timeline"]

Series = Sequence[tuple[float, float]]

#: More marker labels than this and they overlap into a black band: label every k-th only.
MAX_MARKER_LABELS = 40
#: Shading of incident spans; overlapping spans darken, which shows overlap honestly.
SPAN_ALPHA = 0.12


def _groups(series: Mapping[str, Series], axes: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Subplot title -> series names, in first-seen order; a series without a group gets its own."""
    groups: dict[str, list[str]] = {}
    for name in series:
        title = (axes or {}).get(name, name)
        groups.setdefault(title, []).append(name)
    return groups


def _finite(points: Series) -> tuple[list[float], list[float]]:
    """Split points into x and y, dropping non-finite values (a sample that failed is a gap)."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def render_timeline(
    path: Path,
    title: str,
    series: dict[str, list[tuple[float, float]]],
    spans: list[tuple[float, float, str]],
    markers: list[tuple[float, str]],
    axes: dict[str, str] | None = None,
) -> Path:
    """Draw the run as stacked subplots sharing the time axis and write it as a PNG.

    Parameters
    ----------
    path
        Where the PNG goes (parent folders are created).
    title
        Figure title (say what ran: rate, models, load).
    series
        Name -> ``(seconds since run start, value)`` points, drawn as lines.
    spans
        ``(start s, end s, label)``: incidents, shaded on every subplot and labelled on the top one.
    markers
        ``(time s, label)``: alerts, drawn as dashed vertical lines on every subplot, labelled on the
        top one (every k-th label only when there are more than :data:`MAX_MARKER_LABELS`).
    axes
        Series name -> subplot title, to share a subplot between series of one unit (produced and
        processed events/s). Default: one subplot per series.

    Returns
    -------
    Path
        ``path``, once written.
    """
    groups = _groups(series, axes)
    n = max(len(groups), 1)
    fig, subplots = plt.subplots(n, 1, sharex=True, figsize=(12, 2.4 * n + 1.0), squeeze=False)
    ax_list = [row[0] for row in subplots]
    try:
        for ax, (group_title, names) in zip(ax_list, groups.items(), strict=False):
            for name in names:
                xs, ys = _finite(series[name])
                # Dots as well as lines: sparse series (one latency per probe) stay readable.
                ax.plot(xs, ys, label=name, linewidth=1.0, marker="." if len(xs) <= 1000 else None,
                        markersize=3)
            ax.set_ylabel(group_title, fontsize=9)
            ax.grid(True, alpha=0.3)
            if len(names) > 1:
                ax.legend(loc="upper left", fontsize=8)
        if not groups:
            ax_list[0].text(0.5, 0.5, "no series", ha="center", va="center", transform=ax_list[0].transAxes)
        top = ax_list[0]
        for start, end, label in spans:
            for ax in ax_list:
                ax.axvspan(start, end, color="tab:red", alpha=SPAN_ALPHA, linewidth=0)
            if label:
                top.text(start, 1.02, label, transform=top.get_xaxis_transform(), fontsize=7,
                         color="tab:red", rotation=30, ha="left", va="bottom")
        every = max(1, math.ceil(len(markers) / MAX_MARKER_LABELS))
        for i, (t, label) in enumerate(markers):
            for ax in ax_list:
                ax.axvline(t, color="tab:purple", linestyle="--", linewidth=0.8, alpha=0.7)
            if label and i % every == 0:
                top.text(t, 0.98, label, transform=top.get_xaxis_transform(), fontsize=7,
                         color="tab:purple", rotation=90, ha="right", va="top")
        ax_list[-1].set_xlabel("seconds since run start")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)  # figures are global in pyplot: a long run renders many
    return path
