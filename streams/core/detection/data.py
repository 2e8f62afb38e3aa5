"""Data drift of one model version: its inputs and outputs against a reference profile.

Two complementary views, both against the same reference:

* **Windowed tests.** Each window's histogram (reference bins, see
  :mod:`streams.core.drift.histogram`) is tested feature by feature (KS or
  Mann-Whitney for numbers, chi-squared for categories, PSI and Jensen-Shannon
  for both), corrected for testing many features at once, and gated on effect
  size, so a huge window does not alarm on a trivial difference. A window
  closes when it has ``window_events`` events *and* spans ``window_ms`` of
  event time: tests stay powered at low traffic and signals stay few at high
  traffic (``max_window_events`` caps a window when event time crawls, as in a
  replay). Both thresholds are stretched per window by up to ``window_jitter``
  (hashed from model, version and window number), so that models whose traffic
  started together do not all close their windows together. At most every
  ``domain_every_ms`` of event time a window keeps a row sample and a domain
  classifier tells reference rows from current rows; its AUC is the
  multivariate drift score.
* **Bounded cost.** Above ``max_events_per_s`` per model version (measured
  in event time over the open window once it spans :data:`RATE_PROBE_MS`, or
  once it holds the events that span brings at the limit rate (see
  :func:`rate_probe_due`), and over the whole previous window before that) both views see a uniform random
  sample of the rows, drawn from keys seeded by the batch's position, so a
  replay samples the same rows. Window and chunk sizes count sampled rows, so
  tests keep their power; only the cost stops growing with traffic.
* **Sequential detectors.** Per numeric feature, Page-Hinkley on the
  standardized mean and spread of consecutive chunks of ``chunk_events``
  events: a change *within* production, found within a few chunks rather
  than at the end of a window.

The reference is the profile published for the model version (or for the
model, any version); without one, the first ``auto_profile_events`` events of
the version are folded into a profile, which is then published, so every
worker (and a restarted one) uses the same. Warm-up batches are kept as
separate cells (each written once), not as one growing cell.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streams.core.batches import PredictionBatch, top_class
from streams.core.columns import FeatureColumns
from streams.core.detection.config import DataConfig
from streams.core.detection.guard import OffsetGuard
from streams.core.detection.signals import make_signal
from streams.core.drift.base import SequentialDetector
from streams.core.drift.data_drift import DataDriftConfig, DriftReport, evaluate
from streams.core.drift.domain import domain_auc
from streams.core.drift.histogram import WindowHistogram
from streams.core.drift.profile import NumericProfile, ProfileBuilder, ReferenceProfile, row_keys
from streams.core.drift.sequential import DEFAULT_FEATURE_PH, build, restore, update_one

PREDICTION = "__prediction__"
Found = tuple[str, ReferenceProfile] | None


def _hash64(text: str) -> int:
    """A stable 64-bit hash of ``text`` (``hash()`` of a str changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def rate_probe_due(seen: int, span_ms: int, max_events_per_s: int) -> bool:
    """Whether the open window's own rate (``seen`` events over ``span_ms``) may set the sampling share.

    At :data:`RATE_PROBE_MS` of event time, or sooner, from :data:`RATE_PROBE_MIN_MS`, once the window
    holds the events that span would bring at ``max_events_per_s``: the rows a model folds unsampled
    before its rate is known are then bounded by the limit, not by its traffic (a model starting at
    25,000 events/s used to fold 50,000 rows whole; now about 6,250).

    >>> [rate_probe_due(seen, ms, 2_000) for seen, ms in [(1_000, 2_000), (4_000, 240), (4_000, 250)]]
    [True, False, True]
    >>> rate_probe_due(3_999, 1_999, 2_000)  # a slow model waits for the whole span
    False
    """
    if span_ms >= RATE_PROBE_MS:
        return True
    return span_ms >= RATE_PROBE_MIN_MS and seen * 1000 >= max_events_per_s * RATE_PROBE_MS


def rows_seed(source: str, offset: int, batch_index: int | str) -> int:
    """A 53-bit seed from a batch's position: a replay samples the same rows."""
    return _hash64(f"{source}:{offset}:{batch_index}") >> 11


#: Event time a window must span before its own rate sets the sampling share: a model that
#: starts (or comes back from a backlog) at 25,000 events/s is sampled after 2 s of event time
#: instead of after its first whole window (60 s, up to ``max_window_events`` events).
RATE_PROBE_MS = 2_000
#: ... or sooner, once it holds the events RATE_PROBE_MS brings at ``max_events_per_s`` (4,000 at
#: the default 2,000), if they span at least this much event time (a 500-event batch spans
#: 20 ms at 25,000 events/s: the rate of a few batches, with their jitter, is not yet a rate).
RATE_PROBE_MIN_MS = 250
SAMPLE_ROWS = 256  # current rows kept for the domain classifier (against the profile's 500)
_MIN_SAMPLE_P = 1e-4  # a window of identical event times reads as an infinite rate: keep some rows
_SAMPLE_SALT = 0x5EED_D21F  # rate sampling draws keys independent of the domain classifier's row sample
CHUNK_WARMUP = 32  # chunks whose statistics calibrate the detectors' scale


def chunk_detector(chunk_events: int) -> SequentialDetector:
    """Page-Hinkley over a per-chunk statistic, in units of that statistic's own spread.

    The scale is learned from the first :data:`CHUNK_WARMUP` chunks rather
    than derived from the reference standard deviation: the sample variance of
    a heavy-tailed feature varies far more than a normal theory predicts (its
    spread grows with the kurtosis), and a scale taken from theory would alarm
    on every skewed feature. The tolerance and threshold are the per-event
    defaults (:data:`DEFAULT_FEATURE_PH`) carried to chunk means of ``n``
    events: a chunk mean has ``1/sqrt(n)`` of an event's spread, so the
    tolerated shift is ``delta * sqrt(n)`` and the threshold ``threshold / sqrt(n)``.
    """
    root = math.sqrt(chunk_events)
    return build(
        replace(
            DEFAULT_FEATURE_PH,
            delta=DEFAULT_FEATURE_PH.delta * root,
            threshold=DEFAULT_FEATURE_PH.threshold / root,
            min_instances=4,
            alpha=1.0,
            warmup=CHUNK_WARMUP,
        )
    )


@dataclass(slots=True)
class DataOutcome:
    signals: list[dict[str, Any]] = field(default_factory=list)
    built: ReferenceProfile | None = None  # a profile built from this version's first events
    built_json: bytes = b""  # its JSON, serialised once for the state cell and the profiles topic
    changed: bool = False
    warm_chunk: tuple[int, dict[str, Any]] | None = None  # (seq, cell) of warm-up data to persist
    warm_done: int = 0  # warm-up cells to delete (0..n-1) once the profile is built


class DataMonitor:
    """Windowed tests and per-feature sequential detectors of one (model, version)."""

    def __init__(self, cfg: DataConfig, model: str, version: str) -> None:
        self.cfg = cfg
        self.model = model
        self.version = version
        self.guard = OffsetGuard()
        self.profile_id: str | None = None
        self.profile: ReferenceProfile | None = None
        self.own_profile: ReferenceProfile | None = None  # built here (auto), persisted with the state
        self.hist: WindowHistogram | None = None
        self.window_start_ms = 0
        self.windows = 0
        self.drifted: set[str] = set()
        self.multivariate = False
        self.last_domain_ms: int | None = None
        self.seq: dict[str, list[SequentialDetector]] = {}
        self.chunk: dict[str, list[float]] = {}  # feature -> [n, sum of z, sum of z^2] of the open chunk
        self.chunk_events = 0
        self.warm: ProfileBuilder | None = None
        self.warm_cells = 0
        self.warm_events = 0
        self.sample_p = 1.0  # share of rows the tests see (see the module docstring)
        self.window_seen = 0  # events of the open window before sampling (its event-time rate)
        self.drift_cfg = DataDriftConfig(
            alpha=cfg.alpha, correction=cfg.correction, min_psi=cfg.min_psi, numeric_test=cfg.numeric_test
        )

    # -- input -------------------------------------------------------------------------------

    def add(
        self, batch: PredictionBatch, source: str, offset: int, batch_index: int, found: Found
    ) -> DataOutcome:
        out = DataOutcome()
        if not self.guard.admit(source, offset, batch_index):
            return out
        self.guard.mark(source, offset, batch_index)
        out.changed = True
        pos = (source, offset, batch_index)
        if found is None and self.own_profile is not None:
            found = (self.profile_id or "", self.own_profile)
        if found is not None and found[0] != self.profile_id:
            self._switch(found, batch, pos, out)
        if self.profile is None:
            self._warm_up(batch, self._predictions(batch.prediction), out)
            return out
        k = 0
        while True:
            cut = self._cut(batch)
            piece = batch if cut is None else batch.slice(0, cut)
            self._fold(piece, pos if k == 0 else (source, offset, f"{batch_index}.{k}"), out)
            if cut is None:
                return out
            batch, k = batch.slice(cut, len(batch)), k + 1

    def _cut(self, batch: PredictionBatch) -> int | None:
        """Where to split a batch of several records: a window closes at a record's end, not the batch's.

        The worker folds records in groups (:mod:`streams.core.grouping`); the
        window should still close within one record of its thresholds, as when
        records came one by one. Returns the end of the first record after which
        the open window would close (its sampled events estimated with the
        current sampling share), or None: fold the batch whole.
        """
        parts = batch.parts
        if parts is None or len(parts) < 2:
            return None
        n = 0 if self.hist is None else self.hist.n
        start_ms = int(batch.event_time_ms.min()) if self.hist is None else self.window_start_ms
        if not self._window_full(n + len(batch) * self.sample_p, int(batch.event_time_ms.max()) - start_ms):
            return None  # not even the whole batch fills the window
        end, newest = 0, start_ms
        for length in parts[:-1]:
            newest = max(newest, int(batch.event_time_ms[end : end + length].max()))
            end += length
            if self._window_full(n + end * self.sample_p, newest - start_ms):
                return end
        return None

    def _fold(self, batch: PredictionBatch, pos: tuple[Any, ...], out: DataOutcome) -> None:
        """Fold rows into the open window (opening one if needed); close it once past its thresholds."""
        if self.hist is None:
            self._open_window(int(batch.event_time_ms.min()))
        assert self.hist is not None
        features, preds, n_rows = self._sample(batch, pos)
        self.window_seen += len(batch)
        if n_rows:
            self.hist.add(features, preds, rows_seed(*pos))
            if self.cfg.sequential:
                self._chunks(self.hist.batch_moments(), n_rows, batch, pos, out)
        span_ms = int(batch.event_time_ms.max()) - self.window_start_ms
        if rate_probe_due(self.window_seen, span_ms, self.cfg.max_events_per_s):
            self._rate_limit(self.window_seen, span_ms)
        if self._window_full(self.hist.n, span_ms):
            self._close_window(int(batch.event_time_ms.max()), pos, out)

    def _window_full(self, n: float, span_ms: int) -> bool:
        """Whether a window of ``n`` sampled events spanning ``span_ms`` closes (thresholds stretched)."""
        stretch = self.window_stretch()
        return (n >= self.cfg.window_events * stretch and span_ms >= self.cfg.window_ms * stretch) or (
            n >= self.cfg.max_window_events
        )

    def window_stretch(self) -> float:
        """Factor in ``[1, 1 + window_jitter)`` on the open window's ``window_events`` and ``window_ms``.

        Without it, the windows of models whose traffic started together (a fleet
        deployed at once, a worker restarted over a thousand models) fill and close
        together, and so do the windows after them: every few minutes, a thousand
        rounds of tests and domain classifiers in the same minute (measured at 1,000
        models: a 60 s burst of about 25 ms per close that took the worker from 60 %
        to 100 % of a core and event-to-alert p99 to 5 s). Stretching each window by
        a factor hashed from model, version and window number spreads the closes and
        keeps them spread; a pure function of persisted state, so a replay closes the
        same windows. Kafka staggers segment rolls the same way (``segment.jitter.ms``).

        >>> m = DataMonitor(DataConfig(window_jitter=0.5), "fraud", "v1")
        >>> s0 = m.window_stretch(); 1.0 <= s0 < 1.5, s0 == m.window_stretch()
        (True, True)
        >>> m.windows += 1; m.window_stretch() != s0
        True
        >>> DataMonitor(DataConfig(window_jitter=0.0), "fraud", "v1").window_stretch()
        1.0
        """
        if not self.cfg.window_jitter:
            return 1.0
        unit = _hash64(f"{self.model}\0{self.version}\0{self.windows}") / 2.0**64
        return 1.0 + self.cfg.window_jitter * unit

    def _sample(
        self, batch: PredictionBatch, pos: tuple[Any, ...]
    ) -> tuple[dict[str, list[Any]], list[Any] | None, int]:
        """The rows the tests see (features, predictions as labels): all, or each with probability
        :attr:`sample_p`. Only the sampled rows are copied, and the float conversions the metrics
        stage already made of the batch are reused (:meth:`FeatureColumns.take`)."""
        if self.sample_p >= 1.0:
            return batch.features, self._predictions(batch.prediction), len(batch)
        keys = row_keys(rows_seed(*pos) ^ _SAMPLE_SALT, 0, len(batch), bits=53)
        idx = np.flatnonzero(keys < np.uint64(int(self.sample_p * 2**53))).tolist()
        cols = batch.features
        features = (cols.take(idx) if isinstance(cols, FeatureColumns)
                    else {k: list(map(v.__getitem__, idx)) for k, v in cols.items()})
        raw = batch.prediction
        return features, self._predictions(None if raw is None else list(map(raw.__getitem__, idx))), len(idx)

    def _open_window(self, start_ms: int) -> None:
        """Start a window; it keeps a row sample only if the domain classifier is due at its close.

        The row sample costs more than the bins (values are copied per row), and
        the classifier runs at most every ``domain_every_ms`` of event time.
        """
        assert self.profile is not None
        self.window_start_ms = start_ms
        self.window_seen = 0
        due = bool(self.cfg.domain_every_ms and self.profile.sample) and (
            self.last_domain_ms is None or start_ms - self.last_domain_ms >= self.cfg.domain_every_ms
        )
        self.hist = WindowHistogram(self.profile, sample_rows=SAMPLE_ROWS if due else 0)

    @staticmethod
    def _predictions(raw: list[Any] | None) -> list[Any] | None:
        """Predictions as the tests see them: a class-probability map is its top class."""
        if raw is None:
            return None
        return [top_class(p) if isinstance(p, dict) and p else p for p in raw]

    def _switch(
        self,
        found: tuple[str, ReferenceProfile],
        batch: PredictionBatch,
        pos: tuple[Any, ...],
        out: DataOutcome,
    ) -> None:
        """A new reference: earlier verdicts were against the old one, so they end here."""
        at = int(batch.event_time_ms.min())
        for feature in sorted(self.drifted):
            out.signals.append(self._cleared(feature, at, pos, "profile_replaced"))
        self.drifted.clear()
        self.profile_id, self.profile = found
        self.hist = None
        self.seq.clear()
        self.chunk.clear()
        self.chunk_events = 0
        self.warm = None

    def _warm_up(self, batch: PredictionBatch, preds: list[Any] | None, out: DataOutcome) -> None:
        if self.cfg.auto_profile_events == 0:
            return
        if self.warm is None:
            self.warm = ProfileBuilder()
        self.warm.add(batch.features, preds)
        out.warm_chunk = (self.warm_cells, {"f": batch.features, "p": preds})
        self.warm_cells += 1
        self.warm_events += len(batch)
        if self.warm_events >= self.cfg.auto_profile_events:
            prof = self.warm.build(
                self.model, self.version, int(batch.event_time_ms.max()), f"auto:first-{self.warm_events}"
            )
            out.built, out.built_json = prof, prof.to_json()  # (the fingerprint comes with it)
            out.warm_done = self.warm_cells
            self.own_profile = prof
            self.warm, self.warm_cells, self.warm_events = None, 0, 0
            self.profile_id, self.profile = prof.fingerprint, prof
            self.hist = None

    # -- sequential detectors on chunks ------------------------------------------------------

    def _chunks(
        self,
        moments: dict[str, tuple[int, float, float]],
        n_batch: int,
        batch: PredictionBatch,
        pos: tuple[Any, ...],
        out: DataOutcome,
    ) -> None:
        """Add the batch's per-feature moments (sums of ``x - reference mean``) to the open chunk."""
        assert self.profile is not None
        features = self.profile.features
        for name, (n1, s1, q1) in moments.items():
            fp = features[name]
            if not (isinstance(fp, NumericProfile) and fp.std):
                continue
            acc = self.chunk.setdefault(name, [0.0, 0.0, 0.0])
            acc[0] += n1
            acc[1] += s1
            acc[2] += q1
        self.chunk_events += n_batch
        if self.chunk_events < self.cfg.chunk_events:
            return
        assert self.profile is not None
        at = int(batch.event_time_ms.max())
        for name, (n, s, q) in sorted(self.chunk.items()):
            fp = self.profile.features[name]
            assert isinstance(fp, NumericProfile) and fp.std
            if n < 2:
                continue
            mean_shift = s / n  # the histogram's sums are of x - reference mean
            var = max(q / n - mean_shift * mean_shift, 0.0)
            z_mean = mean_shift / fp.std
            z_var = math.log(var / (fp.std * fp.std) + 1e-12)  # log: a symmetric scale for ratios
            dets = self.seq.get(name)
            if dets is None:
                dets = self.seq[name] = [
                    chunk_detector(self.cfg.chunk_events),
                    chunk_detector(self.cfg.chunk_events),
                ]
            for stat, det, z in (("mean", dets[0], z_mean), ("spread", dets[1], z_var)):
                for d in update_one(det, z):
                    out.signals.append(
                        make_signal(
                            kind="data_drift",
                            detector="page_hinkley",
                            model=self.model,
                            model_version=self.version,
                            feature=name,
                            active=True,
                            score=abs(d.mean_after - d.mean_before),
                            threshold=d.threshold,
                            window_start_ms=self.window_start_ms,
                            window_end_ms=at,
                            detected_at_ms=at,
                            position=(*pos, "ph", name, stat),
                            evidence={
                                "statistic": stat,
                                "direction": "up" if d.direction > 0 else "down",
                                "chunk_events": int(n),
                                "before": d.mean_before,
                                "after": d.mean_after,
                                "reference_mean": fp.mean,
                                "reference_std": fp.std,
                                "chunk_mean": (fp.mean or 0.0) + mean_shift,
                            },
                        )
                    )
        self.chunk.clear()
        self.chunk_events = 0

    # -- windows -----------------------------------------------------------------------------

    def _close_window(self, end_ms: int, pos: tuple[Any, ...], out: DataOutcome) -> None:
        assert self.hist is not None and self.profile is not None
        report = evaluate(self.profile, self.hist, self.drift_cfg)
        self.windows += 1
        out.signals.extend(self._report_signals(report, end_ms, pos))
        if self.hist.sample_rows and self.profile.sample:
            self.last_domain_ms = self.window_start_ms
            res = domain_auc(self.profile.sample, self.hist.sample(), seed=self.windows)
            drifted = res.auc >= self.cfg.domain_min_auc
            if drifted or self.multivariate:
                out.signals.append(
                    make_signal(
                        kind="multivariate_drift",
                        detector="domain_classifier",
                        model=self.model,
                        model_version=self.version,
                        active=drifted,
                        score=res.auc,
                        threshold=self.cfg.domain_min_auc,
                        window_start_ms=self.window_start_ms,
                        window_end_ms=end_ms,
                        detected_at_ms=end_ms,
                        position=(*pos, "domain", self.windows),
                        evidence={
                            "top_features": [f for f, _ in res.top_features],
                            "importance": [float(w) for _, w in res.top_features],
                            "rows_reference": res.n_ref,
                            "rows_current": res.n_cur,
                        },
                    )
                )
            self.multivariate = drifted
        self._rate_limit(self.window_seen, end_ms - self.window_start_ms)
        self.hist = None  # the next window opens with its first batch

    def _rate_limit(self, seen: int, span_ms: int) -> None:
        """Set the sampling share from the event rate of ``seen`` events over ``span_ms`` of event time."""
        if not self.cfg.max_events_per_s:
            self.sample_p = 1.0
            return
        events_per_s = seen / (max(span_ms, 1) / 1000)
        self.sample_p = min(1.0, max(self.cfg.max_events_per_s / events_per_s, _MIN_SAMPLE_P))

    def _report_signals(self, report: DriftReport, end_ms: int, pos: tuple[Any, ...]) -> list[dict[str, Any]]:
        ranked = [f for f in report.features if f.drifted]
        names = [f.feature for f in ranked]
        out = []
        rank = {f.feature: i + 1 for i, f in enumerate(ranked)}
        results = list(report.features) + ([report.prediction] if report.prediction is not None else [])
        for f in results:
            if not f.drifted and f.feature not in self.drifted:
                continue
            kind: Any = "prediction_drift" if f.feature == PREDICTION else "data_drift"
            out.append(
                make_signal(
                    kind=kind,
                    detector=f.test,
                    model=self.model,
                    model_version=self.version,
                    feature=f.feature,
                    active=f.drifted,
                    score=f.score,
                    threshold=self.cfg.min_psi,
                    p_value=f.p_adjusted,
                    window_start_ms=self.window_start_ms,
                    window_end_ms=end_ms,
                    detected_at_ms=end_ms,
                    position=(*pos, "window", self.windows, f.feature),
                    evidence={
                        "rank": rank.get(f.feature, 0),
                        "drifted_features": names,
                        "statistic": f.statistic,
                        "p_value_raw": f.p_value,
                        "psi": f.psi,
                        "js": f.js,
                        "events": report.n_events,
                        **{k: v for k, v in f.evidence.items() if not isinstance(v, dict)},
                    },
                )
            )
            if f.drifted:
                self.drifted.add(f.feature)
            else:
                self.drifted.discard(f.feature)
        return out

    def _cleared(self, feature: str, at_ms: int, pos: tuple[Any, ...], reason: str) -> dict[str, Any]:
        kind: Any = "prediction_drift" if feature == PREDICTION else "data_drift"
        return make_signal(
            kind=kind,
            detector="reference",
            model=self.model,
            model_version=self.version,
            feature=feature,
            active=False,
            score=0.0,
            window_start_ms=self.window_start_ms,
            window_end_ms=at_ms,
            detected_at_ms=at_ms,
            position=(*pos, "cleared", feature),
            evidence={"reason": reason},
        )

    # -- state -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "applied": self.guard.to_json(),
            "profile_id": self.profile_id,
            "hist": None if self.hist is None else self.hist.to_state(),
            "window_start_ms": self.window_start_ms,
            "windows": self.windows,
            "drifted": sorted(self.drifted),
            "multivariate": self.multivariate,
            "last_domain_ms": self.last_domain_ms,
            "seq": {k: [d.to_state() for d in v] for k, v in self.seq.items()},
            "chunk": self.chunk,
            "chunk_events": self.chunk_events,
            "warm_cells": self.warm_cells,
            "warm_events": self.warm_events,
            "sample_p": self.sample_p,
            "window_seen": self.window_seen,
        }

    @classmethod
    def from_json(
        cls,
        raw: dict[str, Any],
        cfg: DataConfig,
        model: str,
        version: str,
        found: Found,
        own_profile: ReferenceProfile | None,
        warm: list[dict[str, Any]],
    ) -> DataMonitor:
        """Rebuild from the monitor's cell.

        ``found`` is the profile the store holds now, ``own_profile`` the one
        this monitor built (its own cell), ``warm`` the warm-up cells in order.
        """
        if raw.get("v") != 1:
            raise ValueError(f"data monitor state: unknown version {raw.get('v')!r}")
        m = cls(cfg, model, version)
        m.guard = OffsetGuard.from_json(raw["applied"])
        m.own_profile = own_profile
        m.profile_id = raw["profile_id"]
        if found is not None and found[0] == m.profile_id:
            m.profile = found[1]
        elif m.own_profile is not None and m.own_profile.fingerprint == m.profile_id:
            m.profile = m.own_profile
        if m.profile is not None and raw["hist"] is not None:
            m.hist = WindowHistogram.from_state(m.profile, raw["hist"])
        elif m.profile is None:
            m.profile_id = None  # the reference is gone: start over against whatever is current
        m.window_start_ms, m.windows = int(raw["window_start_ms"]), int(raw["windows"])
        m.drifted, m.multivariate = set(raw["drifted"]), bool(raw["multivariate"])
        m.last_domain_ms = None if raw["last_domain_ms"] is None else int(raw["last_domain_ms"])
        if m.profile is not None:
            m.seq = {str(k): [restore(s) for s in v] for k, v in raw["seq"].items()}
            m.chunk = {str(k): [float(x) for x in v] for k, v in raw["chunk"].items()}
            m.chunk_events = int(raw["chunk_events"])
        m.warm_cells, m.warm_events = int(raw["warm_cells"]), int(raw["warm_events"])
        p = float(raw.get("sample_p", 1.0))  # absent in states written before sampling existed
        if not 0.0 < p <= 1.0:
            raise ValueError(f"data monitor state: sample_p must be in (0, 1], got {p!r}")
        m.sample_p = p
        m.window_seen = int(raw.get("window_seen", 0))  # absent in states written before it existed
        if m.profile is None and warm:
            m.warm = ProfileBuilder()
            for cell in warm[: m.warm_cells]:
                m.warm.add(cell["f"], cell["p"])
        return m
