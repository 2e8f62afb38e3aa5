"""Tests of streams.core.drift: Adwin, PageHinkley, Standardized and the configs that build them.

Reference: river's own detectors (``river.drift.ADWIN``, ``river.drift.PageHinkley``)
fed one value at a time; ours, fed in batches, must raise alarms at the same
positions. For ADWIN both run the same Rust helper, so equality is exact; for
Page-Hinkley ours solves the recurrences with cumulative sums / ``lfilter`` and
may differ from river's sequential arithmetic by float rounding only, which on
these seeded streams never moves an alarm.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from river import drift as river_drift

from streams.core.drift.adwin import Adwin
from streams.core.drift.base import Detection, SequentialDetector, as_batch
from streams.core.drift.page_hinkley import PageHinkley
from streams.core.drift.sequential import (
    DEFAULT_ERROR_ADWIN,
    DEFAULT_ERROR_PH,
    DEFAULT_FEATURE_PH,
    DEFAULT_FEATURE_SPREAD_PH,
    SequentialConfig,
    Standardized,
    build,
    restore,
    update_one,
)

# --------------------------------------------------------------------------- streams and helpers


def _stream(name: str, seed: int) -> np.ndarray:
    """Seeded streams with several changes of mean/spread, of numeric or 0/1 values."""
    rng = np.random.default_rng([2024, seed])
    if name == "normal_steps":
        return np.concatenate([rng.normal(100, 15, 3000), rng.normal(112, 15, 3000), rng.normal(95, 8, 3000)])
    if name == "unit_steps":
        return np.concatenate([rng.normal(0, 1, 2500), rng.normal(0.7, 1, 2500), rng.normal(-0.5, 2, 2500)])
    if name == "bernoulli":
        p = np.repeat([0.1, 0.3, 0.05], 3000)
        return (rng.random(p.size) < p).astype(np.float64)
    raise AssertionError(name)


def _river_alarms(det: Any, x: np.ndarray) -> list[int]:
    out = []
    for i, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(i)
    return out


def _batched(det: SequentialDetector, x: np.ndarray, batch: int) -> list[Detection]:
    """Detections with ``index`` made absolute in ``x``."""
    out = []
    for start in range(0, len(x), batch):
        for d in det.update_many(x[start : start + batch]):
            out.append(
                Detection(start + d.index, d.direction, d.mean_before, d.mean_after, d.statistic, d.threshold)
            )
    return out


def _json(state: dict[str, Any]) -> dict[str, Any]:
    """Through strict JSON (no NaN/inf), as the changelog would."""
    out: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return out


# --------------------------------------------------------------------------- exact agreement with river

ADWIN_PARAMS = [
    {"delta": 0.002},  # river's defaults
    {},  # Driftline's defaults
    {"delta": 0.01, "clock": 1, "min_window_length": 10, "grace_period": 50},
    {"delta": 0.05, "clock": 8, "max_buckets": 2},
]


@pytest.mark.parametrize(
    "params", ADWIN_PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "dl"
)
@pytest.mark.parametrize("stream", ["normal_steps", "bernoulli"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_alarms_equal_river(params: dict[str, Any], stream: str, seed: int) -> None:
    x = _stream(stream, seed)
    full = {"delta": Adwin().delta, "clock": 32, "max_buckets": 5, "min_window_length": 5, "grace_period": 10}
    full.update(params)
    expected = _river_alarms(river_drift.ADWIN(**full), x)
    assert expected, "the stream should make river alarm at least once"
    for batch in (500, 137, len(x)):
        assert [d.index for d in _batched(Adwin(**params), x, batch)] == expected


PH_PARAMS = [
    {},  # river's defaults (they alarm often on unit-variance data: a stress test of the restarts)
    {"delta": 0.1, "threshold": 20.0, "alpha": 1.0},
    {"delta": 0.1, "threshold": 15.0, "alpha": 0.999, "mode": "up"},
    {"delta": 0.05, "threshold": 25.0, "alpha": 1.0, "mode": "down", "min_instances": 100},
    {"delta": 0.0, "threshold": 10.0, "alpha": 0.99, "mode": "both", "min_instances": 0},
]


@pytest.mark.parametrize(
    "params", PH_PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "river"
)
@pytest.mark.parametrize("stream", ["unit_steps", "bernoulli"])
@pytest.mark.parametrize("seed", [0, 1])
def test_page_hinkley_alarms_equal_river(params: dict[str, Any], stream: str, seed: int) -> None:
    x = _stream(stream, seed)
    expected = _river_alarms(river_drift.PageHinkley(**params), x)
    assert expected, "the stream should make river alarm at least once"
    for batch in (500, 61, len(x)):
        assert [d.index for d in _batched(PageHinkley(**params), x, batch)] == expected


def test_page_hinkley_state_matches_river_after_a_batch() -> None:
    x = _stream("unit_steps", 3)[:1500]
    ref = river_drift.PageHinkley(delta=0.1, threshold=1e9, alpha=0.999)
    for v in x.tolist():
        ref.update(v)
    ours = PageHinkley(delta=0.1, threshold=1e9, alpha=0.999)
    ours.update_many(x)
    state = ours.to_state()
    assert state["n"] == ref._x_mean.n
    for key, attr in [
        ("mean", ref._x_mean.get()),
        ("sum_increase", ref._sum_increase),
        ("sum_decrease", ref._sum_decrease),
        ("min_increase", ref._min_increase),
        ("max_decrease", ref._max_decrease),
    ]:
        assert state[key] == pytest.approx(attr, rel=1e-9, abs=1e-9), key


# --------------------------------------------------------------------------- state round trips

Factory = Callable[[], SequentialDetector]
DETECTORS: dict[str, tuple[Factory, str]] = {
    "adwin": (lambda: Adwin(delta=0.01), "bernoulli"),
    "adwin_numeric": (lambda: Adwin(delta=0.01, clock=4), "normal_steps"),
    "page_hinkley": (lambda: PageHinkley(delta=0.1, threshold=20.0), "unit_steps"),
    "page_hinkley_alpha1": (lambda: PageHinkley(delta=0.1, threshold=20.0, alpha=1.0), "unit_steps"),
    "standardized_ph": (lambda: build(DEFAULT_FEATURE_PH), "normal_steps"),
    "standardized_spread": (lambda: build(DEFAULT_FEATURE_SPREAD_PH), "normal_steps"),
    "standardized_profile": (lambda: build(DEFAULT_FEATURE_PH, mean=100.0, std=15.0), "normal_steps"),
    "standardized_error": (lambda: build(DEFAULT_ERROR_PH), "bernoulli"),
}


@pytest.mark.parametrize("name", list(DETECTORS))
@pytest.mark.parametrize("cut", [0, 250, 1499, 3100])
def test_round_trip_mid_batch_continues_identically(name: str, cut: int) -> None:
    make, stream = DETECTORS[name]
    x = _stream(stream, 7)
    batch = 1500
    # Uninterrupted, but batches split at the same place (so that float arithmetic is identical).
    plain = make()
    interrupted = make()
    plain_out: list[tuple[int, Detection]] = []
    trip_out: list[tuple[int, Detection]] = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        parts = (
            [(0, chunk[: cut % batch]), (cut % batch, chunk[cut % batch :])] if start == 0 else [(0, chunk)]
        )
        for offset, part in parts:
            plain_out += [(start + offset + d.index, d) for d in plain.update_many(part)]
            trip_out += [(start + offset + d.index, d) for d in interrupted.update_many(part)]
            interrupted = type(interrupted).from_state(_json(interrupted.to_state()))
    assert trip_out == plain_out
    assert plain_out, "the stream should raise alarms"
    assert interrupted.n_seen == plain.n_seen == len(x)
    assert interrupted.n_detections == plain.n_detections == len(plain_out)
    assert _json(interrupted.to_state()) == _json(plain.to_state())
    # And the same alarm positions as one whole-stream batch (up to PH's float rounding: none here).
    whole = make()
    assert [i for i, _ in plain_out] == [d.index for d in whole.update_many(x)]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_restore_dispatches_on_kind_and_state_is_strict_json(name: str) -> None:
    det = DETECTORS[name][0]()
    state = _json(det.to_state())  # fresh state, e.g. PH's infinite minimum, must be JSON too
    again = restore(state)
    assert type(again) is type(det)
    again.update_many(_stream(DETECTORS[name][1], 1)[:700])
    assert restore(_json(again.to_state())).n_seen == 700


# --------------------------------------------------------------------------- from_state rejects bad input


def _adwin_state() -> dict[str, Any]:
    det = Adwin()
    det.update_many(_stream("bernoulli", 0)[:2000])
    return _json(det.to_state())


def _ph_state() -> dict[str, Any]:
    det = PageHinkley()
    det.update_many(_stream("unit_steps", 0)[:100])
    return _json(det.to_state())


def _std_state() -> dict[str, Any]:
    det = build(DEFAULT_FEATURE_PH)
    det.update_many(_stream("normal_steps", 0)[:1200])
    return _json(det.to_state())


def _helper(state: dict[str, Any], fn: Callable[[bytes], bytes]) -> dict[str, Any]:
    raw = base64.b64decode(state["helper"])
    return {**state, "helper": base64.b64encode(fn(raw)).decode()}


def _other_params_helper(state: dict[str, Any]) -> dict[str, Any]:
    other = Adwin(delta=0.3)
    return {**state, "helper": other.to_state()["helper"]}


BAD_STATES: list[tuple[str, Callable[[], Any], type[Any], str]] = [
    ("not a mapping", lambda: [1, 2], Adwin, "adwin state: must be a mapping"),
    ("wrong version", lambda: {**_adwin_state(), "v": 2}, Adwin, "adwin state: unsupported version"),
    ("wrong kind", lambda: _ph_state(), Adwin, "adwin state: kind is 'page_hinkley'"),
    (
        "river version",
        lambda: {**_adwin_state(), "river": "0.0.1"},
        Adwin,
        "adwin state: written by river 0.0.1",
    ),
    ("missing param", lambda: {**_adwin_state(), "params": {"delta": 0.1}}, Adwin, "adwin state: params"),
    (
        "bad param",
        lambda: {**_adwin_state(), "params": {**_adwin_state()["params"], "clock": 0}},
        Adwin,
        "adwin state: params: clock must be",
    ),
    ("bool count", lambda: {**_adwin_state(), "n_seen": True}, Adwin, "adwin state: n_seen must be an int"),
    ("negative count", lambda: {**_adwin_state(), "n_detections": -1}, Adwin, "adwin state: n_detections"),
    (
        "not base64",
        lambda: {**_adwin_state(), "helper": "@@@"},
        Adwin,
        "adwin state: helper is not valid base64",
    ),
    (
        "truncated helper",
        lambda: _helper(_adwin_state(), lambda b: b[:-30]),
        Adwin,
        "adwin state: helper has",
    ),
    (
        "empty helper",
        lambda: _helper(_adwin_state(), lambda b: b""),
        Adwin,
        "adwin state: helper is truncated",
    ),
    (
        "garbage helper",
        lambda: _helper(_adwin_state(), lambda b: b"\xff" * len(b)),
        Adwin,
        "adwin state: helper",
    ),
    (
        "trailing bytes",
        lambda: _helper(_adwin_state(), lambda b: b + b"xx"),
        Adwin,
        "adwin state: helper has",
    ),
    (
        "helper of other params",
        lambda: _other_params_helper(_adwin_state()),
        Adwin,
        "adwin state: helper was written with parameters other than params",
    ),
    (
        "ph min None with n>0",
        lambda: {**_ph_state(), "min_increase": None},
        PageHinkley,
        "page_hinkley state: min_increase must be None exactly when n is 0",
    ),
    (
        "ph nan",
        lambda: {**_ph_state(), "mean": float("nan")},
        PageHinkley,
        "page_hinkley state: mean must be finite",
    ),
    (
        "ph string",
        lambda: {**_ph_state(), "sum_increase": "1.0"},
        PageHinkley,
        "page_hinkley state: sum_increase",
    ),
    (
        "ph bad mode",
        lambda: {**_ph_state(), "params": {**_ph_state()["params"], "mode": "sideways"}},
        PageHinkley,
        "page_hinkley state: params: mode must be",
    ),
    (
        "ph estimate after end",
        lambda: {**_ph_state(), "n_at_min": 10**6},
        PageHinkley,
        "page_hinkley state: change",
    ),
    (
        "std bad inner",
        lambda: {**_std_state(), "detector": {"kind": "nope"}},
        Standardized,
        "state: unknown detector kind 'nope'",
    ),
    (
        "std nested",
        lambda: {**_std_state(), "detector": _std_state()},
        Standardized,
        "standardized state: the inner detector cannot itself be standardized",
    ),
    (
        "std half reference",
        lambda: {**_std_state(), "std": None},
        Standardized,
        "standardized state: mean and std",
    ),
    (
        "std bad warmup",
        lambda: {**_std_state(), "params": {**_std_state()["params"], "warmup": 1}},
        Standardized,
        "standardized state: params: warmup must be",
    ),
    (
        "std negative m2",
        lambda: {**_std_state(), "warmup_m2": -1.0},
        Standardized,
        "standardized state: warmup_m2",
    ),
]


@pytest.mark.parametrize(("case", "make", "cls", "message"), BAD_STATES, ids=[c[0] for c in BAD_STATES])
def test_from_state_rejects_bad_input(case: str, make: Callable[[], Any], cls: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        cls.from_state(make())


def test_restore_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown detector kind"):
        restore({"v": 1, "kind": "kswin"})
    with pytest.raises(ValueError, match="unknown detector kind None"):
        restore("adwin")


# --------------------------------------------------------------------------- parameter validation

BAD_PARAMS: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
    (Adwin, {"delta": 0.0}, "delta"),
    (Adwin, {"delta": 1.0}, "delta"),
    (Adwin, {"delta": float("nan")}, "delta"),
    (Adwin, {"clock": 0}, "clock"),
    (Adwin, {"clock": 2.5}, "clock"),
    (Adwin, {"max_buckets": 0}, "max_buckets"),
    (Adwin, {"min_window_length": 0}, "min_window_length"),
    (Adwin, {"grace_period": -1}, "grace_period"),
    (Adwin, {"grace_period": True}, "grace_period"),
    (PageHinkley, {"min_instances": -1}, "min_instances"),
    (PageHinkley, {"delta": -0.1}, "delta"),
    (PageHinkley, {"threshold": 0.0}, "threshold"),
    (PageHinkley, {"threshold": float("inf")}, "threshold"),
    (PageHinkley, {"alpha": 0.0}, "alpha"),
    (PageHinkley, {"alpha": 1.5}, "alpha"),
    (PageHinkley, {"mode": "sideways"}, "mode"),
    (lambda **kw: Standardized(PageHinkley(), **kw), {"warmup": 1}, "warmup"),
    (lambda **kw: Standardized(PageHinkley(), **kw), {"warmup": 10, "mean": 1.0}, "mean and std"),
    (lambda **kw: Standardized(PageHinkley(), **kw), {"warmup": 0, "mean": 1.0, "std": -1.0}, "std"),
    (lambda **kw: Standardized(PageHinkley(), **kw), {"warmup": 10, "min_std": -1.0}, "min_std"),
    (lambda **kw: Standardized("ph", **kw), {"warmup": 10}, "detector"),  # type: ignore[arg-type]
    (SequentialConfig, {"kind": "kswin", "delta": 0.1}, "kind"),
    (SequentialConfig, {"kind": "page_hinkley", "delta": 0.1}, "standardize"),
    (SequentialConfig, {"kind": "adwin", "delta": 0.1, "spread": True}, "spread"),
    (SequentialConfig, {"kind": "adwin", "delta": 2.0}, "delta"),
    (
        SequentialConfig,
        {"kind": "page_hinkley", "delta": 0.1, "standardize": True, "threshold": -1.0},
        "threshold",
    ),
    (SequentialConfig, {"kind": "page_hinkley", "delta": 0.1, "standardize": True, "warmup": 0}, "warmup"),
]


@pytest.mark.parametrize(("ctor", "kwargs", "name"), BAD_PARAMS)
def test_misuse_raises_value_error_naming_the_parameter(
    ctor: Callable[..., Any], kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        ctor(**kwargs)


def test_build_refuses_a_profile_for_an_unstandardized_config() -> None:
    with pytest.raises(ValueError, match="standardize=False"):
        build(DEFAULT_ERROR_ADWIN, mean=0.1, std=0.3)


@pytest.mark.parametrize("values", [[1.0, float("nan")], [float("inf")], [[1.0, 2.0]], ["a"]])
@pytest.mark.parametrize("make", [Adwin, PageHinkley, lambda: build(DEFAULT_FEATURE_PH)])
def test_update_many_refuses_non_finite_or_non_1d(
    values: Any, make: Callable[[], SequentialDetector]
) -> None:
    det = make()
    with pytest.raises(ValueError, match=r"^values: must be"):
        det.update_many(values)
    assert det.n_seen == 0


def test_as_batch_accepts_ints_and_empty() -> None:
    assert as_batch(np.array([1, 2], dtype=np.int32)).dtype == np.float64
    assert Adwin().update_many(np.array([])) == []


# --------------------------------------------------------------------------- direction and means


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize(
    "make",
    [
        lambda: Adwin(),
        lambda: PageHinkley(delta=0.1, threshold=30.0, alpha=1.0),
        lambda: Standardized(PageHinkley(delta=0.1, threshold=30.0, alpha=1.0), warmup=500),
    ],
    ids=["adwin", "page_hinkley", "standardized"],
)
def test_direction_and_means_follow_the_shift(sign: int, make: Callable[[], SequentialDetector]) -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(sign * 1.0, 1.0, 3000)])
    alarms = _batched(make(), x, 500)
    assert alarms, "a 1 sd step must be detected"
    first = alarms[0]
    assert 3000 <= first.index < 3600
    assert first.direction == sign
    assert np.sign(first.mean_after - first.mean_before) == sign
    assert first.statistic > 0 and first.threshold > 0


@pytest.mark.parametrize(
    "mode, sign, fires", [("up", 1, True), ("up", -1, False), ("down", -1, True), ("down", 1, False)]
)
def test_page_hinkley_one_sided_modes(mode: str, sign: int, fires: bool) -> None:
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.normal(0.0, 1.0, 2000), rng.normal(sign * 1.5, 1.0, 2000)])
    alarms = PageHinkley(delta=0.1, threshold=30.0, alpha=1.0, mode=mode).update_many(x)  # type: ignore[arg-type]
    assert bool(alarms) == fires
    assert all(d.direction == sign and d.statistic > d.threshold for d in alarms)


def test_standardized_reports_means_in_data_units() -> None:
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(100.0, 15.0, 4000), rng.normal(115.0, 15.0, 4000)])
    (d, *_) = build(DEFAULT_FEATURE_PH).update_many(x)
    assert d.direction == 1
    assert d.mean_before == pytest.approx(100.0, abs=2.0)
    # ~70 values after the change (sd 15, so a standard error near 2), and the split is chosen where
    # the difference is largest, which biases it up: 3 standard errors of slack.
    assert d.mean_after == pytest.approx(115.0, abs=6.0)
    assert d.threshold == DEFAULT_FEATURE_PH.threshold  # statistic/threshold stay in sd units


def test_spread_detector_sees_a_doubled_sd_that_the_location_detector_misses() -> None:
    rng = np.random.default_rng(14)
    x = np.concatenate([rng.normal(100.0, 15.0, 4000), rng.normal(100.0, 30.0, 4000)])
    spread = build(DEFAULT_FEATURE_SPREAD_PH).update_many(x)
    assert spread and 4000 <= spread[0].index < 4300 and spread[0].direction == 1
    # mean |x - mean| of a normal is sd * sqrt(2 / pi): about 12 before, 24 after
    assert spread[0].mean_before == pytest.approx(15.0 * np.sqrt(2 / np.pi), rel=0.15)
    assert spread[0].mean_after > 1.5 * spread[0].mean_before
    assert build(DEFAULT_FEATURE_PH).update_many(x[:4300]) == []


def test_error_ph_watches_increases_only() -> None:
    rng = np.random.default_rng(15)
    up = (rng.random(8000) < np.repeat([0.1, 0.25], 4000)).astype(float)
    down = (rng.random(8000) < np.repeat([0.25, 0.1], 4000)).astype(float)
    alarms = build(DEFAULT_ERROR_PH).update_many(up)
    assert alarms and alarms[0].direction == 1 and alarms[0].index >= 4000
    assert build(DEFAULT_ERROR_PH).update_many(down) == []
    alarms = build(DEFAULT_ERROR_ADWIN).update_many(up)
    assert alarms and alarms[0].direction == 1 and alarms[0].index >= 4000


# --------------------------------------------------------------------------- standardized warm-up


def test_warmup_values_are_not_fed_and_indices_stay_in_the_batch() -> None:
    rng = np.random.default_rng(16)
    inner = PageHinkley(delta=0.1, threshold=30.0, alpha=1.0)
    det = Standardized(inner, warmup=700)
    assert det.update_many(rng.normal(5.0, 2.0, 500)) == [] and not det.ready
    x = np.concatenate([rng.normal(5.0, 2.0, 1300), rng.normal(9.0, 2.0, 500)])
    alarms = det.update_many(x)
    assert det.ready and det.reference is not None
    assert det.reference[0] == pytest.approx(5.0, abs=0.3) and det.reference[1] == pytest.approx(2.0, rel=0.1)
    assert inner.n_seen == 500 + len(x) - 700 and det.n_seen == 500 + len(x)
    assert alarms and 1300 <= alarms[0].index < len(x)


def test_warmup_split_across_batches_is_the_same_as_in_one_batch() -> None:
    x = _stream("normal_steps", 4)
    one = build(DEFAULT_FEATURE_PH)
    many = build(DEFAULT_FEATURE_PH)
    a = _batched(one, x, len(x))
    b = _batched(many, x, 333)
    assert [d.index for d in a] == [d.index for d in b]
    assert isinstance(one, Standardized) and isinstance(many, Standardized)
    assert one.reference == pytest.approx(many.reference, rel=1e-12)
    assert one.reference == pytest.approx(
        (float(np.mean(x[:1000])), float(np.std(x[:1000], ddof=1))), rel=1e-12
    )


def test_constant_warmup_extends_until_a_value_differs() -> None:
    inner = PageHinkley(delta=0.1, threshold=30.0, alpha=1.0)
    det = Standardized(inner, warmup=100)
    assert det.update_many(np.zeros(300)) == [] and not det.ready and inner.n_seen == 0
    x = np.zeros(500)
    x[10] = 1.0  # the first error of a so-far perfect classifier ends the warm-up (and joins the reference)
    x[50:] = 1.0  # then it fails every time
    alarms = det.update_many(x)
    assert det.ready and det.reference is not None and det.reference[1] > 0
    assert inner.n_seen == 500 - 11
    assert alarms and alarms[0].index >= 50 and alarms[0].direction == 1
    assert alarms[0].mean_after == pytest.approx(1.0)


def test_profile_skips_the_warmup_and_zero_std_is_floored() -> None:
    inner = PageHinkley(delta=0.1, threshold=30.0, alpha=1.0)
    det = Standardized(inner, warmup=0, mean=3.0, std=0.0)
    assert det.ready
    x = np.full(400, 3.0)
    x[200:] = 3.5  # a feature constant in training moves
    alarms = det.update_many(x)
    assert inner.n_seen == 400
    assert alarms and alarms[0].index >= 200 and alarms[0].mean_after == pytest.approx(3.5)
    assert np.isfinite(alarms[0].statistic)
    assert restore(_json(det.to_state())).n_seen == 400


def test_min_std_floors_the_scale() -> None:
    x = np.concatenate([np.tile([0.0, 0.001], 500), np.tile([0.0, 0.003], 500)])
    sensitive = Standardized(PageHinkley(delta=0.1, threshold=30.0, alpha=1.0), warmup=200)
    floored = Standardized(PageHinkley(delta=0.1, threshold=30.0, alpha=1.0), warmup=200, min_std=1.0)
    assert sensitive.update_many(x)
    assert floored.update_many(x) == []


# --------------------------------------------------------------------------- configs


def test_defaults_build_protocol_conforming_detectors() -> None:
    for cfg in (DEFAULT_ERROR_ADWIN, DEFAULT_ERROR_PH, DEFAULT_FEATURE_PH, DEFAULT_FEATURE_SPREAD_PH):
        det = build(cfg)
        assert isinstance(det, SequentialDetector)
        assert det.n_seen == 0 and det.n_detections == 0
        assert (cfg.kind == "page_hinkley") == isinstance(det, Standardized)
    assert DEFAULT_FEATURE_PH.alpha == 1.0 and DEFAULT_ERROR_PH.mode == "up"


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_FEATURE_PH.delta = 1.0  # type: ignore[misc]


def test_adwin_describes_the_change_with_the_likeliest_split() -> None:
    befores, afters = [], []
    for seed in range(10):
        rng = np.random.default_rng([17, seed])
        errors = (rng.random(8000) < np.repeat([0.1, 0.3], 4000)).astype(float)
        alarms = _batched(Adwin(), errors, 500)
        assert alarms and alarms[0].index >= 4000 and alarms[0].direction == 1
        befores.append(alarms[0].mean_before)
        afters.append(alarms[0].mean_after)
    assert np.median(befores) == pytest.approx(0.1, abs=0.02)
    assert np.median(afters) == pytest.approx(0.3, abs=0.06)


@pytest.mark.parametrize("alpha", [1.0, 1.0 - 1e-4])
@pytest.mark.parametrize("mode", ["up", "down", "both"])
def test_page_hinkley_one_value_at_a_time_matches_batches(alpha: float, mode: str, monkeypatch: Any) -> None:
    x = _stream("unit_steps", seed=3)
    whole = PageHinkley(delta=0.05, threshold=20.0, alpha=alpha, mode=mode)
    single = PageHinkley(delta=0.05, threshold=20.0, alpha=alpha, mode=mode)
    want = [d.index for d in whole.update_many(x)]
    got = [i for i, v in enumerate(x) for _ in single.update_many(np.asarray([v]))]
    assert got == want and len(want) > 0
    a, b = single.to_state(), whole.to_state()  # sums folded in another order: equal up to rounding
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == (pytest.approx(b[k], rel=1e-9, abs=1e-9) if isinstance(b[k], float) else b[k]), k
    # the scalar path is exactly the vectorised one on one-value segments
    vector = PageHinkley(delta=0.05, threshold=20.0, alpha=alpha, mode=mode)
    monkeypatch.setattr(vector, "_step", lambda v: False)
    assert [i for i, v in enumerate(x) for _ in vector.update_many(np.asarray([v]))] == got
    assert vector.to_state() == single.to_state()


# --------------------------------------------------------------------------- one value at a time


@pytest.mark.parametrize("cfg", [DEFAULT_FEATURE_PH, DEFAULT_FEATURE_SPREAD_PH, DEFAULT_ERROR_PH,
                                 DEFAULT_ERROR_ADWIN],
                         ids=["feature_ph", "feature_spread_ph", "error_ph", "error_adwin"])
@pytest.mark.parametrize("stream", ["normal_steps", "unit_steps", "bernoulli"])
def test_update_one_matches_update_many_of_one_value_bit_for_bit(cfg: SequentialConfig, stream: str) -> None:
    """The numpy-free path (per-chunk statistics) gives the same alarms and the same state."""
    x = _stream(stream, 7)[:4000]
    a, b = build(cfg), build(cfg)
    alarms_a: list[tuple[int, Detection]] = []
    alarms_b: list[tuple[int, Detection]] = []
    for i, v in enumerate(x.tolist()):
        alarms_a += [(i, d) for d in a.update_many(np.asarray([v]))]
        alarms_b += [(i, d) for d in update_one(b, v)]
    assert alarms_a == alarms_b
    assert a.to_state() == b.to_state()
    assert a.n_seen == b.n_seen == len(x)
    if stream != "bernoulli" and cfg is DEFAULT_FEATURE_PH:
        assert alarms_a  # the stream's changes are found: the comparison is not of two silent detectors


def test_update_one_refuses_a_non_finite_value_like_update_many() -> None:
    det = build(DEFAULT_FEATURE_PH)
    for v in np.random.default_rng(1).normal(size=2000).tolist():
        update_one(det, v)
    with pytest.raises(ValueError, match="finite"):
        update_one(det, float("nan"))
