"""``create_app(settings)``: build the faust app, its topics and agents. Nothing at import time."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, generate_latest

from streams.app.alerting_stage import AlertingStage, LockedSilences
from streams.app.coalesce import Coalescer
from streams.app.consumer import GatedConsumer, use_gate
from streams.app.detection_stage import DetectionStage
from streams.app.ingest import IngestStage, Router, wall_ms
from streams.app.live import FlowStats
from streams.app.metrics_stage import MetricsStage
from streams.app.order import OffsetGate, Verdict
from streams.app.profiles import ProfileStore, TopicFollower, follow_profiles
from streams.app.state import FaustTableStore
from streams.app.transport import IdempotentProducer, on_before_flush, on_committed
from streams.config import Settings
from streams.events.codec import Decoder
from streams.observability import DetectionExporter, MetricsExporter, PipelineMetrics
from streams.topics import STATE_TABLE

log = logging.getLogger(__name__)

# The classic text exposition format, which every Prometheus version scrapes; aiohttp
# refuses a charset inside content_type and Prometheus assumes UTF-8 anyway.
_PROM_CONTENT_TYPE = "text/plain; version=0.0.4"
INPUT_TOPICS = ("predictions", "feedback", "telemetry")


@dataclass(slots=True)
class Driftline:
    """The app plus the objects tests and later stages hook into."""

    app: faust.App
    settings: Settings
    registry: CollectorRegistry
    metrics: PipelineMetrics
    router: Router
    ingest: IngestStage
    flow: FlowStats
    metrics_stage: MetricsStage
    detection_stage: DetectionStage
    profiles: ProfileStore
    state_table: Any
    alerting: AlertingStage
    coalescer: Coalescer

    def follow_profiles(self, wait_s: float = 30.0) -> TopicFollower:
        """Start reading the profiles topic (call before the worker starts; blocks until caught up)."""
        s = self.settings
        return follow_profiles(s.bootstrap, s.topic("profiles"), self.profiles, wait_s,
                               client_config=s.kafka_client_config())

    def follow_control(self, wait_s: float = 30.0) -> TopicFollower:
        """Start reading the control topic (silences) whole; blocks until caught up."""
        silences = self.alerting.silences
        follower = TopicFollower(self.settings.bootstrap, self.settings.topic("control"),
                                 lambda k, v: silences.apply_record(k, v, wall_ms()),
                                 self.settings.kafka_client_config())
        follower.start(wait_s)
        return follower


def broker_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials`` for ``settings.kafka``: None (PLAINTEXT), SASL or TLS credentials.

    aiokafka (under faust) and librdkafka (every other client) are configured
    from the same :class:`~streams.config.KafkaSecurity`, so the worker's
    stream, changelog and producer connections authenticate exactly like its
    admin client and followers.
    """
    k = settings.kafka
    if k.uses_sasl:
        return faust.SASLCredentials(username=k.sasl_username,
                                     password=k.sasl_password.reveal() if k.sasl_password else None,
                                     ssl_context=k.ssl_context(), mechanism=k.sasl_mechanism)
    if k.uses_tls:
        return faust.SSLCredentials(k.ssl_context())
    return None


def readiness(app: Any) -> tuple[bool, dict[str, Any]]:
    """Whether the worker processes its partitions now, and why not (the ``/ready`` page).

    Ready means: the consumer has its assignment, faust has finished reading
    the state table's changelog back (``tables.recovery.completed``, set once
    the first recovery ends), and no rebalance or recovery is under way
    (``app.rebalancing``, ``tables.recovery.in_recovery``). A worker that only answers
    ``/healthz`` may still be minutes from processing anything: a rolling
    update that moved on then would take the next worker's partitions away
    while this one still restores state. A worker without partitions (more
    replicas than partitions) is ready: it is healthy, just idle.
    """
    recovery = app.tables.recovery
    if recovery.in_recovery:
        return False, {"status": "recovering", "reason": "restoring table state from the changelog"}
    if not recovery.completed.is_set():
        return False, {"status": "starting",
                       "reason": "the first partition assignment and table recovery have not completed"}
    if app.rebalancing:
        return False, {"status": "rebalancing", "reason": "consumer group rebalance in progress"}
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # the consumer is being replaced: report no count rather than fail the probe
        assigned = None
    return True, {"status": "ready", "assigned_partitions": assigned}


def create_app(settings: Settings, registry: CollectorRegistry | None = None,
               live_interval_s: float = 0.0) -> Driftline:
    """Build a worker app for ``settings``.

    Parameters
    ----------
    settings
        Validated settings (see :func:`streams.config.load_settings`).
    registry
        Where Prometheus metrics go; a fresh registry when omitted, so two apps
        in one process (tests) never clash.
    live_interval_s
        When positive, print a table of what flowed every so many seconds.
    """
    registry = registry or CollectorRegistry()
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        datadir=settings.data_dir,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        producer_acks=-1,
        # State cells (a label-join chunk is ~25 kB per 500 predictions) go to the changelog in
        # bulk: a 16 kB batch limit would send each in its own request and back up the buffer.
        producer_max_batch_size=1024 * 1024,
        producer_linger_ms=10,
        # zstd, not lz4: aiokafka compresses lz4 at level 9 (HC), 19 MB/s of JSON cells here against
        # 420 MB/s for zstd level 3 at a similar ratio; on the event-loop thread that was 11-21 % of
        # the worker's CPU (py-spy, loadtest/benchmark.py --profile).
        producer_compression_type="zstd",
        producer_max_request_size=16 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=16 * 1024 * 1024,
        stream_buffer_maxsize=4096,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # A restarted worker (after kill -9) rejoins once the dead member's session expires:
        # keep that short so recovery takes seconds, not a minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    app.transport.Producer = IdempotentProducer  # type: ignore[misc]
    app.transport.Consumer = GatedConsumer  # type: ignore[misc]
    metrics = PipelineMetrics.create(registry)
    router = Router()
    flow = FlowStats()
    router.on_predictions.append(flow.on_predictions)
    router.on_feedback.append(flow.on_feedback)
    router.on_telemetry.append(flow.on_telemetry)
    ingest = IngestStage(Decoder(settings.max_record_bytes), router, metrics)
    # Raw bytes in and out (faust picks the raw codec for bytes): the engine encodes its own
    # cells (JSON, never pickle). The memory store lets the stage write a partition's cells
    # from a timer, outside any event; faust's rocksdb store takes the partition from the
    # current event. Restart cost: the changelog (compacted) is read back in full.
    table = app.Table(STATE_TABLE, partitions=settings.partitions, key_type=bytes, value_type=bytes,
                      store="memory://localhost/",  # "memory://" is a falsy URL: faust would ignore it
                      help="Metric engine cells: panes, closed windows, label join.")
    metrics_topic = app.topic(settings.topic("metrics"), key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")

    def emit(key: bytes, value: bytes) -> None:
        metrics_topic.send_soon(key=key, value=value)

    # Group logs reach the changelog before any stage's cells (see streams.core.grouping).
    coalescer = Coalescer(FaustTableStore(table), settings.coalesce_records)
    on_before_flush(app, coalescer.flush_writes)
    on_committed(app, coalescer.on_committed)
    stage = MetricsStage(settings.metrics, FaustTableStore(table), emit, MetricsExporter.create(registry))
    on_before_flush(app, stage.flush_writes)
    on_committed(app, stage.on_committed)
    if settings.metrics.enabled:
        router.on_predictions.append(stage.on_predictions)
        router.on_feedback.append(stage.on_feedback)
        router.after_record.append(stage.after_record)
    detection = _detection(app, settings, stage, table, registry, router)
    if settings.detection.enabled:
        ingest.outcome_listeners.append(detection.on_outcome)
        on_committed(app, detection.on_committed)
    alerting = _alerting(app, settings, stage, detection, table)
    dl = Driftline(app, settings, registry, metrics, router, ingest, flow, stage, detection,
                   detection.profiles, table, alerting, coalescer)
    _wire(dl)
    if live_interval_s > 0:
        _wire_live(dl, live_interval_s)

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def advance_metrics() -> None:
        coalescer.flush_writes()  # before the stages' cells
        stage.tick()
        detection.tick()
        alerting.tick()

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator,arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        coalescer.forget({tp.partition for tp in revoked})
        stage.forget({tp.partition for tp in revoked})
        detection.forget({tp.partition for tp in revoked})
        alerting.forget({tp.partition for tp in revoked})

    del advance_metrics, on_revoked
    return dl


def _detection(app: faust.App, settings: Settings, metrics_stage: MetricsStage, table: Any,
               registry: CollectorRegistry, router: Router) -> DetectionStage:
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                           "value_serializer": "raw"}
    signals_topic = app.topic(settings.topic("signals"), **raw)
    profiles_topic = app.topic(settings.topic("profiles"), **raw)

    def emit_signal(key: bytes, value: bytes) -> None:
        signals_topic.send_soon(key=key, value=value)

    def emit_profile(key: bytes, value: bytes) -> None:
        profiles_topic.send_soon(key=key, value=value)

    exporter = DetectionExporter.create(registry)
    profiles = ProfileStore()
    profiles.on_invalid = lambda key, reason: exporter.profiles_invalid.inc()
    stage = DetectionStage(settings.detection, settings.metrics, FaustTableStore(table), profiles,
                           emit_signal, emit_profile, exporter)
    on_before_flush(app, stage.flush_writes)
    if settings.detection.enabled:
        router.on_predictions.append(stage.on_predictions)
        router.on_telemetry.append(stage.on_telemetry)
        metrics_stage.match_listeners.append(stage.matches_of)
    return stage


def _alerting(app: faust.App, settings: Settings, metrics_stage: MetricsStage, detection: DetectionStage,
              table: Any) -> AlertingStage:
    alerts_topic = app.topic(settings.topic("alerts"), key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")

    def emit(key: bytes, value: bytes) -> None:
        alerts_topic.send_soon(key=key, value=value)

    stage = AlertingStage(settings.alert_rules, FaustTableStore(table), emit, LockedSilences(),
                          on_event=detection.exporter.observe_alert)
    on_before_flush(app, stage.flush_writes)
    if settings.alert_rules:
        metrics_stage.snapshot_listeners.append(stage.on_snapshot)
        detection.signal_listeners.append(stage.on_signal)
    return stage


def _wire_live(dl: Driftline, interval_s: float) -> None:
    import time

    from rich.console import Console, Group

    from streams.app.live import render, render_signals, render_windows

    console = Console()
    started = time.monotonic()

    @dl.app.timer(interval_s)  # type: ignore[untyped-decorator]
    async def show() -> None:
        latest = dl.metrics_stage.exporter.collector.latest()
        window = dl.settings.metrics.windows[0].name
        flow_table = render(dl.flow, time.monotonic() - started)
        signals = render_signals(list(dl.detection_stage.recent))
        console.print(Group(flow_table, render_windows(latest, window), signals))  # type: ignore[arg-type]

    del show


def _wire(dl: Driftline) -> None:
    app, s = dl.app, dl.settings
    raw: dict[str, Any] = {"value_type": bytes, "value_serializer": "raw",
                           "key_type": bytes, "key_serializer": "raw"}
    source = app.topic(*(s.topic(t) for t in INPUT_TOPICS), **raw)
    deadletter = app.topic(s.topic("deadletter"), **raw)
    consumer_lag = dl.metrics.consumer_lag
    offset_jumps = dl.metrics.offset_jumps
    ingest = dl.ingest
    flow = dl.flow
    gate = OffsetGate(frozenset(s.topic(t) for t in INPUT_TOPICS))
    use_gate(app, gate)

    def end_offset(topic: str, partition: int) -> int | None:
        try:
            hw = app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more): let the seek say so
            return None
        return None if hw is None or hw < 0 else int(hw)

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def reseek() -> None:  # a seek that brought nothing back, at the end of a partition
        for (topic, partition), target in gate.overdue(time.monotonic(), end_offset):
            log.info("ingest: %s:%d still misses offset %d; seeking back to it", topic, partition, target)
            await _seek(app, (TP(topic, partition), target))

    coalescer = dl.coalescer
    wait_s = s.coalesce_wait_ms / 1000

    @app.agent(source, name="ingest")
    async def ingest_agent(stream: faust.StreamT[bytes]) -> None:
        # Records are taken in groups (what the consumer has, up to coalesce_records or
        # coalesce_wait_ms) and folded per partition as one (streams.core.grouping). The gate
        # commits a record once finish() is called, after its group was folded: faust's own
        # acks (after each take) do not commit the input topics.
        async for events in stream.take_events(s.coalesce_records, wait_s):  # type: ignore[attr-defined]
            for event in events:
                msg = event.message
                verdict = gate.admit(msg.topic, msg.partition, msg.offset)
                if verdict is not Verdict.NEXT:
                    offset_jumps.labels(msg.topic, verdict.value).inc()
                    if not await _out_of_order(app, gate, msg, verdict):
                        continue
                coalescer.add(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
            for topic, partition, records in coalescer.ready():
                group = [(r.offset, r.key, r.value) for r in records]
                for d in ingest.process_group(topic, partition, group):
                    flow.on_deadletter(d.reason)
                    dl.metrics.deadletter_records.labels(d.reason).inc()
                    await deadletter.send(key=d.key, value=d.value)
                for r in records:
                    gate.finish(topic, partition, r.offset)
                try:
                    hw = app.consumer.highwater(TP(topic, partition))
                except Exception:
                    continue
                if hw is not None:
                    consumer_lag.labels(topic, str(partition)).set(max(hw - records[-1].offset - 1, 0))

    registry = dl.registry

    @app.page("/metrics")
    class Metrics(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(registry), content_type=_PROM_CONTENT_TYPE)

    @app.page("/healthz")
    class Health(View):  # type: ignore[misc]
        """Liveness: answering at all means the process and its event loop run."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "app_id": s.app_id})

    @app.page("/ready")
    class Ready(View):  # type: ignore[misc]
        """Readiness: 200 once table recovery is done and no rebalance runs; 503 with the reason before."""

        async def get(self, request: Request) -> Response:
            ok, body = readiness(app)
            return self.json({**body, "app_id": s.app_id}, status=200 if ok else 503)

    del ingest_agent, reseek, Metrics, Health, Ready


async def _out_of_order(app: faust.App, gate: OffsetGate, msg: Any, verdict: Verdict) -> bool:
    """Act on a record the gate did not expect; True if it is to be processed all the same."""
    if verdict is Verdict.SKIPPED_TO:
        log.error("ingest: %s:%d offsets before %d could not be read after %d seeks; went on from %d "
                  "(transaction markers, or records deleted by retention)",
                  msg.topic, msg.partition, msg.offset, gate.accept_after_seeks, msg.offset)
        return True
    if verdict is Verdict.GAP:
        target = gate.seek_due(msg.topic, msg.partition, time.monotonic())
        if target is not None:
            log.info("ingest: %s:%d offset %d read where %d was expected; seeking back to it",
                     msg.topic, msg.partition, msg.offset, target)
            await _seek(app, (msg.tp, target))
    elif verdict is Verdict.EARLY and gate.reposition_due(msg.topic, msg.partition, time.monotonic()):
        log.warning("ingest: %s:%d is still not positioned since its assignment; "
                    "seeking to the committed offsets", msg.topic, msg.partition)
        await _seek(app, None)
    return False


async def _seek(app: faust.App, target: tuple[TP, int] | None) -> None:
    """Seek (partition, offset), or all partitions to their commits (None); log a failure, do not raise.

    The partition may have been revoked meanwhile: its next owner starts from the commit,
    and the agent must not die over it.
    """
    try:
        if target is None:
            await app.consumer.perform_seek()
        else:
            await app.consumer.seek(*target)
    except Exception as exc:
        log.warning("ingest: seek of %s failed: %r", target or "all partitions to their commits", exc)
