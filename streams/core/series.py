"""One metric series (model, version, segment): its open panes and closed windows.

Open panes take new events. When stream time passes a window's end plus the
allowed lateness, the window closes: its panes are merged into a
:class:`ClosedWindow`, a snapshot goes out, and panes no window needs any
more are dropped. Closed windows stay until ``label_horizon_ms`` after their
end so late labels can still revise them; events that arrive for a closed
window are not folded in (its serving numbers are final) but counted as
``late_events`` on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.pane import PaneState
from streams.core.windows import Window, WindowSpec, windows_of_pane

SeriesKey = tuple[str, str, str]  # model, version, segment ("" = all traffic)
WindowKey = tuple[str, int]  # spec name, start


@dataclass(slots=True)
class ClosedWindow:
    """A closed window: fixed base result plus label state that late labels revise."""

    window: Window
    base: dict[str, Any]
    labels: PaneState
    revision: int = 0
    late_events: int = 0
    pending: bool = False  # revised but the revision not emitted yet

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.window.spec.size_ms,
            "hop": self.window.spec.hop_ms,
            "start": self.window.start_ms,
            "base": self.base,
            "labels": self.labels.to_json(),
            "rev": self.revision,
            "late": self.late_events,
            "pending": self.pending,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ClosedWindow:
        try:
            w = Window(WindowSpec(int(raw["size"]), int(raw["hop"])), int(raw["start"]))
            return cls(
                w,
                dict(raw["base"]),
                PaneState.from_json(raw["labels"]),
                int(raw["rev"]),
                int(raw["late"]),
                bool(raw["pending"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed closed window: {exc!r}") from None


@dataclass(slots=True)
class Series:
    key: SeriesKey
    panes: dict[int, PaneState] = field(default_factory=dict)
    closed: dict[WindowKey, ClosedWindow] = field(default_factory=dict)
    # Lower bound of the end of any open window: below it, closable() has nothing to do.
    next_end_ms: int = 0

    def route(
        self,
        specs: tuple[WindowSpec, ...],
        pane_start_ms: int,
        closed_before_ms: int,
        new_pane: Callable[[], PaneState],
    ) -> tuple[PaneState | None, list[ClosedWindow], int]:
        """Where data for a pane goes: (open pane or None, its closed windows, closed-and-gone count).

        A window is closed when it is in ``closed`` or, never having had data,
        when it ended before ``closed_before_ms`` (stream time minus lateness).
        """
        wins = windows_of_pane(specs, pane_start_ms)
        closed: list[ClosedWindow] = []
        gone = 0
        open_any = False
        for w in wins:
            cw = self.closed.get((w.spec.name, w.start_ms))
            if cw is not None:
                closed.append(cw)
            elif w.end_ms <= closed_before_ms and pane_start_ms not in self.panes:
                gone += 1
            else:
                open_any = True
        pane = self.panes.get(pane_start_ms)
        if pane is None and open_any:
            pane = self.panes[pane_start_ms] = new_pane()
            self.next_end_ms = min(self.next_end_ms, min(w.end_ms for w in wins))
        return pane, closed, gone

    def closable(self, specs: tuple[WindowSpec, ...], closed_before_ms: int | None) -> list[Window]:
        """Windows with data that should close now (all of them when ``closed_before_ms`` is None)."""
        if not self.panes or (closed_before_ms is not None and closed_before_ms < self.next_end_ms):
            return []  # nothing can be due: the cheap path taken after almost every record
        out: dict[WindowKey, Window] = {}
        next_end = 2**63
        for ps in self.panes:
            for w in windows_of_pane(specs, ps):
                k = (w.spec.name, w.start_ms)
                if k in out or k in self.closed:
                    continue
                if closed_before_ms is None or w.end_ms <= closed_before_ms:
                    out[k] = w
                else:
                    next_end = min(next_end, w.end_ms)
        self.next_end_ms = next_end
        return sorted(out.values(), key=lambda w: (w.end_ms, w.spec.size_ms))

    def merged(self, window: Window, pane_ms: int, new_pane: Callable[[], PaneState]) -> PaneState:
        acc = new_pane()
        for ps in window.panes(pane_ms):
            pane = self.panes.get(ps)
            if pane is not None:
                acc.merge(pane)
        return acc

    def droppable_panes(self, specs: tuple[WindowSpec, ...]) -> list[int]:
        """Panes all of whose windows are closed."""
        return [
            ps
            for ps in self.panes
            if all((w.spec.name, w.start_ms) in self.closed for w in windows_of_pane(specs, ps))
        ]
