"""Simulated model servers: a few processes serving a scenario's models through the SDK.

Why processes: real model servers are separate processes, each with its own
SDK client, buffer and producer; one Python process generating every model's
traffic would also put the whole fleet behind one GIL next to the runner's
own sampling. Models are dealt round-robin to ``processes`` processes
(``spawn``: nothing of the parent's threads or Kafka handles is inherited).

Each process runs a 20 ms tick loop. Per model it sends the predictions that
are due (event ``i`` at ``i / rate_per_s`` seconds after the common start
``t0``; :mod:`streams.sim.generator` makes their content), the labels whose
delay has passed, one telemetry sample per host and interval, and, while a
``malformed_flood`` is on, malformed records keyed by the model's name from
a plain confluent-kafka producer (the SDK would refuse to send them). The
start is synchronised: every process first builds its clients and reports
ready, then the parent sets ``t0`` and lets them go, so incident times mean
the same thing in every process and in the runner that checks them.

Counters (events handed to the SDK, per kind) live in shared memory, one
slot per process, so the runner can chart the produced rate while the fleet
runs. SIGINT is ignored in the children: the parent decides when to stop
(Ctrl-C in a terminal reaches the whole process group), and then each child
closes its clients, which flushes what they buffer.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import queue
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streams.sim.generator import ModelGenerator, Predictions, malformed_record
from streams.sim.scenario import ModelSpec, Scenario

__all__ = ["COUNTERS", "Fleet", "FleetCounts", "ModelServer"]

COUNTERS = ("predictions", "feedback", "telemetry", "malformed")
TICK_S = 0.02


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Events handed to the SDK so far (``malformed``: records sent around it)."""

    predictions: int = 0
    feedback: int = 0
    telemetry: int = 0
    malformed: int = 0

    @property
    def events(self) -> int:
        """Well-formed events, the unit the worker's ``driftline_events_in_total`` counts."""
        return self.predictions + self.feedback + self.telemetry


class ModelServer:
    """One simulated model inside a fleet process: what is due at ``t_s``, sent through ``client``.

    ``client`` is a :class:`~streams.sdk.DriftlineClient` (or a double with
    ``log_prediction``, ``log_feedback`` and ``log_telemetry``); ``garbage``
    sends one raw record keyed by the model.
    """

    def __init__(self, spec: ModelSpec, gen: ModelGenerator, client: Any, t0_ms: int, id_prefix: str,
                 garbage: Callable[[str, bytes], None] | None = None, end_s: float | None = None) -> None:
        self.spec = spec
        self.gen = gen
        self.client = client
        self.t0_ms = t0_ms
        self.id_prefix = id_prefix
        self.garbage = garbage
        self.end_s = end_s
        self.next_event = 0
        self.next_sample = [0] * len(spec.hosts)
        self.labels: list[tuple[float, str, bool]] = []
        self.bad_credit = 0.0
        self.bad_sent = 0
        self.last_t_s = 0.0
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._silences = [i for i in gen.incidents if i.kind == "silence"]

    def step(self, t_s: float) -> None:
        """Send everything due up to ``t_s`` seconds after the start (or up to ``end_s``)."""
        if self.end_s is not None:
            t_s = min(t_s, self.end_s)
        due = int(t_s * self.spec.rate_per_s)
        if due > self.next_event:
            self._predict(self.gen.predictions(self.next_event, due))
            self.next_event = due
        self._feedback(t_s)
        self._telemetry(t_s)
        self._malformed(t_s)
        self.last_t_s = t_s

    def _predict(self, p: Predictions) -> None:
        silent = np.zeros(len(p), dtype=bool)
        for inc in self._silences:
            silent |= (p.t_s >= inc.at_s) & (p.t_s < inc.end_s)
        names = list(p.features)
        columns = [p.features[n] for n in names]
        log = self.client.log_prediction
        t0_ms, prefix = self.t0_ms, self.id_prefix
        index, t_s, p_yes = p.index.tolist(), p.t_s.tolist(), p.p_yes.tolist()
        latency, error = p.latency_ms.tolist(), p.error.tolist()
        labelled, label_yes, delay = p.labelled.tolist(), p.label_yes.tolist(), p.label_delay_s.tolist()
        sent = 0
        for i in range(len(p)):
            if silent[i]:
                continue
            event_id = f"{prefix}{index[i]:x}"
            yes = p_yes[i]
            log({n: col[i] for n, col in zip(names, columns, strict=True)},
                None if error[i] else {"yes": round(yes, 6), "no": round(1.0 - yes, 6)},
                latency_ms=latency[i], status="error" if error[i] else "ok", event_id=event_id,
                event_time_ms=t0_ms + int(t_s[i] * 1000), model_version=p.version[i])
            sent += 1
            if labelled[i]:
                heapq.heappush(self.labels, (t_s[i] + delay[i], event_id, label_yes[i]))
        self.counts["predictions"] += sent

    def _feedback(self, t_s: float) -> None:
        while self.labels and self.labels[0][0] <= t_s:
            due_s, event_id, yes = heapq.heappop(self.labels)
            self.client.log_feedback(event_id, "yes" if yes else "no",
                                     event_time_ms=self.t0_ms + int(due_s * 1000))
            self.counts["feedback"] += 1

    def _telemetry(self, t_s: float) -> None:
        interval = self.spec.telemetry_interval_s
        version = self.spec.versions[0][0]
        for h in range(len(self.spec.hosts)):
            while self.next_sample[h] * interval <= t_s:
                j = self.next_sample[h]
                self.next_sample[h] += 1
                at_s = j * interval
                if self.gen.telemetry_silenced(at_s):
                    continue
                sample = self.gen.telemetry(h, j)
                sample.update(model=self.spec.name, model_version=version,
                              event_time_ms=self.t0_ms + int(at_s * 1000))
                self.client.log_telemetry(sample)
                self.counts["telemetry"] += 1

    def _malformed(self, t_s: float) -> None:
        rate = self.gen.malformed_per_s(t_s)
        if rate <= 0 or self.garbage is None:
            self.bad_credit = 0.0
            return
        self.bad_credit += rate * max(0.0, t_s - self.last_t_s)
        while self.bad_credit >= 1.0:
            self.bad_credit -= 1.0
            self.garbage(self.spec.name, malformed_record(self.spec.name, self.bad_sent))
            self.bad_sent += 1
            self.counts["malformed"] += 1


# -- the child process ------------------------------------------------------------------------------


def _serve(names: Sequence[str], scenario: Scenario, bootstrap: str, prefix: str, end_s: float | None,
           run_tag: str, slot: int, counters: Any, ready: Any, go: Any, t0: Any, stop: Any,
           results: Any) -> None:
    """Body of one fleet process (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from confluent_kafka import Producer
    from prometheus_client import CollectorRegistry

    from streams.sdk import DriftlineClient

    registry = CollectorRegistry()
    specs = [scenario.model(n) for n in names]
    clients = [
        DriftlineClient(bootstrap, model=s.name, model_version=s.versions[0][0],
                        predictions_topic=f"{prefix}predictions", feedback_topic=f"{prefix}feedback",
                        telemetry_topic=f"{prefix}telemetry", registry=registry,
                        client_id=f"sim-{s.name}"[:100], **scenario.sdk)
        for s in specs
    ]
    producer: Any = None

    def garbage(model: str, value: bytes) -> None:
        nonlocal producer
        if producer is None:
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
        try:
            producer.produce(f"{prefix}predictions", key=model.encode(), value=value)
        except BufferError:
            producer.poll(0.1)
        producer.poll(0)

    with ready.get_lock():
        ready.value += 1
    while not go.wait(0.1):
        if stop.is_set():
            break
    start = t0.value
    t0_ms = int(start * 1000)
    servers = [
        ModelServer(s, ModelGenerator(s, scenario.incidents, scenario.seed), c, t0_ms,
                    f"{run_tag}{i + slot * 1000:x}-", garbage, end_s)
        for i, (s, c) in enumerate(zip(specs, clients, strict=True))
    ]
    base = slot * len(COUNTERS)
    try:
        next_tick = time.time()
        while not stop.is_set():
            t_s = time.time() - start
            for srv in servers:
                srv.step(t_s)
            for k, name in enumerate(COUNTERS):
                counters[base + k] = sum(srv.counts[name] for srv in servers)
            if end_s is not None and t_s >= end_s:
                break
            next_tick += TICK_S
            stop.wait(max(0.0, next_tick - time.time()))
    finally:
        stats = {}
        for c in clients:
            c.close(10.0)
            stats[c.model] = asdict(c.stats())
        if producer is not None:
            producer.flush(10)
        results.put((slot, stats))


# -- the parent's handle ----------------------------------------------------------------------------


class Fleet:
    """The fleet of a scenario: ``start()`` it, read ``counts()`` while it runs, ``stop()`` it.

    Parameters
    ----------
    scenario
        What to serve.
    bootstrap, topic_prefix
        Where to send it (``<prefix>predictions`` and so on).
    duration_s
        Stop sending after this many seconds (default: the scenario's ``duration_s``).
    forever
        Ignore any duration: send until :meth:`stop`.
    processes
        How many processes; default the scenario's ``processes``, else
        ``min(4, number of models)``.
    """

    def __init__(self, scenario: Scenario, bootstrap: str, topic_prefix: str, *,
                 duration_s: float | None = None, forever: bool = False, processes: int | None = None,
                 start_method: str = "spawn") -> None:
        self.scenario = scenario
        self.end_s: float | None = None if forever else (
            scenario.duration_s if duration_s is None else duration_s)
        n = processes or scenario.processes or min(4, len(scenario.models))
        n = max(1, min(n, len(scenario.models)))
        self.groups = [[m.name for m in scenario.models[i::n]] for i in range(n)]
        ctx: Any = mp.get_context(start_method)
        self._ctx = ctx
        self._counters = self._ctx.Array("q", len(COUNTERS) * n, lock=False)
        self._ready = self._ctx.Value("i", 0)
        self._go = self._ctx.Event()
        self._stop = self._ctx.Event()
        self._t0 = self._ctx.Value("d", 0.0)
        self._results: Any = self._ctx.Queue()
        run_tag = uuid.uuid4().hex[:6]
        self._procs = [
            ctx.Process(
                target=_serve,
                args=(group, scenario, bootstrap, topic_prefix, self.end_s, run_tag, slot, self._counters,
                      self._ready, self._go, self._t0, self._stop, self._results),
                name=f"driftline-sim-{slot}",
                daemon=True,
            )
            for slot, group in enumerate(self.groups)
        ]
        self.t0: float | None = None
        self.stats: dict[str, Any] = {}

    def start(self, timeout_s: float = 120.0) -> float:
        """Start the processes, wait until each has its clients, then start the clock; returns ``t0``
        (``time.time()`` of the start, which every incident time is relative to)."""
        for p in self._procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        while self._ready.value < len(self._procs):
            dead = [p for p in self._procs if p.exitcode is not None]
            if dead or time.monotonic() > deadline:
                self.stop(5.0)
                why = f"exited with {dead[0].exitcode}" if dead else f"not ready within {timeout_s:.0f}s"
                raise RuntimeError(f"fleet process {why}")
            time.sleep(0.05)
        self.t0 = self._t0.value = time.time()
        self._go.set()
        return self.t0

    def counts(self) -> FleetCounts:
        values = list(self._counters)
        k = len(COUNTERS)
        return FleetCounts(*(sum(values[i::k]) for i in range(k)))

    def alive(self) -> bool:
        """Whether any process still runs (they stop by themselves at ``end_s``)."""
        return any(p.is_alive() for p in self._procs)

    def failed(self) -> list[int]:
        """Exit codes of processes that ended badly."""
        return [p.exitcode for p in self._procs if p.exitcode not in (None, 0)]

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop sending, let each process flush its clients, and return the SDK statistics per model."""
        self._stop.set()
        self._go.set()
        deadline = time.monotonic() + timeout_s
        pending = sum(1 for p in self._procs if p.pid is not None)
        while pending > 0 and time.monotonic() < deadline:
            try:
                _, stats = self._results.get(timeout=0.2)
            except queue.Empty:
                if not self.alive():
                    break
                continue
            self.stats.update(stats)
            pending -= 1
        for p in self._procs:
            if p.pid is None:
                continue
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(5)
        return self.stats
