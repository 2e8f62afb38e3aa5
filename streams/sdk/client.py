"""The model-server client: log predictions and labels without slowing serving.

Two lines instrument a server::

    from streams.sdk import DriftlineClient
    dl = DriftlineClient.from_env(model="churn", model_version="v3")
    ...
    event_id = dl.log_prediction(features, prediction, latency_ms=elapsed_ms)
    ...
    dl.log_feedback(event_id, label)

Why this shape
--------------
The serving path must never wait for Kafka, never pay for JSON, and never see
an exception from monitoring. So ``log_*`` only snapshots its arguments and
appends a tuple to a bounded in-memory buffer under a lock (about a
microsecond or two). One daemon thread per client does everything else every
``linger_ms`` (or as soon as ``batch_events`` are waiting): it groups the
events by kind and model version, encodes each group as one column batch
record (``driftline.prediction-columns/v1``, ``driftline.feedback-columns/v1``;
telemetry as single ``driftline.telemetry/v1`` events), validates it against
the same msgspec contract the worker uses, and hands it to an idempotent
``confluent_kafka.Producer``, keyed by the model name so that all of one
model's events land on one partition, in order.

When the broker is slow or down, the buffer fills up to ``max_buffered_events``
*pending* events (buffered, encoded, or awaiting the broker's acknowledgement)
and further events are dropped and counted, so memory stays bounded and the
server keeps serving. :meth:`DriftlineClient.stats` and the Prometheus metrics
``driftline_sdk_events_*`` account for every event exactly:
``accepted == delivered + failed + pending``.

Threads and asyncio
-------------------
Every method may be called from any thread. ``log_prediction``,
``log_feedback`` and ``log_telemetry`` are plain synchronous calls that never
block on I/O, so coroutines call them directly (no ``await``, no executor).
``flush`` and ``close`` do block (up to their timeout); from a coroutine use
``await client.aflush()`` / ``await client.aclose()``, which run them in a
worker thread.

Forking servers (gunicorn ``--preload``, multiprocessing): a client created
before ``fork()`` starts afresh in the child (empty buffer, zeroed counters,
a new producer and thread on the first ``log_*`` call); the parent keeps
delivering what it had. A telemetry reporter does not follow a fork: start it
in the child.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import logging
import os
import random
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.events import models as m
from streams.sdk.buffer import (
    DEFAULT_MAX_RECORD_BYTES,
    KIND_FEEDBACK,
    KIND_PREDICTION,
    KIND_TELEMETRY,
    EncodedRecord,
    Event,
    EventBuffer,
    RecordEncoder,
    SdkStats,
)

if TYPE_CHECKING:
    from streams.sdk.telemetry import TelemetryReporter

log = logging.getLogger("streams.sdk")
kafka_log = logging.getLogger("streams.sdk.kafka")

FeatureValue = float | int | str | bool | None
DeliveryCallback = Callable[[Any, Any], None]

DEFAULT_BOOTSTRAP: Final = "127.0.0.1:9092"
DEFAULT_TOPIC_PREFIX: Final = "driftline."

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_POLL_SLICE_S: Final = 0.01  # longest producer.poll while waiting: a full batch waits no longer
_URGENT_POLL_S: Final = 0.005  # poll slice while flush() or close() waits


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the client uses (tests pass a double)."""

    def produce(self, topic: str, value: bytes | None = ..., key: bytes | None = ...,
                *, on_delivery: DeliveryCallback | None = ...) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...


ProducerFactory = Callable[[dict[str, Any]], ProducerLike]


def _confluent_producer(config: dict[str, Any]) -> ProducerLike:
    import confluent_kafka

    return confluent_kafka.Producer(config)


def default_producer_config(bootstrap_servers: str, client_id: str) -> dict[str, Any]:
    """Producer settings that favour never losing or duplicating an acknowledged record.

    Idempotence with ``acks=all`` means a retried record is written once;
    lz4 shrinks the repetitive column JSON several times at little CPU;
    ``linger.ms`` and a ~1 MB ``batch.size`` let librdkafka pack the SDK's
    records into few requests; ``message.timeout.ms`` (5 minutes) is how long
    a record may wait for an unreachable broker before it counts as failed.
    """
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "message.timeout.ms": 300_000,
        "error_cb": _on_kafka_error,
        "logger": kafka_log,
    }


# -- event ids -------------------------------------------------------------------
# uuid.uuid4().hex costs ~4 µs here (os.urandom plus UUID's Python-level checks);
# this costs ~0.4 µs. A private generator so that a model server's random.seed()
# cannot make replicas repeat ids; reseeded from os.urandom in forked children.
_rng = random.Random()
_getrandbits = _rng.getrandbits
_UUID_KEEP: Final = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID_V4: Final = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)


def new_event_id() -> str:
    """A random RFC 4122 version 4 UUID as 32 lowercase hex digits (like ``uuid4().hex``)."""
    return ((_getrandbits(128) & _UUID_KEEP) | _UUID_V4).to_bytes(16, "big").hex()


# -- rate-limited logging --------------------------------------------------------
class _Throttle:
    """Log a recurring problem at most once per ``every_s``, with how often it recurred."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warn(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        log.warning(msg, *args, exc_info=exc_info)


_kafka_throttle = _Throttle()


def _on_kafka_error(err: Any) -> None:
    """librdkafka's error_cb: broker down and the like; librdkafka retries by itself."""
    _kafka_throttle.warn(f"kafka:{getattr(err, 'code', lambda: '?')()}", "Kafka: %s", err)


# -- Prometheus ------------------------------------------------------------------
class _SdkCollector:
    """One collector per registry, reporting every live client under its ``client_id``.

    Why shared: a registry refuses two collectors exposing the same metric
    names, yet a process may well create several clients (several models, or
    a test suite); one collector with a ``client_id`` label serves them all.
    """

    _LABELS = ("client_id", "model", "model_version")
    _COUNTERS = (
        ("accepted", "driftline_sdk_events_accepted",
         "Events the SDK took into its buffer (each ends delivered, failed or still pending)."),
        ("dropped", "driftline_sdk_events_dropped",
         "Events refused and never sent: the buffer held max_buffered_events pending events, "
         "the client was closed, or the arguments could not be recorded."),
        ("delivered", "driftline_sdk_events_delivered",
         "Events in records the Kafka broker acknowledged."),
        ("failed", "driftline_sdk_events_failed",
         "Accepted events that will never be delivered: not encodable, invalid for the "
         "event contract, record delivery failed, or still pending when the client closed."),
        ("records_sent", "driftline_sdk_records_sent",
         "Records (column batches or telemetry events) handed to the Kafka producer."),
    )

    def __init__(self) -> None:
        self._clients: weakref.WeakSet[DriftlineClient] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, client: DriftlineClient) -> None:
        with self._lock:
            self._clients.add(client)

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            clients = list(self._clients)
        return self._families(clients)

    def _families(self, clients: list[DriftlineClient]) -> Iterator[Metric]:
        rows = [((c.client_id, c.model, c.model_version), c.stats()) for c in clients]
        for attr, name, doc in self._COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=self._LABELS)
            for labels, stats in rows:
                counter.add_metric(labels, getattr(stats, attr))
            yield counter
        gauge = GaugeMetricFamily(
            "driftline_sdk_events_pending",
            "Events accepted but not yet delivered or failed (buffered, encoded, or awaiting "
            "the broker's acknowledgement); bounded by max_buffered_events.",
            labels=self._LABELS,
        )
        for labels, stats in rows:
            gauge.add_metric(labels, stats.pending)
        yield gauge


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, _SdkCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def _register(client: DriftlineClient, registry: CollectorRegistry) -> None:
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _SdkCollector()
            try:
                registry.register(collector)
            except ValueError as exc:  # names taken by something else: metrics are optional
                log.warning("Driftline SDK metrics not registered: %s", exc)
                return
            _collectors[registry] = collector
    collector.add(client)


# -- the client ------------------------------------------------------------------
_client_numbers = itertools.count(1)


class DriftlineClient:
    """Publishes one model's predictions, labels and telemetry to Kafka.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers, ``host:port[,host:port...]``.
    model
        Model name (``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``); also the Kafka key.
    model_version
        Default version of the predictions (1 to 64 characters).
    predictions_topic, feedback_topic, telemetry_topic
        Where each kind of event goes.
    max_buffered_events
        Most *pending* events (buffered, encoded, or awaiting the broker's
        acknowledgement). Beyond it new events are dropped and counted.
    batch_events
        Most events per record; the background thread also wakes as soon as
        this many are buffered.
    linger_ms
        How often the background thread drains the buffer otherwise.
    producer_config
        librdkafka settings that override :func:`default_producer_config`
        (e.g. ``{"message.timeout.ms": 60000}`` or security settings).
    registry
        Prometheus registry for the ``driftline_sdk_*`` metrics
        (default ``prometheus_client.REGISTRY``).
    clock_ms
        Milliseconds since the epoch for events logged without
        ``event_time_ms`` (default: the system clock).
    client_id
        Label of this client's metrics and Kafka ``client.id``
        (default ``driftline-sdk-<model>-<n>``).
    producer_factory
        Builds the producer from the final config; tests pass a double.
    validate
        Check every record against the event contract before sending it, so
        that invalid events are counted ``failed`` here (and logged) instead
        of being dead-lettered by the worker. About 1 µs per event, off the
        serving path.
    max_record_bytes
        Largest record value; bigger groups are split.
    atexit_timeout_s
        How long the interpreter-exit hook waits for pending events.

    Raises
    ------
    ValueError
        On an invalid argument, and whatever the producer raises for an
        invalid librdkafka config: at construction, never later.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        model: str,
        model_version: str,
        predictions_topic: str = "driftline.predictions",
        feedback_topic: str = "driftline.feedback",
        telemetry_topic: str = "driftline.telemetry",
        max_buffered_events: int = 100_000,
        batch_events: int = 500,
        linger_ms: float = 50,
        producer_config: Mapping[str, Any] | None = None,
        registry: CollectorRegistry | None = None,
        clock_ms: Callable[[], int] | None = None,
        client_id: str | None = None,
        producer_factory: ProducerFactory | None = None,
        validate: bool = True,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        atexit_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(model, str) or not _NAME_RE.match(model):
            raise ValueError(f"model must match {_NAME_RE.pattern}, got {model!r}")
        if not isinstance(model_version, str) or not 1 <= len(model_version) <= 64:
            raise ValueError(f"model_version must be 1 to 64 characters, got {model_version!r}")
        for name, topic in (("predictions_topic", predictions_topic),
                            ("feedback_topic", feedback_topic),
                            ("telemetry_topic", telemetry_topic)):
            if not isinstance(topic, str) or not topic:
                raise ValueError(f"{name} must be a non-empty string, got {topic!r}")
        if not 1 <= batch_events <= m.MAX_BATCH_EVENTS:
            raise ValueError(f"batch_events must be 1 to {m.MAX_BATCH_EVENTS}, got {batch_events}")
        if not linger_ms > 0:
            raise ValueError(f"linger_ms must be positive, got {linger_ms}")

        self.model = model
        self.model_version = model_version
        self.client_id = client_id or f"driftline-sdk-{model}-{next(_client_numbers)}"
        self.topics: dict[int, str] = {
            KIND_PREDICTION: predictions_topic,
            KIND_FEEDBACK: feedback_topic,
            KIND_TELEMETRY: telemetry_topic,
        }
        self.batch_events = batch_events
        self.linger_s = linger_ms / 1000.0
        self.atexit_timeout_s = atexit_timeout_s
        self._clock_ms: Callable[[], int] = clock_ms or _wall_clock_ms
        self._key = model.encode()
        self._buffer = EventBuffer(max_buffered_events)
        self._encoder = RecordEncoder(model, validate=validate, max_record_bytes=max_record_bytes)
        config = default_producer_config(bootstrap_servers, self.client_id)
        config.update(producer_config or {})
        self._producer_config = config
        self._producer_factory: ProducerFactory = producer_factory or _confluent_producer
        self._throttle = _Throttle()
        self._ref = weakref.ref(self)
        self._reporters: list[TelemetryReporter] = []
        self._closed = False
        self._init_runtime()
        self._start()  # config errors surface here, at startup, not on the serving path

        _register(self, REGISTRY if registry is None else registry)
        # Weak references: neither hook keeps a forgotten client alive.
        self._atexit_hook = functools.partial(_close_at_exit, self._ref)
        atexit.register(self._atexit_hook)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_reset_in_child, self._ref))

    def _init_runtime(self) -> None:
        """State of the background machinery (rebuilt in a forked child)."""
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._outbox: deque[tuple[str, EncodedRecord]] = deque()
        self._inflight = 0  # records produced, delivery report not yet served
        self._producer: ProducerLike | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._closing = False
        self._close_deadline = 0.0

    def _start(self) -> None:
        self._producer = self._producer_factory(dict(self._producer_config))
        self._thread = threading.Thread(
            target=_drain_forever, args=(self._ref,), name=f"{self.client_id}-drain", daemon=True
        )
        self._running = True
        self._thread.start()

    @classmethod
    def from_env(cls, *, model: str, model_version: str, **kwargs: Any) -> DriftlineClient:
        """A client configured from the environment, for the two-line setup.

        ``DRIFTLINE_BOOTSTRAP`` gives the bootstrap servers (default
        ``127.0.0.1:9092``) and ``DRIFTLINE_TOPIC_PREFIX`` the topic prefix
        (default ``driftline.``: topics ``<prefix>predictions``,
        ``<prefix>feedback``, ``<prefix>telemetry``). Keyword arguments are
        passed on to the constructor and win over the environment.

        ``DRIFTLINE_KAFKA_*`` (``SECURITY_PROTOCOL``, ``SASL_MECHANISM``,
        ``SASL_USERNAME``, ``SASL_PASSWORD`` or ``SASL_PASSWORD_FILE``,
        ``SSL_CA_FILE``, ``SSL_CERT_FILE``, ``SSL_KEY_FILE``) are the worker's
        Kafka security settings: a model server in the same cluster takes the
        same variables (checked here, raising ``ValueError`` naming the field);
        ``producer_config`` entries win over them.
        """
        bootstrap = os.environ.get("DRIFTLINE_BOOTSTRAP") or DEFAULT_BOOTSTRAP
        prefix = os.environ.get("DRIFTLINE_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX)
        kwargs.setdefault("predictions_topic", prefix + "predictions")
        kwargs.setdefault("feedback_topic", prefix + "feedback")
        kwargs.setdefault("telemetry_topic", prefix + "telemetry")
        if any(name.startswith("DRIFTLINE_KAFKA_") and name not in ("DRIFTLINE_KAFKA_VERSION",
                                                                     "DRIFTLINE_KAFKA_CACHE_DIR")
               for name in os.environ):
            from streams.config import kafka_security  # only then: keeps the SDK's import light

            security = kafka_security({}, os.environ, "the environment").client_config()
            kwargs["producer_config"] = {**security, **(kwargs.get("producer_config") or {})}
        return cls(bootstrap, model=model, model_version=model_version, **kwargs)

    # -- serving path ----------------------------------------------------------
    def log_prediction(
        self,
        features: Mapping[str, FeatureValue],
        prediction: Any = None,
        *,
        latency_ms: float,
        status: str = "ok",
        event_id: str | None = None,
        event_time_ms: int | None = None,
        segment: Mapping[str, str] | None = None,
        request_id: str | None = None,
        model_version: str | None = None,
    ) -> str:
        """Record one prediction; returns its ``event_id`` for :meth:`log_feedback`.

        Never blocks on I/O and never raises, whatever the argument values
        (about 1-2 µs). ``features`` and ``segment`` are copied (shallowly),
        so the caller may reuse its dicts; ``prediction`` is kept by reference.
        Nothing is validated here: an event that cannot be encoded or breaks
        the event contract is counted ``failed`` later by the background
        thread (and logged, rate-limited), without affecting other events.
        When ``max_buffered_events`` are pending the event is dropped and
        counted in ``dropped``; the id is returned all the same.

        Parameters
        ----------
        features
            Feature name to number, string, bool or None (numpy scalars work).
        prediction
            A number, a label string, a mapping of class to probability, or None.
        latency_ms
            Time the model took to answer.
        status
            ``"ok"`` or ``"error"``.
        event_id
            Caller-chosen id (1 to 128 characters); default a fresh uuid4 hex.
        event_time_ms
            When it happened, milliseconds since the epoch; default now.
        segment
            Slice labels (e.g. ``{"country": "de"}``) for per-segment metrics.
        request_id
            The serving request's id, for tracing.
        model_version
            Overrides the client's ``model_version`` for this event.
        """
        try:
            if event_id is None:
                event_id = new_event_id()
            if event_time_ms is None:
                event_time_ms = self._clock_ms()
            if type(features) is dict:
                features = features.copy()
            elif features is not None:
                features = _snapshot(features)
            if segment is not None:
                segment = _snapshot(segment)
            event = (KIND_PREDICTION, model_version or self.model_version, event_id,
                     event_time_ms, latency_ms, status, features, prediction, segment, request_id)
            if not self._running:
                self._restart_after_fork()
            if self._buffer.offer(event) == self.batch_events:
                self._wake.set()
        except Exception:  # e.g. a clock_ms that raised: never into the serving path
            self._buffer.count_dropped()
            self._throttle.warn("log", "log_prediction could not record an event", exc_info=True)
        return event_id if isinstance(event_id, str) else ""

    def log_feedback(self, event_id: str, label: float | int | str, *,
                     event_time_ms: int | None = None) -> bool:
        """Record the true label of an earlier prediction, joined by ``event_id``.

        Same promises as :meth:`log_prediction`: non-blocking, never raises.

        Returns
        -------
        bool
            Whether the label was accepted into the buffer (False: dropped).
        """
        try:
            if event_time_ms is None:
                event_time_ms = self._clock_ms()
            event = (KIND_FEEDBACK, None, event_id, label, event_time_ms)
            if not self._running:
                self._restart_after_fork()
            n = self._buffer.offer(event)
            if n == self.batch_events:
                self._wake.set()
            return n > 0
        except Exception:
            self._buffer.count_dropped()
            self._throttle.warn("log", "log_feedback could not record an event", exc_info=True)
            return False

    def log_telemetry(self, sample: Mapping[str, Any]) -> bool:
        """Record one ``driftline.telemetry/v1`` sample (as ``TelemetryReporter.sample()`` makes).

        ``model``, ``model_version`` and ``event_time_ms`` default to the
        client's. Goes through the same bounded buffer as predictions.
        """
        try:
            fields = dict(sample)
            fields.setdefault("model", self.model)
            fields.setdefault("model_version", self.model_version)
            if fields.get("event_time_ms") is None:
                fields["event_time_ms"] = self._clock_ms()
            if not self._running:
                self._restart_after_fork()
            return self._buffer.offer((KIND_TELEMETRY, None, fields)) > 0
        except Exception:
            self._buffer.count_dropped()
            self._throttle.warn("log", "log_telemetry could not record an event", exc_info=True)
            return False

    def start_telemetry(self, interval_s: float = 10.0, **kwargs: Any) -> TelemetryReporter:
        """Start a :class:`~streams.sdk.telemetry.TelemetryReporter` for this client.

        Keyword arguments go to the reporter (``host``, ``pod``, ``inflight``,
        ``gpu_probe``). The reporter stops when the client closes.
        """
        from streams.sdk.telemetry import TelemetryReporter

        reporter = TelemetryReporter(self, interval_s=interval_s, **kwargs)
        self._reporters.append(reporter)
        reporter.start()
        return reporter

    # -- accounting ------------------------------------------------------------
    def stats(self) -> SdkStats:
        """A consistent snapshot: ``accepted == delivered + failed + pending``."""
        return self._buffer.stats()

    @property
    def pending(self) -> int:
        return self._buffer.pending

    # -- flush and close -------------------------------------------------------
    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait until every accepted event is delivered or failed, or ``timeout_s`` passes.

        Blocks the calling thread (not the serving path's business: use it
        at shutdown, in tests, or via :meth:`aflush` from a coroutine).

        Returns
        -------
        int
            Events still pending (0 when everything was settled).
        """
        if self._closed or not self._running:
            return self._buffer.pending
        return self._buffer.wait_settled(timeout_s, on_start=self._wake.set)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop telemetry, deliver what is pending (up to ``timeout_s``), stop the thread.

        Idempotent. Events logged from now on are dropped. Events still
        pending when the timeout passes count as ``failed`` (the books are
        settled: afterwards ``pending`` is 0). Also runs at interpreter exit.
        A client dropped without ``close()`` is garbage-collected (neither its
        thread nor the exit hook holds it) and loses what it still buffers.
        """
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        for reporter in self._reporters:
            reporter.stop()
        self._buffer.refuse_new()
        timeout_s = max(0.0, timeout_s)
        self._close_deadline = time.monotonic() + timeout_s
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s + 2.0)
        abandoned = self._buffer.abandon()
        if abandoned:
            log.warning("Driftline SDK %s closed with %d events undelivered (counted failed)",
                        self.client_id, abandoned)
        if thread is None or not thread.is_alive():
            self._discard_producer(purge=abandoned > 0)
        self._running = False
        atexit.unregister(self._atexit_hook)

    async def aflush(self, timeout_s: float = 10.0) -> int:
        """:meth:`flush` for coroutines: waits in a worker thread, not on the event loop."""
        return await asyncio.to_thread(self.flush, timeout_s)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """:meth:`close` for coroutines: waits in a worker thread, not on the event loop."""
        await asyncio.to_thread(self.close, timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DriftlineClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> DriftlineClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (f"DriftlineClient(client_id={self.client_id!r}, model={self.model!r}, "
                f"model_version={self.model_version!r}, closed={self._closed})")

    def _discard_producer(self, *, purge: bool) -> None:
        producer, self._producer = self._producer, None
        if producer is None or not purge:
            return
        try:  # drop what librdkafka still queues, so destroying it neither waits nor warns
            getattr(producer, "purge", lambda: None)()
            producer.poll(0)
        except Exception:
            log.debug("producer purge failed", exc_info=True)

    # -- fork support ----------------------------------------------------------
    def _reset_after_fork(self) -> None:
        self._buffer.reset_after_fork()
        self._init_runtime()
        if self._closed:
            self._buffer.refuse_new()

    def _restart_after_fork(self) -> None:
        """Start producer and thread in a forked child, on its first event."""
        with self._start_lock:
            if self._running or self._closed:
                return
            try:
                self._start()
            except Exception:
                self._running = True  # no retry storm on the serving path; events will drop
                log.exception("Driftline SDK could not restart after fork; events will be dropped")

    # -- background thread -----------------------------------------------------
    def _cycle(self) -> bool:
        """One round of the background thread; False when it should exit."""
        self._wait_for_work()
        self._wake.clear()
        events = self._buffer.take()
        if events:
            self._encode(events)
        if self._outbox:
            self._produce_outbox()
        self._poll(0.0)
        if self._closing:
            return not (self._buffer.pending == 0 or time.monotonic() >= self._close_deadline)
        return True

    def _wait_for_work(self) -> None:
        urgent = self._closing or self._buffer.flush_waiters > 0
        if urgent and self._buffer.pending > 0:
            if self._inflight > 0 or self._outbox:
                self._poll(_URGENT_POLL_S)
            return
        deadline = time.monotonic() + self.linger_s
        while not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._inflight > 0:  # serve delivery reports while lingering
                self._poll(min(remaining, _POLL_SLICE_S))
            else:
                self._wake.wait(remaining)

    def _encode(self, events: list[Event]) -> None:
        groups: dict[tuple[int, str | None], list[Event]] = {}
        unusable = 0
        for event in events:
            try:
                key = (event[0], event[1])
                group = groups.get(key)
            except TypeError:  # an unhashable model_version
                unusable += 1
                continue
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        if unusable:
            self._fail(unusable, "model_version must be a string")
        for (kind, version), group in groups.items():
            if kind == KIND_PREDICTION and not isinstance(version, str):
                self._fail(len(group), f"model_version must be a string, got {version!r:.100}")
                continue
            step = len(group) if kind == KIND_TELEMETRY else self.batch_events
            topic = self.topics[kind]
            for start in range(0, len(group), step):
                chunk = group[start:start + step]
                try:
                    result = self._encoder.encode(kind, version, chunk)
                except Exception as exc:  # a bug, not bad input: still account for every event
                    self._fail(len(chunk), f"encoder error {exc!r:.300}")
                    continue
                if result.failed:
                    self._fail(result.failed, result.first_error)
                self._outbox.extend((topic, record) for record in result.records)

    def _fail(self, n: int, why: str) -> None:
        self._buffer.settle(n, ok=False)
        self._throttle.warn("invalid", "Driftline SDK dropped %d invalid events: %s", n, why)

    def _produce_outbox(self) -> None:
        producer = self._producer
        if producer is None:
            return
        outbox = self._outbox
        while outbox:
            topic, record = outbox[0]
            try:
                producer.produce(topic, value=record.value, key=self._key,
                                 on_delivery=_delivery_report(self._ref, record.n_events))
            except BufferError:  # librdkafka's queue is full: keep the record, retry later
                self._throttle.warn("queue", "Kafka producer queue full; retrying")
                return
            except Exception as exc:
                outbox.popleft()
                self._buffer.settle(record.n_events, ok=False)
                self._throttle.warn("produce", "Kafka produce failed for %d events: %s",
                                    record.n_events, exc)
                continue
            outbox.popleft()
            self._inflight += 1
            self._buffer.count_record_sent()

    def _on_delivery(self, err: Any, n_events: int) -> None:
        self._inflight -= 1
        self._buffer.settle(n_events, ok=err is None)
        if err is not None:
            self._throttle.warn("delivery", "Kafka delivery failed for %d events: %s",
                                n_events, err)

    def _poll(self, timeout_s: float) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            producer.poll(timeout_s)
        except Exception:
            self._throttle.warn("poll", "Kafka producer poll failed", exc_info=True)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _snapshot(mapping: Any) -> Any:
    """A shallow dict copy of ``mapping``; the object itself if it is no mapping.

    The encoder then counts such an event failed: the serving path never sees it.
    """
    try:
        return dict(mapping)
    except Exception:
        return mapping


def _delivery_report(ref: weakref.ref[DriftlineClient], n_events: int) -> DeliveryCallback:
    """The record's delivery callback, carrying its event count (weakly bound to the client)."""

    def on_delivery(err: Any, msg: Any) -> None:
        client = ref()
        if client is not None:
            client._on_delivery(err, n_events)

    return on_delivery


def _drain_forever(ref: weakref.ref[DriftlineClient]) -> None:
    """Body of the background thread; holds the client only during one cycle."""
    while True:
        client = ref()
        if client is None:
            return
        try:
            keep_going = client._cycle()
        except Exception:  # a bug; keep the thread alive and do not spin
            log.exception("Driftline SDK background cycle failed")
            keep_going = not client._closing
            time.sleep(client.linger_s)
        del client
        if not keep_going:
            return


def _close_at_exit(ref: weakref.ref[DriftlineClient]) -> None:
    client = ref()
    if client is not None:
        client.close(client.atexit_timeout_s)


def _reset_in_child(ref: weakref.ref[DriftlineClient]) -> None:
    client = ref()
    if client is not None:
        client._reset_after_fork()


# -- module-level convenience ----------------------------------------------------
_default_client: DriftlineClient | None = None


def connect(model: str, model_version: str, bootstrap_servers: str | None = None,
            **kwargs: Any) -> DriftlineClient:
    """Create a client (from the environment unless ``bootstrap_servers`` is given)
    and make it the default of the module-level :func:`log_prediction` and
    :func:`log_feedback`.
    """
    global _default_client
    if bootstrap_servers is None:
        client = DriftlineClient.from_env(model=model, model_version=model_version, **kwargs)
    else:
        client = DriftlineClient(bootstrap_servers, model=model, model_version=model_version,
                                 **kwargs)
    _default_client = client
    return client


def get_client() -> DriftlineClient | None:
    """The client :func:`connect` made last, if any."""
    return _default_client


def log_prediction(features: Mapping[str, FeatureValue], prediction: Any = None,
                   **kwargs: Any) -> str:
    """:meth:`DriftlineClient.log_prediction` on the default client.

    Before :func:`connect` this records nothing and returns the event id
    (``kwargs['event_id']`` or a fresh one), so importing code need not care.
    """
    client = _default_client
    if client is None:
        event_id = kwargs.get("event_id")
        return event_id if isinstance(event_id, str) else new_event_id()
    try:
        return client.log_prediction(features, prediction, **kwargs)
    except TypeError:  # a call that does not match the signature: still never raise
        client._buffer.count_dropped()
        event_id = kwargs.get("event_id")
        return event_id if isinstance(event_id, str) else ""


def log_feedback(event_id: str, label: float | int | str, **kwargs: Any) -> bool:
    """:meth:`DriftlineClient.log_feedback` on the default client (False before :func:`connect`)."""
    client = _default_client
    if client is None:
        return False
    try:
        return client.log_feedback(event_id, label, **kwargs)
    except TypeError:
        client._buffer.count_dropped()
        return False
