"""Drift detectors on seeded synthetic streams with a known change point.

    .venv/bin/python loadtest/bench_drift.py [--quick] [--seeds N] [--detectors a,b] [--kswin-seeds N]

No Kafka: streams are generated in memory and fed in batches of 500, as the
worker does. Each stream family is drawn for ``--seeds`` seeds; a stream has
10 000 events and, for the families with a change, the change starts at event
5 000 (``CHANGE_AT``). Families:

* ``mean+1sd``, ``mean+0.5sd``: N(100, 15) then N(115, 15) / N(107.5, 15);
* ``gradual+1sd``: the mean ramps linearly from 100 to 115 over events 5000-7000;
* ``variance*2``: N(100, 15) then N(100, 30);
* ``categorical``: 4 categories ``a``-``d``, proportions (.4, .3, .2, .1) then
  (.3, .3, .2, .2); the windowed tests get the labels (a categorical feature),
  the sequential detectors the 0/1 indicator of the reference's most frequent
  category (``a``);
* ``error.1->.2``, ``error.1->.3``: the 0/1 error stream of a classifier whose
  error rate steps from 0.1 to 0.2 / 0.3;
* ``abs-error*1.5``: a regressor's absolute error, ``|2 * t5|`` (heavy-tailed),
  whose scale grows by half;
* ``stationary-normal``, ``stationary-bernoulli.1``, ``stationary-abs-error``:
  no change (control streams for the false-alarm rate; 50 000 events each, so
  9M events with the default 60 seeds).

Every detector gets the same raw stream. Driftline's sequential rows run what
the worker runs on an error stream (``streams.core.drift.sequential``) and, for
comparison, the same defaults per event on features: on numeric streams a
standardized Page-Hinkley on the z-scores **and** one on the absolute z-scores,
for the spread (``DEFAULT_FEATURE_PH`` + ``DEFAULT_FEATURE_SPREAD_PH``, alarms
merged), on a category indicator ``DEFAULT_FEATURE_PH``, on errors
``DEFAULT_ERROR_PH`` (increases only) and, separately, ``DEFAULT_ERROR_ADWIN``.
Standardization learns mean and std from the first 1000 events (no reference
profile is given).

Driftline's **windowed** rows run the worker's per-feature tests against a
reference profile (``streams.core.detection.data.DataMonitor``): each stream is
one feature (numeric, or categorical with the labels; the error streams as a
numeric 0/1 or absolute-error feature), folded into a ``WindowHistogram`` per
tumbling window of ``window_events`` events (5 000, the shipped
``DataConfig.window_events``, and a 1 000-event variant) and judged by
``data_drift.evaluate`` with the worker's settings (``DataConfig()``: KS on
numbers, chi-squared on categories, Benjamini-Hochberg, ``alpha`` 0.01, drifted
only if PSI >= 0.1). Windows close on event counts only (the worker's
``window_ms`` span condition is left out); on the same batches ``DataMonitor``
itself (``window_ms=0``) flags the very same windows. The reference profile is
``ProfileBuilder()`` (defaults) over a **separate seeded sample of the
pre-change distribution**, 5 000 events (the worker's ``auto_profile_events``),
so every window of the stream, the first included, is tested. Windows are
aligned with the change (it falls on a window boundary: the best case; a change
inside a window first dilutes it). An alarm is placed at the window's last
event, so the delay is ``window_events - 1`` for a change found by the first
window after it. Only one feature is tested, so the BH correction is the
identity here (the worker corrects over all the features of the model).
``DataMonitor``'s other detector, Page-Hinkley on chunk statistics, is not a
row: it calibrates on its first 32 chunks (a chunk is at least one batch, so
16 000 events in batches of 500), longer than these streams' quiet part.

river's windowed counterpart, ``KSWIN`` at defaults (a KS test per event on a
100-event window, about 600 µs/event), runs on ``--kswin-seeds`` seeds (default
3, quick 1) and on cut streams (``KSWIN_CUT``): a change stream from 1 000
events before its change to its end (KSWIN remembers only its last 100 events,
so starting it later changes nothing but how many quiet events are counted),
a stationary stream's first 5 000 events (quick: 500 before, 1 500 after, 2 000).

Metrics per detector and family: detection rate (fraction of seeds with an
alarm at or after the change point), median delay (events from the change point
to the first such alarm, over the seeds that detect), false alarms per million
events (alarms on the stationary families, and before the change point on the
others). Timing: µs per event over the whole run, and a micro-benchmark on
batches of 500 stationary values (for Driftline's PH row on numeric data, that
is two detectors: location and spread), and each Driftline class against
river's with the same parameters. Building a windowed row's reference profile
is not timed (the worker does it once per model version).

Other detectors join the table by adding a factory to ``DETECTORS``: it takes
the stream kind (``"numeric"``, ``"categorical"`` or ``"error"``) and the
``Reference`` (a pre-change sample and its profile) and returns an object whose
``update_many(values) -> list[int]`` gives the alarm positions in that batch;
on categorical streams it gets the indicator unless it has ``takes_labels = True``.

Writes ``.driftline/bench/drift.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from river import drift as river_drift

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import machine, save
from streams.core.detection.config import DataConfig
from streams.core.drift.adwin import Adwin
from streams.core.drift.base import SequentialDetector
from streams.core.drift.data_drift import DataDriftConfig
from streams.core.drift.data_drift import evaluate as evaluate_window
from streams.core.drift.histogram import WindowHistogram
from streams.core.drift.page_hinkley import PageHinkley
from streams.core.drift.profile import ProfileBuilder, ReferenceProfile
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
CATEGORY_LABELS = np.array(["a", "b", "c", "d"])
#: The category whose 0/1 indicator the sequential detectors watch: the reference's most frequent.
TOP_CATEGORY = int(np.argmax(CAT_BEFORE))
ABS_ERROR_SCALE = 2.0
#: The worker's data-drift settings (``detection.data``): window size, test, alpha, correction, PSI gate.
WORKER_DATA = DataConfig()
#: Events of the pre-change distribution in a windowed row's reference profile (``auto_profile_events``).
REFERENCE_EVENTS = WORKER_DATA.auto_profile_events
FEATURE = "x"


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
    """Category codes (0-3, as floats; ``CATEGORY_LABELS`` names them)."""
    return np.concatenate(
        [
            rng.choice(len(CAT_BEFORE), CHANGE_AT, p=CAT_BEFORE),
            rng.choice(len(CAT_AFTER), N_EVENTS - CHANGE_AT, p=CAT_AFTER),
        ]
    ).astype(np.float64)


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
    Family(
        "stationary-bernoulli.1",
        "error",
        False,
        lambda r: (r.random(STATIONARY_EVENTS) < 0.1).astype(np.float64),
    ),
    Family("stationary-abs-error", "error", False, lambda r: _abs_error(r, STATIONARY_EVENTS)),
]


def as_labels(codes: np.ndarray) -> np.ndarray:
    labels: np.ndarray = CATEGORY_LABELS[codes.astype(np.int64)]
    return labels


def as_indicator(codes: np.ndarray) -> np.ndarray:
    indicator: np.ndarray = (codes == TOP_CATEGORY).astype(np.float64)
    return indicator


class Reference:
    """A sample of a family's pre-change distribution and, built on first use, its profile."""

    def __init__(self, kind: str, values: np.ndarray) -> None:
        self.kind = kind
        self.values = values

    @cached_property
    def profile(self) -> ReferenceProfile:
        """What ``driftline profile build`` or the worker's auto-profile would publish."""
        col = as_labels(self.values) if self.kind == "categorical" else self.values
        builder = ProfileBuilder()
        builder.add({FEATURE: col.tolist()})
        return builder.build("bench", None, created_ms=0, source=f"bench:first-{len(col)}")


# --------------------------------------------------------------------------- detectors


class BenchDetector(Protocol):
    def update_many(self, values: np.ndarray) -> list[int]: ...


Factory = Callable[[str, Reference], BenchDetector]


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


def worker_drift_config(data: DataConfig = WORKER_DATA) -> DataDriftConfig:
    """The ``DataDriftConfig`` the worker's ``DataMonitor`` judges windows with."""
    return DataDriftConfig(
        alpha=data.alpha, correction=data.correction, min_psi=data.min_psi, numeric_test=data.numeric_test
    )


class WindowedRunner:
    """The worker's windowed tests on one feature (``DataMonitor`` without its event-time span).

    Each batch is folded into the window's histogram; when the window holds
    ``window_events`` events it is judged against the reference and a new one
    starts. A window whose feature is drifted alarms at its last event.
    """

    takes_labels = True

    def __init__(self, reference: Reference, window_events: int, cfg: DataDriftConfig | None = None) -> None:
        self._profile = reference.profile
        self._window_events = window_events
        self._cfg = cfg or worker_drift_config()
        self._hist = WindowHistogram(self._profile)
        self._batches = 0

    def update_many(self, values: np.ndarray) -> list[int]:
        self._hist.add({FEATURE: values.tolist()}, None, rows_seed=self._batches)
        self._batches += 1
        if self._hist.n < self._window_events:
            return []
        report = evaluate_window(self._profile, self._hist, self._cfg)
        self._hist = WindowHistogram(self._profile)
        return [len(values) - 1] if any(f.drifted for f in report.features) else []


def driftline_ph(
    kind: str,
    reference: Reference | None = None,
    feature: SequentialConfig = DEFAULT_FEATURE_PH,
    spread: SequentialConfig = DEFAULT_FEATURE_SPREAD_PH,
    error: SequentialConfig = DEFAULT_ERROR_PH,
) -> BenchDetector:
    """Location + spread on numeric features, location on a category indicator, increases only
    on errors (the worker's concept monitor). ``reference`` is unused: standardization warms up."""
    if kind == "numeric":
        return DriftlineRunner(build(feature), build(spread))
    if kind == "categorical":
        return DriftlineRunner(build(feature))
    return DriftlineRunner(build(error))


KSWIN = "river KSWIN (defaults)"
DETECTORS: dict[str, Factory] = {
    "river ADWIN (defaults)": lambda kind, ref: RiverRunner(river_drift.ADWIN()),
    "river PageHinkley (defaults)": lambda kind, ref: RiverRunner(river_drift.PageHinkley()),
    KSWIN: lambda kind, ref: RiverRunner(river_drift.KSWIN(seed=1)),
    "Driftline Adwin (defaults)": lambda kind, ref: DriftlineRunner(build(DEFAULT_ERROR_ADWIN)),
    "Driftline standardized PH (defaults)": driftline_ph,
    f"Driftline windowed tests (defaults, {WORKER_DATA.window_events}-event windows)": (
        lambda kind, ref: WindowedRunner(ref, WORKER_DATA.window_events)
    ),
    "Driftline windowed tests (defaults, 1000-event windows)": lambda kind, ref: WindowedRunner(ref, 1_000),
}
#: Rows run on every seed; KSWIN (~600 µs/event) runs on ``--kswin-seeds`` seeds and cut streams.
DEFAULT_ROWS = [name for name in DETECTORS if name != KSWIN]


@dataclass(frozen=True)
class Cut:
    """Part of each stream a row is fed: from ``before`` events before the change to ``after``
    events after it (change streams), the first ``stationary`` events (stationary ones)."""

    before: int
    after: int
    stationary: int

    def bounds(self, fam: Family, n: int) -> tuple[int, int]:
        if fam.change:
            return max(0, CHANGE_AT - self.before), min(n, CHANGE_AT + self.after)
        return 0, min(n, self.stationary)


KSWIN_CUT = Cut(before=1_000, after=N_EVENTS - CHANGE_AT, stationary=5_000)
KSWIN_CUT_QUICK = Cut(before=500, after=1_500, stationary=2_000)


@dataclass(frozen=True)
class Row:
    name: str
    seeds: int
    cut: Cut | None = None  # None: whole streams


# --------------------------------------------------------------------------- running


def family_seed(family_index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([family_index, seed])


def reference_seed(family_index: int, seed: int) -> np.random.Generator:
    """The seed of the separate pre-change sample a windowed row's profile is built from."""
    return np.random.default_rng([family_index, seed, 1])


def run_stream(factory: Factory, kind: str, x: np.ndarray, ref: Reference) -> tuple[list[int], float]:
    """Alarm positions in the whole stream and the seconds spent in the detector."""
    det = factory(kind, ref)
    if kind == "categorical":
        x = as_labels(x) if getattr(det, "takes_labels", False) else as_indicator(x)
    hits: list[int] = []
    t0 = time.perf_counter()
    for start in range(0, len(x), BATCH):
        hits.extend(start + i for i in det.update_many(x[start : start + BATCH]))
    return hits, time.perf_counter() - t0


@dataclass
class _Tally:
    delays: list[int]
    false_alarms: int = 0
    quiet_events: int = 0


def evaluate(
    rows: list[Row], families: list[Family] = FAMILIES, verbose: bool = True
) -> dict[str, dict[str, Any]]:
    """Metrics of each row over every family; ``seconds``/``events`` for its cost.

    Streams outermost: each stream and its reference are drawn once and fed to every row.
    """
    out: dict[str, dict[str, Any]] = {
        r.name: {
            "seeds": r.seeds,
            "cut": None if r.cut is None else vars(r.cut),
            "families": {},
            "seconds": 0.0,
            "events": 0,
        }
        for r in rows
    }
    for fi, fam in enumerate(families):
        acc = {r.name: _Tally([]) for r in rows}
        for seed in range(max(r.seeds for r in rows)):
            x = fam.make(family_seed(fi, seed))
            ref = Reference(fam.kind, fam.make(reference_seed(fi, seed))[:REFERENCE_EVENTS])
            for r in rows:
                if seed >= r.seeds:
                    continue
                lo, hi = r.cut.bounds(fam, len(x)) if r.cut else (0, len(x))
                hits, dt = run_stream(DETECTORS[r.name], fam.kind, x[lo:hi], ref)
                hits = [lo + h for h in hits]
                res, a = out[r.name], acc[r.name]
                res["seconds"] += dt
                res["events"] += hi - lo
                if fam.change:
                    a.false_alarms += sum(1 for h in hits if h < CHANGE_AT)
                    a.quiet_events += CHANGE_AT - lo
                    after = [h for h in hits if h >= CHANGE_AT]
                    if after:
                        a.delays.append(after[0] - CHANGE_AT)
                else:
                    a.false_alarms += len(hits)
                    a.quiet_events += hi - lo
        for r in rows:
            a = acc[r.name]
            out[r.name]["families"][fam.name] = {
                "seeds": r.seeds,
                "detection_rate": len(a.delays) / r.seeds if fam.change else None,
                "median_delay": statistics.median(a.delays) if a.delays else None,
                "false_alarms": a.false_alarms,
                "quiet_events": a.quiet_events,
                "false_alarms_per_million": a.false_alarms / a.quiet_events * 1e6,
            }
        if verbose:
            print(f"# {fam.name} done", file=sys.stderr, flush=True)
    for res in out.values():
        fa = sum(f["false_alarms"] for f in res["families"].values())
        quiet = sum(f["quiet_events"] for f in res["families"].values())
        res["false_alarms_per_million"] = fa / quiet * 1e6
        res["quiet_events"] = quiet
        res["us_per_event"] = res["seconds"] / res["events"] * 1e6
    return out


def micro_us(factory: Factory, kind: str, events: int, repeats: int = 3) -> float:
    """µs/event on batches of 500 stationary N(100, 15) values (best of ``repeats``)."""
    x = np.random.default_rng(0).normal(MU, SIGMA, events)
    ref = Reference(kind, np.random.default_rng(2).normal(MU, SIGMA, REFERENCE_EVENTS))
    ref.profile  # noqa: B018 -- built outside the timed loop, as in the bench
    best = float("inf")
    for _ in range(repeats):
        _, dt = run_stream(factory, kind, x, ref)
        best = min(best, dt)
    return best / events * 1e6


def same_params_timing(events: int) -> dict[str, dict[str, float]]:
    """µs/event of each Driftline class against river's, same parameters, same N(0, 1) stream.

    Ours in batches of 500, river's one value at a time (its only interface).
    """
    x = np.random.default_rng(1).normal(0.0, 1.0, events)
    ref = Reference("numeric", x[:0])
    ph = {"delta": 0.1, "threshold": 80.0, "alpha": 1.0}
    ph_forget = {"delta": 0.1, "threshold": 80.0}  # river's alpha: lfilter path
    pairs: dict[str, tuple[Factory, Factory]] = {
        "PageHinkley alpha=1": (
            lambda k, r: DriftlineRunner(PageHinkley(**ph)),
            lambda k, r: RiverRunner(river_drift.PageHinkley(**ph)),
        ),
        "PageHinkley alpha=1-1e-4": (
            lambda k, r: DriftlineRunner(PageHinkley(**ph_forget)),
            lambda k, r: RiverRunner(river_drift.PageHinkley(**ph_forget)),
        ),
        "ADWIN delta=1e-4": (
            lambda k, r: DriftlineRunner(Adwin(delta=1e-4)),
            lambda k, r: RiverRunner(river_drift.ADWIN(delta=1e-4)),
        ),
    }
    out = {}
    for name, (ours, theirs) in pairs.items():
        best = {"driftline": float("inf"), "river": float("inf")}
        for _ in range(3):
            for who, factory in (("driftline", ours), ("river", theirs)):
                best[who] = min(best[who], run_stream(factory, "numeric", x, ref)[1] / events * 1e6)
        out[name] = best
    return out


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def cut_note(name: str, res: dict[str, Any]) -> str | None:
    cut = res["cut"]
    if cut is None:
        return None
    seeds = f"{res['seeds']} seed" + ("s" if res["seeds"] != 1 else "")
    return (
        f"{name}: {seeds}; change streams from {cut['before']:,} events before the change "
        f"to {cut['after']:,} after it, stationary streams' first {cut['stationary']:,} events."
    )


def markdown(results: dict[str, dict[str, Any]], timing: dict[str, dict[str, float]]) -> str:
    lines = [
        "| family | detector | seeds | detection rate | median delay (events) | false alarms / M events |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for fam in FAMILIES:
        for name, res in results.items():
            f = res["families"][fam.name]
            lines.append(
                f"| {fam.name} | {name} | {f['seeds']} | {fmt(f['detection_rate'], '.2f')} | "
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
    notes = [n for n in (cut_note(name, res) for name, res in results.items()) if n]
    if notes:
        lines += ["", *notes]
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
    ap.add_argument("--quick", action="store_true", help="8 seeds per family, KSWIN on 1 (about 30 s)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per family (default 60, quick 8)")
    ap.add_argument("--detectors", default=None, help="comma-separated names from DETECTORS")
    ap.add_argument(
        "--kswin-seeds",
        type=int,
        default=None,
        help="seeds for river KSWIN on cut streams (default 3, quick 1; 0: leave it out)",
    )
    args = ap.parse_args(argv)
    seeds = args.seeds or (8 if args.quick else 60)
    kswin_seeds = args.kswin_seeds if args.kswin_seeds is not None else (1 if args.quick else 3)
    names = args.detectors.split(",") if args.detectors else [*DEFAULT_ROWS, KSWIN]
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        ap.error(f"unknown detectors {unknown}; known: {list(DETECTORS)}")
    kswin_cut = KSWIN_CUT_QUICK if args.quick else KSWIN_CUT
    plan = [Row(n, seeds) for n in names if n != KSWIN]
    if KSWIN in names and kswin_seeds:
        plan.append(Row(KSWIN, kswin_seeds, kswin_cut))
    if not plan:
        ap.error("nothing to run")
    load_start = os.getloadavg()

    t0 = time.perf_counter()
    results = evaluate(plan)
    for name, res in results.items():
        print(f"# {name}: {res['events']:,} events in {res['seconds']:.1f} s", file=sys.stderr)
    micro_events = 20_000 if args.quick else 100_000
    for name, res in results.items():
        if name == KSWIN:
            res["micro_us_per_event"] = micro_us(DETECTORS[name], "numeric", 2_000, repeats=1)
        else:
            res["micro_us_per_event"] = micro_us(DETECTORS[name], "numeric", micro_events)
    timing = same_params_timing(20_000 if args.quick else 100_000)
    elapsed = time.perf_counter() - t0

    table = markdown(results, timing)
    print(table)
    print(
        f"\n{seeds} seeds per family, {N_EVENTS} events per stream, change at {CHANGE_AT}, "
        f"batches of {BATCH}; windowed rows against a profile of a separate {REFERENCE_EVENTS}-event "
        f"pre-change sample; {elapsed:.0f} s; load average {load_start[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end, {os.cpu_count()} CPUs."
    )
    path = save(
        "drift",
        {
            "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
            "config": {
                "seeds": seeds,
                "n_events": N_EVENTS,
                "change_at": CHANGE_AT,
                "batch": BATCH,
                "quick": args.quick,
                "kswin_seeds": kswin_seeds,
                "kswin_cut": vars(kswin_cut),
                "reference_events": REFERENCE_EVENTS,
                "defaults": {
                    "error_adwin": repr(DEFAULT_ERROR_ADWIN),
                    "error_ph": repr(DEFAULT_ERROR_PH),
                    "feature_ph": repr(DEFAULT_FEATURE_PH),
                    "feature_spread_ph": repr(DEFAULT_FEATURE_SPREAD_PH),
                    "data_drift": repr(worker_drift_config()),
                    "window_events": WORKER_DATA.window_events,
                },
            },
            "families": [{"name": f.name, "kind": f.kind, "change": f.change} for f in FAMILIES],
            "results": results,
            "same_params_us_per_event": timing,
            "elapsed_s": elapsed,
            "markdown": table,
        },
    )
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
