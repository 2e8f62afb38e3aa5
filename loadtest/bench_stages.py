"""The worker's stages in this process, without Kafka: where the closed loop's (c) spends its time.

    .venv/bin/python loadtest/bench_stages.py [--records 2000] [--models 8] [--group 1,64] [--profile]

The closed loop's traffic (``loadtest/benchmark.py``: 500-event column batches,
20 features, 8 models at 25,000 events/s of event time each, no published
reference) goes through ``create_app``'s stages (decode, metrics, detection,
alerting) as the worker's ingest agent feeds them: records are admitted to the
coalescer in takes of ``--group`` records, spread over 4 partitions by model,
and each group is folded with ``IngestStage.process_group``; the 1 s timer of
the stages runs once per second of the run. The changelog and the output topics
are replaced by counters, so what is measured is the stages' CPU, not the
broker's or faust's (the worker adds about 4 us per event to it).

For each ``--group`` value it prints events per CPU-second (process time), one
run after the other, so compare values of one invocation only. ``--profile``
adds a cProfile of the last group size: the top functions by own time, and the
share of time of a few named parts (decode, feature columns, metrics,
detection).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.benchmark import T0_MS, Traffic  # noqa: E402
from streams.app.factory import Driftline, create_app  # noqa: E402
from streams.config import load_settings  # noqa: E402

PARTITIONS = 4


def app(group: int) -> Driftline:
    cfg = Path(tempfile.mkdtemp()) / "worker.yaml"
    cfg.write_text("{}\n")
    s = load_settings(str(cfg), env={}, bootstrap_servers="127.0.0.1:1", topic_prefix="stages.",
                      app_id="stages", data_dir=tempfile.mkdtemp(), web_port=6066,
                      partitions=PARTITIONS, coalesce_records=group)
    dl = create_app(s)
    now = [T0_MS]
    dl.metrics_stage.clock = dl.detection_stage.clock = dl.alerting.clock = dl.ingest.wall_ms = lambda: now[0]
    dl.state_table.send_changelog = lambda *a, **k: None  # type: ignore[method-assign]
    return dl


def run(records: Sequence[tuple[str, bytes]], batch: int, group: int) -> dict[str, Any]:
    """Feed ``records`` (model, value) in takes of ``group`` records; events per CPU-second."""
    dl = app(group)
    topic = dl.settings.topic("predictions")
    offsets = [0] * PARTITIONS
    cpu0, wall0 = time.process_time(), time.monotonic()
    last_tick = wall0
    for i in range(0, len(records), group):
        for model, value in records[i:i + group]:
            p = zlib.crc32(model.encode()) % PARTITIONS
            dl.coalescer.add(topic, p, offsets[p], model.encode(), value)
            offsets[p] += 1
        for tp, part, recs in dl.coalescer.ready():
            dl.ingest.process_group(tp, part, [(r.offset, r.key, r.value) for r in recs])
        if time.monotonic() - last_tick >= 1.0:  # the worker's timer
            for stage in (dl.metrics_stage, dl.detection_stage, dl.alerting):
                stage.tick()
            last_tick = time.monotonic()
    cpu_s = time.process_time() - cpu0
    events = len(records) * batch
    return {"group": group, "events": events, "cpu_s": round(cpu_s, 3),
            "events_per_cpu_s": round(events / cpu_s)}


#: Named parts of the profile: a function counts in the first part whose marker its file or name holds.
PARTS = (("decode (msgspec, codec)", ("streams/events/codec.py", "msgspec")),
         ("feature columns (types, floats, counts)", ("streams/core/columns.py",)),
         ("metrics", ("streams/core/engine.py", "streams/core/pane.py", "streams/core/join.py",
                      "streams/core/series.py", "streams/core/sketch.py", "streams/core/features.py",
                      "streams/core/outcomes.py", "streams/core/snapshot.py")),
         ("detection", ("streams/core/detection", "streams/core/drift", "streams/core/anomaly")),
         ("numpy", ("numpy",)))


def profile(records: Sequence[tuple[str, bytes]], batch: int, group: int, top: int) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    run(records, batch, group)
    prof.disable()
    st = pstats.Stats(prof)
    rows = []
    total = 0.0
    shares: dict[str, float] = {name: 0.0 for name, _ in PARTS}
    for (file, line, name), (_, _, tottime, _, _) in st.stats.items():  # type: ignore[attr-defined]
        total += tottime
        where = f"{file}:{name}"
        for part, markers in PARTS:
            if any(m in where for m in markers):
                shares[part] += tottime
                break
        rows.append((tottime, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    return {"group": group, "own_time_top": [(f, round(100 * t / total, 1)) for t, f in rows[:top]],
            "parts_pct": {k: round(100 * v / total, 1) for k, v in shares.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--group", default="1,64", help="comma-separated takes (records) to compare")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    traffic = Traffic(args.batch, model_events_per_s=200_000 / args.models)
    models = [f"m{k}" for k in range(args.models)]
    order = [models[i % len(models)] for i in range(args.records)]
    records = [(m, traffic.record(m)) for m in order]
    groups = [int(g) for g in args.group.split(",")]
    for g in groups:
        print(run(records, args.batch, g), flush=True)
    if args.profile:
        prof = profile(records, args.batch, groups[-1], args.top)
        print(f"profile, takes of {groups[-1]}: share of own time by part (%)")
        for part, pct in prof["parts_pct"].items():
            print(f"  {pct:5.1f}  {part}")
        print("top functions by own time (%)")
        for f, pct in prof["own_time_top"]:
            print(f"  {pct:5.1f}  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
