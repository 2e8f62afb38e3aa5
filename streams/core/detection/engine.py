"""The detection engine of one source partition: monitors, their state cells, their signals.

Like :class:`streams.core.engine.MetricsEngine` it never touches Kafka,
faust or the clock. Feed it decoded batches with their source position and
joined labels (it listens to the metrics engine's join); it hands back
*signals* for the signals topic, *writes* for the changelog-backed state
table (JSON cells, never pickle) and *profiles* it built from a version's
first events, for the profiles topic.

State is one cell per monitor (keys ``["d:<kind>", partition, model, ...]``;
kinds concept, data, warm, ownprof, latency, host, input, silence);
each monitor carries an :class:`~streams.core.detection.guard.OffsetGuard`, so
a replay after a crash neither double counts nor re-detects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from streams.core.batches import PredictionBatch, TelemetryBatch
from streams.core.detection.concept import ConceptDrift, ConceptMonitor
from streams.core.detection.config import DetectionConfig
from streams.core.detection.data import DataMonitor
from streams.core.detection.hosts import HostMonitor
from streams.core.detection.inputs import InputCounts, InputMonitor
from streams.core.detection.serving import LatencyMonitor
from streams.core.detection.signals import condition_signal, make_signal
from streams.core.drift.profile import ReferenceProfile
from streams.core.join import Committed, Match
from streams.core.ops.silence import SilenceTracker
from streams.core.outcomes import TaskConfig

Cell = tuple[bytes, bytes | None]
ProfileLookup = Callable[[str, str], tuple[str, ReferenceProfile] | None]
TaskLookup = Callable[[str], TaskConfig]


class DetectionEngine:
    """All detectors of one source partition (see the module docstring)."""

    def __init__(
        self,
        cfg: DetectionConfig,
        partition: int,
        profiles: ProfileLookup,
        task: TaskLookup = lambda model: TaskConfig(),
    ) -> None:
        self.cfg = cfg
        self.partition = partition
        self.profiles = profiles
        self.task = task
        self.concept: dict[tuple[str, str], ConceptMonitor] = {}
        self.data: dict[tuple[str, str], DataMonitor] = {}
        self.latency: dict[tuple[str, str], LatencyMonitor] = {}
        self.hosts: dict[tuple[str, str], HostMonitor] = {}
        self.inputs: dict[str, InputMonitor] = {}
        self.silence = SilenceTracker(silence_after_ms=cfg.ops.silence_after_ms)
        self._dirty: dict[tuple[Any, ...], Any] = {}  # cell key -> monitor, JSON data, or None (delete)
        self._committed = Committed()  # see committed()
        self._signals: list[dict[str, Any]] = []
        self._profiles: list[tuple[str, str, ReferenceProfile, bytes]] = []
        self._errors: list[tuple[str, str]] = []

    # -- input -------------------------------------------------------------------------------

    def on_predictions(
        self, batch: PredictionBatch, source: str, offset: int, batch_index: int, now_ms: int
    ) -> None:
        self._silence_seen(
            f"predictions|{batch.model}|{batch.model_version}",
            now_ms,
            batch.model,
            batch.model_version,
            {"stream": "predictions"},
        )
        if self.cfg.data.enabled:
            self._contain("data", self._data, batch, source, offset, batch_index)
        if self.cfg.anomaly.enabled:
            self._contain("latency", self._latency, batch, source, offset, batch_index)

    def _contain(self, monitor: str, fn: Callable[..., None], *args: Any) -> None:
        """Run one monitor's step; an exception is recorded, not raised.

        Input reaching here passed schema validation, so an exception is a
        detector's bug or a value it cannot take: that monitor skips the batch
        and the error is reported (:meth:`take_errors`), while the record's
        metrics and every other monitor go on.
        """
        try:
            fn(*args)
        except Exception as exc:
            self._errors.append((monitor, f"{type(exc).__name__}: {exc}"[:500]))

    def take_errors(self) -> list[tuple[str, str]]:
        """(monitor kind, message) of the steps that failed since the last call."""
        out, self._errors = self._errors, []
        return out

    def _data(self, batch: PredictionBatch, source: str, offset: int, batch_index: int) -> None:
        key = (batch.model, batch.model_version)
        mon = self.data.get(key)
        if mon is None:
            mon = self.data[key] = DataMonitor(self.cfg.data, batch.model, batch.model_version)
        found = self.profiles(batch.model, batch.model_version)
        out = mon.add(batch, source, offset, batch_index, found)
        if out.warm_chunk is not None:
            self._dirty[("d:warm", *key, out.warm_chunk[0])] = out.warm_chunk[1]
        if out.built is not None:
            self._profiles.append((batch.model, batch.model_version, out.built, out.built_json))
            self._dirty[("d:ownprof", *key)] = out.built_json.decode()
            for seq in range(out.warm_done):
                self._dirty[("d:warm", *key, seq)] = None
        self._signals.extend(out.signals)
        if out.changed:
            self._dirty[("d:data", *key)] = mon

    def _latency(self, batch: PredictionBatch, source: str, offset: int, batch_index: int) -> None:
        key = (batch.model, batch.model_version)
        lat = self.latency.get(key)
        if lat is None:
            lat = self.latency[key] = LatencyMonitor(self.cfg.anomaly, batch.model, batch.model_version)
        self._signals.extend(lat.add(batch, source, offset, batch_index))
        self._dirty[("d:latency", *key)] = lat

    def on_matches(
        self, model: str, matches: list[Match], source: str, offset: int, batch_index: int = 0
    ) -> None:
        """Joined labels, from the metrics engine: feed each version's error stream."""
        ccfg = self.cfg.concept_for(model)
        if not (ccfg.adwin or ccfg.page_hinkley):
            return
        self._contain("concept", self._concept, model, matches, source, offset, batch_index)

    def _concept(self, model: str, matches: list[Match], source: str, offset: int, batch_index: int) -> None:
        ccfg = self.cfg.concept_for(model)
        by_version: dict[str, list[Match]] = {}
        for m in matches:
            by_version.setdefault(m.version, []).append(m)
        for version, version_matches in by_version.items():
            key = (model, version)
            mon = self.concept.get(key)
            if mon is None:
                mon = self.concept[key] = ConceptMonitor(ccfg)
            drifts = mon.add(version_matches, self.task(model), source, offset, batch_index)
            self._dirty[("d:concept", *key)] = mon
            for d in drifts:
                self._signals.append(self._concept_signal(model, version, d, mon, ccfg.grace_events))

    def on_telemetry(self, batch: TelemetryBatch, source: str, offset: int, now_ms: int) -> None:
        self._silence_seen(
            f"telemetry|{batch.model}|{batch.host}",
            now_ms,
            batch.model,
            None,
            {"stream": "telemetry", "host": batch.host},
        )
        self._contain("host", self._host, batch, source, offset)

    def _host(self, batch: TelemetryBatch, source: str, offset: int) -> None:
        key = (batch.model, batch.host)
        mon = self.hosts.get(key)
        if mon is None:
            mon = self.hosts[key] = HostMonitor(self.cfg, batch.model, batch.host)
        self._signals.extend(mon.add(batch, source, offset))
        self._dirty[("d:host", *key)] = mon

    def on_input(self, model: str, counts: InputCounts, source: str, offset: int, now_ms: int) -> None:
        """One record's accepted and rejected event counts, charged to ``model`` (its key)."""
        self._contain("input", self._input, model, counts, source, offset, now_ms)

    def _input(self, model: str, counts: InputCounts, source: str, offset: int, now_ms: int) -> None:
        mon = self.inputs.get(model)
        if mon is None:
            mon = self.inputs[model] = InputMonitor(self.cfg.ops, model)
        self._signals.extend(mon.add(counts, source, offset, now_ms))
        self._dirty[("d:input", model)] = mon

    def advance(self, now_ms: int) -> None:
        """Processing-time checks (silence, invalid input clearing): call on a timer."""
        for key, cond in self.silence.check(now_ms):
            self._silence_signal(key, cond, now_ms)
            self._dirty[("d:silence",)] = self.silence
        for model, mon in self.inputs.items():
            signals = mon.check(now_ms)
            if signals:
                self._signals.extend(signals)
                self._dirty[("d:input", model)] = mon

    # -- output ------------------------------------------------------------------------------

    def take_signals(self) -> list[dict[str, Any]]:
        out, self._signals = self._signals, []
        return out

    def take_profiles(self) -> list[tuple[str, str, ReferenceProfile, bytes]]:
        """Profiles built since the last call: (model, version, profile, its JSON)."""
        out, self._profiles = self._profiles, []
        return out

    def committed(self, offsets: Mapping[str, int]) -> None:
        """Offsets committed per source (``topic:partition``, the next to read).

        The concept monitors written from now on forget the label pairs a replay
        can no longer bring back (:meth:`PairGuard.prune`).
        """
        self._committed.advance(offsets)

    def take_writes(self) -> list[Cell]:
        writes: list[Cell] = []
        for key, mon in self._dirty.items():
            k = orjson.dumps([key[0], self.partition, *key[1:]])
            if mon is None:
                writes.append((k, None))
                continue
            if isinstance(mon, ConceptMonitor) and self._committed:
                mon.guard.prune(self._committed)
            state = mon if isinstance(mon, dict | str) else mon.to_json()
            writes.append((k, orjson.dumps(state)))
        self._dirty.clear()
        return writes

    # -- restore -----------------------------------------------------------------------------

    def restore(self, cells: Iterable[tuple[bytes, bytes]]) -> int:
        """Rebuild from this partition's persisted cells; returns how many were read.

        A cell that no longer parses (a format from a newer release, or a
        detector whose configuration changed shape) is dropped and its
        monitor starts fresh: losing warm-up beats a worker that cannot start.
        """
        mine: list[tuple[str, list[Any], Any]] = []
        own: dict[tuple[str, str], ReferenceProfile] = {}
        warm: dict[tuple[str, str], dict[int, Any]] = {}
        for k, v in cells:
            if not k.startswith(b'["d:'):
                continue
            key = orjson.loads(k)
            if key[1] != self.partition or v is None:
                continue
            kind, rest, raw = key[0], key[2:], orjson.loads(v)
            try:
                if kind == "d:ownprof":
                    own[(rest[0], rest[1])] = ReferenceProfile.from_json(raw)
                elif kind == "d:warm":
                    warm.setdefault((rest[0], rest[1]), {})[int(rest[2])] = raw
                else:
                    mine.append((kind, rest, raw))
            except (ValueError, KeyError, TypeError, OverflowError):
                continue
        n = len(own) + sum(map(len, warm.values()))
        for kind, rest, raw in mine:
            try:
                if kind == "d:data":
                    key = (rest[0], rest[1])
                    chunks = [c for _, c in sorted(warm.get(key, {}).items())]
                    self.data[key] = DataMonitor.from_json(
                        raw,
                        self.cfg.data,
                        rest[0],
                        rest[1],
                        self.profiles(rest[0], rest[1]),
                        own.get(key),
                        chunks,
                    )
                else:
                    self._restore_one(kind, rest, raw)
                n += 1
            except (ValueError, KeyError, TypeError, OverflowError):
                continue
        return n

    def _restore_one(self, kind: str, rest: list[Any], raw: Any) -> None:
        if kind == "d:concept":
            self.concept[(rest[0], rest[1])] = ConceptMonitor.from_json(raw, self.cfg.concept_for(rest[0]))
        elif kind == "d:latency":
            self.latency[(rest[0], rest[1])] = LatencyMonitor.from_json(
                raw, self.cfg.anomaly, rest[0], rest[1]
            )
        elif kind == "d:host":
            self.hosts[(rest[0], rest[1])] = HostMonitor.from_json(raw, self.cfg, rest[0], rest[1])
        elif kind == "d:silence":
            self.silence = SilenceTracker.from_state(raw)
        elif kind == "d:input":
            self.inputs[rest[0]] = InputMonitor.from_json(raw, self.cfg.ops, rest[0])

    # -- signals -----------------------------------------------------------------------------

    def _concept_signal(
        self, model: str, version: str, d: ConceptDrift, mon: ConceptMonitor, grace: int
    ) -> dict[str, Any]:
        det = d.detection
        return make_signal(
            kind="concept_drift",
            detector=d.detector,
            model=model,
            model_version=version,
            active=True,
            score=abs(det.mean_after - det.mean_before),
            threshold=det.threshold,
            window_start_ms=d.since_ms,
            window_end_ms=d.at_ms,
            detected_at_ms=d.at_ms,
            position=d.position,
            evidence={
                "direction": "up" if det.direction > 0 else "down",
                "mean_before": det.mean_before,
                "mean_after": det.mean_after,
                "statistic": det.statistic,
                "events_seen": mon.events,
                "warming_up": mon.events < grace,
            },
        )

    def _silence_seen(
        self, key: str, now_ms: int, model: str, version: str | None, labels: dict[str, str]
    ) -> None:
        cond = self.silence.seen(key, now_ms)
        self._dirty[("d:silence",)] = self.silence
        if cond is not None:
            self._silence_signal(key, cond, now_ms)

    def _silence_signal(self, key: str, cond: Any, now_ms: int) -> None:
        stream, model, subject = key.split("|", 2)
        labels = {"stream": stream}
        if stream == "telemetry":
            labels["host"] = subject
        self._signals.append(
            condition_signal(
                cond,
                kind="silence",
                detector="silence",
                model=model,
                model_version=subject if stream == "predictions" else None,
                at_ms=now_ms,
                position=("silence", key, cond.since_ms),
                labels=labels,
            )
        )
