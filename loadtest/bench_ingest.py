"""Ingest throughput of one worker on the local broker, against baselines from the same run.

    .venv/bin/python loadtest/bench_ingest.py [--records 2000] [--batch 500]

(a) raw consume: confluent-kafka batch consume touching only the bytes;
(b) consume + Driftline decode/validate, in one process, no faust;
(c) one ``driftline worker`` process (faust agent, decode, route, metrics).
Records are column batches of ``--batch`` events with 20 features, as the SDK sends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.common import column_record, machine, save
from streams.broker.admin import create_topics
from streams.config import Settings, load_settings
from streams.events.codec import Decoder


def ensure_broker() -> str:
    if os.environ.get("DRIFTLINE_BOOTSTRAP_SERVERS"):
        return os.environ["DRIFTLINE_BOOTSTRAP_SERVERS"]
    from streams.broker.local import LocalBroker

    d = Settings()
    broker = LocalBroker(d.kafka_version, Path(d.kafka_cache_dir), Path(".driftline/bench-kafka"),
                         port=19092, controller_port=19093, heap="1g")
    return broker.up()


def produce(s: Settings, records: int, batch: int) -> int:
    p = Producer({"bootstrap.servers": s.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 20, "compression.type": "lz4", "message.max.bytes": 16_000_000,
                  "queue.buffering.max.kbytes": 1_000_000})
    distinct = [column_record(batch, seed=k, model=f"m{k % 8}") for k in range(16)]
    for i in range(records):
        while True:
            try:
                p.produce(s.topic("predictions"), key=f"m{i % 8}".encode(), value=distinct[i % 16])
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(120) == 0
    return records * batch


def consume(s: Settings, records: int, decode: bool) -> float:
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.max.bytes": 64_000_000, "max.partition.fetch.bytes": 16_000_000})
    c.subscribe([s.topic("predictions")])
    dec = Decoder()
    seen = events = 0
    t0 = None
    while seen < records:
        msgs = c.consume(500, timeout=1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for msg in msgs:
            v = msg.value()
            if decode:
                events += dec.decode(v).n_valid
            else:
                events += len(v) > 0
            seen += 1
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return dt


def events_in(port: int, kinds: tuple[str, ...] = ("prediction",)) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(sm.value for fam in text_string_to_metric_families(text) for sm in fam.samples
               if sm.name == "driftline_events_in_total" and sm.labels.get("kind") in kinds)


def worker_run(s: Settings, total_events: int, extra_env: dict[str, str] | None = None,
               kinds: tuple[str, ...] = ("prediction",)) -> tuple[float, float]:
    """Events/s of one worker process from its first to its last processed event, and events seen."""
    env = {**os.environ, **(extra_env or {}), "DRIFTLINE_BOOTSTRAP_SERVERS": s.bootstrap,
           "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix, "DRIFTLINE_APP_ID": s.app_id,
           "DRIFTLINE_DATA_DIR": s.data_dir, "DRIFTLINE_WEB_PORT": str(s.web_port),
           "DRIFTLINE_PARTITIONS": str(s.partitions)}
    Path(s.data_dir).parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(s.data_dir).parent / f"{s.app_id}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                n = events_in(s.web_port, kinds)
            except OSError:
                time.sleep(0.2)
                continue
            samples.append((time.perf_counter(), n))
            if n >= total_events:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    moving = [(t, n) for t, n in samples if n > 0]
    if len(moving) < 2:
        raise SystemExit(f"worker {s.app_id} processed nothing; log: {log.name}")
    (t1, n1), (t2, n2) = moving[0], moving[-1]
    return (n2 - n1) / (t2 - t1), n2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    bootstrap = ensure_broker()
    tag = uuid.uuid4().hex[:6]
    s = load_settings(env={}, bootstrap_servers=bootstrap, topic_prefix=f"bench{tag}.",
                      app_id=f"bench-{tag}", data_dir=f".driftline/bench/{tag}/worker",
                      web_port=16066, partitions=4)
    create_topics(s)
    total = produce(s, args.records, args.batch)
    raw_s = consume(s, args.records, decode=False)
    dec_s = consume(s, args.records, decode=True)
    worker_eps, seen = worker_run(s, total)
    res = {
        "machine": machine(), "records": args.records, "batch_events": args.batch,
        "features": 20, "events": total,
        "a_raw_consume_events_per_s": total / raw_s,
        "b_consume_decode_events_per_s": total / dec_s,
        "c_worker_events_per_s": worker_eps,
        "worker_events_seen": seen,
    }
    res["ratio_c_over_a"] = res["c_worker_events_per_s"] / res["a_raw_consume_events_per_s"]
    res["ratio_c_over_b"] = res["c_worker_events_per_s"] / res["b_consume_decode_events_per_s"]
    path = save("ingest", res)
    for k, v in res.items():
        if k != "machine":
            print(f"{k:32s} {v:,.2f}" if isinstance(v, float) else f"{k:32s} {v}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
