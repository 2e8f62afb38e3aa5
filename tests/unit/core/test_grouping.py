"""Group cuts along the group log (streams.core.grouping): table-driven, plus the log's own rules."""

from __future__ import annotations

import random

import pytest

from streams.core.grouping import GroupLog, plan

CASES = [
    # (waiting offsets, logged groups, max records, force, group ends)
    ([], [], 4, False, []),
    ([0, 1, 2, 3, 4, 5], [], 4, False, [4, 6]),
    ([0, 1, 2], [], 1, False, [1, 2, 3]),
    # a replay: exactly the logged groups, then freely
    ([0, 1, 2, 3, 4, 5, 6], [(0, 2), (3, 3), (4, 5)], 10, False, [3, 4, 6, 7]),
    # a logged group whose last record has not come yet waits, with all after it
    ([0, 1, 2, 3], [(0, 2), (3, 6)], 10, False, [3]),
    ([3, 4], [(3, 6)], 10, False, []),
    ([3, 4], [(3, 6)], 10, True, [2]),  # forced: folded incomplete
    # free records stop short of the next logged group
    ([0, 1, 2, 3, 4, 5], [(4, 5)], 10, False, [4, 6]),
    # a hole the gate gave up (offset 5 never came): the group is complete once a later offset is in
    ([3, 4, 6, 7], [(3, 5)], 10, False, [2, 4]),
    # the replay starts inside a logged group (its first records were committed)
    ([2, 3, 4], [(0, 3)], 10, False, [2, 3]),
    # max_records cuts free runs, never logged groups
    ([0, 1, 2, 3, 4], [(0, 4)], 2, False, [5]),
]


@pytest.mark.parametrize(("offsets", "logged", "max_records", "force", "ends"), CASES)
def test_plan_cuts_along_the_log(offsets: list[int], logged: list[tuple[int, int]], max_records: int,
                                 force: bool, ends: list[int]) -> None:
    assert plan(offsets, GroupLog(list(logged)), max_records, force) == ends


def _run(rng: random.Random, log: GroupLog, first: int, max_take: int, logging: bool
         ) -> list[tuple[int, int]]:
    """Offsets ``first``..59 arriving in takes of 1 to ``max_take``; the groups cut (and logged if asked)."""
    groups: list[tuple[int, int]] = []
    waiting: list[int] = []
    nxt = first
    while nxt < 60:
        k = rng.randint(1, max_take)
        waiting += range(nxt, min(nxt + k, 60))
        nxt += k
        start = 0
        for end in plan(waiting, log, max_records=5):
            g = (waiting[start], waiting[end - 1])
            if logging:
                log.add(*g)
            groups.append(g)
            start = end
        del waiting[:start]
    return groups


@pytest.mark.parametrize("seed", range(20))
def test_a_replay_from_any_commit_forms_the_logged_groups_whatever_arrives_when(seed: int) -> None:
    """First run: groups cut by arbitrary arrivals, logged. Replay from a commit: same groups."""
    rng = random.Random(seed)
    log = GroupLog()
    first_run = _run(rng, log, 0, max_take=7, logging=True)
    commit = rng.choice([g[0] for g in first_run])
    log.committed(commit)
    assert _run(rng, log, commit, max_take=9, logging=False) == [g for g in first_run if g[0] >= commit]


def test_the_log_refuses_overlaps_and_bad_json() -> None:
    log = GroupLog()
    log.add(0, 4)
    with pytest.raises(ValueError, match="overlaps"):
        log.add(4, 6)
    with pytest.raises(ValueError, match="after its last"):
        log.add(9, 8)
    with pytest.raises(ValueError, match="group log"):
        GroupLog.from_json({"v": 2, "groups": []})
    with pytest.raises(ValueError, match="bad group"):
        GroupLog.from_json({"v": 1, "groups": [[1, "2"]]})
    with pytest.raises(ValueError, match="max_records"):
        plan([1], log, max_records=0)
