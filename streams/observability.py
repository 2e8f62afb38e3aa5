"""Prometheus metrics of a worker's pipeline, on an injected registry.

Names follow Prometheus conventions (``_total`` counters, base units,
``driftline_`` namespace). Label values come from closed sets (event kind,
dead-letter reason, topic, partition) so cardinality is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.events.reasons import Reason

KINDS = ("prediction", "feedback", "telemetry")


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    """The ingest stage's health: what came in, what was rejected, how far behind."""

    records_in: Counter
    bytes_in: Counter
    events_in: Counter
    events_invalid: Counter
    deadletter_records: Counter
    consumer_lag: Gauge
    event_lag_seconds: Gauge
    decode_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PipelineMetrics:
        m = cls(
            records_in=Counter("driftline_records_in", "Kafka records consumed.",
                               ["topic"], registry=registry),
            bytes_in=Counter("driftline_record_bytes_in", "Bytes of Kafka record values consumed.",
                             ["topic"], registry=registry),
            events_in=Counter("driftline_events_in", "Valid events routed onward, by kind.",
                              ["kind"], registry=registry),
            events_invalid=Counter("driftline_events_invalid",
                                   "Records or events rejected at the boundary, by reason.",
                                   ["reason"], registry=registry),
            deadletter_records=Counter("driftline_deadletter_records",
                                       "Records written to the dead-letter topic, by reason.",
                                       ["reason"], registry=registry),
            consumer_lag=Gauge("driftline_consumer_lag_records",
                               "Records between the last processed offset and the high watermark.",
                               ["topic", "partition"], registry=registry),
            event_lag_seconds=Gauge("driftline_event_time_lag_seconds",
                                    "Wall clock minus the newest event time processed, by kind.",
                                    ["kind"], registry=registry),
            decode_seconds=Histogram("driftline_record_decode_seconds",
                                     "Time to decode and validate one record.",
                                     registry=registry,
                                     buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1)),
        )
        for kind in KINDS:  # export zeros so dashboards and rate() work from the start
            m.events_in.labels(kind)
        for reason in Reason:
            m.events_invalid.labels(reason.value)
            m.deadletter_records.labels(reason.value)
        return m
