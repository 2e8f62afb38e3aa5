"""Invalid input: rejected share of a model's events, with hysteresis, in processing time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.ops.invalid_input import InvalidInput

S = 1_000

# Each step: (now_ms, accepted events, accepted records, rejected events, rejected records) ->
# the transition expected after it: True (started), False (cleared) or None.
SCRIPTS: dict[str, list[tuple[tuple[int, int, int, int, int], bool | None]]] = {
    "clean traffic never fires": [((t * S, 500, 1, 0, 0), None) for t in range(0, 120, 5)],
    "a few bad rows below the minimum count do not fire": [
        ((0, 100, 1, 10, 0), None),  # 9% but only 10 events
        ((5 * S, 100, 1, 5, 0), None),
    ],
    "bad rows above 5% fire once, then stop piling on": [
        ((0, 1000, 2, 10, 0), None),  # 1%
        ((S, 500, 1, 90, 0), True),  # 100 / 1600 = 6.25%
        ((2 * S, 500, 1, 90, 0), None),  # active already
    ],
    "undecodable records count as a record's worth of events": [
        ((0, 1500, 3, 0, 0), None),
        ((S, 0, 0, 0, 1), True),  # 500 / 2000 = 25%
        ((2 * S, 0, 0, 0, 1), None),  # still active: no second start
    ],
    "hysteresis: between clear and trigger stays active": [
        ((0, 1000, 2, 100, 0), True),  # 9%
        ((11 * S, 1000, 2, 0, 0), None),  # 100/2100 = 4.8%: below trigger, above clear
        ((61 * S, 1000, 2, 0, 0), False),  # the bad bucket aged out: 0%
    ],
    "no traffic at all clears after the window": [
        ((0, 100, 1, 100, 0), True),
        ((70 * S, 0, 0, 0, 0), False),
    ],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts(name: str) -> None:
    mon = InvalidInput(window_ms=60 * S, bucket_ms=10 * S)
    got = []
    for (now, *counts), _ in SCRIPTS[name]:
        c = mon.update(*counts, now_ms=now)
        got.append(None if c is None else c.active)
    assert got == [want for _, want in SCRIPTS[name]]


def test_the_timer_clears_a_model_that_went_quiet_and_never_fires_by_itself() -> None:
    mon = InvalidInput(window_ms=60 * S, bucket_ms=10 * S)
    c = mon.update(0, 0, 50, 0, now_ms=0)
    assert c is not None and c.active and c.value == 1.0 and c.threshold == 0.05
    assert mon.check(59 * S) is None
    c = mon.check(60 * S)
    assert c is not None and not c.active and c.threshold == 0.01
    assert mon.check(600 * S) is None


def test_the_clock_never_runs_backwards() -> None:
    mon = InvalidInput(window_ms=60 * S, bucket_ms=10 * S)
    mon.update(0, 0, 50, 0, now_ms=100 * S)
    assert mon.update(1000, 1, 0, 0, now_ms=0) is None  # counted at 100 s, not at 0
    assert mon.active


def test_state_round_trip_continues_identically() -> None:
    a = InvalidInput(window_ms=60 * S, bucket_ms=10 * S)
    a.update(1000, 2, 30, 0, now_ms=0)
    a.update(1000, 2, 80, 0, now_ms=15 * S)
    b = InvalidInput.from_state(orjson.loads(orjson.dumps(a.to_state())))
    assert b.to_state() == a.to_state()
    for mon in (a, b):
        mon.update(1000, 2, 0, 0, now_ms=30 * S)
    ca, cb = a.check(80 * S), b.check(80 * S)
    assert ca == cb and ca is not None and not ca.active


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_ms": 0}, "window_ms must be >= 1"),
        ({"bucket_ms": 7_000}, "multiple of bucket_ms"),
        ({"trigger_ratio": 1.5}, "trigger_ratio must be finite and in"),
        ({"clear_ratio": 0.2}, "clear_ratio must be <= trigger_ratio"),
        ({"min_rejected": 0}, "min_rejected must be >= 1"),
        ({"min_rejected": True}, "min_rejected must be an int"),
    ],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        InvalidInput(**kwargs)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="counts must be ints"):
        InvalidInput().update(-1, 0, 0, 0, now_ms=0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("kind", "silence", "kind='invalid_input'"),
        ("buckets", [[0, 1, 2]], "buckets must be lists of 5"),
        ("active", 1, "active must be a bool"),
        ("now_ms", "x", "now_ms must be an int"),
        ("params", {"window_ms": 1000, "bogus": 1}, "params:"),
    ],
)
def test_a_malformed_state_is_refused_with_the_field(field: str, value: Any, match: str) -> None:
    raw = InvalidInput().to_state()
    raw[field] = value
    with pytest.raises(ValueError, match=match):
        InvalidInput.from_state(raw)
