"""The worker's readiness page against a real broker: 503 while it restores state, 200 once it has.

The changelog of the worker's state table is pre-filled with tombstones (so
the table ends up empty and no stage sees a foreign cell), which faust must
read back before the worker processes anything: a recovery long enough to be
seen by polling. /healthz answers 200 all along: liveness never waits on
recovery.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from tests.integration.conftest import WorkerProcess, producer

pytestmark = pytest.mark.integration

TOMBSTONES_PER_PARTITION = 5_000
RECOVERING = {"starting", "recovering", "rebalancing"}


def get(port: int, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return None  # the web server is not up yet


def fill_changelog(s: Settings) -> None:
    p = producer(s)
    topic = f"{s.app_id}-state-changelog"
    for partition in range(s.partitions):
        for i in range(TOMBSTONES_PER_PARTITION):
            while True:
                try:
                    p.produce(topic, key=b"ready-test-%d" % (i % 1000), value=None, partition=partition)
                    break
                except BufferError:  # librdkafka's local queue is full: let it drain
                    p.poll(0.1)
    assert p.flush(30) == 0


def test_ready_is_503_until_table_recovery_is_done_then_200(settings: Settings, tmp_path: Path) -> None:
    fill_changelog(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    seen: list[tuple[int, str]] = []
    live_while_not_ready: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, f"worker exited:\n{worker.log.read_text()[-3000:]}"
            answer = get(settings.web_port, "/ready")
            if answer is not None:
                status, body = answer
                seen.append((status, body["status"]))
                if status == 200:
                    break
                assert status == 503 and body["status"] in RECOVERING and body["reason"], body
                if not live_while_not_ready:
                    health = get(settings.web_port, "/healthz")
                    assert health is not None
                    live_while_not_ready.append(health[0])
            time.sleep(0.05)
        assert seen and seen[-1][0] == 200, f"never ready: {seen[-5:]}\n{worker.log.read_text()[-3000:]}"
        assert seen[0][0] == 503, f"ready at once: the state restore was not observed ({seen[:3]})"
        assert (503, "recovering") in seen, "503 while faust reads the changelog back"
        assert live_while_not_ready == [200], "liveness answers while the state is restored"
        stable = [get(settings.web_port, "/ready") for _ in range(5)]
        assert all(a is not None and a[0] == 200 and a[1]["assigned_partitions"] for a in stable), stable
    finally:
        worker.stop()
