"""Glue between the metrics and detection stages and the alert lifecycle, per source partition.

Snapshots and signals are produced in this worker for the partition their
model lives on, so each partition keeps its own rule evaluator and lifecycle
(one state cell ``["a:state", partition]`` in the changelog-backed table) and
needs no shuffle. Silences come from the compacted control topic, which every
worker follows whole (:class:`~streams.app.profiles.TopicFollower`), so one
``driftline silence add`` reaches every partition. Alert events go to the
alerts topic keyed by fingerprint.

Time: the lifecycle runs on processing time (``for`` durations, repeat
intervals), like Alertmanager; the evaluator deduplicates replayed inputs by
signal id and snapshot revision, so a replay after a crash does not open new
alerts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from streams.app.ingest import wall_ms
from streams.app.metrics_stage import StateStore
from streams.core.alerting.evaluate import RuleEvaluator
from streams.core.alerting.lifecycle import Lifecycle
from streams.core.alerting.rules import Rule
from streams.core.alerting.silences import SilenceSet

log = logging.getLogger(__name__)
Sink = Callable[[bytes, bytes], None]
STATE_KIND = "a:state"
SILENCE_PREFIX = b"silence:"


class LockedSilences(SilenceSet):
    """A silence set the control-topic thread updates while the stream thread reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def apply_record(self, key: bytes | None, value: bytes | None, now_ms: int) -> None:
        """One control-topic record; keys ``silence:<id>`` are silences, other commands are not ours."""
        if key is None or not key.startswith(SILENCE_PREFIX):
            return
        with self.lock:
            try:
                self.apply(key[len(SILENCE_PREFIX) :].decode("utf-8", "replace"), value, now_ms)
            except ValueError as exc:
                log.warning("control: ignoring silence %r: %s", key, exc)


class AlertingStage:
    """Rule evaluation and alert lifecycle per partition; persists state, emits alert events."""

    def __init__(
        self,
        rules: Iterable[Rule],
        store: StateStore,
        emit: Sink,
        silences: LockedSilences,
        clock: Callable[[], int] = wall_ms,
        on_event: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.store = store
        self.emit = emit
        self.silences = silences
        self.clock = clock
        self.on_event = on_event
        self.parts: dict[int, tuple[RuleEvaluator, Lifecycle]] = {}
        self._dirty: set[int] = set()

    def part(self, partition: int) -> tuple[RuleEvaluator, Lifecycle]:
        got = self.parts.get(partition)
        if got is None:
            got = self.parts[partition] = self._restore(partition)
        return got

    def _restore(self, partition: int) -> tuple[RuleEvaluator, Lifecycle]:
        key = orjson.dumps([STATE_KIND, partition])
        for k, v in self.store.items():
            if k == key and v:
                try:
                    raw = orjson.loads(v)
                    return (
                        RuleEvaluator.from_json(raw["evaluator"], self.rules),
                        Lifecycle.from_json(raw["lifecycle"], silences=self.silences),
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    log.error(
                        "alerting: state of partition %d unreadable, starting afresh: %s", partition, exc
                    )
        return RuleEvaluator(self.rules), Lifecycle(silences=self.silences)

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)
            self._dirty.discard(p)

    def on_snapshot(self, partition: int, snap: Mapping[str, Any]) -> None:
        ev, lc = self.part(partition)
        now = self.clock()
        self._apply(partition, lc, ev.on_snapshot(snap, now), now)

    def on_signal(self, partition: int, sig: Mapping[str, Any]) -> None:
        ev, lc = self.part(partition)
        now = self.clock()
        self._apply(partition, lc, ev.on_signal(sig, now), now)

    def _apply(self, partition: int, lc: Lifecycle, observations: list[Any], now: int) -> None:
        if not observations:
            return
        self._dirty.add(partition)
        with self.silences.lock:
            for obs in observations:
                self._send(lc.observe(obs, now))

    def tick(self) -> None:
        """Timer: pending alerts whose ``for`` elapsed fire, point detections expire, repeats go out."""
        now = self.clock()
        for p, (ev, lc) in list(self.parts.items()):
            with self.silences.lock:
                for obs in ev.expire(now):
                    self._send(lc.observe(obs, now))
                events = lc.tick(now)
            self._send(events)
            self._dirty.add(p)

    def flush_writes(self) -> None:
        for p in sorted(self._dirty):
            if p in self.parts:
                ev, lc = self.parts[p]
                state = {"v": 1, "evaluator": ev.to_json(), "lifecycle": lc.to_json()}
                self.store.put(p, orjson.dumps([STATE_KIND, p]), orjson.dumps(state))
        self._dirty.clear()

    def _send(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.emit(e["fingerprint"].encode(), orjson.dumps(e))
            if self.on_event is not None:
                self.on_event(e)
