"""The detection engine: signals for known stories, exactly-once over replays, restore = no crash."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from streams.core.batches import FeedbackBatch, PredictionBatch, TelemetryBatch
from streams.core.detection.config import DataConfig, DetectionConfig, OpsConfig
from streams.core.detection.engine import DetectionEngine
from streams.core.drift.profile import ProfileBuilder, ReferenceProfile
from streams.core.engine import MetricsEngine
from streams.core.metrics_config import EngineConfig
from streams.core.outcomes import TaskConfig
from streams.events.models import SignalV1

T0 = 1_800_000_000_000
BATCH = 250
SHIFT_AT = 48  # batches: after the auto profile (8) and the sequential detectors' warm-up (32)
CFG = DetectionConfig(
    data=DataConfig(window_events=1000, window_ms=0, chunk_events=50, auto_profile_events=2000),
    ops=OpsConfig(silence_after_ms=5_000),
)


def features(rng: np.random.Generator, n: int, shifted: bool) -> dict[str, list[Any]]:
    mix = (0.1, 0.1, 0.8) if shifted else (0.5, 0.3, 0.2)
    return {
        "amount": rng.normal(130.0 if shifted else 100.0, 15.0, n).tolist(),
        "age": rng.integers(18, 90, n).astype(float).tolist(),
        "plan": [("free", "pro", "team")[i] for i in rng.choice(3, n, p=mix)],
    }


Record = tuple[str, Any]  # ("p", PredictionBatch) | ("f", FeedbackBatch) | ("t", TelemetryBatch)


def story(seed: int = 0, batches: int = 40, shift_at: int = 20) -> list[Record]:
    """Predictions, all labelled, telemetry every 4 batches; inputs and errors change at ``shift_at``."""
    rng = np.random.default_rng(seed)
    out: list[Record] = []
    for b in range(batches):
        shifted = b >= shift_at
        ids = [f"e{b}-{j}" for j in range(BATCH)]
        times = T0 + (b * BATCH + np.arange(BATCH)) * 100
        p = rng.random(BATCH)
        out.append(
            (
                "p",
                PredictionBatch(
                    "m",
                    "v1",
                    ids,
                    times,
                    rng.lognormal(2.5, 0.3, BATCH) * (3 if shifted else 1),
                    np.zeros(BATCH, bool),
                    features=features(rng, BATCH, shifted),
                    prediction=[{"1": float(x)} for x in p],
                ),
            )
        )
        wrong = rng.random(BATCH) < (0.4 if shifted else 0.1)
        labels = [
            ("0" if x >= 0.5 else "1") if w else ("1" if x >= 0.5 else "0")
            for x, w in zip(p, wrong, strict=True)
        ]
        out.append(("f", FeedbackBatch("m", ids, labels, times + 500)))
        if b % 4 == 0:
            n = 8
            t = T0 + b * BATCH * 100 + np.arange(n) * 3000
            out.append(
                (
                    "t",
                    TelemetryBatch(
                        "m",
                        "host-a",
                        t,
                        rng.normal(40, 3, n),
                        1e9 + rng.normal(0, 1e6, n),
                        rng.normal(30, 1, n),
                        rng.integers(0, 5, n).astype(float),
                    ),
                )
            )
    return out


class Pipeline:
    """Metrics engine (for the label join) plus detection engine, fed like the worker feeds them."""

    def __init__(
        self, cfg: DetectionConfig = CFG, profile: tuple[str, ReferenceProfile] | None = None
    ) -> None:
        self.metrics = MetricsEngine(EngineConfig(), 0)
        self.det = DetectionEngine(cfg, 0, lambda m, v: profile, task=lambda m: TaskConfig("classification"))
        self.metrics.match_listeners.append(self.det.on_matches)
        self.signals: list[dict[str, Any]] = []
        self.cells: dict[bytes, bytes] = {}
        self.metric_cells: dict[bytes, bytes] = {}

    def feed(self, records: list[Record], start: int = 0) -> None:
        for off, (kind, b) in enumerate(records[start:], start):
            topic = {"p": "predictions:0", "f": "feedback:0", "t": "telemetry:0"}[kind]
            if kind == "p":
                self.metrics.on_predictions(b, topic, off, now_ms=0)
                self.det.on_predictions(b, topic, off, 0, now_ms=off)
            elif kind == "f":
                self.metrics.on_feedback(b, topic, off, now_ms=0)
            else:
                self.det.on_telemetry(b, topic, off, now_ms=off)
            self.flush()

    def flush(self) -> None:
        self.signals.extend(self.det.take_signals())
        for cells, writes in (
            (self.metric_cells, self.metrics.take_writes()),
            (self.cells, self.det.take_writes()),
        ):
            for k, v in writes:
                if v is None:
                    cells.pop(k, None)
                else:
                    cells[k] = v

    def state(self) -> dict[bytes, Any]:
        return {k: orjson.loads(v) for k, v in self.cells.items() if not k.startswith(b'["d:silence')}


def kinds(signals: list[dict[str, Any]], kind: str, **match: Any) -> list[dict[str, Any]]:
    return [s for s in signals if s["kind"] == kind and all(s.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def full_run() -> Pipeline:
    p = Pipeline()
    p.feed(story(batches=SHIFT_AT + 20, shift_at=SHIFT_AT))
    return p


def test_every_signal_decodes_as_a_signal_v1(full_run: Pipeline) -> None:
    assert full_run.signals
    for s in full_run.signals:
        msgspec.json.decode(orjson.dumps(s), type=SignalV1)


def test_auto_profile_then_data_drift_names_the_shifted_features_ranked(full_run: Pipeline) -> None:
    profiles = full_run.det.take_profiles()  # already taken? the pipeline never takes them
    assert [(m, v, p.source) for m, v, p, _ in profiles] == [("m", "v1", "auto:first-2000")]
    assert profiles[0][3] == profiles[0][2].to_json()  # serialised once, the same bytes
    shift_ms = T0 + SHIFT_AT * BATCH * 100
    drift = kinds(full_run.signals, "data_drift", active=True)
    windowed = [s for s in drift if s["detector"] != "page_hinkley"]
    assert windowed and all(s["window_start_ms"] >= shift_ms - 1000 * 100 for s in windowed)
    assert {s["feature"] for s in windowed} == {"amount", "plan"}
    first_end = min(s["window_end_ms"] for s in windowed)
    first = sorted(
        (s for s in windowed if s["window_end_ms"] == first_end), key=lambda s: s["evidence"]["rank"]
    )
    assert [s["evidence"]["rank"] for s in first] == list(range(1, len(first) + 1))
    assert first[0]["score"] >= first[-1]["score"] >= 0.1
    ph = [s for s in drift if s["detector"] == "page_hinkley"]
    assert (
        ph
        and {s["feature"] for s in ph} <= {"amount", "age"}
        and all(s["detected_at_ms"] >= shift_ms for s in ph)
    )


def test_concept_drift_is_found_after_the_error_rate_jumps(full_run: Pipeline) -> None:
    concept = kinds(full_run.signals, "concept_drift")
    shift_ms = T0 + SHIFT_AT * BATCH * 100
    assert {s["detector"] for s in concept} == {"adwin", "page_hinkley"}
    assert all(s["detected_at_ms"] >= shift_ms for s in concept)
    assert any(s["evidence"]["direction"] == "up" for s in concept)


def test_latency_anomaly_is_signalled_when_latency_triples(full_run: Pipeline) -> None:
    anomalies = kinds(full_run.signals, "anomaly", active=True)
    assert anomalies and all(s["evidence"]["subject"] == "serving" for s in anomalies)
    assert min(s["detected_at_ms"] for s in anomalies) >= T0 + SHIFT_AT * BATCH * 100


def test_no_signal_at_all_on_a_stationary_story() -> None:
    p = Pipeline()
    p.feed(story(seed=3, batches=40, shift_at=10**9))
    assert [s for s in p.signals if s["kind"] != "silence"] == []


def test_a_replay_changes_nothing_and_signals_nothing() -> None:
    records = story(seed=1, batches=24, shift_at=12)
    p = Pipeline()
    p.feed(records)
    before, n = p.state(), len(p.signals)
    p.feed(records[len(records) // 2 :], start=len(records) // 2)  # at-least-once: the tail comes again
    assert p.state() == before
    assert len(p.signals) == n


def test_commits_prune_the_concept_pair_guard_and_a_replay_above_them_still_counts_nothing() -> None:
    records = story(seed=1, batches=24, shift_at=12)
    plain, pruned = Pipeline(), Pipeline()
    plain.feed(records)
    for off in range(len(records)):  # a commit after every record, three records behind
        pruned.feed(records[: off + 1], start=off)
        pruned.det.committed({"predictions:0": off - 2, "feedback:0": off - 2})

    def pairs(p: Pipeline) -> int:
        return sum(len(v["pairs"]) for k, v in p.state().items() if k.startswith(b'["d:concept"'))

    assert [s["signal_id"] for s in pruned.signals] == [s["signal_id"] for s in plain.signals]
    assert pairs(plain) >= 5 * pairs(pruned) > 0, (pairs(plain), pairs(pruned))  # 24 against 3
    before, n = pruned.state(), len(pruned.signals)
    pruned.feed(records[-3:], start=len(records) - 3)  # replayed from the last commit
    assert pruned.state() == before
    assert len(pruned.signals) == n


@pytest.mark.parametrize("cut", [7, 40, 61, 95])
def test_restore_from_cells_continues_exactly_like_an_uninterrupted_run(cut: int) -> None:
    records = story(seed=2, batches=40, shift_at=20)
    whole = Pipeline()
    whole.feed(records)
    first = Pipeline()
    first.feed(records[:cut])
    second = Pipeline()  # a new worker: both engines rebuilt from what the first one persisted
    second.metrics.restore(first.metric_cells.items(), now_ms=0)
    second.det.restore(first.cells.items())
    second.cells = dict(first.cells)
    second.feed(records, start=cut)
    assert second.state() == whole.state()
    ids = {s["signal_id"] for s in first.signals + second.signals}
    assert ids == {s["signal_id"] for s in whole.signals}


def test_a_published_profile_is_used_and_replacing_it_clears_the_verdicts() -> None:
    rng = np.random.default_rng(5)
    b = ProfileBuilder()
    b.add(features(rng, 5000, shifted=False))
    old = b.build("m", None, created_ms=0, source="test")
    current: list[tuple[str, ReferenceProfile]] = [(old.fingerprint, old)]
    cfg = replace(CFG, data=replace(CFG.data, auto_profile_events=0))
    p = Pipeline(cfg)
    p.det.profiles = lambda m, v: current[0]
    shifted = [r for r in story(seed=6, batches=16, shift_at=0) if r[0] == "p"]
    p.feed(shifted[:8])
    assert {s["feature"] for s in kinds(p.signals, "data_drift", active=True)} >= {"amount", "plan"}
    b2 = ProfileBuilder()
    b2.add(features(rng, 5000, shifted=True))
    new = b2.build("m", None, created_ms=1, source="test")
    current[0] = (new.fingerprint, new)
    n = len(p.signals)
    p.feed(shifted, start=8)
    after = p.signals[n:]
    cleared = {s["feature"] for s in after if s["kind"] == "data_drift" and not s["active"]}
    assert cleared >= {"amount", "plan"}
    assert not [
        s for s in after if s["kind"] == "data_drift" and s["active"] and s["detector"] != "page_hinkley"
    ]


def test_silence_fires_once_then_resumes() -> None:
    p = Pipeline()
    rec = [r for r in story(batches=2) if r[0] == "p"]
    p.det.on_predictions(rec[0][1], "predictions:0", 0, 0, now_ms=1_000)
    p.det.advance(now_ms=3_000)
    p.det.advance(now_ms=7_000)
    p.det.advance(now_ms=9_000)
    p.det.on_predictions(rec[1][1], "predictions:0", 1, 0, now_ms=10_000)
    sil = [(s["active"], s["labels"]["stream"]) for s in p.det.take_signals() if s["kind"] == "silence"]
    assert sil == [(True, "predictions"), (False, "predictions")]


def test_an_unreadable_cell_restarts_that_monitor_instead_of_failing() -> None:
    p = Pipeline()
    p.feed(story(batches=6))
    cells = dict(p.cells)
    key = next(k for k in cells if k.startswith(b'["d:concept"'))
    cells[key] = b'{"v": 99}'
    eng = DetectionEngine(CFG, 0, lambda m, v: None)
    n = eng.restore(cells.items())
    assert n == len(cells) - 1 and not eng.concept and eng.data


@pytest.mark.parametrize(("adwin", "ph"), [(True, True), (True, False), (False, True), (False, False)])
def test_concept_detectors_follow_the_settings(adwin: bool, ph: bool) -> None:
    from streams.core.detection.concept import concept_detectors
    from streams.core.detection.config import ConceptConfig
    from streams.core.drift.adwin import Adwin
    from streams.core.drift.page_hinkley import PageHinkley
    from streams.core.drift.sequential import Standardized

    cfg = ConceptConfig(
        adwin=adwin, adwin_delta=1e-3, page_hinkley=ph, ph_threshold=40.0, ph_delta=0.2, ph_warmup=300
    )
    dets = concept_detectors(cfg)
    assert sorted(dets) == sorted(name for name, on in (("adwin", adwin), ("page_hinkley", ph)) if on)
    if adwin:
        assert isinstance(dets["adwin"], Adwin) and dets["adwin"].delta == 1e-3
    if ph:
        std = dets["page_hinkley"]
        assert isinstance(std, Standardized) and std.warmup == 300
        assert isinstance(std.detector, PageHinkley)
        assert (std.detector.delta, std.detector.threshold, std.detector.mode) == (0.2, 40.0, "up")


def test_the_domain_classifier_names_the_shifted_features(full_run: Pipeline) -> None:
    joint = kinds(full_run.signals, "multivariate_drift", active=True)
    assert joint and all(s["detected_at_ms"] >= T0 + SHIFT_AT * BATCH * 100 for s in joint)
    assert joint[0]["score"] >= 0.75 and set(joint[0]["evidence"]["top_features"][:2]) == {"amount", "plan"}


def telemetry(
    start_s: int, n: int, rss_growth_per_s: float, gpu_util: float, seed: int = 0
) -> TelemetryBatch:
    rng = np.random.default_rng(seed + start_s)
    t = T0 + (start_s + np.arange(n) * 10) * 1000  # one sample every 10 s
    rss = 2e9 + rss_growth_per_s * (t - T0) / 1000 + rng.normal(0, 2e6, n)
    util = np.clip(rng.normal(gpu_util, 1.0, n), 0, 100)
    return TelemetryBatch(
        "m",
        "pod-1",
        t,
        rng.normal(50, 3, n),
        rss,
        rng.normal(40, 1, n),
        np.zeros(n),
        gpus={0: (util, np.full(n, 1e9), np.full(n, 8e9))},
    )


@pytest.mark.parametrize(
    ("growth", "util", "want"),
    [
        (100 * 2**20 / 3600, 50.0, {("memory_leak", True)}),  # 100 MiB/h on 2 GB: a leak
        (0.0, 99.0, {("gpu_saturation", True)}),  # pinned at 99% for an hour
        (0.0, 50.0, set()),  # a healthy process
    ],
)
def test_telemetry_conditions_per_host(growth: float, util: float, want: set[tuple[str, bool]]) -> None:
    eng = DetectionEngine(CFG, 0, lambda m, v: None)
    for i in range(36):  # an hour, a record of 10 samples every 100 s
        eng.on_telemetry(telemetry(i * 100, 10, growth, util), "telemetry:0", i, now_ms=i)
    got = {
        (s["kind"], s["active"]) for s in eng.take_signals() if s["kind"] in ("memory_leak", "gpu_saturation")
    }
    assert got == want
    cells = dict(eng.take_writes())
    restored = DetectionEngine(CFG, 0, lambda m, v: None)
    restored.restore(cells.items())
    assert restored.hosts[("m", "pod-1")].to_json() == eng.hosts[("m", "pod-1")].to_json()


def test_a_failing_monitor_skips_its_batch_and_reports_it_while_the_others_go_on(monkeypatch: Any) -> None:
    from streams.core.detection.data import DataMonitor

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot take this")

    monkeypatch.setattr(DataMonitor, "add", boom)
    p = Pipeline()
    p.feed(story(batches=4))  # raises nothing
    errors = p.det.take_errors()
    assert errors and {m for m, _ in errors} == {"data"} and "cannot take this" in errors[0][1]
    assert p.det.latency and p.det.concept  # the other monitors still ran
