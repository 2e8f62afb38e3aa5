"""The ingest agent's offset gate: in order, no holes, commits never past what was processed."""

from __future__ import annotations

import itertools
import random

import pytest

from streams.app.order import OffsetGate, Verdict, start_offsets

P = ("predictions", 0)


def positioned(at: int = 10, **kwargs: float) -> OffsetGate:
    gate = OffsetGate(frozenset({"predictions", "feedback"}), **kwargs)  # type: ignore[arg-type]
    gate.restart({P: at}, now_s=-100.0)
    return gate


def no_end(topic: str, partition: int) -> int | None:
    return None


@pytest.mark.parametrize(("offsets", "verdicts", "expected_after"), [
    ([10, 11, 12], ["next", "next", "next"], 13),
    ([10, 10, 9], ["next", "back", "back"], 11),
    ([10, 12, 11, 12], ["next", "gap", "next", "next"], 13),
    ([13], ["gap"], 10),
    ([9, 10], ["back", "next"], 11),
])
def test_admits_only_the_expected_offset(offsets: list[int], verdicts: list[str],
                                         expected_after: int) -> None:
    gate = positioned(10)
    assert [gate.admit(*P, o).value for o in offsets] == verdicts
    assert gate.expected(*P) == expected_after


def test_a_partition_is_early_until_positioned_and_again_after_it_is_revoked() -> None:
    gate = OffsetGate(frozenset({"predictions"}))
    assert gate.admit(*P, 0) is Verdict.EARLY
    gate.restart({P: 0, ("other", 0): 4}, now_s=0.0)  # unwatched topics are ignored
    assert gate.admit(*P, 0) is Verdict.NEXT
    assert gate.expected("other", 0) is None
    gate.forget([P])
    assert gate.admit(*P, 1) is Verdict.EARLY
    gate.restart({P: 1}, now_s=0.0)
    assert gate.admit(*P, 1) is Verdict.NEXT


def test_a_restart_moves_the_expected_offset_back_to_the_committed_one() -> None:
    gate = positioned(10)
    for o in range(10, 20):
        gate.admit(*P, o)
    gate.restart({P: 15}, now_s=0.0)  # a seek to the committed offset: records 15.. come again, in order
    assert [gate.admit(*P, o).value for o in (15, 16)] == ["next", "next"]


def test_seeks_after_a_gap_are_spaced_and_counted() -> None:
    gate = positioned(10, reseek_after_s=1.0)
    assert gate.admit(*P, 14) is Verdict.GAP
    assert gate.seek_due(*P, now_s=50.0) == 10
    assert gate.admit(*P, 15) is Verdict.GAP  # fetched before the seek: no second seek yet
    assert gate.seek_due(*P, now_s=50.4) is None
    assert gate.seek_due(*P, now_s=51.0) == 10
    assert gate.admit(*P, 10) is Verdict.NEXT  # the seek worked: the count starts over
    assert gate.admit(*P, 12) is Verdict.GAP
    assert gate.seek_due(*P, now_s=51.1) == 11


def test_while_seeking_only_the_expected_offset_is_handed_over_for_a_while() -> None:
    gate = positioned(10, reseek_after_s=2.0)
    assert gate.fetched(*P, 14, now_s=0.0)  # no seek under way: everything goes to the agent
    assert gate.admit(*P, 14) is Verdict.GAP
    assert gate.seek_due(*P, now_s=1.0) == 10
    assert [gate.fetched(*P, o, now_s=1.5) for o in (15, 16, 10)] == [False, False, True]
    assert gate.admit(*P, 10) is Verdict.NEXT
    assert gate.fetched(*P, 12, now_s=1.6)  # the seek is over once the expected record came
    assert gate.admit(*P, 14) is Verdict.GAP
    assert gate.seek_due(*P, now_s=2.0) == 11
    assert not gate.fetched(*P, 15, now_s=3.9)
    assert gate.fetched(*P, 15, now_s=4.0)  # its time is up: the agent sees what the seek did


def test_while_seeking_the_records_after_the_expected_one_follow_it_in_order() -> None:
    """Records are taken in groups: those after the expected one must get through before it is admitted."""
    gate = OffsetGate(frozenset({"predictions"}), reseek_after_s=2.0)
    gate.restart({P: 10}, now_s=0.0)  # the restart is a seek under way
    got = [gate.fetched(*P, o, now_s=0.5) for o in (14, 10, 11, 13, 12, 13, 11)]
    assert got == [False, True, True, False, True, True, False]  # 10, 11, 12, 13 in order; the rest dropped
    assert [gate.admit(*P, o) for o in (10, 11, 12, 13)] == [Verdict.NEXT] * 4


def test_a_seek_that_brings_nothing_back_is_repeated_by_overdue() -> None:
    gate = positioned(10, reseek_after_s=2.0)
    assert gate.admit(*P, 10) is Verdict.NEXT  # the restart's seek brought 10 back
    assert gate.overdue(0.0, no_end) == []  # no hole: nothing to repeat
    gate.admit(*P, 12)
    assert gate.seek_due(*P, now_s=1.0) == 11
    assert gate.overdue(2.5, no_end) == []
    assert gate.overdue(3.0, no_end) == [(P, 11)]
    assert gate.admit(*P, 11) is Verdict.NEXT
    assert gate.overdue(9.0, no_end) == []


def test_a_restart_is_repeated_unless_the_partition_has_nothing_at_the_committed_offset() -> None:
    gate = OffsetGate(frozenset({"predictions", "feedback"}), reseek_after_s=2.0)
    gate.restart({P: 10, ("feedback", 0): 3}, now_s=0.0)  # records 10.. were taken while early
    ends = {P: 25, ("feedback", 0): 3}  # feedback:0 is idle: nothing to wait for there
    assert gate.overdue(1.0, lambda t, p: ends[(t, p)]) == []
    assert gate.overdue(2.0, lambda t, p: ends[(t, p)]) == [(P, 10)]
    assert gate.overdue(4.0, lambda t, p: ends[(t, p)]) == [(P, 10)]
    assert gate.admit(*P, 10) is Verdict.NEXT
    assert gate.overdue(9.0, lambda t, p: ends[(t, p)]) == []


def test_a_hole_that_survives_every_seek_is_given_up_and_the_record_after_it_processed() -> None:
    gate = positioned(10, reseek_after_s=0.0, accept_after_seeks=3)
    for i in range(2):  # the restart counts as the first seek
        assert gate.admit(*P, 12) is Verdict.GAP
        assert gate.seek_due(*P, now_s=float(i)) == 10
    assert gate.admit(*P, 12) is Verdict.SKIPPED_TO
    assert gate.admit(*P, 13) is Verdict.NEXT


def test_a_partition_early_for_too_long_asks_to_be_repositioned_once_per_period() -> None:
    gate = OffsetGate(frozenset({"predictions"}), early_for_s=10.0)
    assert [gate.reposition_due(*P, now_s=t) for t in (0.0, 9.9, 10.0, 15.0, 20.0)] == [
        False, False, True, False, True]


def test_the_commit_offset_is_past_the_last_record_finished_in_order() -> None:
    gate = positioned(10)
    assert gate.committable(*P) == 10  # the position itself until a record is finished
    assert gate.committable("feedback", 0) is None  # not positioned: nothing to commit
    assert gate.admit(*P, 10) is Verdict.NEXT
    assert gate.committable(*P) == 10  # admitted, still being processed
    gate.finish(*P, 10)
    assert gate.committable(*P) == 11
    assert gate.admit(*P, 13) is Verdict.GAP  # 11 and 12 missing: 13 is not finished
    gate.finish(*P, 13)  # (a caller bug) a record not admitted does not move it
    assert gate.committable(*P) == 11


def test_a_given_up_hole_moves_the_commit_offset_past_it_once_the_record_after_it_is_finished() -> None:
    gate = positioned(10, reseek_after_s=0.0, accept_after_seeks=2)
    assert gate.admit(*P, 15) is Verdict.GAP
    assert gate.seek_due(*P, now_s=1.0) == 10
    assert gate.admit(*P, 15) is Verdict.SKIPPED_TO
    gate.finish(*P, 15)
    assert gate.committable(*P) == 16


def test_random_deliveries_process_every_offset_in_order_without_holes() -> None:
    """Replays, duplicates and holes in any mix: every offset is processed, in order, never past a hole.

    A rebalance re-delivers from the committed offset, and those records are processed again
    (the stages' replay guards skip them); a commit never passes an offset not yet processed.

    A hole is seen only when a later record arrives, so the log keeps growing past n.
    """
    rng = random.Random(7)
    n = 200
    for _ in range(50):
        gate = OffsetGate(frozenset({"predictions"}), reseek_after_s=3.0, accept_after_seeks=10**6)
        gate.restart({P: 0}, now_s=0.0)
        processed: list[int] = []
        cursor, committed, now = 0, 0, 0.0
        while (gate.expected(*P) or 0) < n:
            now += 1.0
            step = rng.random()
            if step < 0.1:  # a skipped record (the faust race)
                cursor += 1
                continue
            if step < 0.15:  # a re-delivery from the committed offset (a rebalance)
                cursor = committed
                gate.restart({P: committed}, now_s=now)
                continue
            if not gate.fetched(*P, cursor, now_s=now):  # the consumer drops it while seeking
                cursor += 1
                continue
            verdict = gate.admit(*P, cursor)
            if verdict is Verdict.NEXT:
                processed.append(cursor)
                gate.finish(*P, cursor)
                cursor += 1
            elif verdict is Verdict.GAP:
                target = gate.seek_due(*P, now_s=now)
                if target is not None:
                    cursor = target
                else:
                    cursor += 1
            else:
                cursor += 1
            if rng.random() < 0.2:
                committed = gate.committable(*P) or 0
                assert committed <= (processed[-1] + 1 if processed else 0)
        assert set(processed) >= set(range(n))
        for a, b in itertools.pairwise(processed):
            assert b == a + 1 or b <= a, f"{b} processed right after {a}: a hole"
        assert processed[0] == 0


@pytest.mark.parametrize(("committed", "earliest", "want"), [
    ({P: 7}, {}, {P: 7}),
    ({P: None}, {P: 3}, {P: 3}),
    ({P: -1}, {P: 0}, {P: 0}),
    ({P: 0}, {P: 0}, {P: 0}),
    ({P: 2}, {P: 5}, {P: 5}),  # committed below the log start: retention removed them
])
def test_start_offsets_fall_back_to_the_earliest_offset(
    committed: dict[tuple[str, int], int | None], earliest: dict[tuple[str, int], int],
    want: dict[tuple[str, int], int],
) -> None:
    assert start_offsets(committed, earliest) == want


@pytest.mark.parametrize("kwargs", [{"reseek_after_s": -1.0}, {"accept_after_seeks": 0}])
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        OffsetGate(frozenset({"p"}), **kwargs)  # type: ignore[arg-type]


def test_a_negative_restart_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="predictions:0"):
        OffsetGate(frozenset({"predictions"})).restart({P: -1}, now_s=0.0)
