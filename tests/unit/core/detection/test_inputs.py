"""Invalid input through the detection engine: signals, replay safety, restore."""

from __future__ import annotations

import msgspec
import orjson

from streams.core.alerting.evaluate import RuleEvaluator
from streams.core.alerting.lifecycle import Lifecycle
from streams.core.alerting.rules import DEFAULT_RULES
from streams.core.detection.config import DetectionConfig
from streams.core.detection.engine import DetectionEngine
from streams.events.models import SignalV1

T0 = 1_800_000_000_000
SRC = "predictions:0"


def engine() -> DetectionEngine:
    return DetectionEngine(DetectionConfig(), 0, lambda m, v: None)


def feed(eng: DetectionEngine, start: int, counts: list[tuple[int, int, int, int]]) -> list[dict]:
    for i, c in enumerate(counts):
        eng.on_input("m", c, SRC, start + i, T0 + (start + i) * 1000)
    return eng.take_signals()


GOOD = (500, 1, 0, 0)
GARBAGE = (0, 0, 0, 1)


def test_a_flood_of_undecodable_records_signals_once_and_clears_after_it() -> None:
    eng = engine()
    assert feed(eng, 0, [GOOD] * 10) == []
    got = feed(eng, 10, [GOOD, GARBAGE] * 5)
    assert [(s["kind"], s["active"]) for s in got] == [("invalid_input", True)]
    sig = msgspec.json.decode(orjson.dumps(got[0]), type=SignalV1)
    assert sig.model == "m" and sig.score >= 0.05 and sig.evidence["rejected_records"] >= 1
    eng.advance(T0 + 200_000)
    assert [(s["kind"], s["active"]) for s in eng.take_signals()] == [("invalid_input", False)]


def test_a_replayed_record_counts_nothing_and_a_restored_engine_goes_on() -> None:
    eng = engine()
    feed(eng, 0, [GOOD] * 3)
    cells = eng.take_writes()
    assert any(orjson.loads(k)[0] == "d:input" for k, _ in cells)
    again = engine()
    assert again.restore([(k, v) for k, v in cells if v is not None]) >= 1
    assert feed(again, 0, [GARBAGE] * 3) == []  # offsets 0-2 again: already folded
    assert [s["active"] for s in feed(again, 3, [GARBAGE])] == [True]


def test_the_default_rules_alert_on_it_and_hold_back_the_models_drift_alerts() -> None:
    ev, lc = RuleEvaluator(DEFAULT_RULES), Lifecycle()
    eng = engine()
    feed(eng, 0, [GOOD] * 4)
    (bad,) = feed(eng, 4, [GARBAGE] * 2)
    now = T0 + 10_000
    events = [e for o in ev.on_signal(bad, now) for e in lc.observe(o, now)]
    got = [(e["signal"], e["status"], e["severity"]) for e in events]
    assert got == [("invalid_input", "firing", "critical")]
    assert "fail validation" in events[0]["annotations"]["summary"]
    drift = {
        "schema": "driftline.signal/v1", "signal_id": "ab" * 16, "kind": "data_drift", "detector": "ks",
        "model": "m", "model_version": "v1", "feature": "amount", "active": True, "score": 0.4,
        "threshold": 0.1, "window_start_ms": T0, "window_end_ms": now, "detected_at_ms": now,
    }
    (muted,) = [e for o in ev.on_signal(drift, now) for e in lc.observe(o, now)]
    assert muted["evidence"]["muted_by"] == [f"inhibited_by:{events[0]['fingerprint']}"]
