"""Drift detection end to end: real broker, real worker, signals and detector state checked.

One model, ``fraud``, one partition's worth of traffic with a known story:
stationary inputs and a 10% error rate, then ``amount`` shifts by one
standard deviation, ``country`` changes mix and the error rate triples.
The reference profile is built from a CSV by ``driftline profile build`` and
published to the profiles topic before the worker starts.
"""

from __future__ import annotations

import csv
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer

from streams.app.profiles import profile_key
from streams.config import Settings, load_settings
from streams.profile_cli import build_profile, publish
from tests.integration.conftest import metric_value, producer, wait_changelog
from tests.integration.test_ingest import wait_metric
from tests.integration.test_metrics import assert_same

pytestmark = pytest.mark.integration

BASE_MS = 1_800_000_000_000
BATCH = 500
STABLE_BATCHES = 12  # 6 000 events: windows 1-3 of 2 000
SHIFTED_BATCHES = 12
COUNTRIES = ("fr", "de", "us", "jp")
CONFIG = """
metrics:
  windows: ["1m"]
  idle_close: 1h
models:
  fraud: {task: classification}
detection:
  # Windows of exactly 2,000 events: the stories below put the shift on a window boundary.
  # (The jitter that spreads windows across models: tests/unit/core/detection/test_data_windows.py.)
  data: {window_events: 2000, window: 0s, chunk_events: 250, window_jitter: 0}
  ops: {silence_after: 4s}
"""


def features(rng: np.random.Generator, n: int, shifted: bool) -> dict[str, list[Any]]:
    mix = (0.1, 0.1, 0.4, 0.4) if shifted else (0.4, 0.3, 0.2, 0.1)
    return {
        "amount": np.round(rng.normal(115.0 if shifted else 100.0, 15.0, n), 3).tolist(),
        "age": rng.integers(18, 90, n).tolist(),
        "country": [COUNTRIES[i] for i in rng.choice(4, n, p=mix)],
    }


def write_training_csv(path: Path, rows: int = 20_000, seed: int = 1) -> None:
    f = features(np.random.default_rng(seed), rows, shifted=False)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["amount", "age", "country", "label"])
        for i in range(rows):
            w.writerow([f["amount"][i], f["age"][i], f["country"][i], i % 2])


def make_records(seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prediction records and label records (one per prediction record, all labels)."""
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    for b in range(STABLE_BATCHES + SHIFTED_BATCHES):
        shifted = b >= STABLE_BATCHES
        ids = [f"e{b}-{j}" for j in range(BATCH)]
        times = [BASE_MS + (b * BATCH + j) * 20 for j in range(BATCH)]
        p_yes = rng.random(BATCH)
        preds.append(
            {
                "schema": "driftline.prediction-columns/v1",
                "model": "fraud",
                "model_version": "v1",
                "event_id": ids,
                "event_time_ms": times,
                "latency_ms": np.round(rng.lognormal(2.5, 0.3, BATCH), 3).tolist(),
                "status": ["ok"] * BATCH,
                "features": features(rng, BATCH, shifted),
                "prediction": [{"yes": float(p), "no": float(1 - p)} for p in p_yes],
            }
        )
        wrong = rng.random(BATCH) < (0.3 if shifted else 0.1)
        truth = [
            ("no" if p >= 0.5 else "yes") if w else ("yes" if p >= 0.5 else "no")
            for p, w in zip(p_yes, wrong, strict=True)
        ]
        labels.append(
            {
                "schema": "driftline.feedback-columns/v1",
                "model": "fraud",
                "event_id": ids,
                "label": truth,
                "event_time_ms": [t + 1000 for t in times],
            }
        )
    return preds, labels


def send(s: Settings, records: list[dict[str, Any]], topic: str) -> None:
    p = producer(s)
    for r in records:
        p.produce(s.topic(topic), key=r["model"].encode(), value=orjson.dumps(r))
    assert p.flush(30) == 0


class TopicReader:
    """Reads a topic from the start (own group), keeping every record."""

    def __init__(self, s: Settings, topic: str) -> None:
        self.c = Consumer(
            {
                "bootstrap.servers": s.bootstrap,
                "group.id": f"r-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.c.subscribe([topic])
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def poll_until(self, done: Any, timeout_s: float = 60) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.c.consume(500, timeout=0.3):
                if msg.error() is None:
                    self.records.append((msg.key(), msg.value()))
            if done(self):
                return True
        return False

    def signals(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for _, v in self.records if v is not None]

    def close(self) -> None:
        self.c.close()


def publish_profile(s: Settings, tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    write_training_csv(train)
    prof = build_profile(train, "fraud", None, None, {"label"}, created_ms=BASE_MS)
    assert set(prof.features) == {"amount", "age", "country"}
    publish(s, profile_key("fraud", None), prof.to_json())


@pytest.fixture()
def detection_worker(config_workers: Any) -> Any:
    return lambda: config_workers(CONFIG)


def by_kind(sigs: list[dict[str, Any]], kind: str, **match: Any) -> list[dict[str, Any]]:
    return [x for x in sigs if x["kind"] == kind and all(x.get(k) == v for k, v in match.items())]


def test_data_and_concept_drift_are_signalled_with_ranked_features_then_silence(
    settings: Settings, detection_worker: Any, tmp_path: Path
) -> None:
    publish_profile(settings, tmp_path)
    worker = detection_worker()
    preds, labels = make_records()
    send(settings, preds, "predictions")
    assert wait_metric(worker, "driftline_events_in_total", len(preds) * BATCH, kind="prediction")
    send(settings, labels, "feedback")
    reader = TopicReader(settings, settings.topic("signals"))
    try:
        assert reader.poll_until(
            lambda r: by_kind(r.signals(), "concept_drift") and by_kind(r.signals(), "silence"), timeout_s=60
        ), reader.signals()
        sigs = reader.signals()
        stable_end = BASE_MS + STABLE_BATCHES * BATCH * 20
        data = by_kind(sigs, "data_drift", active=True)
        assert data, sigs
        # no false alarm on the stationary part, and the shift is found in the first shifted window
        assert all(x["window_start_ms"] >= stable_end for x in data), data
        drifted = {x["feature"] for x in data}
        assert {"amount", "country"} <= drifted and "age" not in drifted
        windowed = [x for x in data if x["detector"] != "page_hinkley"]  # the tests, ranked per window
        first = [x for x in windowed if x["window_end_ms"] == min(y["window_end_ms"] for y in windowed)]
        ranked = sorted(first, key=lambda x: x["evidence"]["rank"])
        assert ranked[0]["score"] >= ranked[-1]["score"]
        assert all(x["p_value"] is not None and x["p_value"] < 0.01 for x in first)
        concept = by_kind(sigs, "concept_drift")
        assert any(x["evidence"]["direction"] == "up" for x in concept), concept
        assert all(x["detected_at_ms"] >= stable_end for x in concept), concept
        silence = by_kind(sigs, "silence", active=True)
        assert silence[0]["labels"]["stream"] == "predictions"
        assert len({x["signal_id"] for x in sigs}) == len(sigs)  # no duplicates without a crash
        text = worker.metrics_text()
        assert metric_value(text, "driftline_signals_total", kind="data_drift") >= len(data)
    finally:
        reader.close()


def test_a_replaced_profile_takes_effect_while_the_worker_runs(
    settings: Settings, detection_worker: Any, tmp_path: Path
) -> None:
    publish_profile(settings, tmp_path)
    worker = detection_worker()
    preds, _ = make_records()
    shifted = preds[STABLE_BATCHES:]
    send(settings, shifted[:4], "predictions")  # one window against the old reference: drift
    reader = TopicReader(settings, settings.topic("signals"))
    try:
        assert reader.poll_until(lambda r: by_kind(r.signals(), "data_drift", feature="amount"))
        # a broken record on the profiles topic is ignored (and counted): the old reference stays
        publish(settings, profile_key("fraud", None), b'{"schema": "driftline.profile/v1", "model": 1}')
        assert wait_metric(worker, "driftline_profiles_invalid_total", 1) >= 1
        # the team accepts the new normal: a profile built from the shifted traffic replaces the old one
        rows = tmp_path / "new.jsonl"
        rng = np.random.default_rng(9)
        f = features(rng, 20_000, shifted=True)
        rows.write_bytes(b"\n".join(orjson.dumps({k: v[i] for k, v in f.items()}) for i in range(20_000)))
        new = build_profile(rows, "fraud", None, None, set(), created_ms=BASE_MS + 1)
        publish(settings, profile_key("fraud", None), new.to_json())
        time.sleep(2)  # the worker's profile follower picks it up
        send(settings, shifted[4:12], "predictions")
        assert reader.poll_until(lambda r: by_kind(r.signals(), "data_drift", feature="amount", active=False))
        after = [
            x
            for x in by_kind(reader.signals(), "data_drift", active=True)
            if x["window_start_ms"] >= shifted[6]["event_time_ms"][0]
        ]
        assert not after, after
    finally:
        reader.close()


_PROCESSING_TIME = (b'["d:silence', b'["d:input')


def latest_detector_cells(s: Settings) -> dict[bytes, Any]:
    c = Consumer(
        {
            "bootstrap.servers": s.bootstrap,
            "group.id": f"cl-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([f"{s.app_id}-state-changelog"])
    out: dict[bytes, Any] = {}
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 3:
        msgs = c.consume(1000, timeout=0.5)
        if msgs:
            idle_since = time.monotonic()
        for m in msgs:
            # silence and input validity run on processing time, so an in-process reference cannot
            # reproduce them; their replay safety is unit-tested (tests/unit/core/detection/test_inputs.py)
            if m.error() is None and m.key().startswith(b'["d:') and not m.key().startswith(_PROCESSING_TIME):
                out[m.key()] = None if m.value() is None else orjson.loads(m.value())
    c.close()
    return {k: v for k, v in out.items() if v is not None}


def reference_cells(
    preds: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    s: Settings,
    profile: Any,
    cfg_path: Path,
    partition: int,
) -> tuple[dict[bytes, Any], int]:
    """The same records through the pure engines in-process, without a crash."""
    from streams.core.detection.engine import DetectionEngine
    from streams.core.engine import MetricsEngine
    from streams.events.codec import Decoder

    cs = load_settings(cfg_path, env={})
    dec = Decoder()
    eng = MetricsEngine(cs.metrics, partition)
    det = DetectionEngine(
        cs.detection, partition, lambda m, v: profile, task=lambda m: cs.metrics.model(m).task
    )
    eng.match_listeners.append(det.on_matches)
    signals = 0
    for topic, records in (("predictions", preds), ("feedback", labels)):
        for off, r in enumerate(records):
            d = dec.decode(orjson.dumps(r))
            source = f"{s.topic(topic)}:{partition}"
            for i, pb in enumerate(d.predictions):
                eng.on_predictions(pb, source, off, now_ms=0, batch_index=i)
                det.on_predictions(pb, source, off, i, now_ms=0)
            for i, fb in enumerate(d.feedback):
                eng.on_feedback(fb, source, off, now_ms=0, batch_index=i)
            signals += len(det.take_signals())
    cells = {
        k: orjson.loads(v) for k, v in det.take_writes() if v is not None and not k.startswith(b'["d:silence')
    }
    return cells, signals


def test_kill_9_keeps_detector_state_and_nothing_is_redetected(
    settings: Settings, config_workers: Any, tmp_path: Path
) -> None:
    publish_profile(settings, tmp_path)
    preds, labels = make_records(seed=5)
    # Record by record, as the in-process reference folds them: which records a worker folds
    # as one group depends on when they arrived, and the detectors' cells name the (virtual)
    # records they took. Groups across a kill -9 are checked in tests/unit/app/test_coalesce.py.
    def detection_worker() -> Any:
        return config_workers(CONFIG + "coalesce_records: 1\n")

    first = detection_worker()
    half = len(labels) // 2
    send(settings, preds, "predictions")
    assert wait_metric(first, "driftline_events_in_total", len(preds) * BATCH, kind="prediction")
    send(settings, labels[:half], "feedback")
    assert wait_metric(first, "driftline_detection_state_writes_total", 1) >= 1
    assert wait_metric(first, "driftline_events_in_total", half * BATCH, kind="feedback")
    # A counted write is one handed to the producer: the restart must find cells in the changelog
    # (a CI run killed the worker before any reached the broker, and it rebuilt all from offset 0).
    assert wait_changelog(settings, b'["d:'), "no detector cell reached the changelog"
    first.proc.send_signal(signal.SIGKILL)  # no clean shutdown, no final commit
    first.proc.wait()
    second = detection_worker()
    send(settings, labels[half:], "feedback")
    assert wait_metric(second, "driftline_events_in_total", (len(labels) - half) * BATCH, kind="feedback")
    time.sleep(3)  # a commit interval: the last cells reach the changelog
    got = latest_detector_cells(settings)
    partition = orjson.loads(next(iter(got)))[1]
    from streams.app.profiles import ProfileStore

    train = tmp_path / "train.csv"
    prof = build_profile(train, "fraud", None, None, {"label"}, created_ms=BASE_MS)
    store = ProfileStore()
    store.apply(profile_key("fraud", None), prof.to_json())
    want, n_signals = reference_cells(
        preds, labels, settings, store.get("fraud", "v1"), tmp_path / "driftline.yaml", partition
    )
    try:
        assert set(got) == set(want)
        for k in want:
            if k.startswith(b'["d:concept"'):
                # The worker forgets label pairs below its commits (the in-process run never
                # commits): what it kept must be exactly what the uninterrupted run holds.
                kept, held = got[k].pop("pairs"), want[k].pop("pairs")
                assert all(p in held for p in kept), f"{k.decode()}: pairs the uninterrupted run lacks"
            assert_same(got[k], want[k], k.decode())
    except AssertionError as exc:
        logs = "\n".join(
            f"--- {w}\n{(tmp_path / w).read_text()[-3000:]}" for w in ("worker0.log", "worker1.log")
        )
        raise AssertionError(f"{exc}\n{logs}") from exc
    assert metric_value(second.metrics_text(), "driftline_detection_restored_cells_total") > 0
    reader = TopicReader(settings, settings.topic("signals"))
    try:
        reader.poll_until(lambda r: False, timeout_s=3)
        ids = {x["signal_id"] for x in reader.signals() if x["kind"] != "silence"}
        assert len(ids) == n_signals  # replays repeat ids; nothing new was detected from scratch
    finally:
        reader.close()
