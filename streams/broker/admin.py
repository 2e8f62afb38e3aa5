"""Apply the topic definitions of :mod:`streams.topics` to a cluster."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.config import Settings
from streams.topics import resolved


def admin_config(settings: Settings) -> dict[str, str | int | float | bool]:
    return settings.kafka_client_config()


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; return name -> "created" | "exists" | "exists (N partitions)"."""
    admin = AdminClient(admin_config(settings))
    existing = admin.list_topics(timeout=timeout_s).topics
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for name, partitions, spec in resolved(settings):
        if name in existing:
            have = len(existing[name].partitions)
            result[name] = "exists" if have == partitions else f"exists ({have} partitions)"
            continue
        new.append(NewTopic(name, num_partitions=partitions,
                            replication_factor=settings.replication_factor,
                            config=spec.kafka_config()))
    if new:
        for name, fut in admin.create_topics(new, request_timeout=timeout_s).items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise
    return result
