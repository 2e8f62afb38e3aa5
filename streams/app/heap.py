"""Keep the worker's long-lived state out of Python's full garbage collections.

A worker holds its state (metric panes, closed windows, the label join, the
detectors) as Python objects that live for minutes to hours. CPython's full
(generation 2) collection scans every tracked object, and the worker's heap
grows with the models it serves: at 1,000 models each full collection took
1.0-2.3 s, every 20-40 s, and found 0-16 objects to free (9 % of the worker's
wall time, and probe alerts 3-10 s late behind the pauses; README,
Performance: "Garbage collection").

:class:`FreezeAfterFullCollections` freezes what survives each full collection
(``gc.freeze()``: the objects move to a permanent generation that collections
skip), so the next one scans only what was allocated since. Frozen objects are
still freed by reference counting, the way almost all of the worker's garbage
goes; only reference cycles among them wait. So every ``unfreeze_every``-th
full collection unfreezes first and scans the whole heap once, which bounds
how long a cycle can wait. The ``gc`` module is passed in so the policy can be
tested without freezing the test process's heap.
"""

from __future__ import annotations

import gc as _gc
from typing import Any, Protocol


class GcModule(Protocol):
    callbacks: list[Any]

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...


class FreezeAfterFullCollections:
    """A ``gc.callbacks`` hook: freeze after full collections, and unfreeze every ``unfreeze_every``-th.

    Examples
    --------
    >>> class FakeGc:
    ...     callbacks: list = []
    ...     def freeze(self): print("freeze")
    ...     def unfreeze(self): print("unfreeze")
    >>> policy = FreezeAfterFullCollections(unfreeze_every=2, gc=FakeGc())
    >>> for generation in (0, 2, 1, 2):
    ...     policy("stop", {"generation": generation})
    freeze
    unfreeze
    """

    def __init__(self, unfreeze_every: int = 30, gc: GcModule = _gc) -> None:
        if unfreeze_every < 1:
            raise ValueError(f"unfreeze_every: must be at least 1, got {unfreeze_every}")
        self.unfreeze_every = unfreeze_every
        self._gc = gc
        self._full = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        self._full += 1
        if self._full % self.unfreeze_every == 0:
            self._gc.unfreeze()  # the next full collection scans everything, cycles included
        else:
            self._gc.freeze()

    def install(self) -> FreezeAfterFullCollections:
        if self not in self._gc.callbacks:
            self._gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in self._gc.callbacks:
            self._gc.callbacks.remove(self)
