"""Input validity per model: the :class:`~streams.core.ops.invalid_input.InvalidInput` monitor.

Fed once per source record with the count of events the record delivered
and the count refused by validation, charged to the model of the record's
key. An :class:`~streams.core.detection.guard.OffsetGuard` makes a replay
count nothing twice; transitions become ``invalid_input`` signals, which the
default rules turn into an alert that inhibits the model's drift alerts.
"""

from __future__ import annotations

from typing import Any

from streams.core.detection.config import OpsConfig
from streams.core.detection.guard import OffsetGuard
from streams.core.detection.signals import condition_signal
from streams.core.ops.condition import Condition
from streams.core.ops.invalid_input import InvalidInput

__all__ = ["InputCounts", "InputMonitor"]

#: accepted events, accepted records, rejected events, rejected whole records
InputCounts = tuple[int, int, int, int]


def _bucket_ms(window_ms: int) -> int:
    """A sixth of the window in whole seconds when that divides it, else one second."""
    b = max(window_ms // 6 // 1000 * 1000, 1000)
    return b if window_ms % b == 0 else 1000


class InputMonitor:
    """One model's rejected-input share, replay-safe, as signals."""

    def __init__(self, cfg: OpsConfig, model: str) -> None:
        self.model = model
        self.mon = InvalidInput(
            window_ms=cfg.invalid_window_ms,
            bucket_ms=_bucket_ms(cfg.invalid_window_ms),
            trigger_ratio=cfg.invalid_trigger_ratio,
            clear_ratio=cfg.invalid_clear_ratio,
            min_rejected=cfg.invalid_min_rejected,
        )
        self.guard = OffsetGuard()

    def add(self, counts: InputCounts, source: str, offset: int, now_ms: int) -> list[dict[str, Any]]:
        """One record's counts; the signal of the transition they cause, if any."""
        if not self.guard.admit(source, offset):
            return []
        self.guard.mark(source, offset)
        cond = self.mon.update(*counts, now_ms=now_ms)
        return [] if cond is None else [self._signal(cond, ("input", source, offset))]

    def check(self, now_ms: int) -> list[dict[str, Any]]:
        """Timer: a clear once the bad input aged out of the window."""
        cond = self.mon.check(now_ms)
        return [] if cond is None else [self._signal(cond, ("input-timer", cond.since_ms))]

    def _signal(self, cond: Condition, position: tuple[Any, ...]) -> dict[str, Any]:
        return condition_signal(
            cond,
            kind="invalid_input",
            detector="invalid_input",
            model=self.model,
            at_ms=cond.since_ms,
            position=position,
            window_start_ms=cond.since_ms - self.mon.window_ms,
        )

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "monitor": self.mon.to_state(), "guard": self.guard.to_json()}

    @classmethod
    def from_json(cls, raw: Any, cfg: OpsConfig, model: str) -> InputMonitor:
        if not isinstance(raw, dict) or raw.get("v") != 1:
            raise ValueError("input monitor state: expected an object with v=1")
        m = cls(cfg, model)
        m.mon = InvalidInput.from_state(raw["monitor"])
        m.guard = OffsetGuard.from_json(raw["guard"])
        return m
