"""Records folded in groups: the same results as record by record, and exact after any crash.

The worker's stages (``create_app`` without Kafka: the state table's changelog is a
list) are fed as the ingest agent feeds them: records arrive in takes of any size,
the coalescer cuts them into groups, flushes persist the group logs and then the
stages' cells. A crash keeps any prefix of one flush; the restarted stages restore
from it and replay each topic from its committed offset, with other take sizes.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streams.app.coalesce import Coalescer
from streams.app.factory import Driftline, create_app
from streams.config import load_settings
from streams.events.models import FEEDBACK_COLUMNS_V1, PREDICTION_COLUMNS_V1
from tests.same import assert_same

T0 = 1_800_000_000_000 // 60_000 * 60_000
PRED, FB = "t.predictions", "t.feedback"
Record = tuple[str, int, bytes, bytes]  # topic, offset, key, value


def _records() -> dict[str, list[Record]]:
    """Four minutes of two models on partition 0: 20-event records, labels for 80 % of events, some early."""
    rng = np.random.default_rng(3)
    preds: list[Record] = []
    labels: list[tuple[str, str, int, int]] = []
    for k in range(48):
        model = ("fraud", "churn")[k % 2]
        ids = [f"{model}-{k}-{i}" for i in range(20)]
        times = [T0 + 5_000 * k + 200 * i for i in range(20)]
        scores = [round(float(v), 6) for v in rng.random(20)]
        value = orjson.dumps({
            "schema": PREDICTION_COLUMNS_V1, "model": model, "model_version": f"v{1 + k % 3 // 2}",
            "event_id": ids, "event_time_ms": times,
            "latency_ms": [round(float(v), 3) for v in rng.gamma(2.0, 10.0, 20)],
            "status": ["error" if v < 0.05 else "ok" for v in rng.random(20)],
            "features": {"amount": [round(float(v), 4) for v in rng.normal(50, 10, 20)],
                         "country": [("fr", "de", "us")[int(v * 3)] for v in rng.random(20)]},
            "prediction": scores,
        })
        preds.append((PRED, len(preds), model.encode(), value))
        labels += [(model, e, int(rng.random() < s), t) for e, s, t in zip(ids, scores, times, strict=True)]
    fbs: list[Record] = []
    for model in ("fraud", "churn"):
        mine = [x for i, x in enumerate(labels) if x[0] == model and i % 5]
        for j in range(0, len(mine), 23):
            chunk = mine[j : j + 23]
            fbs.append((FB, 0, model.encode(), orjson.dumps({
                "schema": FEEDBACK_COLUMNS_V1, "model": model, "event_id": [e for _, e, _, _ in chunk],
                "label": [y for _, _, y, _ in chunk], "event_time_ms": [t + 20_000 for *_, t in chunk]})))
    fbs = [(FB, i, k, v) for i, (_, _, k, v) in enumerate(sorted(fbs, key=lambda r: r[3][-20:]))]
    return {PRED: preds, FB: fbs}


RECORDS = _records()


def _app(snaps: list[dict[str, Any]], changelog: list[tuple[bytes, bytes | None]] | None = None) -> Driftline:
    # Lateness past the whole history: which window a label lands in does not hang on when it was read.
    cfg = Path(tempfile.mkdtemp()) / "worker.yaml"
    cfg.write_text("metrics: {allowed_lateness: 10m}\n")
    s = load_settings(str(cfg), env={}, bootstrap_servers="127.0.0.1:1", topic_prefix="t.", app_id="t",
                      data_dir=tempfile.mkdtemp(), partitions=1, coalesce_records=6)
    dl = create_app(s)
    clock = lambda: T0  # noqa: E731 - processing time stands still: windows close on event time
    dl.metrics_stage.clock = dl.detection_stage.clock = dl.alerting.clock = dl.ingest.wall_ms = clock
    dl.metrics_stage.emit = lambda key, value: snaps.append(orjson.loads(value))
    log = changelog if changelog is not None else []
    dl.state_table.send_changelog = lambda partition, key, value, **kw: log.append((key, value))
    return dl


def _takes(rng: random.Random, start: dict[str, int]) -> Iterator[list[Record]]:
    """Each topic in offset order from ``start``, interleaved at random, in takes of 1 to 9 records."""
    order = [t for t in (PRED, FB) for _ in range(start[t], len(RECORDS[t]))]
    rng.shuffle(order)
    nxt = dict(start)
    stream = []
    for t in order:
        stream.append(RECORDS[t][nxt[t]])
        nxt[t] += 1
    i = 0
    while i < len(stream):
        k = rng.randint(1, 9)
        yield stream[i : i + k]
        i += k


def _fold(dl: Driftline, take: list[Record]) -> list[Record]:
    """What the ingest agent does with one take; returns the records folded (the gate's finish)."""
    for topic, offset, key, value in take:
        dl.coalescer.add(topic, 0, offset, key, value)
    done: list[Record] = []
    for topic, partition, records in dl.coalescer.ready():
        assert not dl.ingest.process_group(topic, partition, [(r.offset, r.key, r.value) for r in records])
        done += [(topic, r.offset, b"", b"") for r in records]
    return done


def _flush(dl: Driftline) -> None:
    """faust's pre-flush hooks, in their registration order: group logs first."""
    dl.coalescer.flush_writes()
    dl.metrics_stage.flush_writes()
    dl.detection_stage.flush_writes()
    dl.alerting.flush_writes()


def _final(dl: Driftline, snaps: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    for eng in dl.metrics_stage.engines.values():
        eng.advance(10**15)
    dl.metrics_stage.tick()
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in snaps:
        key = (s["model"], s["model_version"], s["segment"], s["window"], s["window_start_ms"])
        if key not in out or s["revision"] >= out[key]["revision"]:
            out[key] = s
    return out


def _record_by_record() -> dict[tuple[Any, ...], dict[str, Any]]:
    snaps: list[dict[str, Any]] = []
    dl = _app(snaps)
    for take in _takes(random.Random(99), {PRED: 0, FB: 0}):
        for topic, offset, key, value in take:
            assert not dl.ingest.process(topic, 0, offset, key, value)
    return _final(dl, snaps)


WANT = _record_by_record()


def test_the_history_fills_windows_with_labels_and_groups_form() -> None:
    overall = [s for k, s in WANT.items() if k[2] is None and k[3] == "1m"]
    assert len(overall) >= 8 and all(s["labels"]["labelled"] > 0 for s in overall)
    dl = _app([])
    sizes = [len(r) for take in _takes(random.Random(1), {PRED: 0, FB: 0})
             for *_, r in _ready_groups(dl, take)]
    assert max(sizes) > 1


def _ready_groups(dl: Driftline, take: list[Record]) -> list[tuple[str, int, list[Any]]]:
    for topic, offset, key, value in take:
        dl.coalescer.add(topic, 0, offset, key, value)
    return dl.coalescer.ready()


@pytest.mark.parametrize("seed", range(12))
def test_groups_after_any_crash_give_the_windows_of_record_by_record(seed: int) -> None:
    rng = random.Random(seed)
    snaps: list[dict[str, Any]] = []
    changelog: list[tuple[bytes, bytes | None]] = []
    dl = _app(snaps, changelog)
    pos = {PRED: 0, FB: 0}
    flushes: list[tuple[int, int, dict[str, int]]] = []  # (first write, end, committed after it)
    for take in _takes(rng, dict(pos)):
        for topic, offset, _, _ in _fold(dl, take):
            pos[topic] = offset + 1
        if rng.random() < 0.3:
            first = len(changelog)
            _flush(dl)
            flushes.append((first, len(changelog), dict(pos)))
            committed = {f"{t}:0": o for t, o in pos.items()}
            dl.coalescer.on_committed(committed)
            dl.metrics_stage.on_committed(committed)
            dl.detection_stage.on_committed(committed)
    first = len(changelog)
    _flush(dl)
    flushes.append((first, len(changelog), dict(pos)))
    # The crash: flush f reached the changelog up to some write; the commit before it held.
    f = rng.randrange(len(flushes))
    first, end, _ = flushes[f]
    kept = rng.randint(first, end)
    committed = flushes[f - 1][2] if f else {PRED: 0, FB: 0}
    restarted = _app(snaps)
    for k, v in changelog[:kept]:
        if v is None:
            restarted.state_table.data.pop(k, None)
        else:
            restarted.state_table.data[k] = v
    for take in _takes(random.Random(1000 + seed), committed):
        _fold(restarted, take)
    assert restarted.coalescer.waiting() == 0
    got = _final(restarted, snaps)
    assert got.keys() == WANT.keys()
    for key in WANT:
        assert_same(got[key], WANT[key], f"{key}: crash in flush {f} at write {kept - first}", rel=1e-9)


def test_a_restored_coalescer_waits_for_a_logged_group_and_logs_are_pruned_on_commit() -> None:
    store = _Store()
    c = Coalescer(store, max_records=10)
    for off in range(5):
        c.add("p", 0, off, None, b"x")
    assert [[r.offset for r in g[2]] for g in c.ready()] == [[0, 1, 2, 3, 4]]
    c.flush_writes()
    again = Coalescer(store, max_records=2)
    for off in range(3):
        again.add("p", 0, off, None, b"x")
    assert again.ready() == []  # offsets 0-4 were one group: wait for 3 and 4
    for off in (3, 4, 5):
        again.add("p", 0, off, None, b"x")
    assert [[r.offset for r in g[2]] for g in again.ready()] == [[0, 1, 2, 3, 4], [5]]
    again.on_committed({"p:0": 5})
    again.flush_writes()
    assert orjson.loads(store.data[next(iter(store.data))]) == {"v": 1, "groups": [[5, 5]]}


def test_a_logged_group_whose_last_record_never_comes_is_folded_after_the_wait() -> None:
    store, now = _Store(), [0.0]
    c = Coalescer(store, max_records=10)
    for off in range(4):
        c.add("p", 0, off, None, b"x")
    c.ready()
    c.flush_writes()
    again = Coalescer(store, max_records=10, replay_wait_s=30.0, clock=lambda: now[0])
    again.add("p", 0, 0, None, b"x")
    assert again.ready() == []
    now[0] = 31.0
    assert [[r.offset for r in g[2]] for g in again.ready()] == [[0]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_records"):
        Coalescer(_Store(), max_records=0)


class _Store:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())
