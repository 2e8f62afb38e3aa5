"""Sequential drift detectors on seeded synthetic streams with a known change point.

    .venv/bin/python loadtest/bench_drift.py [--quick] [--seeds N] [--detectors a,b] [--kswin-seeds N]

No Kafka: streams are generated in memory and fed in batches of 500, as the
worker does. Each stream family is drawn for ``--seeds`` seeds; a stream has
10 000 events and, for the families with a change, the change starts at event
5 000 (``CHANGE_AT``). Families:

* ``mean+1sd``, ``mean+0.5sd``: N(100, 15) then N(115, 15) / N(107.5, 15);
* ``gradual+1sd``: the mean ramps linearly from 100 to 115 over events 5000-7000;
* ``variance*2``: N(100, 15) then N(100, 30);
* ``categorical``: 4 categories, proportions (.4, .3, .2, .1) then (.3, .3, .2, .2);
  the sequential detectors are fed the 0/1 indicator of the reference's most
  frequent category;
* ``error.1->.2``, ``error.1->.3``: the 0/1 error stream of a classifier whose
  error rate steps from 0.1 to 0.2 / 0.3;
* ``abs-error*1.5``: a regressor's absolute error, ``|2 * t5|`` (heavy-tailed),
  whose scale grows by half;
* ``stationary-normal``, ``stationary-bernoulli.1``, ``stationary-abs-error``:
  no change (control streams for the false-alarm rate; 50 000 events each, so
  9M events with the default 60 seeds).

Every detector gets the same raw stream. Driftline's rows run what the worker
runs for that kind of stream (``streams.core.drift.sequential``): on numeric
features a standardized Page-Hinkley on the z-scores **and** one on the absolute
z-scores, for the spread (``DEFAULT_FEATURE_PH`` + ``DEFAULT_FEATURE_SPREAD_PH``,
alarms merged), on a category indicator ``DEFAULT_FEATURE_PH``, on errors
``DEFAULT_ERROR_PH`` (increases only) and, separately, ``DEFAULT_ERROR_ADWIN``.
Standardization learns mean and std from the first 1000 events (no reference
profile is given).

Metrics per detector and family: detection rate (fraction of seeds with an
alarm at or after the change point), median delay (events from the change point
to the first such alarm, over the seeds that detect), false alarms per million
events (alarms on the stationary families, and before the change point on the
others). Timing: µs per event over the whole run, and a micro-benchmark on
batches of 500 stationary values (for Driftline's PH row on numeric data, that
is two detectors: location and spread), and each Driftline class against
river's with the same parameters.

Other detectors (e.g. windowed two-sample tests) join the table by adding a
factory to ``DETECTORS``: it takes the stream kind (``"numeric"``,
``"categorical"`` or ``"error"``) and returns an object whose
``update_many(values) -> list[int]`` gives the alarm positions in that batch.

Writes ``.driftline/bench/drift.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from river import drift as river_drift

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import machine, save
from streams.core.drift.adwin import Adwin
from streams.core.drift.base import SequentialDetector
from streams.core.drift.page_hinkley import PageHinkley
from streams.core.drift.sequential import (
    DEFAULT_ERROR_ADWIN,
    DEFAULT_ERROR_PH,
    DEFAULT_FEATURE_PH,
    DEFAULT_FEATURE_SPREAD_PH,
    SequentialConfig,
    build,
)

N_EVENTS = 10_000
CHANGE_AT = 5_000
#: Control streams are longer: ADWIN's window, hence its number of tested cuts, grows with the stream.
STATIONARY_EVENTS = 50_000
BATCH = 500
MU, SIGMA = 100.0, 15.0
RAMP = 2_000
CAT_BEFORE = (0.4, 0.3, 0.2, 0.1)
CAT_AFTER = (0.3, 0.3, 0.2, 0.2)
ABS_ERROR_SCALE = 2.0


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "numeric" | "categorical" | "error": what the worker would run on it
    change: bool
    make: Callable[[np.random.Generator], np.ndarray]


def _normal(rng: np.random.Generator, mean_after: float = MU, sd_after: float = SIGMA) -> np.ndarray:
    before = rng.normal(MU, SIGMA, CHANGE_AT)
    after = rng.normal(mean_after, sd_after, N_EVENTS - CHANGE_AT)
    return np.concatenate([before, after])


def _gradual(rng: np.random.Generator) -> np.ndarray:
    shift = np.clip((np.arange(N_EVENTS) - CHANGE_AT) / RAMP, 0.0, 1.0) * SIGMA
    return rng.normal(MU, SIGMA, N_EVENTS) + shift


def _categorical(rng: np.random.Generator) -> np.ndarray:
    cats = np.concatenate([
        rng.choice(len(CAT_BEFORE), CHANGE_AT, p=CAT_BEFORE),
        rng.choice(len(CAT_AFTER), N_EVENTS - CHANGE_AT, p=CAT_AFTER),
    ])
    return (cats == int(np.argmax(CAT_BEFORE))).astype(np.float64)


def _abs_error(rng: np.random.Generator, n: int, scale_after: float = 1.0) -> np.ndarray:
    """A regressor's absolute error: |2 * Student t5| (heavy-tailed), scaled after the change."""
    scale = np.where(np.arange(n) < CHANGE_AT, ABS_ERROR_SCALE, ABS_ERROR_SCALE * scale_after)
    return np.abs(rng.standard_t(5, n)) * scale


def _bernoulli(rng: np.random.Generator, p_before: float, p_after: float) -> np.ndarray:
    p = np.where(np.arange(N_EVENTS) < CHANGE_AT, p_before, p_after)
    return (rng.random(N_EVENTS) < p).astype(np.float64)


FAMILIES: list[Family] = [
    Family("mean+1sd", "numeric", True, lambda r: _normal(r, MU + SIGMA)),
    Family("mean+0.5sd", "numeric", True, lambda r: _normal(r, MU + 0.5 * SIGMA)),
    Family("gradual+1sd", "numeric", True, _gradual),
    Family("variance*2", "numeric", True, lambda r: _normal(r, sd_after=2 * SIGMA)),
    Family("categorical", "categorical", True, _categorical),
    Family("error.1->.2", "error", True, lambda r: _bernoulli(r, 0.1, 0.2)),
    Family("error.1->.3", "error", True, lambda r: _bernoulli(r, 0.1, 0.3)),
    Family("abs-error*1.5", "error", True, lambda r: _abs_error(r, N_EVENTS, 1.5)),
    Family("stationary-normal", "numeric", False, lambda r: r.normal(MU, SIGMA, STATIONARY_EVENTS)),
    Family("stationary-bernoulli.1", "error", False,
           lambda r: (r.random(STATIONARY_EVENTS) < 0.1).astype(np.float64)),
    Family("stationary-abs-error", "error", False, lambda r: _abs_error(r, STATIONARY_EVENTS)),
]


# --------------------------------------------------------------------------- detectors


class BenchDetector(Protocol):
    def update_many(self, values: np.ndarray) -> list[int]: ...


Factory = Callable[[str], BenchDetector]


class RiverRunner:
    """A river detector fed one value at a time (its only interface)."""

    def __init__(self, det: Any) -> None:
        self._det = det

    def update_many(self, values: np.ndarray) -> list[int]:
        det = self._det
        update = det.update
        out = []
        for i, v in enumerate(values.tolist()):
            update(v)
            if det.drift_detected:
                out.append(i)
        return out


class DriftlineRunner:
    """One or more Driftline detectors on the same stream; their alarms merged."""

    def __init__(self, *detectors: SequentialDetector) -> None:
        self._dets = detectors

    def update_many(self, values: np.ndarray) -> list[int]:
        hits: set[int] = set()
        for det in self._dets:
            hits.update(d.index for d in det.update_many(values))
        return sorted(hits)


def driftline_ph(kind: str, feature: SequentialConfig = DEFAULT_FEATURE_PH,
                 spread: SequentialConfig = DEFAULT_FEATURE_SPREAD_PH,
                 error: SequentialConfig = DEFAULT_ERROR_PH) -> BenchDetector:
    """What the worker runs: location + spread on numeric features, location on a category
    indicator, increases only on errors."""
    if kind == "numeric":
        return DriftlineRunner(build(feature), build(spread))
    if kind == "categorical":
        return DriftlineRunner(build(feature))
    return DriftlineRunner(build(error))


DETECTORS: dict[str, Factory] = {
    "river ADWIN (defaults)": lambda kind: RiverRunner(river_drift.ADWIN()),
    "river PageHinkley (defaults)": lambda kind: RiverRunner(river_drift.PageHinkley()),
    "river KSWIN (defaults)": lambda kind: RiverRunner(river_drift.KSWIN(seed=1)),
    "Driftline Adwin (defaults)": lambda kind: DriftlineRunner(build(DEFAULT_ERROR_ADWIN)),
    "Driftline standardized PH (defaults)": driftline_ph,
}
#: Rows of a default run; KSWIN (~500 µs/event) only with ``--kswin-seeds``.
DEFAULT_ROWS = [name for name in DETECTORS if "KSWIN" not in name]


# --------------------------------------------------------------------------- running


def family_seed(family_index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([family_index, seed])


def run_stream(factory: Factory, kind: str, x: np.ndarray) -> tuple[list[int], float]:
    """Alarm positions in the whole stream and the seconds spent in the detector."""
    det = factory(kind)
    hits: list[int] = []
    t0 = time.perf_counter()
    for start in range(0, len(x), BATCH):
        hits.extend(start + i for i in det.update_many(x[start : start + BATCH]))
    return hits, time.perf_counter() - t0


def evaluate(factory: Factory, seeds: int, families: list[Family] = FAMILIES) -> dict[str, Any]:
    """Metrics of one detector over every family; ``seconds``/``events`` for its cost."""
    out: dict[str, Any] = {"families": {}, "seconds": 0.0, "events": 0}
    for fi, fam in enumerate(families):
        delays: list[int] = []
        false_alarms = 0
        quiet_events = 0
        for seed in range(seeds):
            x = fam.make(family_seed(fi, seed))
            hits, dt = run_stream(factory, fam.kind, x)
            out["seconds"] += dt
            out["events"] += len(x)
            if fam.change:
                false_alarms += sum(1 for h in hits if h < CHANGE_AT)
                quiet_events += CHANGE_AT
                after = [h for h in hits if h >= CHANGE_AT]
                if after:
                    delays.append(after[0] - CHANGE_AT)
            else:
                false_alarms += len(hits)
                quiet_events += len(x)
        out["families"][fam.name] = {
            "seeds": seeds,
            "detection_rate": len(delays) / seeds if fam.change else None,
            "median_delay": statistics.median(delays) if delays else None,
            "false_alarms": false_alarms,
            "quiet_events": quiet_events,
            "false_alarms_per_million": false_alarms / quiet_events * 1e6,
        }
    fa = sum(f["false_alarms"] for f in out["families"].values())
    quiet = sum(f["quiet_events"] for f in out["families"].values())
    out["false_alarms_per_million"] = fa / quiet * 1e6
    out["quiet_events"] = quiet
    out["us_per_event"] = out["seconds"] / out["events"] * 1e6
    return out


def micro_us(factory: Factory, kind: str, events: int) -> float:
    """µs/event on batches of 500 stationary N(100, 15) values (best of 3)."""
    x = np.random.default_rng(0).normal(MU, SIGMA, events)
    best = float("inf")
    for _ in range(3):
        _, dt = run_stream(factory, kind, x)
        best = min(best, dt)
    return best / events * 1e6


def same_params_timing(events: int) -> dict[str, dict[str, float]]:
    """µs/event of each Driftline class against river's, same parameters, same N(0, 1) stream.

    Ours in batches of 500, river's one value at a time (its only interface).
    """
    x = np.random.default_rng(1).normal(0.0, 1.0, events)
    ph = {"delta": 0.1, "threshold": 80.0, "alpha": 1.0}
    ph_forget = {"delta": 0.1, "threshold": 80.0}  # river's alpha: lfilter path
    pairs: dict[str, tuple[Factory, Factory]] = {
        "PageHinkley alpha=1": (lambda k: DriftlineRunner(PageHinkley(**ph)),
                                lambda k: RiverRunner(river_drift.PageHinkley(**ph))),
        "PageHinkley alpha=1-1e-4": (lambda k: DriftlineRunner(PageHinkley(**ph_forget)),
                                     lambda k: RiverRunner(river_drift.PageHinkley(**ph_forget))),
        "ADWIN delta=1e-4": (lambda k: DriftlineRunner(Adwin(delta=1e-4)),
                             lambda k: RiverRunner(river_drift.ADWIN(delta=1e-4))),
    }
    out = {}
    for name, (ours, theirs) in pairs.items():
        best = {"driftline": float("inf"), "river": float("inf")}
        for _ in range(3):
            for who, factory in (("driftline", ours), ("river", theirs)):
                best[who] = min(best[who], run_stream(factory, "numeric", x)[1] / events * 1e6)
        out[name] = best
    return out


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(results: dict[str, dict[str, Any]], timing: dict[str, dict[str, float]]) -> str:
    lines = [
        "| family | detector | detection rate | median delay (events) | false alarms / M events |",
        "|---|---|---:|---:|---:|",
    ]
    for fam in FAMILIES:
        for name, res in results.items():
            f = res["families"][fam.name]
            lines.append(
                f"| {fam.name} | {name} | {fmt(f['detection_rate'], '.2f')} | "
                f"{fmt(f['median_delay'], '.0f')} | {f['false_alarms_per_million']:.0f} |"
            )
    lines += [
        "",
        "| detector | false alarms / M (all quiet events) | quiet events | µs/event (bench) | "
        "µs/event (batches of 500, N(100,15)) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        lines.append(
            f"| {name} | {res['false_alarms_per_million']:.0f} | {res['quiet_events']:,} | "
            f"{res['us_per_event']:.2f} | {res['micro_us_per_event']:.2f} |"
        )
    lines += [
        "",
        "| same parameters, N(0,1) | Driftline, batches of 500 (µs/event) | river, per value (µs/event) |",
        "|---|---:|---:|",
    ]
    for name, t in timing.items():
        lines.append(f"| {name} | {t['driftline']:.3f} | {t['river']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 seeds per family (about 20 s)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per family (default 60, quick 8)")
    ap.add_argument("--detectors", default=None, help="comma-separated names from DETECTORS")
    ap.add_argument("--kswin-seeds", type=int, default=0, help="also run river KSWIN on this many seeds")
    args = ap.parse_args(argv)
    seeds = args.seeds or (8 if args.quick else 60)
    names = args.detectors.split(",") if args.detectors else list(DEFAULT_ROWS)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        ap.error(f"unknown detectors {unknown}; known: {list(DETECTORS)}")
    plan = [(n, seeds) for n in names]
    if args.kswin_seeds:
        plan.append(("river KSWIN (defaults)", args.kswin_seeds))

    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name, n_seeds in plan:
        res = evaluate(DETECTORS[name], n_seeds)
        micro_events = 5_000 if "KSWIN" in name else (20_000 if args.quick else 100_000)
        res["micro_us_per_event"] = micro_us(DETECTORS[name], "numeric", micro_events)
        results[name] = res
        print(f"# {name}: {res['events']:,} events in {res['seconds']:.1f} s", file=sys.stderr)
    timing = same_params_timing(20_000 if args.quick else 100_000)
    elapsed = time.perf_counter() - t0

    table = markdown(results, timing)
    print(table)
    print(f"\n{seeds} seeds per family, {N_EVENTS} events per stream, change at {CHANGE_AT}, "
          f"batches of {BATCH}; {elapsed:.0f} s.")
    path = save("drift", {
        "machine": machine(),
        "config": {"seeds": seeds, "n_events": N_EVENTS, "change_at": CHANGE_AT, "batch": BATCH,
                   "quick": args.quick, "kswin_seeds": args.kswin_seeds,
                   "defaults": {"error_adwin": repr(DEFAULT_ERROR_ADWIN), "error_ph": repr(DEFAULT_ERROR_PH),
                                "feature_ph": repr(DEFAULT_FEATURE_PH),
                                "feature_spread_ph": repr(DEFAULT_FEATURE_SPREAD_PH)}},
        "families": [{"name": f.name, "kind": f.kind, "change": f.change} for f in FAMILIES],
        "results": results,
        "same_params_us_per_event": timing,
        "elapsed_s": elapsed,
        "markdown": table,
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
