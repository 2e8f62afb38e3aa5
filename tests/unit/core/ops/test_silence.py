"""Tests of streams.core.ops.silence.SilenceTracker: once per silence, once per resume, bounded, stateful.

Scenarios are scripts of ``(now_ms, keys seen)`` steps; after every step the
tracker is checked, and the transitions are collected as
``(now_ms, key, active, since_ms)``.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from streams.core.ops.silence import Condition, SilenceTracker

Step = tuple[int, list[str]]
Event = tuple[int, str, bool, int]


def play(tracker: SilenceTracker, script: list[Step]) -> list[Event]:
    out: list[Event] = []
    for now_ms, keys in script:
        for key in keys:
            c = tracker.seen(key, now_ms, event_time_ms=now_ms - 50)
            if c is not None:
                out.append((now_ms, key, c.active, c.since_ms))
        out.extend((now_ms, key, c.active, c.since_ms) for key, c in tracker.check(now_ms))
    return out


def every(start_s: int, stop_s: int, step_s: int, keys: list[str]) -> list[Step]:
    return [(s * 1000, list(keys)) for s in range(start_s, stop_s, step_s)]


# (name, kwargs, script, expected transitions)
SCENARIOS: list[tuple[str, dict[str, Any], list[Step], list[Event]]] = [
    ("steady", {}, every(0, 600, 10, ["a", "b"]), []),
    (
        "fires_once_resumes_once",
        {},
        every(0, 60, 10, ["a", "b"]) + every(60, 400, 10, ["b"]) + every(400, 500, 10, ["a", "b"]),
        [(170_000, "a", True, 50_000), (400_000, "a", False, 400_000)],
    ),
    (
        "exactly_at_threshold",
        {"silence_after_ms": 30_000},
        [(0, ["a"]), (29_999, []), (30_000, []), (31_000, [])],
        [(30_000, "a", True, 0)],
    ),
    (
        "two_keys_oldest_first",
        {"silence_after_ms": 30_000},
        [(0, ["a"]), (5_000, ["b"]), (10_000, ["c"]), (40_000, ["c"])],
        [(40_000, "a", True, 0), (40_000, "b", True, 5_000)],
    ),
    (
        "repeated_episodes",  # sparse calls: a large pause_gap_ms keeps them from reading as worker pauses
        {"silence_after_ms": 30_000, "pause_gap_ms": 10**9},
        [(0, ["a"]), (40_000, []), (45_000, ["a"]), (80_000, []), (90_000, ["a"])],
        [
            (40_000, "a", True, 0),
            (45_000, "a", False, 45_000),
            (80_000, "a", True, 45_000),
            (90_000, "a", False, 90_000),
        ],
    ),
    (
        "clock_step_back_is_clamped",  # now_ms going back can neither hide nor invent a silence
        {"silence_after_ms": 30_000},
        [(0, ["a", "b"]), (20_000, ["b"]), (5_000, ["b"]), (30_000, [])],
        [(30_000, "a", True, 0)],
    ),
    (
        "worker_pause_restarts_the_clocks",  # no call for 10 min: no flood, keys get a fresh period
        {"silence_after_ms": 120_000},
        [
            *every(0, 60, 10, ["a", "b"]),
            (660_000, ["b"]),
            (700_000, ["b"]),
            (780_000, ["b"]),
            (790_000, ["b"]),
        ],
        [(780_000, "a", True, 50_000)],
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "script", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(name: str, kwargs: dict[str, Any], script: list[Step], expected: list[Event]) -> None:
    assert play(SilenceTracker(**kwargs), script) == expected


def test_pause_is_counted_and_marked_in_evidence() -> None:
    tracker = SilenceTracker(silence_after_ms=120_000)
    tracker.seen("a", 0)
    assert tracker.check(600_000) == []  # first call after the gap: the tracker was away, not "a"
    assert tracker.pauses == 1
    ((key, c),) = tracker.check(720_000)
    assert (key, c.since_ms, c.evidence["tracker_resumed_ms"]) == ("a", 0, 600_000)


def test_condition_values_and_evidence() -> None:
    tracker = SilenceTracker(silence_after_ms=120_000, pause_gap_ms=10**9)
    tracker.seen("k", 1_000, event_time_ms=900)
    tracker.seen("k", 2_000, event_time_ms=800)  # event time is a running maximum
    ((key, down),) = tracker.check(200_000)
    assert key == "k"
    assert down == Condition(
        True,
        2_000,
        198_000.0,
        120_000.0,
        {"last_seen_ms": 2_000, "silent_for_ms": 198_000, "last_event_time_ms": 900},
    )
    assert tracker.is_silent("k")
    up = tracker.seen("k", 250_000, event_time_ms=249_000)
    assert up == Condition(
        False,
        250_000,
        248_000.0,
        120_000.0,
        {"last_seen_ms": 2_000, "silent_for_ms": 248_000, "event_time_ms": 249_000},
    )
    assert not tracker.is_silent("k") and "k" in tracker


def test_eviction_takes_the_longest_silent_and_counts() -> None:
    tracker = SilenceTracker(silence_after_ms=30_000, max_keys=3)
    tracker.seen("old", 0)
    tracker.seen("mid", 10_000)
    tracker.seen("new", 20_000)
    tracker.seen("newer", 25_000)  # evicts "old", which was never checked
    assert "old" not in tracker and len(tracker) == 3 and tracker.evictions == 1
    assert [k for k, _ in tracker.check(50_000)] == ["mid", "new"]
    tracker.seen("x", 51_000)  # evicts the silent "mid" (smaller last-seen than live "newer")
    assert "mid" not in tracker and tracker.is_silent("new") and tracker.evictions == 2
    tracker.seen("y", 52_000)  # "new" (silent, seen at 20 s) before "newer" (live, 25 s)
    assert "new" not in tracker and "newer" in tracker and tracker.evictions == 3
    assert tracker.seen("mid", 53_000) is None  # an evicted key comes back as a new key


def test_forget() -> None:
    tracker = SilenceTracker(silence_after_ms=30_000, pause_gap_ms=10**9)
    tracker.seen("a", 0)
    tracker.seen("b", 0)
    assert tracker.check(40_000) != []
    assert tracker.forget("a") and tracker.forget("b") is True and not tracker.forget("zzz")
    assert len(tracker) == 0 and tracker.seen("a", 41_000) is None  # no resume for a forgotten key


@pytest.mark.parametrize("cut", [3, 10, 40, 55])
def test_state_round_trip_mid_stream(cut: int) -> None:
    rng = random.Random(5)
    script: list[Step] = []
    for s in range(0, 600, 5):  # 20 keys, each sends with its own probability; some go quiet for a while
        keys = [
            f"telemetry|m|h{i}" for i in range(20) if rng.random() < (0.9 if (s // 100 + i) % 3 else 0.05)
        ]
        script.append((s * 1000, keys))
    reference = SilenceTracker(silence_after_ms=60_000, max_keys=15)
    expected = play(reference, script)
    assert expected  # the script does produce transitions
    first = SilenceTracker(silence_after_ms=60_000, max_keys=15)
    head = play(first, script[:cut])
    restored = SilenceTracker.from_state(json.loads(json.dumps(first.to_state())))
    tail = play(restored, script[cut:])
    assert head + tail == expected
    assert restored.to_state() == reference.to_state()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"silence_after_ms": 0}, "silence_after_ms"),
        ({"silence_after_ms": 1.5}, "silence_after_ms"),
        ({"silence_after_ms": True}, "silence_after_ms"),
        ({"max_keys": 0}, "max_keys"),
        ({"max_keys": "10"}, "max_keys"),
        ({"pause_gap_ms": 0}, "pause_gap_ms"),
    ],
)
def test_parameter_validation_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        SilenceTracker(**kwargs)


def test_now_ms_must_be_an_int() -> None:
    tracker = SilenceTracker()
    with pytest.raises(ValueError, match="now_ms"):
        tracker.seen("a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now_ms"):
        tracker.check(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(kind="leak"), "kind"),
        (lambda s: s.pop("pauses"), "missing"),
        (lambda s: s.update(max_keys=0), "max_keys"),
        (lambda s: s.update(live=[["a", 5, None], ["b", 1, None]]), "last-seen order"),
        (lambda s: s.update(live=[["a", 1, None], ["a", 2, None]]), "repeats"),
        (lambda s: s.update(live=[["a", 1, None]], silent=[["a", 1, None]]), "both"),
        (lambda s: s.update(live=[["a", "1", None]]), "seen_ms"),
        (lambda s: s.update(live=[["a", 10**12, None]]), "clock_ms"),
        (lambda s: s.update(epoch_ms=10**12), "epoch_ms"),
        (lambda s: s.update(evictions=-1), "evictions"),
    ],
)
def test_from_json_rejects_malformed_state(mutate: Any, match: str) -> None:
    tracker = SilenceTracker()
    tracker.seen("x", 1_000)
    state = json.loads(json.dumps(tracker.to_state()))
    mutate(state)
    with pytest.raises(ValueError, match=match):
        SilenceTracker.from_state(state)


def test_seen_and_check_cost() -> None:
    """Cost per ``seen`` on 10 000 keys and per ``check`` with nothing silent; reported, loosely bounded."""
    tracker = SilenceTracker()
    keys = [f"telemetry|model-{i % 10}|host-{i}" for i in range(10_000)]
    start = time.perf_counter()
    for now_ms in range(0, 50_000, 5_000):
        for key in keys:
            tracker.seen(key, now_ms)
    seen_us = (time.perf_counter() - start) / (10 * len(keys)) * 1e6
    start = time.perf_counter()
    for now_ms in range(50_000, 60_000, 10):
        tracker.check(now_ms)
    check_us = (time.perf_counter() - start) / 1_000 * 1e6
    print(f"SilenceTracker.seen: {seen_us:.2f} us, check (none silent): {check_us:.2f} us")
    assert seen_us < 50 and check_us < 50


def test_json_aliases() -> None:
    tracker = SilenceTracker()
    tracker.seen("a", 5)
    assert SilenceTracker.from_json(tracker.to_json()).to_state() == tracker.to_state()
