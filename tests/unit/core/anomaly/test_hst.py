"""Half-Space Trees: the vectorised detector against a row-by-row reference and against river.

The reference below is river 0.26's ``HalfSpaceTrees`` algorithm (``_walk_learn``,
``_walk_score``, the window pivot and the normalisation) and river's
``MinMaxScaler``, transcribed to plain Python over the detector's own trees, so
equality is exact (scores are sums of integers below 2**53, divided once).
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from typing import Any

import numpy as np
import pytest
from river import anomaly as river_anomaly
from river import compose, preprocessing

from streams.core.anomaly.hst import MAX_HEIGHT, HalfSpaceTrees
from streams.core.anomaly.scaler import MinMaxScaler

# --------------------------------------------------------------------------- reference


class ReferenceHST:
    """river's HalfSpaceTrees, one row at a time, over heap-ordered trees (children 2k+1, 2k+2)."""

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, height: int, window_size: int) -> None:
        self.feature = feature.tolist()
        self.threshold = threshold.tolist()
        self.height = height
        self.window_size = window_size
        self.n_trees = len(self.feature)
        self.r_mass: list[dict[int, int]] = [{} for _ in range(self.n_trees)]
        self.l_mass: list[dict[int, int]] = [{} for _ in range(self.n_trees)]
        self.counter = 0
        self.first_window = True

    def _next(self, t: int, node: int, x: list[float]) -> int:
        return 2 * node + 1 if x[self.feature[t][node]] < self.threshold[t][node] else 2 * node + 2

    def learn_one(self, x: list[float]) -> None:
        for t in range(self.n_trees):
            mass = self.l_mass[t]
            node = 0
            for _ in range(self.height):
                mass[node] = mass.get(node, 0) + 1
                node = self._next(t, node, x)
            mass[node] = mass.get(node, 0) + 1
        self.counter += 1
        if self.counter == self.window_size:
            self.r_mass = self.l_mass
            self.l_mass = [{} for _ in range(self.n_trees)]
            self.first_window = False
            self.counter = 0

    def score_one(self, x: list[float]) -> float:
        if self.first_window:
            return 0.0
        size_limit = 0.1 * self.window_size
        score = 0.0
        for t in range(self.n_trees):
            mass = self.r_mass[t]
            node = 0
            depth_pow = 1
            for _ in range(self.height):
                r = mass.get(node, 0)
                score += r * depth_pow
                if r < size_limit:
                    break
                node = self._next(t, node, x)
                depth_pow <<= 1
            else:
                score += mass.get(node, 0) * depth_pow
        max_score = self.n_trees * self.window_size * ((2 << self.height) - 1)
        return 1 - score / max_score


class ReferenceScaler:
    """river's MinMaxScaler for running columns; ``(x - lo) / (hi - lo)`` for fixed ones."""

    def __init__(self, d: int, fixed: dict[int, tuple[float, float]]) -> None:
        self.fixed = fixed
        self.lo = [math.inf] * d
        self.hi = [-math.inf] * d

    def learn_one(self, x: list[float]) -> None:
        for j, v in enumerate(x):
            if j not in self.fixed:
                self.lo[j] = min(self.lo[j], v)
                self.hi[j] = max(self.hi[j], v)

    def transform_one(self, x: list[float]) -> list[float]:
        out = []
        for j, v in enumerate(x):
            lo, hi = self.fixed.get(j, (self.lo[j], self.hi[j]))
            d = hi - lo
            out.append((v - lo) / d if d else 0.0)
        return out


def reference_scores(model: HalfSpaceTrees, X: np.ndarray) -> np.ndarray:
    """score_one then learn_one per row, river Pipeline style, over ``model``'s trees and limits."""
    fixed = {j: model.limits[f] for j, f in enumerate(model.features) if f in model.limits}
    scaler = ReferenceScaler(X.shape[1], fixed)
    hst = ReferenceHST(model._feature, model._threshold, model.height, model.window_size)
    out = []
    for row in X.tolist():
        out.append(hst.score_one(scaler.transform_one(row)))
        scaler.learn_one(row)
        hst.learn_one(scaler.transform_one(row))
    return np.array(out)


def feed(model: HalfSpaceTrees, X: np.ndarray, sizes: list[int]) -> np.ndarray:
    """score_learn_many over consecutive batches of the given sizes (the last one takes the rest)."""
    out, start = [], 0
    for size in [*sizes, len(X)]:
        out.append(model.score_learn_many(X[start : start + size]))
        start += size
        if start >= len(X):
            break
    return np.concatenate(out)


def telemetry(n: int, seed: int) -> np.ndarray:
    """Raw-unit rows (cpu %, rss bytes, inflight, latency ms) with a few outliers and a late-starting
    column (inflight is 0 for the first 60 rows: the running scaler's zero-span case)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(40.0, 8.0, n),
            rng.normal(2e9, 1e8, n),
            rng.poisson(3.0, n).astype(float),
            rng.lognormal(4.0, 0.3, n),
        ]
    )
    X[:60, 2] = 0.0
    spikes = rng.choice(np.arange(60, n), size=max(1, n // 50), replace=False)
    X[spikes] *= rng.uniform(2.0, 6.0, size=(spikes.size, 1))
    return X


FEATURES = ["cpu_percent", "rss_bytes", "inflight_requests", "latency_ms"]


def random_sizes(rng: random.Random, total: int) -> list[int]:
    sizes, n = [], 0
    while n < total:
        sizes.append(rng.choice([1, 2, 7, 36, 37, 38, 100, 137, 251]))
        n += sizes[-1]
    return sizes


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("limits", [None, {"cpu_percent": (0.0, 100.0), "latency_ms": (0.0, 400.0)}])
def test_batches_match_row_by_row_reference(seed: int, limits: dict[str, tuple[float, float]] | None) -> None:
    X = telemetry(700, seed)
    expected = None
    for split in range(3):
        model = HalfSpaceTrees(FEATURES, n_trees=6, height=7, window_size=37, limits=limits, seed=seed)
        if expected is None:
            expected = reference_scores(model, X)
            assert np.count_nonzero(expected) > 600  # past the first window, scores are live
        sizes = random_sizes(random.Random(seed * 10 + split), len(X))
        got = feed(model, X, sizes)
        np.testing.assert_array_equal(got, expected)


def test_one_big_batch_and_single_rows_agree_with_reference() -> None:
    X = telemetry(300, 9)
    model = HalfSpaceTrees(FEATURES, n_trees=4, height=5, window_size=20, seed=5)
    expected = reference_scores(model, X)
    np.testing.assert_array_equal(model.score_learn_many(X), expected)
    model = HalfSpaceTrees(FEATURES, n_trees=4, height=5, window_size=20, seed=5)
    np.testing.assert_array_equal(feed(model, X, [1] * len(X)), expected)


def test_default_parameters_match_reference() -> None:
    X = telemetry(800, 4)
    model = HalfSpaceTrees(FEATURES, seed=11)
    assert (model.n_trees, model.height, model.window_size) == (25, 15, 250)
    expected = reference_scores(model, X)
    np.testing.assert_array_equal(feed(model, X, [137] * 6), expected)


def river_trees(hst: Any, features: list[str], height: int) -> tuple[np.ndarray, np.ndarray]:
    """river's built trees as heap-ordered (feature column, threshold) arrays."""
    feature = np.empty((len(hst.trees), 2**height - 1), dtype=np.int32)
    threshold = np.empty((len(hst.trees), 2**height - 1))
    for t, root in enumerate(hst.trees):
        queue = deque([(root, 0)])
        while queue:
            node, k = queue.popleft()
            if k >= 2**height - 1:
                continue  # a leaf
            feature[t, k] = features.index(node.feature)
            threshold[t, k] = node.threshold
            queue.append((node.children[0], 2 * k + 1))
            queue.append((node.children[1], 2 * k + 2))
    return feature, threshold


def test_matches_river_itself_over_rivers_trees() -> None:
    X = telemetry(500, 21)
    rows = [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]
    pipeline = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        river_anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=30, seed=3),
    )
    river_scores = []
    for x in rows:
        river_scores.append(pipeline.score_one(x))
        pipeline.learn_one(x)
    model = HalfSpaceTrees(FEATURES, n_trees=5, height=6, window_size=30, seed=0)
    # new arrays, not writes into the shared (read-only) trees
    model._feature, model._threshold = river_trees(pipeline["HalfSpaceTrees"], FEATURES, 6)
    np.testing.assert_array_equal(feed(model, X, [45, 45, 13, 200]), np.array(river_scores, dtype=float))


def test_scaler_matches_river_minmax_scaler() -> None:
    X = telemetry(200, 2)
    river_scaler = preprocessing.MinMaxScaler()
    before_ref, after_ref = [], []
    for i, row in enumerate(X.tolist()):
        x = dict(zip(FEATURES, row, strict=True))
        if i > 0:  # river gives NaN before anything is learned; we give 0.0
            before_ref.append(list(river_scaler.transform_one(x).values()))
        river_scaler.learn_one(x)
        after_ref.append(list(river_scaler.transform_one(x).values()))
    scaler = MinMaxScaler(FEATURES)
    parts = [scaler.learn_transform_many(X[a:b]) for a, b in [(0, 1), (1, 50), (50, 51), (51, 200)]]
    before = np.concatenate([p[0] for p in parts])
    after = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(before[0], np.zeros(4))
    np.testing.assert_array_equal(before[1:], np.array(before_ref))
    np.testing.assert_array_equal(after, np.array(after_ref))
    assert scaler.n_seen == 200


def test_score_many_is_pure_and_matches_score_one() -> None:
    X = telemetry(400, 5)
    model = HalfSpaceTrees(FEATURES, n_trees=5, height=6, window_size=50, seed=1)
    np.testing.assert_array_equal(model.score_many(X[:10]), np.zeros(10))  # not warm yet
    model.score_learn_many(X[:130])
    state = model.to_state()
    probe = X[130:160]
    scores = model.score_many(probe)
    assert model.to_state() == state
    # Each probe row scored alone, then learned, gives the same score as score_many's.
    for i in range(len(probe)):
        clone = HalfSpaceTrees.from_state(state)
        assert clone.score_learn_many(probe[i : i + 1])[0] == scores[i]


def test_learn_many_learns_like_score_learn_many() -> None:
    X = telemetry(300, 6)
    a = HalfSpaceTrees(FEATURES, n_trees=4, height=6, window_size=40, seed=2)
    b = HalfSpaceTrees(FEATURES, n_trees=4, height=6, window_size=40, seed=2)
    a.learn_many(X)
    b.score_learn_many(X)
    assert a.to_state() == b.to_state()
    assert a.is_warm and a.n_window == 300 % 40


def test_empty_batch() -> None:
    model = HalfSpaceTrees(FEATURES, n_trees=3, height=4, window_size=10)
    assert model.score_learn_many(np.empty((0, 4))).shape == (0,)
    assert model.score_many(np.empty((0, 4))).shape == (0,)
    assert model.n_window == 0


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("limits", [None, {"cpu_percent": (0.0, 100.0), "rss_bytes": (0.0, 8e9)}])
def test_points_far_outside_the_training_range_score_higher(limits: dict[str, Any] | None) -> None:
    rng = np.random.default_rng(0)
    model = HalfSpaceTrees(
        ["cpu_percent", "rss_bytes"], n_trees=25, height=10, window_size=250, limits=limits, seed=7
    )
    train = np.column_stack([rng.normal(40.0, 5.0, 1000), rng.normal(2e9, 1e8, 1000)])
    model.learn_many(train)
    normal = np.column_stack([rng.normal(40.0, 5.0, 200), rng.normal(2e9, 1e8, 200)])
    far = np.array([[95.0, 2e9], [40.0, 7.5e9], [2.0, 1e8], [99.0, 7.9e9]])
    s_normal, s_far = model.score_many(normal), model.score_many(far)
    if limits is None:
        # Running min/max: the training rows span the whole unit box, so a point beyond it is
        # scaled onto its edge and scores like the most extreme training rows, no higher.
        assert s_far.min() > np.quantile(s_normal, 0.9)
    else:
        # Wide fixed limits leave empty space around normal data, where anomalies land.
        assert s_far.min() > s_normal.max() + 0.05


def test_trees_are_seeded_and_independent_of_column_order() -> None:
    a = HalfSpaceTrees(FEATURES, n_trees=4, height=6, seed=3)
    b = HalfSpaceTrees(FEATURES, n_trees=4, height=6, seed=3)
    c = HalfSpaceTrees(FEATURES, n_trees=4, height=6, seed=4)
    np.testing.assert_array_equal(a._threshold, b._threshold)
    assert not np.array_equal(a._threshold, c._threshold)
    perm = [2, 0, 3, 1]
    p = HalfSpaceTrees([FEATURES[j] for j in perm], n_trees=4, height=6, window_size=30, seed=3)
    q = HalfSpaceTrees(FEATURES, n_trees=4, height=6, window_size=30, seed=3)
    X = telemetry(200, 1)
    np.testing.assert_array_equal(p.score_learn_many(X[:, perm]), q.score_learn_many(X))


def test_splits_follow_rivers_padded_construction() -> None:
    height, d = 8, 4
    model = HalfSpaceTrees(FEATURES, n_trees=20, height=height, seed=0)
    for t in range(model.n_trees):
        lo = {0: np.zeros(d)}
        hi = {0: np.ones(d)}
        for k in range(2**height - 1):
            f, at = model._feature[t, k], model._threshold[t, k]
            a, b = lo[k][f], hi[k][f]
            assert a + 0.15 * (b - a) <= at <= b - 0.15 * (b - a)
            lo[2 * k + 1], hi[2 * k + 1] = lo[k].copy(), hi[k].copy()
            lo[2 * k + 2], hi[2 * k + 2] = lo[k].copy(), hi[k].copy()
            hi[2 * k + 1][f] = at
            lo[2 * k + 2][f] = at
    # Root: all widths are 1, so every feature is equally likely.
    counts = np.bincount(HalfSpaceTrees(FEATURES, n_trees=2000, height=1, seed=1)._feature[:, 0], minlength=d)
    assert counts.min() > 400
    # Deeper, a feature already cut is narrower, hence picked less (river weights by width).
    child_same = np.mean(model._feature[:, 1:3] == model._feature[:, :1])
    assert child_same < 0.25


# --------------------------------------------------------------------------- state


def assert_plain_json(value: Any) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    elif isinstance(value, float):
        assert math.isfinite(value)
    else:
        assert isinstance(value, str | int | bool), type(value)


@pytest.mark.parametrize("cut", [10, 100, 137, 250, 700])
def test_state_round_trip_gives_identical_scores(cut: int) -> None:
    X = telemetry(1100, 8)
    limits = {"cpu_percent": (0.0, 100.0)}
    model = HalfSpaceTrees(FEATURES, n_trees=10, height=9, window_size=100, limits=limits, seed=5)
    model.score_learn_many(X[:cut])
    state = model.to_state()
    assert_plain_json(state)
    assert state["v"] == 1 and state["kind"] == "hst"
    restored = HalfSpaceTrees.from_state(json.loads(json.dumps(state, allow_nan=False)))
    assert restored.to_state() == state
    rest = X[cut:]
    np.testing.assert_array_equal(feed(restored, rest, [33] * 40), feed(model, rest, [250] * 5))
    assert restored.to_state() == model.to_state()


def test_state_at_defaults_is_small() -> None:
    model = HalfSpaceTrees(FEATURES, seed=1)
    model.learn_many(telemetry(400, 3))
    text = json.dumps(model.to_state())
    assert len(text) < 200_000
    assert len(model.to_state()["r_leaves"]) <= 25 * 250


def _state() -> dict[str, Any]:
    model = HalfSpaceTrees(FEATURES, n_trees=3, height=4, window_size=20, seed=2)
    model.learn_many(telemetry(90, 4))
    return model.to_state()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(v=2), "'v'"),
        (lambda s: s.update(kind="lof"), "'kind'"),
        (lambda s: s.pop("counter"), "missing \\['counter'\\]"),
        (lambda s: s.update(extra=1), "unexpected \\['extra'\\]"),
        (lambda s: s.update(seed=3), "trees_crc32"),
        (lambda s: s.update(height=5), "trees_crc32"),
        (lambda s: s.update(n_trees="3"), "'n_trees'"),
        (lambda s: s.update(counter=20), "'counter'"),
        (lambda s: s.update(counter=9), "'l' masses must add up to 9"),
        (lambda s: s.update(first_window=1), "'first_window'"),
        (lambda s: s.update(first_window=True), "'r' masses must add up to 0"),
        (lambda s: s["r_counts"].__setitem__(0, s["r_counts"][0] + 1), "'r' masses"),
        (lambda s: s["r_counts"].__setitem__(0, 0), "'r_counts'"),
        (lambda s: s["l_counts"].__setitem__(0, 1.5), "'l_counts'"),
        (lambda s: s["l_leaves"].append(10**30), "'l_leaves'"),
        (lambda s: s["r_leaves"].reverse(), "'r_leaves' must be strictly increasing"),
        (lambda s: s["r_counts"].pop(), "differ in length"),
        (lambda s: s["scaler"].update(n_seen=-1), "'n_seen'"),
        (lambda s: s["scaler"].update(min=[]), "'min'"),
        (lambda s: s["scaler"].update(features=FEATURES[::-1]), "other features or limits"),
        (lambda s: s.update(limits={"gpu_util": [0, 100]}), "not in features"),
    ],
)
def test_from_state_rejects_bad_states(mutate: Any, match: str) -> None:
    state = json.loads(json.dumps(_state()))
    mutate(state)
    with pytest.raises(ValueError, match=match):
        HalfSpaceTrees.from_state(state)


def test_scaler_state_round_trip_and_validation() -> None:
    scaler = MinMaxScaler(FEATURES, limits={"latency_ms": (0.0, 500.0)})
    assert MinMaxScaler.from_state(scaler.to_state()).to_state() == scaler.to_state()
    X = telemetry(100, 1)
    scaler.learn_many(X[:60])
    restored = MinMaxScaler.from_state(json.loads(json.dumps(scaler.to_state())))
    np.testing.assert_array_equal(
        restored.learn_transform_many(X[60:])[0], scaler.learn_transform_many(X[60:])[0]
    )
    bad = scaler.to_state()
    bad["min"] = [1.0, 2.0, math.inf]
    with pytest.raises(ValueError, match="must be finite"):
        MinMaxScaler.from_state(bad)
    bad = scaler.to_state()
    bad["min"], bad["max"] = bad["max"], bad["min"]
    with pytest.raises(ValueError, match="min <= max"):
        MinMaxScaler.from_state(bad)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": []}, "features must not be empty"),
        ({"features": "cpu"}, "features must be a sequence"),
        ({"features": ["a", "a"]}, "distinct"),
        ({"features": ["a", ""]}, "non-empty strings"),
        ({"n_trees": 0}, "n_trees"),
        ({"n_trees": 2.0}, "n_trees must be an int"),
        ({"height": 0}, "height"),
        ({"height": MAX_HEIGHT + 1}, "height"),
        ({"height": True}, "height must be an int"),
        ({"window_size": 0}, "window_size"),
        ({"seed": -1}, "seed"),
        ({"seed": None}, "seed must be an int"),
        ({"limits": {"gpu": (0, 1)}}, "not in features"),
        ({"limits": {"a": (1.0, 1.0)}}, "lo < hi"),
        ({"limits": {"a": (0.0, math.nan)}}, r"limits\['a'\]\[1\] must be finite"),
        ({"limits": {"a": (0.0,)}}, r"limits\['a'\] must be a \(lo, hi\) pair"),
        ({"limits": [("a", 0, 1)]}, "limits must be a mapping"),
        ({"n_trees": 5, "height": 20, "window_size": 2**31 - 1}, "below 2\\*\\*53"),
    ],
)
def test_constructor_rejects_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    params: dict[str, Any] = {"features": ["a", "b"], "n_trees": 2, "height": 3}
    params.update(kwargs)
    with pytest.raises(ValueError, match=match):
        HalfSpaceTrees(**params)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros(2), "X must be 2-D"),
        (np.zeros((3, 3)), "X must have 2 columns"),
        (np.array([[0.1, 0.2], [np.nan, 0.3]]), "row 1 holds NaN or inf"),
        (np.array([[0.1, np.inf]]), "row 0 holds NaN or inf"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_methods_reject_bad_batches(X: np.ndarray, match: str) -> None:
    model = HalfSpaceTrees(["a", "b"], n_trees=2, height=3, window_size=5)
    for method in (model.score_learn_many, model.score_many, model.learn_many):
        with pytest.raises(ValueError, match=match):
            method(X)
    assert model.n_window == 0 and model.to_state()["scaler"]["n_seen"] == 0


def test_detectors_with_the_same_parameters_share_read_only_trees() -> None:
    a = HalfSpaceTrees(["x", "y"], n_trees=5, height=4, seed=3)
    b = HalfSpaceTrees(["x", "y"], n_trees=5, height=4, seed=3)
    other = HalfSpaceTrees(["x", "y"], n_trees=5, height=4, seed=4)
    assert a._feature is b._feature and a._threshold is b._threshold
    assert not np.shares_memory(a._threshold, other._threshold)
    with pytest.raises(ValueError, match="read-only"):
        a._threshold[0, 0] = 0.5
    # masses stay per detector: learning in one leaves the other's scores alone
    X = np.random.default_rng(0).random((40, 2))
    a.learn_many(X)
    assert not np.shares_memory(a._l_mass, b._l_mass)
    fresh = HalfSpaceTrees(["x", "y"], n_trees=5, height=4, seed=3)
    assert b.score_many(X).tolist() == fresh.score_many(X).tolist()
