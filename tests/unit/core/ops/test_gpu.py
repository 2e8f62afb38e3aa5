"""Tests of streams.core.ops.gpu.GpuSaturation: hysteresis, missing values, order, state.

Scenarios are written as segments ``(duration_s, utilization_percent,
memory_fraction)`` sampled every 5 s, fed in 30-second batches, and the
expected transitions as ``(active, since_s, detected_s, metric)``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest

from streams.core.ops.gpu import GpuSaturation
from streams.core.ops.silence import Condition

NAN = math.nan
STEP_MS = 5_000
TOTAL_BYTES = 80e9
Segment = tuple[int, float, float]  # duration s, utilization %, memory fraction (NaN: not reported)


def samples(segments: list[Segment], start_ms: int = 0) -> tuple[np.ndarray, ...]:
    t, u, m = [], [], []
    now = start_ms
    for duration_s, util, mem in segments:
        for _ in range(duration_s * 1000 // STEP_MS):
            t.append(now)
            u.append(util)
            m.append(mem)
            now += STEP_MS
    times = np.asarray(t, dtype=np.int64)
    mem_frac = np.asarray(m, dtype=np.float64)
    return times, np.asarray(u, dtype=np.float64), mem_frac * TOTAL_BYTES, np.full(times.size, TOTAL_BYTES)


def feed(det: GpuSaturation, arrays: tuple[np.ndarray, ...], batch: int = 6) -> list[Condition]:
    t, u, used, total = arrays
    out = []
    for i in range(0, t.size, batch):
        c = det.update(t[i : i + batch], u[i : i + batch], used[i : i + batch], total[i : i + batch])
        if c is not None:
            out.append(c)
    return out


def summary(conds: list[Condition]) -> list[tuple[bool, int, int, str]]:
    return [
        (c.active, c.since_ms // 1000, int(c.evidence["detected_ms"]) // 1000, str(c.evidence["metric"]))
        for c in conds
    ]


# (name, segments, kwargs, expected transitions (active, since_s, detected_s, metric))
SCENARIOS: list[tuple[str, list[Segment], dict[str, Any], list[tuple[bool, int, int, str]]]] = [
    ("idle", [(900, 30.0, 0.4)], {}, []),
    ("burst_shorter_than_sustained", [(60, 30.0, 0.4), (295, 99.0, 0.4), (300, 30.0, 0.4)], {}, []),
    ("sustained_util", [(60, 30.0, 0.4), (600, 97.0, 0.4)], {}, [(True, 60, 360, "utilization")]),
    (
        "in_band_keeps_active",  # 90 % is below the trigger but not below the clear level
        [(60, 30.0, 0.4), (330, 97.0, 0.4), (900, 90.0, 0.4)],
        {},
        [(True, 60, 360, "utilization")],
    ),
    (
        "clear_needs_half_sustained",
        [(60, 30.0, 0.4), (330, 97.0, 0.4), (145, 80.0, 0.4), (30, 97.0, 0.4), (300, 80.0, 0.4)],
        {},
        [(True, 60, 360, "utilization"), (False, 565, 715, "utilization")],
    ),
    (
        "dip_into_band_restarts_the_run",
        [(200, 97.0, 0.4), (5, 90.0, 0.4), (200, 97.0, 0.4), (300, 97.0, 0.4)],
        {},
        [(True, 205, 505, "utilization")],
    ),
    ("sustained_memory", [(30, 10.0, 0.5), (400, 10.0, 0.97)], {}, [(True, 30, 330, "memory")]),
    ("memory_ignored_when_disabled", [(30, 10.0, 0.5), (400, 10.0, 0.97)], {"memory_threshold": None}, []),
    (
        "nan_neither_breaks_nor_extends",  # 30 s unreported inside a hot run: the run goes on
        [(120, 97.0, NAN), (30, NAN, NAN), (180, 97.0, NAN)],
        {},
        [(True, 0, 300, "utilization")],
    ),
    (
        "nan_cannot_trigger",
        [(60, 30.0, 0.4), (1200, NAN, NAN)],
        {},
        [],
    ),
    (
        "nan_cannot_clear",
        [(330, 97.0, 0.4), (1200, NAN, NAN)],
        {},
        [(True, 0, 300, "utilization")],
    ),
    (
        "gap_longer_than_max_gap_restarts_the_run",
        [(120, 97.0, NAN), (90, NAN, NAN), (400, 97.0, NAN)],
        {},
        [(True, 210, 510, "utilization")],
    ),
    (
        "both_metrics_clear_at_the_later",
        [(330, 97.0, 0.97), (200, 50.0, 0.97), (200, 50.0, 0.5)],
        {},
        [(True, 0, 300, "utilization"), (False, 530, 680, "memory")],
    ),
    (
        "custom_thresholds",
        [(65, 85.0, 0.4), (130, 60.0, 0.4)],
        {"util_threshold_percent": 80.0, "clear_below_percent": 70.0, "sustained_ms": 60_000},
        [(True, 0, 60, "utilization"), (False, 65, 95, "utilization")],
    ),
]


@pytest.mark.parametrize(("name", "segments", "kwargs", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_scenarios(name: str, segments: list[Segment], kwargs: dict[str, Any], expected: list[Any]) -> None:
    det = GpuSaturation(**kwargs)
    assert summary(feed(det, samples(segments))) == expected
    assert det.active == (bool(expected) and expected[-1][0])


@pytest.mark.parametrize("batch", [1, 5, 7, 60])
def test_transitions_do_not_depend_on_batching(batch: int) -> None:
    segments = [(60, 30.0, 0.4), (330, 97.0, 0.4), (145, 80.0, 0.4), (30, 97.0, 0.4), (300, 80.0, 0.4)]
    expected = [(True, 60, 360, "utilization"), (False, 565, 715, "utilization")]
    assert summary(feed(GpuSaturation(), samples(segments), batch=batch)) == expected


def test_condition_values_and_evidence() -> None:
    det = GpuSaturation()
    up, down = feed(det, samples([(330, 97.0, 0.5), (200, 50.0, 0.5)]))
    assert (up.value, up.threshold, down.value, down.threshold) == (97.0, 95.0, 50.0, 85.0)
    assert up.evidence == {
        "metric": "utilization",
        "detected_ms": 300_000,
        "run_ms": 300_000,
        "utilization_percent": 97.0,
        "memory_used_percent": 50.0,
    }
    det = GpuSaturation()
    (mem,) = feed(det, samples([(330, 10.0, 0.97)]))
    assert mem.evidence["metric"] == "memory" and mem.value == pytest.approx(97.0) and mem.threshold == 95.0


def test_zero_total_memory_is_missing() -> None:
    t, u, used, _ = samples([(600, NAN, 0.99)])
    det = GpuSaturation()
    assert det.update(t, u, used, np.zeros(t.size)) is None
    assert not det.active


def test_out_of_order_within_a_batch_is_sorted() -> None:
    arrays = samples([(60, 30.0, 0.4), (600, 97.0, 0.4)])
    perm = np.random.default_rng(11).permutation(arrays[0].size)
    det = GpuSaturation()
    c = det.update(*(a[perm] for a in arrays))
    assert c is not None and (c.active, c.since_ms) == (True, 60_000)
    assert det.late_samples == 0


def test_late_samples_across_batches_are_dropped_and_counted() -> None:
    t, u, used, total = samples([(330, 97.0, 0.4)])
    det = GpuSaturation()
    assert det.update(t[-1:], u[-1:], used[-1:], total[-1:]) is None  # newest first
    assert det.update(t[:-1], u[:-1], used[:-1], total[:-1]) is None  # all older: dropped
    assert det.late_samples == t.size - 1 and not det.active


def test_whole_episode_in_one_batch_reports_nothing_and_counts() -> None:
    det = GpuSaturation()
    assert det.update(*samples([(330, 97.0, 0.4), (200, 50.0, 0.4)])) is None
    assert det.collapsed_flips == 2 and not det.active


@pytest.mark.parametrize("cut", [10, 61, 75, 100])
def test_state_round_trip_mid_stream(cut: int) -> None:
    arrays = samples(
        [(60, 30.0, 0.4), (330, 97.0, 0.97), (145, 80.0, 0.5), (400, 50.0, 0.4), (400, 99.0, 0.4)]
    )
    reference = GpuSaturation()
    expected = feed(reference, arrays)
    first = GpuSaturation()
    head = feed(first, tuple(a[:cut] for a in arrays))
    restored = GpuSaturation.from_state(json.loads(json.dumps(first.to_state(), allow_nan=False)))
    tail = feed(restored, tuple(a[cut:] for a in arrays))
    assert head + tail == expected
    assert restored.to_state() == reference.to_state()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"util_threshold_percent": 0.0}, "util_threshold_percent"),
        ({"util_threshold_percent": 101.0}, "util_threshold_percent"),
        ({"util_threshold_percent": math.nan}, "util_threshold_percent"),
        ({"util_threshold_percent": "95"}, "util_threshold_percent"),
        ({"clear_below_percent": 96.0}, "clear_below_percent"),
        ({"clear_below_percent": -1.0}, "clear_below_percent"),
        ({"memory_threshold": 1.5}, "memory_threshold"),
        ({"memory_threshold": 0.0}, "memory_threshold"),
        ({"memory_clear_below": 0.96}, "memory_clear_below"),
        ({"sustained_ms": 0}, "sustained_ms"),
        ({"sustained_ms": 1.5}, "sustained_ms"),
        ({"sustained_ms": True}, "sustained_ms"),
        ({"max_gap_ms": 0}, "max_gap_ms"),
    ],
)
def test_parameter_validation_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        GpuSaturation(**kwargs)


def test_update_validation_names_the_array() -> None:
    det = GpuSaturation()
    t = np.arange(3, dtype=np.int64)
    ok = np.ones(3)
    with pytest.raises(ValueError, match="times_ms"):
        det.update(t.astype(np.float64), ok, ok, ok)
    with pytest.raises(ValueError, match="times_ms"):
        det.update(t.reshape(1, 3), ok, ok, ok)
    for i, name in enumerate(["utilization_percent", "memory_used_bytes", "memory_total_bytes"]):
        args = [ok, ok, ok]
        args[i] = np.ones(2)
        with pytest.raises(ValueError, match=name):
            det.update(t, *args)
    assert det.update(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), np.zeros(0)) is None


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(v=2), "v=1"),
        (lambda s: s.pop("late_samples"), "missing"),
        (lambda s: s.update(extra=1), "unexpected"),
        (lambda s: s["params"].update(sustained_ms=-1), "sustained_ms"),
        (lambda s: s.update(active=True), "active"),
        (lambda s: s["utilization"].update(active="yes"), "utilization"),
        (lambda s: s["memory"].update(last_value=math.inf), "memory"),
        (lambda s: s.update(late_samples=-1), "late_samples"),
    ],
)
def test_from_json_rejects_malformed_state(mutate: Any, match: str) -> None:
    det = GpuSaturation()
    feed(det, samples([(100, 97.0, 0.5)]))
    state = json.loads(json.dumps(det.to_state()))
    mutate(state)
    with pytest.raises(ValueError, match=match):
        GpuSaturation.from_state(state)


def test_update_cost_is_small() -> None:
    """Cost of one update with a 6-sample batch (30 s of telemetry); reported, loosely bounded."""
    arrays = samples([(3000, 97.0, 0.5), (3000, 50.0, 0.5)])
    det = GpuSaturation()
    n_batches = arrays[0].size // 6
    start = time.perf_counter()
    feed(det, arrays)
    per_update_us = (time.perf_counter() - start) / n_batches * 1e6
    print(f"GpuSaturation.update, 6 samples: {per_update_us:.1f} us")
    assert per_update_us < 2_000


def test_json_aliases() -> None:
    det = GpuSaturation()
    feed(det, samples([(100, 97.0, 0.5)]))
    assert GpuSaturation.from_json(det.to_json()).to_state() == det.to_state()
