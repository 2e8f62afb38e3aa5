"""The one place where Driftline's topics are defined.

``driftline topics create`` applies these definitions; ``deploy/`` renders the
same definitions (Strimzi ``KafkaTopic``) so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.config import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its suffix after the prefix, sizing and retention."""

    suffix: str
    description: str
    partitions: int | None = None  # None: the settings' default
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    config: dict[str, str] = field(default_factory=dict)
    app_scoped: bool = False  # named "<app_id>-<suffix>" (faust's changelog naming), not "<prefix><suffix>"

    def kafka_config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy, **self.config}
        if self.cleanup_policy == "delete":
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("predictions", "Prediction events from model servers (keyed by model)"),
    TopicSpec("feedback", "Ground-truth labels (keyed by model)"),
    TopicSpec("telemetry", "Process and GPU telemetry of model servers (keyed by model)"),
    TopicSpec("metrics", "Windowed metric snapshots per model, version and window"),
    TopicSpec("signals", "Typed drift and anomaly signals for the alerting stage"),
    TopicSpec("alerts", "Alert state changes, keyed by fingerprint", retention_ms=30 * DAY_MS),
    TopicSpec("deadletter", "Rejected input with original bytes and reason", retention_ms=14 * DAY_MS),
    TopicSpec("profiles", "Reference profiles per model version", partitions=1, cleanup_policy="compact",
              config={"max.message.bytes": str(16 * 1024 * 1024)}),
    TopicSpec("control", "Silences and runtime commands", partitions=1, cleanup_policy="compact"),
    TopicSpec("state-changelog", "Changelog of the worker's state table (metric panes, windows, join, "
              "detectors)",
              cleanup_policy="compact", app_scoped=True,
              config={"min.compaction.lag.ms": "0", "segment.ms": str(3600 * 1000)}),
)
STATE_TABLE = "state"  # faust names its changelog "<app_id>-<table>-changelog"


def resolved(settings: Settings) -> list[tuple[str, int, TopicSpec]]:
    """(full name, partitions, spec) for every topic under these settings."""
    return [(name_of(settings, t), t.partitions or settings.partitions, t) for t in TOPICS]


def name_of(settings: Settings, t: TopicSpec) -> str:
    return f"{settings.app_id}-{t.suffix}" if t.app_scoped else settings.topic(t.suffix)


def spec(suffix: str) -> TopicSpec:
    for t in TOPICS:
        if t.suffix == suffix:
            return t
    raise KeyError(f"no topic {suffix!r}; known: {[t.suffix for t in TOPICS]}")
