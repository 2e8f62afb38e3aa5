"""What the Kubernetes probes ask: the worker's /ready, the notifier's /healthz."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.app.factory import create_app, readiness
from streams.cli import Heartbeat, serve_liveness
from streams.config import load_settings


@pytest.fixture()
def app(tmp_path: Path) -> Any:
    """A real faust app, never started: its recovery and rebalance flags are faust's own objects."""
    s = load_settings(env={}, bootstrap_servers="127.0.0.1:1", data_dir=str(tmp_path / "w"))
    return create_app(s).app


def test_not_ready_until_table_recovery_completed(app: Any) -> None:
    ok, body = readiness(app)
    assert not ok and body["status"] == "starting"
    app.tables.recovery.completed.set()  # what faust's Recovery does when the first recovery ends
    ok, body = readiness(app)
    assert ok and body["status"] == "ready"


def test_not_ready_while_restoring_or_rebalancing_again(app: Any) -> None:
    app.tables.recovery.completed.set()  # stays set after the first recovery, so the flags decide
    app.tables.recovery.in_recovery = True
    assert readiness(app)[1]["status"] == "recovering"
    app.tables.recovery.in_recovery = False
    app.rebalancing = True  # faust's on_rebalance_start .. on_rebalance_end
    assert readiness(app)[1]["status"] == "rebalancing"
    app.rebalancing = False
    assert readiness(app)[0]


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_notifier_liveness_follows_the_loop_heartbeat() -> None:
    beat = Heartbeat()
    server = serve_liveness("127.0.0.1", 0, beat, max_age_s=0.5)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        status, body = get(f"{base}/healthz")
        assert status == 200 and body["status"] == "ok"
        time.sleep(0.7)  # the loop did not come round: stalled
        status, body = get(f"{base}/healthz")
        assert status == 503 and body["status"] == "stalled" and body["loop_age_s"] >= 0.5
        beat.beat()
        assert get(f"{base}/healthz")[0] == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
