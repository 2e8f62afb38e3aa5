"""Reference profiles: the compacted ``profiles`` topic, read whole by every worker.

Every worker needs the profile of every model it may own, whatever partition
the model lands on after a rebalance, so the topic is not consumed in the
worker's group: a background thread assigns all its partitions (no group, no
commits), reads from the beginning and then follows it. The latest record per
key wins (the topic is compacted); a tombstone removes a profile. Replacing a
profile while workers run is therefore one produce (``driftline profile
publish``); detectors see the new reference on their next batch.

Keys are ``model|version`` or ``model|*`` (any version). Values are
``driftline.profile/v1`` JSON, parsed with the strict decoder of
:mod:`streams.core.drift.profile` — never unpickled. An invalid record is
logged, counted and skipped; it never replaces a good profile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from streams.core.drift.profile import ReferenceProfile

log = logging.getLogger(__name__)
ANY_VERSION = "*"


def profile_key(model: str, model_version: str | None) -> bytes:
    return f"{model}|{model_version or ANY_VERSION}".encode()


class ProfileStore:
    """The current profile per key, fed by :meth:`apply` (from the topic thread, or tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[tuple[str, str], tuple[str, ReferenceProfile]] = {}
        self.invalid = 0
        self.on_invalid: Callable[[bytes, str], None] | None = None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        model, _, version = key.decode("utf-8", "replace").partition("|")
        version = version or ANY_VERSION
        if value is None:
            with self._lock:
                self._profiles.pop((model, version), None)
            return
        try:
            prof = ReferenceProfile.from_json(value)
        except ValueError as exc:
            self.invalid += 1
            log.warning("profiles: ignoring invalid profile %r: %s", key, exc)
            if self.on_invalid is not None:
                self.on_invalid(key, str(exc))
            return
        with self._lock:
            # the profile's content hash: detector state remembers which reference it was built on
            self._profiles[(model, version)] = (prof.fingerprint, prof)

    def get(self, model: str, model_version: str) -> tuple[str, ReferenceProfile] | None:
        """The profile of this version, else the model's any-version profile, with its id."""
        with self._lock:
            return self._profiles.get((model, model_version)) or self._profiles.get((model, ANY_VERSION))

    def __len__(self) -> int:
        return len(self._profiles)


class TopicFollower:
    """Follows a whole (compacted) topic in a daemon thread: confluent-kafka, no consumer group.

    Every record goes to ``apply(key, value)`` in offset order per partition;
    :meth:`start` returns once what the topic held at start has been applied,
    so a worker does not process input against a half-loaded reference. Used
    for the profiles topic, and for any topic every worker must see whole.
    """

    def __init__(
        self, bootstrap: str, topic: str, apply: Callable[[bytes | None, bytes | None], None],
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.apply = apply
        # librdkafka settings on top of ours: security (Settings.kafka_client_config()).
        self.client_config = dict(client_config or {})
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait_s: float = 30.0) -> bool:
        """Start following; wait until what the topic held at start is loaded. False on timeout."""
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.topic}", daemon=True)
        self._thread.start()
        return self._caught_up.wait(wait_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer: Any = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": "driftline-follower-unused",  # required by librdkafka; never joined (assign)
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 16 * 1024 * 1024,
            **self.client_config,
        })
        try:
            while not self._stop.is_set():
                try:
                    meta = consumer.list_topics(self.topic, timeout=5)
                    parts = sorted(meta.topics[self.topic].partitions)
                    break
                except Exception as exc:  # topic not there yet, broker not ready
                    log.warning("%s: waiting for the topic: %s", self.topic, exc)
                    time.sleep(1)
            else:
                return
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                    for p in parts}
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
            pending = {p for p, end in ends.items() if end > 0}
            if not pending:
                self._caught_up.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("%s: %s", self.topic, msg.error())
                    continue
                self.apply(msg.key(), msg.value())
                p = msg.partition()
                if p in pending and msg.offset() + 1 >= ends[p]:
                    pending.discard(p)
                    if not pending:
                        self._caught_up.set()
        finally:
            consumer.close()


def follow_profiles(bootstrap: str, topic: str, store: ProfileStore, wait_s: float = 30.0,
                    client_config: Mapping[str, Any] | None = None) -> TopicFollower:
    """Start following the profiles topic into ``store``; returns once caught up (or after ``wait_s``)."""
    follower = TopicFollower(bootstrap, topic, store.apply, client_config)
    if not follower.start(wait_s):
        log.warning("profiles: not caught up with %s after %.0f s; going on", topic, wait_s)
    return follower
