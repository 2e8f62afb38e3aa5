"""Host anomaly thresholds are calibrated per host: noisy-but-normal telemetry is not an incident."""

from __future__ import annotations

import numpy as np
import orjson

from streams.core.batches import TelemetryBatch
from streams.core.detection.config import DetectionConfig
from streams.core.detection.hosts import HostMonitor

T0 = 1_800_000_000_000


def telemetry(rng: np.random.Generator, start: int, n: int, *, spike: bool = False) -> TelemetryBatch:
    """One sample a second; CPU % and in-flight requests vary as noise (AR-free), the rest is steady."""
    cpu = np.full(n, 98.0) if spike else np.clip(rng.normal(40, 10, n), 0, None)
    inflight = np.full(n, 60.0) if spike else rng.poisson(5, n).astype(float)
    return TelemetryBatch(
        "m", "host-a", T0 + (start + np.arange(n)) * 1000, cpu, 1e9 + rng.normal(0, 1e6, n),
        rng.normal(30, 1, n), inflight,
    )


def feed(mon: HostMonitor, rng: np.random.Generator, batches: int, start: int = 0, **kw: bool) -> list[dict]:
    out = []
    for b in range(batches):
        out += mon.add(telemetry(rng, start + b * 10, 10, **kw), "telemetry:0", start + b)
    return [s for s in out if s["kind"] == "anomaly"]


def test_noisy_normal_hosts_stay_quiet_and_a_spike_is_found() -> None:
    rng = np.random.default_rng(1)
    mon = HostMonitor(DetectionConfig(), "m", "host-a")
    assert feed(mon, rng, 200) == []  # 2,000 samples: trees built, threshold calibrated, no alarm
    assert mon.threshold is not None and mon.threshold > DetectionConfig().anomaly.threshold
    got = feed(mon, rng, 2, start=200, spike=True)
    assert [s["active"] for s in got] == [True]
    assert got[0]["threshold"] == mon.threshold


def test_the_calibrated_threshold_survives_a_restore() -> None:
    rng = np.random.default_rng(2)
    mon = HostMonitor(DetectionConfig(), "m", "host-a")
    feed(mon, rng, 60)
    again = HostMonitor.from_json(orjson.loads(orjson.dumps(mon.to_json())), DetectionConfig(), "m", "host-a")
    assert again.threshold == mon.threshold and again.calibration == mon.calibration
