"""One metric series (model, version, segment): its open panes and closed windows.

Open panes take new events. When stream time passes a window's end plus the
allowed lateness, the window closes: its panes are merged into a
:class:`ClosedWindow`, a snapshot goes out, and panes no window needs any
more are dropped. Closed windows stay until ``label_horizon_ms`` after their
end so late labels can still revise them; events that arrive for a closed
window are not folded in (its serving numbers are final) but counted as
``late_events`` on it.

A long tumbling window (the default ``1h``) would hold sixty one-minute panes
that no other window needs once the shorter windows closed over them. Those
panes are folded into one :class:`Accumulator` per open long window instead,
so a series holds its short windows' panes plus one accumulator per long
window, not an hour of panes (memory flat after the longest hopping window).
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


def accumulates(spec: WindowSpec, pane_ms: int) -> bool:
    """Whether windows of ``spec`` fold their finished panes into an accumulator (tumbling, over a pane)."""
    return spec.hop_ms == spec.size_ms and spec.size_ms > pane_ms


@dataclass(slots=True)
class Accumulator:
    """The panes of an open tumbling window that no other open window needs, merged.

    ``folded`` counts, per pane start, the panes folded in: a pane is born with
    the count of its start (:attr:`PaneState.gen`), so a pane restored after a
    crash that persisted the fold but not the pane's deletion is recognised as
    already folded (``gen < folded``) and dropped.
    """

    window: Window
    state: PaneState
    folded: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.window.spec.size_ms,
            "hop": self.window.spec.hop_ms,
            "start": self.window.start_ms,
            "state": self.state.to_json(),
            "folded": [[ps, n] for ps, n in self.folded.items()],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Accumulator:
        try:
            w = Window(WindowSpec(int(raw["size"]), int(raw["hop"])), int(raw["start"]))
            folded = {int(ps): int(n) for ps, n in raw["folded"]}
            return cls(w, PaneState.from_json(raw["state"]), folded)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed accumulator: {exc!r}") from None


@dataclass(slots=True)
class Series:
    key: SeriesKey
    panes: dict[int, PaneState] = field(default_factory=dict)
    closed: dict[WindowKey, ClosedWindow] = field(default_factory=dict)
    accs: dict[WindowKey, Accumulator] = field(default_factory=dict)
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
            elif (w.end_ms <= closed_before_ms and pane_start_ms not in self.panes
                  and (w.spec.name, w.start_ms) not in self.accs):
                gone += 1
            else:
                open_any = True
        pane = self.panes.get(pane_start_ms)
        if pane is None and open_any:
            pane = self.panes[pane_start_ms] = self._born(wins, pane_start_ms, new_pane())
            self.next_end_ms = min(self.next_end_ms, min(w.end_ms for w in wins))
        return pane, closed, gone

    def _born(self, wins: list[Window], pane_start_ms: int, pane: PaneState) -> PaneState:
        """A pane for a start some accumulator already folded: it takes over their replay guards.

        What those accumulators hold must not be folded in again by a replayed
        record; a record the stream has not seen yet is past every guard.
        """
        for w in wins:
            acc = self.accs.get((w.spec.name, w.start_ms))
            if acc is not None and pane_start_ms in acc.folded:
                pane.gen = max(pane.gen, acc.folded[pane_start_ms])
                pane.merge_guards(acc.state)
        return pane

    def closable(self, specs: tuple[WindowSpec, ...], closed_before_ms: int | None) -> list[Window]:
        """Windows with data that should close now (all of them when ``closed_before_ms`` is None)."""
        if (not self.panes and not self.accs) or (
            closed_before_ms is not None and closed_before_ms < self.next_end_ms
        ):
            return []  # nothing can be due: the cheap path taken after almost every record
        out: dict[WindowKey, Window] = {}
        next_end = 2**63
        with_data = [w for ps in self.panes for w in windows_of_pane(specs, ps)]
        for w in with_data + [acc.window for acc in self.accs.values()]:
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
        folded = self.accs.get((window.spec.name, window.start_ms))
        if folded is not None:
            acc.merge(folded.state)
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

    def fold_panes(
        self, specs: tuple[WindowSpec, ...], pane_ms: int, new_pane: Callable[[], PaneState]
    ) -> tuple[list[int], list[Accumulator]]:
        """Fold the panes that only accumulating windows still need into their accumulators.

        Returns the folded pane starts and the accumulators that took them.
        Call after :meth:`droppable_panes` took the panes no window needs.
        """
        folded: list[int] = []
        touched: dict[WindowKey, Accumulator] = {}
        for ps, pane in list(self.panes.items()):
            wins = windows_of_pane(specs, ps)
            open_wins = [w for w in wins if (w.spec.name, w.start_ms) not in self.closed]
            if not open_wins or not all(accumulates(w.spec, pane_ms) for w in open_wins):
                continue
            for w in open_wins:
                k = (w.spec.name, w.start_ms)
                acc = self.accs.get(k)
                if acc is None:
                    acc = self.accs[k] = Accumulator(w, new_pane())
                acc.state.merge(pane)
                acc.folded[ps] = pane.gen + 1
                touched[k] = acc
            del self.panes[ps]
            folded.append(ps)
        return folded, list(touched.values())

    def drop_stale(self, specs: tuple[WindowSpec, ...]) -> tuple[list[int], list[WindowKey]]:
        """After a restore: panes an accumulator already holds, accumulators of closed windows.

        A crash may persist a fold (or a close) but not the deletions that
        followed it. Returns the dropped pane starts and accumulator keys.
        """
        stale_accs = [k for k in self.accs if k in self.closed]
        for k in stale_accs:
            del self.accs[k]
        stale_panes = []
        for ps, pane in list(self.panes.items()):
            for w in windows_of_pane(specs, ps):
                acc = self.accs.get((w.spec.name, w.start_ms))
                if acc is not None and pane.gen < acc.folded.get(ps, 0):
                    del self.panes[ps]
                    stale_panes.append(ps)
                    break
        return stale_panes, stale_accs
