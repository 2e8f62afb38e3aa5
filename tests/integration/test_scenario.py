"""A scenario end to end: simulated model servers (SDK, several processes), a real worker, alerts matched.

``loadtest/scenarios/smoke.yaml`` injects a malformed flood, a silent server
and an error burst on three models next to an untouched control model, with
worker settings shrunk so it runs in about 80 s of traffic. Every incident
must be caught by an alert meant for it, and the report must carry the
fields the load test documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.scenario import run_scenario
from streams.sim import load_scenario

pytestmark = pytest.mark.integration

SMOKE = Path(__file__).resolve().parents[2] / "loadtest" / "scenarios" / "smoke.yaml"


@pytest.mark.timeout(400)
def test_smoke_scenario_alerts_on_every_incident(kafka_bootstrap: str, tmp_path: Path) -> None:
    scenario = load_scenario(SMOKE)
    report = run_scenario(scenario, bootstrap=kafka_bootstrap, out_dir=tmp_path, timeline=False)
    on_disk = json.loads((tmp_path / "scenario-smoke.json").read_text())
    assert on_disk["scenario"] == "smoke" and on_disk["incidents"] == report["incidents"]
    detected = {r["kind"]: r for r in report["incidents"]}
    assert set(detected) == {"malformed_flood", "silence", "error_burst"}
    for kind, r in detected.items():
        assert r["detected"], (kind, report["false_alerts"], report["muted_alerts"])
        assert 0 <= r["time_to_alert_s"] <= r["duration_s"] + scenario.grace_s
    assert detected["malformed_flood"]["alert"]["rule"] == "invalid_input"
    assert detected["silence"]["alert"]["rule"] == "silence"
    assert detected["error_burst"]["alert"]["rule"] in ("anomaly", "serving_error_rate")
    assert report["ok"] and report["missed"] == []
    for key in ("false_alert_count", "false_alerts", "muted_alert_count", "alert_counts", "machine",
                "worker_config", "samples"):
        assert key in report, key
    assert report["false_alert_count"] == len(report["false_alerts"])
    summary = report["summary"]
    assert summary["events_produced"] > 20_000 and summary["events_processed"] > 20_000
    assert summary["produced_events_per_s"] > 0 and summary["lag_records"]["max"] is not None
    assert summary["worker_cpu_percent"]["max"] > 0 and summary["worker_rss_mib"]["max"] > 50
    assert report["fleet"]["processes"] == 2 and not report["fleet"]["failed_processes"]
    assert report["worker_exit_code"] is not None
