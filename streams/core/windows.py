"""Event-time windows built from panes.

Every configured window (tumbling ``1m``, hopping ``5m/1m``, ``1h``...) is cut
into *panes*: aligned slices whose length divides every window size and hop.
Each event updates exactly one pane; a window's result is the merge of its
panes, taken when the window closes. This is the "panes" technique of Li,
Maier, Tufte, Papadimos and Tucker, *No pane, no gain: efficient evaluation of
sliding-window aggregates over data streams* (SIGMOD Record 34(1), 2005): a
hopping window no longer multiplies the work (and the changelog writes) by
``size / hop``, and all window sizes share one state.

Windows are half-open, ``[start_ms, start_ms + size_ms)``, aligned to the Unix
epoch, and close once the stream time of their key reaches
``end_ms + allowed_lateness_ms``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import reduce

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def parse_duration_ms(text: str) -> int:
    """Parse ``"30s"``, ``"5m"``, ``"1h"``, ``"250ms"`` into milliseconds.

    >>> parse_duration_ms("5m"), parse_duration_ms("250ms")
    (300000, 250)
    """
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like '30s', '5m' or '1h', got {text!r}")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact spelling: ``300000`` -> ``"5m"``."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A tumbling (``hop_ms == size_ms``) or hopping window definition.

    Parameters
    ----------
    size_ms
        Window length.
    hop_ms
        Distance between window starts; must divide ``size_ms`` so that every
        window is a whole number of hops (and panes).

    Examples
    --------
    >>> w = WindowSpec.parse("5m/1m")
    >>> w.name, w.size_ms, w.hop_ms
    ('5m/1m', 300000, 60000)
    >>> w.starts_containing(150_000)
    [-120000, -60000, 0, 60000, 120000]
    """

    size_ms: int
    hop_ms: int
    name: str = field(init=False, compare=False)  # "5m/1m"; computed once, it keys state cells

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.hop_ms <= 0:
            raise ValueError(f"window size and hop must be positive, got {self.size_ms}/{self.hop_ms}")
        if self.size_ms % self.hop_ms:
            raise ValueError(f"window hop {self.hop_ms} ms must divide its size {self.size_ms} ms")
        size = format_duration(self.size_ms)
        name = size if self.hop_ms == self.size_ms else f"{size}/{format_duration(self.hop_ms)}"
        object.__setattr__(self, "name", name)

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        """``"1m"`` (tumbling) or ``"5m/1m"`` (size/hop)."""
        size, _, hop = text.partition("/")
        size_ms = parse_duration_ms(size)
        return cls(size_ms, parse_duration_ms(hop) if hop else size_ms)

    def starts_containing(self, t_ms: int) -> list[int]:
        """Starts of every window of this spec that contains instant ``t_ms``."""
        last = t_ms - t_ms % self.hop_ms
        return list(range(last - self.size_ms + self.hop_ms, last + 1, self.hop_ms))


def pane_ms_for(specs: tuple[WindowSpec, ...]) -> int:
    """The largest pane length that tiles every window: gcd of all sizes and hops."""
    if not specs:
        raise ValueError("at least one window is needed")
    return reduce(math.gcd, [v for s in specs for v in (s.size_ms, s.hop_ms)])


@dataclass(frozen=True, slots=True)
class Window:
    """One concrete window: a spec and its start."""

    spec: WindowSpec
    start_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.spec.size_ms

    def panes(self, pane_ms: int) -> range:
        """Starts of the panes this window is made of."""
        return range(self.start_ms, self.end_ms, pane_ms)


def windows_of_pane(specs: tuple[WindowSpec, ...], pane_start_ms: int) -> list[Window]:
    """Every window (of every spec) that a pane belongs to."""
    return [Window(s, start) for s in specs for start in s.starts_containing(pane_start_ms)]


def pane_retention_end_ms(specs: tuple[WindowSpec, ...], pane_start_ms: int) -> int:
    """End of the last window containing the pane: after it closes the pane can go."""
    return max(w.end_ms for w in windows_of_pane(specs, pane_start_ms))
