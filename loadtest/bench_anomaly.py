"""Half-Space Trees: Driftline's batch detector against river's per-row one, on river's Shuttle data.

    .venv/bin/python loadtest/bench_anomaly.py [--quick] [--rows N] [--river-seeds K] [--batch 500]
                                               [--height H]

Data: ``river.datasets.Shuttle()`` (49,097 rows, 9 numeric features, label 1 =
anomaly, ~7 %), streamed in its order. Both detectors score each row, then learn
it (prequential), with the paper's settings (25 trees, window 250) and river's
default height 15 for river; Driftline's scorer runs at ``--height`` (default:
the worker's ``AnomalyConfig().height``, 10) and, in the full run, also at 15,
to show that the worker's shallower trees lose nothing against river's.

* river: ``compose.Pipeline(preprocessing.MinMaxScaler(),
  anomaly.HalfSpaceTrees(seed=s, n_trees=25, height=15, window_size=250))``,
  ``score_one`` then ``learn_one`` per row;
* driftline, running: ``streams.core.anomaly.hst.HalfSpaceTrees`` with the running
  min/max scaler (the same scaling as river's), ``score_learn_many`` per batch;
* driftline, limits: the same with fixed limits, the min/max of the first 1,000
  rows standing in for a reference profile;
* parity: driftline run on the very trees river built (copied into its arrays,
  so at river's height 15), whose scores must equal river's bit for bit.

ROC AUC is exact (rank statistic, ties averaged, ``scipy.stats.rankdata``), the
same function for every detector; rows of the first window score 0 in both.
events/s count the streaming loop only; building the trees is reported apart
(river builds them inside its first ``learn_one``). river costs a few ms per
row, so the full run uses ``--river-seeds`` (default 3) river seeds and 5
driftline seeds; ``--quick`` uses the first 10,000 rows, one seed of each and
Driftline at ``--height`` only.
Results go to ``.driftline/bench/anomaly.json``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from river import anomaly, compose, datasets, preprocessing
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import machine, save
from streams.core.anomaly.hst import HalfSpaceTrees
from streams.core.detection.config import AnomalyConfig

#: river's settings (its defaults, and the paper's); ``HEIGHT`` is river's, the trees it builds.
N_TREES, HEIGHT, WINDOW = 25, 15, 250
#: The height the worker gives Driftline's scorer (``detection.anomaly.height``).
WORKER_HEIGHT = AnomalyConfig().height
SEEDS = [42, 43, 44, 45, 46]
REFERENCE_ROWS = 1000


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Exact ROC AUC: the Mann-Whitney U of the positives' ranks, ties counted half."""
    ranks = rankdata(score)
    pos = int(y.sum())
    neg = len(y) - pos
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def load(rows: int | None) -> tuple[list[str], list[dict[str, float]], np.ndarray, np.ndarray]:
    data = list(datasets.Shuttle())
    if rows is not None:
        data = data[:rows]
    features = list(data[0][0])
    dicts = [{f: float(x[f]) for f in features} for x, _ in data]
    X = np.array([[x[f] for f in features] for x in dicts], dtype=np.float64)
    y = np.array([int(label) for _, label in data], dtype=np.int64)
    return features, dicts, X, y


def river_trees(hst: Any, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """river's trees as heap-ordered arrays (node k has children 2k+1, 2k+2)."""
    n_internal = 2**HEIGHT - 1
    feature = np.empty((len(hst.trees), n_internal), dtype=np.int32)
    threshold = np.empty((len(hst.trees), n_internal))
    for t, root in enumerate(hst.trees):
        queue = deque([(root, 0)])
        while queue:
            node, k = queue.popleft()
            if k < n_internal:
                feature[t, k] = features.index(node.feature)
                threshold[t, k] = node.threshold
                queue.append((node.children[0], 2 * k + 1))
                queue.append((node.children[1], 2 * k + 2))
    return feature, threshold


def run_river(dicts: list[dict[str, float]], seed: int) -> tuple[np.ndarray, float, float, Any]:
    """(scores, build seconds, events/s, the fitted HalfSpaceTrees)."""
    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(seed=seed, n_trees=N_TREES, height=HEIGHT, window_size=WINDOW),
    )
    scores = np.empty(len(dicts))
    t0 = time.perf_counter()
    scores[0] = model.score_one(dicts[0])
    model.learn_one(dicts[0])  # builds the trees
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(1, len(dicts)):
        x = dicts[i]
        scores[i] = model.score_one(x)
        model.learn_one(x)
    rate = (len(dicts) - 1) / (time.perf_counter() - t0)
    return scores, build, rate, model["HalfSpaceTrees"]


def stream(model: HalfSpaceTrees, X: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """(scores, events/s) of score_learn_many over consecutive batches."""
    out = []
    t0 = time.perf_counter()
    for start in range(0, len(X), batch):
        out.append(model.score_learn_many(X[start : start + batch]))
    return np.concatenate(out), len(X) / (time.perf_counter() - t0)


def run_driftline(
    features: list[str],
    X: np.ndarray,
    seed: int,
    batch: int,
    limits: dict[str, tuple[float, float]] | None,
    height: int = WORKER_HEIGHT,
) -> tuple[np.ndarray, float, float]:
    """(scores, build seconds, events/s)."""
    t0 = time.perf_counter()
    model = HalfSpaceTrees(
        features, n_trees=N_TREES, height=height, window_size=WINDOW, limits=limits, seed=seed
    )
    build = time.perf_counter() - t0
    scores, rate = stream(model, X, batch)
    return scores, build, rate


def summary(aucs: list[float], rates: list[float], builds: list[float], seeds: list[int]) -> dict[str, Any]:
    return {
        "seeds": seeds,
        "auc": aucs,
        "auc_mean": statistics.fmean(aucs),
        "auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        "events_per_s": rates,
        "events_per_s_mean": statistics.fmean(rates),
        "build_s": builds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="first 10,000 rows, one seed each")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows")
    ap.add_argument("--river-seeds", type=int, default=None, help="river seeds to run (default 3; quick 1)")
    ap.add_argument("--batch", type=int, default=500, help="rows per score_learn_many call")
    ap.add_argument(
        "--height",
        type=int,
        default=WORKER_HEIGHT,
        help=f"height of Driftline's trees (default {WORKER_HEIGHT}, the worker's; full runs add {HEIGHT})",
    )
    args = ap.parse_args()

    rows = args.rows if args.rows is not None else (10_000 if args.quick else None)
    river_n = args.river_seeds if args.river_seeds is not None else (1 if args.quick else 3)
    drift_seeds = SEEDS[:1] if args.quick else SEEDS
    river_seeds = SEEDS[:river_n]
    heights = [args.height] if args.quick or args.height == HEIGHT else [args.height, HEIGHT]

    features, dicts, X, y = load(rows)
    ref = X[:REFERENCE_ROWS]
    limits = {f: (float(ref[:, j].min()), float(ref[:, j].max())) for j, f in enumerate(features)}
    for f, (lo, hi) in limits.items():
        if not lo < hi:
            limits[f] = (lo, lo + 1.0)
    print(
        f"Shuttle: {len(X)} rows, {len(features)} features, {int(y.sum())} anomalies; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )

    results: dict[str, Any] = {
        "bench": "anomaly",
        "quick": args.quick,
        "dataset": {
            "name": "river.datasets.Shuttle",
            "rows": len(X),
            "features": features,
            "anomalies": int(y.sum()),
        },
        "params": {
            "n_trees": N_TREES,
            "height": HEIGHT,
            "driftline_heights": heights,
            "worker_height": WORKER_HEIGHT,
            "window_size": WINDOW,
            "batch": args.batch,
            "reference_rows_for_limits": REFERENCE_ROWS,
        },
        "machine": {**machine(), "loadavg_start": os.getloadavg()},
    }

    variants: dict[str, dict[str, tuple[float, float]] | None] = {"running": None, "limits": limits}
    for height in heights:
        for name, lim in variants.items():
            aucs, rates, builds = [], [], []
            for seed in drift_seeds:
                scores, build, rate = run_driftline(features, X, seed, args.batch, lim, height)
                aucs.append(roc_auc(y, scores))
                rates.append(rate)
                builds.append(build)
                print(
                    f"driftline h{height} {name:8s} seed {seed}: AUC {aucs[-1]:.4f}, {rate:,.0f} events/s",
                    flush=True,
                )
            # ``driftline_<variant>`` is the --height run (the worker's height by default)
            key = f"driftline_{name}" if height == args.height else f"driftline_h{height}_{name}"
            results[key] = {"height": height, **summary(aucs, rates, builds, drift_seeds)}

    aucs, rates, builds, parity = [], [], [], []
    for seed in river_seeds:
        scores, build, rate, hst = run_river(dicts, seed)
        aucs.append(roc_auc(y, scores))
        rates.append(rate)
        builds.append(build)
        print(
            f"river              seed {seed}: AUC {aucs[-1]:.4f}, {rate:,.0f} events/s "
            f"(+{build:.1f} s tree build)",
            flush=True,
        )
        twin = HalfSpaceTrees(features, n_trees=N_TREES, height=HEIGHT, window_size=WINDOW)
        twin._feature[...], twin._threshold[...] = river_trees(hst, features)
        twin_scores, _ = stream(twin, X, args.batch)
        parity.append(
            {
                "seed": seed,
                "identical": bool(np.array_equal(twin_scores, scores)),
                "max_abs_diff": float(np.max(np.abs(twin_scores - scores))),
            }
        )
        print(f"  driftline on river's trees: identical scores = {parity[-1]['identical']}", flush=True)
    results["river"] = summary(aucs, rates, builds, river_seeds)
    results["parity_on_rivers_trees"] = parity
    results["speedup_running_vs_river"] = (
        results["driftline_running"]["events_per_s_mean"] / results["river"]["events_per_s_mean"]
    )
    results["machine"]["loadavg_end"] = os.getloadavg()
    path = save("anomaly", results)

    def row(label: str, r: dict[str, Any]) -> str:
        seeds = ",".join(map(str, r["seeds"]))
        auc = f"{r['auc_mean']:.4f} ± {r['auc_sd']:.4f} ({min(r['auc']):.4f}..{max(r['auc']):.4f})"
        return (
            f"| {label} | {seeds} | {auc} | {r['events_per_s_mean']:,.0f} | "
            f"{statistics.fmean(r['build_s']):.2f} |"
        )

    print()
    print(
        f"Shuttle, first {len(X):,} rows, {N_TREES} trees, window {WINDOW}, batches of {args.batch}; "
        f"river at height {HEIGHT}, driftline at {' and '.join(map(str, heights))} "
        f"(the worker's: {WORKER_HEIGHT}):"
    )
    print()
    print("| detector | seeds | ROC AUC mean ± sd (min..max) | events/s | tree build s |")
    print("|---|---|---|---:|---:|")
    print(row(f"river Pipeline(MinMaxScaler, HalfSpaceTrees), height {HEIGHT}, per row", results["river"]))
    for height in heights:
        prefix = "driftline_" if height == args.height else f"driftline_h{height}_"
        print(row(f"driftline HalfSpaceTrees, height {height}, running min/max", results[prefix + "running"]))
        print(
            row(
                f"driftline HalfSpaceTrees, height {height}, limits from first {REFERENCE_ROWS} rows",
                results[prefix + "limits"],
            )
        )
    print()
    same = all(p["identical"] for p in parity)
    print(
        f"speed-up (running, height {args.height}, vs river): {results['speedup_running_vs_river']:,.0f}x; "
        f"driftline on river's own trees gives river's scores bit for bit: {same}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
