"""Turn a stream of per-row anomaly scores into a condition that starts and ends.

A single high score is noise; a pager should hear about a run of them, once,
and hear again when it is over. :class:`Hysteresis` becomes active after
``min_consecutive`` scores at or above the threshold and clears after as many
below it, so a flapping score produces no signal storm.

**Calibration** (``calibrate_rows > 0``): anomaly scores are often relative
(Half-Space Trees: how high a *normal* row scores depends on how many
features vary and how noisily), so a fixed threshold can sit below a
stream's normal scores and flag it forever. A calibrating gate first
collects ``calibrate_rows`` positive scores (a Half-Space Trees model scores
0.0 until its first window is learned), then uses the larger of the
configured threshold and their ``quantile``, and only then starts gating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class Transition:
    """The condition started (``active``) or ended, at ``at_ms``; ``peak`` is the highest score seen."""

    active: bool
    since_ms: int
    at_ms: int
    peak: float


class Hysteresis:
    """Consecutive-run gate over scores (see the module docstring).

    >>> h = Hysteresis(threshold=0.9, min_consecutive=2)
    >>> scores = [0.95, 0.5, 0.95, 0.97, 0.2, 0.1]
    >>> [h.update(s, t) for t, s in enumerate(scores)]  # doctest: +NORMALIZE_WHITESPACE
    [None, None, None, Transition(active=True, since_ms=2, at_ms=3, peak=0.97), None,
     Transition(active=False, since_ms=2, at_ms=5, peak=0.97)]

    Calibrating on three scores (0.0 is "not scored yet" and does not count):

    >>> h = Hysteresis(threshold=0.5, min_consecutive=1, calibrate_rows=3, quantile=0.5)
    >>> [h.update(s, t) for t, s in enumerate([0.0, 0.7, 0.8, 0.9])], h.threshold, h.calibrated
    ([None, None, None, None], 0.8, True)
    >>> h.update(0.75, 4), h.update(0.85, 5).active
    (None, True)
    """

    __slots__ = (
        "active",
        "calibrate_rows",
        "calibrated",
        "calibration",
        "cold",
        "hot",
        "min_consecutive",
        "peak",
        "quantile",
        "run_start_ms",
        "since_ms",
        "threshold",
    )

    def __init__(
        self, threshold: float, min_consecutive: int, calibrate_rows: int = 0, quantile: float = 0.99
    ) -> None:
        if min_consecutive < 1:
            raise ValueError(f"min_consecutive: must be at least 1, got {min_consecutive}")
        if calibrate_rows < 0:
            raise ValueError(f"calibrate_rows: must be >= 0, got {calibrate_rows}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile: must be in (0, 1), got {quantile}")
        self.threshold = threshold
        self.min_consecutive = min_consecutive
        self.calibrate_rows = calibrate_rows
        self.quantile = quantile
        self.calibrated = calibrate_rows == 0
        self.calibration: list[float] = []
        self.active = False
        self.hot = 0
        self.cold = 0
        self.run_start_ms = 0
        self.since_ms = 0
        self.peak = 0.0

    def update(self, score: float, at_ms: int) -> Transition | None:
        if not self.calibrated:
            self._calibrate(score)
            return None
        if score >= self.threshold:
            if self.hot == 0:
                self.run_start_ms = at_ms
            self.hot += 1
            self.cold = 0
            if not self.active:
                self.peak = max(self.peak, score) if self.hot > 1 else score
                if self.hot >= self.min_consecutive:
                    self.active, self.since_ms = True, self.run_start_ms
                    return Transition(True, self.since_ms, at_ms, self.peak)
            else:
                self.peak = max(self.peak, score)
            return None
        self.cold += 1
        self.hot = 0
        if self.active and self.cold >= self.min_consecutive:
            self.active = False
            return Transition(False, self.since_ms, at_ms, self.peak)
        return None

    def _calibrate(self, score: float) -> None:
        if score <= 0.0:
            return
        self.calibration.append(score)
        if len(self.calibration) >= self.calibrate_rows:
            self.threshold = max(self.threshold, float(np.quantile(self.calibration, self.quantile)))
            self.calibrated, self.calibration = True, []

    def to_json(self) -> list[Any]:
        state: list[Any] = [self.active, self.hot, self.cold, self.run_start_ms, self.since_ms, self.peak]
        if self.calibrate_rows:
            state += [self.threshold if self.calibrated else None, self.calibration]
        return state

    @classmethod
    def from_json(
        cls, raw: Any, threshold: float, min_consecutive: int, calibrate_rows: int = 0, quantile: float = 0.99
    ) -> Hysteresis:
        """Restore :meth:`to_json`; a state without calibration (6 items) calibrates afresh if asked to."""
        h = cls(threshold, min_consecutive, calibrate_rows, quantile)
        if not isinstance(raw, list) or len(raw) not in (6, 8):
            raise ValueError("hysteresis state: expected [active, hot, cold, run_start, since, peak]"
                             " plus [threshold, calibration] when calibrating")
        h.active, h.hot, h.cold = bool(raw[0]), int(raw[1]), int(raw[2])
        h.run_start_ms, h.since_ms, h.peak = int(raw[3]), int(raw[4]), float(raw[5])
        if calibrate_rows and len(raw) == 8:
            if raw[6] is not None:
                h.threshold, h.calibrated = float(raw[6]), True
            h.calibration = [float(x) for x in raw[7]]
        return h
