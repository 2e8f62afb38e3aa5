"""The worker's garbage-collection policy, against a stand-in for the ``gc`` module.

The real module is not used: freezing would keep the test process's own
garbage cycles for the rest of the run.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.app.heap import FreezeAfterFullCollections


class FakeGc:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")


@pytest.mark.parametrize(
    ("events", "unfreeze_every", "want"),
    [
        ([("start", 2), ("stop", 0), ("stop", 1)], 3, []),  # young collections: nothing
        ([("start", 2), ("stop", 2)], 3, ["freeze"]),  # only when a full collection has finished
        ([("stop", 2)] * 7, 3, ["freeze", "freeze", "unfreeze", "freeze", "freeze", "unfreeze", "freeze"]),
        ([("stop", 2)] * 3, 1, ["unfreeze"] * 3),  # every full collection scans the whole heap
    ],
)
def test_freezes_after_full_collections_and_unfreezes_every_nth(
    events: list[tuple[str, int]], unfreeze_every: int, want: list[str]
) -> None:
    gc = FakeGc()
    policy = FreezeAfterFullCollections(unfreeze_every, gc=gc)
    for phase, generation in events:
        policy(phase, {"generation": generation, "collected": 0, "uncollectable": 0})
    assert gc.calls == want


def test_install_is_idempotent_and_uninstall_removes_it() -> None:
    gc = FakeGc()
    policy = FreezeAfterFullCollections(gc=gc).install().install()
    assert gc.callbacks == [policy]
    policy.uninstall()
    policy.uninstall()
    assert gc.callbacks == []


def test_a_period_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="unfreeze_every: must be at least 1, got 0"):
        FreezeAfterFullCollections(0, gc=FakeGc())
