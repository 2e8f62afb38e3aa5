"""Half-Space Trees, scored and learned a whole batch at a time with numpy.

Why: Driftline scores host telemetry (``cpu_percent``, ``rss_bytes``,
``inflight_requests``, GPU utilisation...) and latency streams for anomalies.
Half-Space Trees (Tan, Ting & Liu, "Fast anomaly detection for streaming
data", IJCAI 2011) suit that: one pass, constant memory and time per event, no
labels, and they follow a drifting "normal" because the model is rebuilt from
the last window of data every ``window_size`` events. river's
``anomaly.HalfSpaceTrees`` walks its trees node by node in Python, 1.5 to 4 ms
per event at the paper's settings (25 trees of height 15) plus ~20 s to build
the trees; the worker sees events in batches of a few hundred, so this module
does the same computation on arrays (~10 us per event, trees built in ~0.3 s).

What makes it vectorisable: the trees never change after construction, so the
path of a row through every tree depends only on the row, and the mass used
for *scoring* (``r_mass``, the previous window's counts) is constant within a
window. A batch is therefore walked once, level by level for all rows and
trees at once, then cut at window boundaries: each piece is scored against the
current ``r_mass`` and its paths are added to ``l_mass`` with ``np.add.at``;
when a window fills, the masses swap.

Semantics are river 0.26's, score for score: over the same trees the scores
are bit-identical (the tests check this against a row-by-row reference and
against river itself, and ``loadtest/bench_anomaly.py`` on all of Shuttle):

* ``score_learn_many(X)[i]`` is what ``score_one(x_i)`` then ``learn_one(x_i)``
  returns row by row, through river's ``MinMaxScaler`` when no fixed limits
  are given (see :mod:`streams.core.anomaly.scaler`);
* learning increments ``l_mass`` on every node of the path; after
  ``window_size`` rows ``r_mass <- l_mass`` and ``l_mass <- 0``; every row
  scored before the first swap scores ``0.0``;
* a row's score sums ``r_mass * 2**depth`` over the nodes of its path, stopping
  after the first node whose ``r_mass`` is below ``0.1 * window_size`` (the
  paper's ``sizeLimit``), and is reported as ``1 - total / max_score`` so that
  high means anomalous. (The paper scores only the node where the walk stops;
  river, hence Driftline, accumulates along the path.)

Trees mirror river's ``make_padded_tree`` but come from a seeded numpy
``Generator``, level by level: at each node a feature drawn with probability
proportional to the width of the node's box on that feature, split uniformly
in the middle 70 % of that width (river's ``padding=0.15``). They are not
bit-identical to river's but are drawn from the same distribution.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.core.anomaly.scaler import FloatArray, MinMaxScaler, _check_features, _check_state

__all__ = ["MAX_HEIGHT", "HalfSpaceTrees"]

IntArray = npt.NDArray[np.intp]
Int32Array = npt.NDArray[np.int32]

#: Largest ``height`` accepted: splits and masses take about ``28 * n_trees * 2**height`` bytes
#: (25 trees: 23 MB at height 15, 730 MB at 20).
MAX_HEIGHT = 20

#: Fraction of a node's range kept clear of each end when drawing a split (river's ``padding``).
_PADDING = 0.15

#: Rows walked at once: bounds the ``(height + 1) x n_trees x rows`` path array (about 13 MB).
_BLOCK_ROWS = 4096

_STATE_KEYS = frozenset(
    {
        "v",
        "kind",
        "features",
        "n_trees",
        "height",
        "window_size",
        "seed",
        "limits",
        "trees_crc32",
        "counter",
        "first_window",
        "r_leaves",
        "r_counts",
        "l_leaves",
        "l_counts",
        "scaler",
    }
)


def _check_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    out = int(value)
    if not lo <= out <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {out}")
    return out


def _build_trees(
    features: tuple[str, ...], n_trees: int, height: int, seed: int
) -> tuple[Int32Array, FloatArray]:
    """Split feature (column index) and split value of every internal node, heap-ordered.

    Node ``k`` of a tree has children ``2k + 1`` (values ``< split``) and ``2k + 2``.
    Features are drawn over the *sorted* names, as river does, so the trees do
    not depend on the column order.
    """
    d = len(features)
    col_of_sorted = np.array(sorted(range(d), key=features.__getitem__), dtype=np.int32)
    n_internal = (1 << height) - 1
    feature = np.empty((n_trees, n_internal), dtype=np.int32)
    threshold = np.empty((n_trees, n_internal), dtype=np.float64)
    rng = np.random.default_rng(seed)
    for t in range(n_trees):
        lo = np.zeros((1, d))
        hi = np.ones((1, d))
        for level in range(height):
            m = lo.shape[0]  # nodes at this level: 2**level
            rows = np.arange(m)
            # Feature weighted by the node's width on it (river: random.choices(weights=hi - lo)).
            cum = np.cumsum(hi - lo, axis=1)
            pick = rng.random(m) * cum[:, -1]
            f = np.minimum((cum <= pick[:, None]).sum(axis=1), d - 1)
            a = lo[rows, f]
            b = hi[rows, f]
            # Split uniform in [a + p (b - a), b - p (b - a)] (river: rng.uniform(...), padding p).
            left_end = a + _PADDING * (b - a)
            right_end = b - _PADDING * (b - a)
            at = left_end + (right_end - left_end) * rng.random(m)
            feature[t, m - 1 : 2 * m - 1] = col_of_sorted[f]
            threshold[t, m - 1 : 2 * m - 1] = at
            if level + 1 < height:
                lo = np.repeat(lo, 2, axis=0)
                hi = np.repeat(hi, 2, axis=0)
                hi[2 * rows, f] = at
                lo[2 * rows + 1, f] = at
    return feature, threshold


def _trees_crc32(feature: Int32Array, threshold: FloatArray) -> int:
    """Checksum of the trees, stored in the state to detect a generator that changed under us."""
    crc = zlib.crc32(feature.astype("<i4").tobytes())
    return zlib.crc32(threshold.astype("<f8").tobytes(), crc)


@lru_cache(maxsize=8)
def _shared_trees(
    features: tuple[str, ...], n_trees: int, height: int, seed: int
) -> tuple[Int32Array, FloatArray, int]:
    """The trees of one parameter set, built once per process and shared read-only.

    The trees depend only on the feature names, ``n_trees``, ``height`` and
    ``seed``, so every detector of a worker with the same settings (one per
    model version) has the same trees: sharing them saves their memory (about
    300 kB per detector at 25 trees of height 10) and their build (about 15 ms
    per detector) for each model after the first. Only the masses are per detector.
    """
    feature, threshold = _build_trees(features, n_trees, height, seed)
    feature.setflags(write=False)
    threshold.setflags(write=False)
    return feature, threshold, _trees_crc32(feature, threshold)


class HalfSpaceTrees:
    """Half-Space Trees anomaly detector over numeric features, fed per batch.

    Equivalent, row for row, to river's
    ``compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(...))``
    (or ``HalfSpaceTrees`` on pre-scaled data when every feature has fixed
    ``limits``), except that the trees are drawn from numpy's generator; about
    two orders of magnitude faster on batches of a few hundred rows.

    Parameters
    ----------
    features
        Column names, in the column order of every ``X`` passed in. With the
        seed they determine the trees, so they are part of the persisted state.
    n_trees
        Number of trees. Default 25, the setting used throughout Tan et al.
        (2011); cost is linear in it.
    height
        Depth of every tree: ``2**(height + 1) - 1`` nodes each. Default 15, the
        paper's ``maxDepth``. Memory grows as ``2**height`` (23 MB at the
        defaults) but time only linearly, and score walks mostly stop within a
        few levels, where fewer than ``size_limit`` reference rows remain.
    window_size
        Rows per window: the reference masses are the counts of the previous
        ``window_size`` rows, and the first window only fills them (its rows
        score ``0.0``). Default 250, the paper's ``psi`` and river's default. A
        larger window gives steadier masses but follows drift more slowly: the
        model always describes the window before the current one.
    limits
        Fixed ``(lo, hi)`` per feature name, used to scale that feature to
        ``[0, 1]``; features without limits are scaled by their running
        min/max, as river's ``MinMaxScaler`` (see
        :class:`streams.core.anomaly.scaler.MinMaxScaler`). Unlike river's
        ``limits`` (the raw tree space, where a wide range also makes a feature
        more likely to be split on), trees here always live on ``[0, 1]``, so
        ``rss_bytes`` and ``cpu_percent`` are split on equally often.
        The worker should pass limits for every feature it can: physical
        bounds where they exist (``(0, 100)`` for a percentage), else the
        reference profile's min/max. Then a single outlier cannot stretch the
        scale, and room left around normal values is where anomalies stand
        out; with a running min/max a value beyond the range seen so far sits
        on the edge of the box and scores like the most extreme normal rows.
    seed
        Seed of the tree generator, an int >= 0. Trees are rebuilt from it on
        restore, so it must not change over the life of a detector.

    Examples
    --------
    >>> import json
    >>> import numpy as np
    >>> from streams.core.anomaly.hst import HalfSpaceTrees
    >>> rng = np.random.default_rng(7)
    >>> hst = HalfSpaceTrees(
    ...     ["cpu_percent", "latency_ms"], n_trees=10, height=8, window_size=100,
    ...     limits={"cpu_percent": (0.0, 100.0), "latency_ms": (0.0, 500.0)}, seed=42,
    ... )
    >>> normal = np.column_stack([rng.normal(40.0, 5.0, 300), rng.normal(120.0, 15.0, 300)])
    >>> scores = hst.score_learn_many(normal)
    >>> float(scores[:100].max()), bool(scores[100:].max() > 0.0)  # the first window only learns
    (0.0, True)
    >>> probe = np.array([[41.0, 118.0], [95.0, 480.0]])  # a usual row, then an anomaly
    >>> print(hst.score_many(probe).round(3))
    [0.418 0.997]

    The state is plain JSON; a restored detector continues exactly where it was:

    >>> clone = HalfSpaceTrees.from_state(json.loads(json.dumps(hst.to_state())))
    >>> bool(np.array_equal(clone.score_learn_many(probe), hst.score_learn_many(probe)))
    True
    """

    def __init__(
        self,
        features: Sequence[str],
        n_trees: int = 25,
        height: int = 15,
        window_size: int = 250,
        limits: Mapping[str, tuple[float, float]] | None = None,
        seed: int = 0,
    ) -> None:
        names = _check_features(features)
        self.n_trees = _check_int(n_trees, "n_trees", 1, 10_000)
        self.height = _check_int(height, "height", 1, MAX_HEIGHT)
        self.window_size = _check_int(window_size, "window_size", 1, 2**31 - 1)
        self.seed = _check_int(seed, "seed", 0, 2**63 - 1)
        if self.max_score >= 2**53:
            raise ValueError(
                "n_trees * window_size * (2**(height + 1) - 1) must stay below 2**53 for exact scores, "
                f"got {self.max_score}"
            )
        scaler = MinMaxScaler(names, limits)
        self.features: tuple[str, ...] = scaler.features
        self.limits: dict[str, tuple[float, float]] = dict(scaler.limits)

        self._scaler = scaler
        self._feature, self._threshold, self._trees_crc32 = _shared_trees(
            tuple(names), self.n_trees, self.height, self.seed
        )
        # Masses of every node, flat: internal node j of tree t at t * (2**height - 1) + j (the
        # index of its split in _feature/_threshold), then leaf q of tree t at
        # n_trees * (2**height - 1) + t * 2**height + q. int32: a mass never exceeds window_size.
        n_nodes = self.n_trees * ((2 << self.height) - 1)
        self._r_mass: Int32Array = np.zeros(n_nodes, dtype=np.int32)
        self._l_mass: Int32Array = np.zeros(n_nodes, dtype=np.int32)
        # Flat indices incremented in l_mass this window and in r_mass's window (None: unknown or
        # too many), so that a swap zeroes those ~window_size * n_trees * (height + 1) entries
        # instead of the whole array.
        self._l_touched: list[IntArray] | None = []
        self._r_touched: list[IntArray] | None = []
        self._counter = 0
        self._first_window = True

    # ------------------------------------------------------------------ properties

    @property
    def size_limit(self) -> float:
        """Mass under which a score walk stops: ``0.1 * window_size`` (the paper's constant)."""
        return 0.1 * self.window_size

    @property
    def max_score(self) -> int:
        """The largest raw score, when every node of every tree holds the whole window."""
        return self.n_trees * self.window_size * ((2 << self.height) - 1)

    @property
    def is_warm(self) -> bool:
        """Whether a first window has been learned; until then every score is ``0.0``."""
        return not self._first_window

    @property
    def n_window(self) -> int:
        """Rows learned in the current window, in ``[0, window_size)``."""
        return self._counter

    # ------------------------------------------------------------------ public API

    def score_learn_many(self, X: FloatArray) -> FloatArray:
        """Score then learn each row of ``X`` (``n x len(features)``), in order.

        Returns one score per row in ``[0, 1]``, higher is more anomalous:
        exactly river's ``score_one(x)`` followed by ``learn_one(x)`` row by
        row, whatever the batch boundaries.

        Raises
        ------
        ValueError
            If ``X`` is not 2-D with one column per feature, or holds NaN/inf.
        """
        return self._run(X, score=True)

    def learn_many(self, X: FloatArray) -> None:
        """Learn the rows of ``X`` without scoring them (e.g. to warm up from reference data)."""
        self._run(X, score=False)

    def score_many(self, X: FloatArray) -> FloatArray:
        """Score the rows of ``X`` against the current model, learning nothing (the state is unchanged)."""
        Xs = self._scaler.transform_many(X)
        out = np.zeros(Xs.shape[0], dtype=np.float64)
        if self._first_window:
            return out
        for start in range(0, Xs.shape[0], _BLOCK_ROWS):
            block = Xs[start : start + _BLOCK_ROWS]
            out[start : start + block.shape[0]] = self._score_paths(self._paths(block))
        return out

    # ------------------------------------------------------------------ internals

    def _run(self, X: FloatArray, *, score: bool) -> FloatArray:
        # before: scaled as river's Pipeline.score_one sees the row; after: as learn_one passes it on.
        before, after = self._scaler.learn_transform_many(X)
        n = after.shape[0]
        out = np.zeros(n, dtype=np.float64)
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, n)
            paths = self._paths(after[start:stop])
            score_paths = paths
            if score:
                # Every split lies strictly inside (0, 1), so a value and its clipped value take the
                # same path: the two views differ in path only where a running feature had no span
                # yet (river scales it to 0.0 before learning the row). Rare; re-walk those rows.
                b = before[start:stop]
                a = after[start:stop]
                differ = np.flatnonzero((np.clip(b, 0.0, 1.0) != np.clip(a, 0.0, 1.0)).any(axis=1))
                if differ.size:
                    score_paths = paths.copy()
                    score_paths[:, differ] = self._paths(np.ascontiguousarray(b[differ]))
            i = 0
            while i < stop - start:
                take = min(self.window_size - self._counter, stop - start - i)
                if score and not self._first_window:
                    out[start + i : start + i + take] = self._score_paths(score_paths[:, i : i + take])
                self._learn_paths(paths[:, i : i + take])
                i += take
        return out

    def _paths(self, Xs: FloatArray) -> IntArray:
        """Flat mass index, per level, of the node each row reaches in each tree.

        Shape ``(height + 1, n, n_trees)``; levels ``0 .. height - 1`` are internal
        nodes (``t * n_internal + j``, also the index of the node's split), level
        ``height`` the leaves. One gather of split feature, row value and split
        value per level, for all rows and trees at once.
        """
        n, d = Xs.shape
        n_trees = self.n_trees
        n_internal = (1 << self.height) - 1
        feature = self._feature.reshape(-1)
        threshold = self._threshold.reshape(-1)
        values = Xs.reshape(-1)
        tree = np.arange(n_trees, dtype=np.intp)[None, :]
        # Child of flat k = t * n_internal + j is t * n_internal + 2j + 1 (+1 if right)
        # = 2k + 1 - t * n_internal (+1).
        step = 1 - tree * n_internal
        row_offset = (np.arange(n, dtype=np.intp) * d)[:, None]
        paths = np.empty((self.height + 1, n, n_trees), dtype=np.intp)
        paths[0] = tree * n_internal
        for level in range(self.height):
            k = paths[level]
            right = values[feature[k] + row_offset] >= threshold[k]
            nxt = paths[level + 1]
            np.multiply(k, 2, out=nxt)
            nxt += step
            nxt += right
        # The last step gives t * n_internal + j' with j' in [n_internal, 2 n_internal], that is
        # leaf q = j' - n_internal, stored at n_trees * n_internal + t * 2**height + q.
        paths[self.height] += n_trees * n_internal - n_internal + tree * ((1 << self.height) - n_internal)
        return paths

    def _score_paths(self, paths: IntArray) -> FloatArray:
        """river's score of each row (``paths[:, i]``) against the current ``r_mass``.

        A walk stops after the first node whose mass is under ``size_limit``;
        most do within a few levels, so once fewer than half the (tree, row)
        walks are alive the rest are followed on a compacted index.
        """
        n = paths.shape[1]
        flat = paths.reshape(self.height + 1, -1)
        r_mass = self._r_mass
        limit = self.size_limit
        # Sums of integers below 2**53 (checked in __init__): exact in float64.
        total = r_mass[flat[0]].astype(np.float64)
        alive = total >= limit  # river: `if r < size_limit: return score`
        live: IntArray | None = None
        for level in range(1, self.height + 1):
            weight = float(1 << level)
            if live is None and 2 * np.count_nonzero(alive) < alive.size:
                live = np.flatnonzero(alive)
            if live is None:
                mass = r_mass[flat[level]]
                total += np.where(alive, mass * weight, 0.0)
                alive &= mass >= limit
            else:
                mass = r_mass[flat[level, live]]
                total[live] += mass * weight
                live = live[mass >= limit]
                if live.size == 0:
                    break
        raw = total.reshape(n, self.n_trees).sum(axis=1)
        scores: FloatArray = 1.0 - raw / self.max_score
        return scores

    def _learn_paths(self, paths: IntArray) -> None:
        """Add the rows' paths to ``l_mass``; swap the masses when the window is full.

        ``paths`` never crosses a window boundary (the caller cuts it there).
        """
        n = paths.shape[1]
        if n == 0:
            return
        np.add.at(self._l_mass, paths, np.int32(1))
        if self._l_touched is not None:
            self._l_touched.append(paths.flatten())
            if 8 * sum(a.size for a in self._l_touched) > self._l_mass.size:
                self._l_touched = None  # a dense clear is cheaper now
        self._counter += n
        if self._counter == self.window_size:
            cleared = self._r_mass
            if self._r_touched is None:
                cleared.fill(0)
            else:
                for touched in self._r_touched:
                    cleared[touched] = 0
            self._r_mass, self._l_mass = self._l_mass, cleared
            self._r_touched, self._l_touched = self._l_touched, []
            self._counter = 0
            self._first_window = False

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON-able state ``{"v": 1, "kind": "hst", ...}``: strings, ints, floats, lists.

        The trees are not stored: they are regenerated from ``seed``, the
        parameters and the feature names, and ``trees_crc32`` checks that the
        regenerated trees are the same. The masses are stored sparsely, as
        plain JSON int lists over the *leaves* only: with complete input every
        learned row ends in exactly one leaf, so an internal node's mass is the
        sum of its leaves'. That is at most ``n_trees * window_size`` (leaf,
        count) pairs per mass, about 6 000 pairs (tens of kB) at the defaults,
        so lists are small enough that base64-packed arrays would only cost
        readability; ``r_leaves``/``l_leaves`` are flat indices
        ``tree * 2**height + leaf``, strictly increasing.
        """
        r_leaves, r_counts = self._leaf_counts(self._r_mass)
        l_leaves, l_counts = self._leaf_counts(self._l_mass)
        return {
            "v": 1,
            "kind": "hst",
            "features": list(self.features),
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
            "limits": {name: [lo, hi] for name, (lo, hi) in self.limits.items()},
            "trees_crc32": self._trees_crc32,
            "counter": self._counter,
            "first_window": self._first_window,
            "r_leaves": r_leaves,
            "r_counts": r_counts,
            "l_leaves": l_leaves,
            "l_counts": l_counts,
            "scaler": self._scaler.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> HalfSpaceTrees:
        """Rebuild a detector from :meth:`to_state` output, validating every field.

        Raises
        ------
        ValueError
            On any malformed or inconsistent state (wrong version or kind,
            missing or extra keys, masses that do not add up to the window
            counts, trees that regenerate differently), naming the field.
        """
        state = _check_state(state, _STATE_KEYS, "hst", "hst state")
        for key in ("n_trees", "height", "window_size", "seed"):
            if type(state[key]) is not int:
                raise ValueError(f"hst state {key!r} must be an int, got {state[key]!r}")
        model = cls(
            state["features"],
            n_trees=state["n_trees"],
            height=state["height"],
            window_size=state["window_size"],
            limits=state["limits"],
            seed=state["seed"],
        )
        if state["trees_crc32"] != model._trees_crc32:
            raise ValueError(
                "hst state 'trees_crc32' does not match the trees regenerated from seed and parameters "
                "(was the state written by a different numpy random generator?)"
            )
        counter = state["counter"]
        if type(counter) is not int or not 0 <= counter < model.window_size:
            raise ValueError(f"hst state 'counter' must be an int in [0, window_size), got {counter!r}")
        first_window = state["first_window"]
        if not isinstance(first_window, bool):
            raise ValueError(f"hst state 'first_window' must be a bool, got {first_window!r}")
        r_total = 0 if first_window else model.window_size
        model._r_mass = model._masses_from_leaves(state["r_leaves"], state["r_counts"], r_total, "r")
        model._l_mass = model._masses_from_leaves(state["l_leaves"], state["l_counts"], counter, "l")
        model._l_touched = model._r_touched = None  # unknown: the next swaps clear densely
        model._counter = counter
        model._first_window = first_window

        scaler = MinMaxScaler.from_state(state["scaler"])
        if scaler.features != model.features or scaler.limits != model.limits:
            raise ValueError("hst state 'scaler' has other features or limits than the detector")
        model._scaler = scaler
        return model

    def _leaf_counts(self, mass: Int32Array) -> tuple[list[int], list[int]]:
        leaves = mass[self.n_trees * ((1 << self.height) - 1) :]
        index = np.flatnonzero(leaves)
        return index.tolist(), leaves[index].tolist()

    def _masses_from_leaves(self, leaves: Any, counts: Any, per_tree: int, which: str) -> Int32Array:
        """Dense node masses from sparse leaf counts, checking each tree holds ``per_tree`` rows."""
        n_leaves = 1 << self.height
        for name, raw in ((f"{which}_leaves", leaves), (f"{which}_counts", counts)):
            if not isinstance(raw, list) or not all(type(v) is int for v in raw):
                raise ValueError(f"hst state {name!r} must be a list of ints")
        if not all(0 <= v < self.n_trees * n_leaves for v in leaves):
            raise ValueError(f"hst state '{which}_leaves' must lie in [0, n_trees * 2**height)")
        if not all(0 < v <= self.window_size for v in counts):
            raise ValueError(f"hst state '{which}_counts' must lie in [1, window_size]")
        if len(leaves) != len(counts):
            raise ValueError(f"hst state '{which}_leaves' and '{which}_counts' differ in length")
        index = np.array(leaves, dtype=np.int64)
        count = np.array(counts, dtype=np.int64)
        if np.any(np.diff(index) <= 0):
            raise ValueError(f"hst state '{which}_leaves' must be strictly increasing")
        leaf = np.zeros(self.n_trees * n_leaves, dtype=np.int64)
        leaf[index] = count
        leaf2 = leaf.reshape(self.n_trees, n_leaves)
        if not np.all(leaf2.sum(axis=1) == per_tree):
            raise ValueError(f"hst state '{which}' masses must add up to {per_tree} rows in every tree")
        # Heap-ordered per tree, then cut into the flat layout (internal nodes, then leaves).
        tree_mass = np.zeros((self.n_trees, (2 << self.height) - 1), dtype=np.int32)
        tree_mass[:, n_leaves - 1 :] = leaf2
        for level in range(self.height - 1, -1, -1):
            first = (1 << level) - 1
            children = tree_mass[:, 2 * first + 1 : 4 * first + 3]
            np.add(children[:, 0::2], children[:, 1::2], out=tree_mass[:, first : 2 * first + 1])
        mass: Int32Array = np.concatenate(
            [tree_mass[:, : n_leaves - 1].reshape(-1), tree_mass[:, n_leaves - 1 :].reshape(-1)]
        )
        return mass
