"""Alerts end to end: the worker turns drift signals into alert events; a CLI silence mutes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import Settings
from tests.integration.conftest import producer, settings_env
from tests.integration.test_detection import (
    BATCH,
    CONFIG,
    TopicReader,
    make_records,
    publish_profile,
    send,
)
from tests.integration.test_ingest import wait_metric

pytestmark = pytest.mark.integration


def alerts_of(reader: TopicReader) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in reader.records if v is not None]


def run_cli(s: Settings, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("silenced", [False, True])
def test_drift_fires_alerts_with_evidence_and_a_silence_mutes_them(
    settings: Settings, config_workers: Any, tmp_path: Path, silenced: bool
) -> None:
    publish_profile(settings, tmp_path)
    silence_id = None
    if silenced:
        silence_id = run_cli(
            settings,
            "silence",
            "add",
            "--match",
            "model=fraud",
            "--duration",
            "1h",
            "--comment",
            "retraining",
            "--by",
            "test",
        ).split()[0]
        assert silence_id in run_cli(settings, "silence", "list")
    worker = config_workers(CONFIG)
    preds, labels = make_records()
    send(settings, preds, "predictions")
    assert wait_metric(worker, "driftline_events_in_total", len(preds) * BATCH, kind="prediction")
    send(settings, labels, "feedback")
    reader = TopicReader(settings, settings.topic("alerts"))
    try:

        def fired(r: TopicReader) -> bool:
            names = {a["signal"] for a in alerts_of(r) if a["status"] == "firing"}
            return {"concept_drift", "drift"} <= names

        assert reader.poll_until(fired, timeout_s=60), alerts_of(reader)
        firing = [a for a in alerts_of(reader) if a["status"] == "firing"]
        concept = next(a for a in firing if a["signal"] == "concept_drift")
        assert concept["severity"] == "critical" and concept["model"] == "fraud"
        assert concept["evidence"]["suggested_action"] == "rollback"
        drift = [a for a in firing if a["signal"] == "drift" and a["labels"].get("kind") == "data_drift"]
        assert {a["labels"].get("feature") for a in drift} >= {"amount", "country"}
        assert all(len(a["fingerprint"]) >= 16 for a in firing)
        muted = [a for a in firing if (a.get("evidence") or {}).get("muted_by")]
        if silenced:
            assert len(muted) == len(firing) and all(
                f"silence:{silence_id}" in a["evidence"]["muted_by"] for a in muted
            )
        else:
            assert not muted
        # one alert per (rule, labels): no storm
        keys = [(a["fingerprint"], a["status"], a["starts_at_ms"]) for a in firing]
        assert len(keys) == len(set(keys))
    finally:
        reader.close()


def test_a_flood_of_malformed_input_fires_invalid_input_and_holds_back_drift_alerts(
    settings: Settings, config_workers: Any, tmp_path: Path
) -> None:
    """Every third record is garbage, keyed by the model as the SDK keys it."""
    publish_profile(settings, tmp_path)
    worker = config_workers(CONFIG)
    preds, _ = make_records()
    p = producer(settings)
    for i, r in enumerate(preds):
        p.produce(settings.topic("predictions"), key=b"fraud", value=orjson.dumps(r))
        if i % 3 == 2:
            p.produce(settings.topic("predictions"), key=b"fraud", value=b"\x00 not an event")
    assert p.flush(30) == 0
    assert wait_metric(worker, "driftline_events_in_total", len(preds) * BATCH, kind="prediction")
    reader = TopicReader(settings, settings.topic("alerts"))
    try:

        def fired(r: TopicReader) -> bool:
            firing = [a for a in alerts_of(r) if a["status"] == "firing"]
            return any(a["signal"] == "invalid_input" for a in firing) and any(
                a["signal"] == "drift" for a in firing
            )

        assert reader.poll_until(fired, timeout_s=60), alerts_of(reader)
        firing = [a for a in alerts_of(reader) if a["status"] == "firing"]
        (bad,) = [a for a in firing if a["signal"] == "invalid_input"]
        assert bad["model"] == "fraud" and bad["severity"] == "critical"
        assert bad["evidence"]["rejected_records"] >= 1 and bad["value"] >= 0.05
        drift = [a for a in firing if a["signal"] == "drift"]
        assert all(f"inhibited_by:{bad['fingerprint']}" in a["evidence"].get("muted_by", []) for a in drift)
    finally:
        reader.close()
