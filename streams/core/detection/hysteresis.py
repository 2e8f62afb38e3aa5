"""Turn a stream of per-row anomaly scores into a condition that starts and ends.

A single high score is noise; a pager should hear about a run of them, once,
and hear again when it is over. :class:`Hysteresis` becomes active after
``min_consecutive`` scores at or above the threshold and clears after as many
below it, so a flapping score produces no signal storm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    """

    __slots__ = ("active", "cold", "hot", "min_consecutive", "peak", "run_start_ms", "since_ms", "threshold")

    def __init__(self, threshold: float, min_consecutive: int) -> None:
        if min_consecutive < 1:
            raise ValueError(f"min_consecutive: must be at least 1, got {min_consecutive}")
        self.threshold = threshold
        self.min_consecutive = min_consecutive
        self.active = False
        self.hot = 0
        self.cold = 0
        self.run_start_ms = 0
        self.since_ms = 0
        self.peak = 0.0

    def update(self, score: float, at_ms: int) -> Transition | None:
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

    def to_json(self) -> list[Any]:
        return [self.active, self.hot, self.cold, self.run_start_ms, self.since_ms, self.peak]

    @classmethod
    def from_json(cls, raw: Any, threshold: float, min_consecutive: int) -> Hysteresis:
        h = cls(threshold, min_consecutive)
        if not isinstance(raw, list) or len(raw) != 6:
            raise ValueError("hysteresis state: expected [active, hot, cold, run_start, since, peak]")
        h.active, h.hot, h.cold = bool(raw[0]), int(raw[1]), int(raw[2])
        h.run_start_ms, h.since_ms, h.peak = int(raw[3]), int(raw[4]), float(raw[5])
        return h
