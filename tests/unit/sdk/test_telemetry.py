"""TelemetryReporter and NvmlGpuProbe, with an NVML double (no GPU here)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from streams.events import models as m
from streams.events.codec import Decoder
from streams.sdk import NvmlGpuProbe, TelemetryReporter
from streams.sdk.telemetry import as_name

from . import FakeGpu, FakeNvml, FakeProducer, make_client


def as_event(sample: dict[str, Any]) -> m.TelemetryV1:
    """The sample must be a valid telemetry/v1 event once tagged."""
    return msgspec.convert({"schema": m.TELEMETRY_V1, **sample}, m.TelemetryV1)


# -- NvmlGpuProbe ----------------------------------------------------------------
def test_probe_reads_every_device() -> None:
    nvml = FakeNvml()
    probe = NvmlGpuProbe(nvml)
    assert probe.available
    assert probe.sample() == [
        {"index": 0, "utilization_percent": 37.0, "memory_used_bytes": 3 * 2**30,
         "memory_total_bytes": 80 * 2**30, "temperature_c": 54.0, "power_w": 251.5},
        {"index": 1, "utilization_percent": 99.0, "memory_used_bytes": 3 * 2**30,
         "memory_total_bytes": 80 * 2**30, "temperature_c": 71.0, "power_w": 251.5},
    ]
    probe.shutdown()
    probe.shutdown()
    assert nvml.shutdown_calls == 1
    assert not probe.available and probe.sample() == []


def test_a_failing_field_is_left_out_of_that_device_only() -> None:
    nvml = FakeNvml([FakeGpu(fail={"power"}), FakeGpu(fail={"util", "temperature"}), FakeGpu()])
    samples = NvmlGpuProbe(nvml).sample()
    assert "power_w" not in samples[0] and "utilization_percent" in samples[0]
    assert "utilization_percent" not in samples[1] and "temperature_c" not in samples[1]
    assert samples[1]["power_w"] == 251.5
    assert set(samples[2]) == {"index", "utilization_percent", "memory_used_bytes",
                               "memory_total_bytes", "temperature_c", "power_w"}


def test_out_of_contract_values_are_left_out() -> None:
    nvml = FakeNvml([FakeGpu(util=150, temp=5000, power_mw="n/a")])
    (sample,) = NvmlGpuProbe(nvml).sample()
    assert sample == {"index": 0, "memory_used_bytes": 3 * 2**30,
                      "memory_total_bytes": 80 * 2**30}


def test_failing_init_disables_the_probe_for_good() -> None:
    nvml = FakeNvml(fail_init=True)
    probe = NvmlGpuProbe(nvml)
    assert not probe.available
    assert "NVML Shared Library Not Found" in probe.disabled_reason
    for _ in range(3):
        assert probe.sample() == []
    probe.shutdown()
    assert nvml.shutdown_calls == 0  # never initialised, nothing to release


def test_failing_device_count_disables_and_releases() -> None:
    nvml = FakeNvml(fail_count=True)
    probe = NvmlGpuProbe(nvml)
    assert not probe.available and probe.sample() == []
    assert nvml.shutdown_calls == 1


def test_probe_survives_an_nvml_object_without_functions() -> None:
    probe = NvmlGpuProbe(object())
    assert not probe.available and probe.sample() == []


def test_default_probe_never_raises_without_a_gpu() -> None:
    probe = NvmlGpuProbe()  # real pynvml import; no NVIDIA driver in CI
    samples = probe.sample()
    assert isinstance(samples, list)
    if not probe.available:
        assert samples == []
    probe.shutdown()


# -- TelemetryReporter -------------------------------------------------------------
def test_sample_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "churn-7d9f-abc12")
    with make_client(clock_ms=lambda: 1_700_000_000_000) as client:
        reporter = TelemetryReporter(client, host="node a/1", gpu_probe=False,
                                     inflight=lambda: 3)
        sample = reporter.sample()
    assert "gpus" not in sample
    assert sample["host"] == "node-a-1"
    assert sample["pod"] == "churn-7d9f-abc12"
    assert sample["inflight_requests"] == 3
    assert sample["rss_bytes"] > 0
    event = as_event(sample)
    assert (event.model, event.model_version) == ("churn", "v3")
    assert event.event_time_ms == 1_700_000_000_000
    assert event.cpu_percent >= 0 and 0 <= event.memory_percent <= 100


def test_sample_with_nvml_double() -> None:
    nvml = FakeNvml([FakeGpu(fail={"power"}), FakeGpu()])
    with make_client() as client:
        reporter = TelemetryReporter(client, gpu_probe=NvmlGpuProbe(nvml))
        sample = reporter.sample()
    event = as_event(sample)
    assert event.gpus is not None and len(event.gpus) == 2
    assert event.gpus[0].power_w is None and event.gpus[1].power_w == 251.5
    assert event.gpus[0].utilization_percent == 37.0


def test_unavailable_probe_leaves_gpus_out() -> None:
    with make_client() as client:
        reporter = TelemetryReporter(client, gpu_probe=NvmlGpuProbe(FakeNvml(fail_init=True)))
        assert "gpus" not in reporter.sample()


def test_failing_inflight_and_third_party_probe_are_left_out() -> None:
    class BrokenProbe:
        available = True

        def sample(self) -> list[Any]:
            raise RuntimeError("boom")

        def shutdown(self) -> None:
            pass

    def inflight() -> int:
        raise RuntimeError("no gauge")

    with make_client() as client:
        sample = TelemetryReporter(client, gpu_probe=BrokenProbe(), inflight=inflight).sample()
        negative = TelemetryReporter(client, gpu_probe=False, inflight=lambda: -1).sample()
    assert "gpus" not in sample and "inflight_requests" not in sample
    assert "inflight_requests" not in negative


def test_pod_defaults_to_hostname_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.setenv("HOSTNAME", "pod-from-hostname")
    with make_client() as client:
        assert TelemetryReporter(client, gpu_probe=False).pod == "pod-from-hostname"
    monkeypatch.delenv("HOSTNAME")
    with make_client() as client:
        reporter = TelemetryReporter(client, gpu_probe=False)
        assert reporter.pod is None and "pod" not in reporter.sample()


def test_as_name() -> None:
    assert as_name("ok-1.b:c_d") == "ok-1.b:c_d"
    assert as_name("-weird name") == "weird-name"
    assert as_name("") is None and as_name("...") is None
    assert len(as_name("x" * 500) or "") == 128


def test_reporter_thread_sends_valid_telemetry_records() -> None:
    producer = FakeProducer()
    nvml = FakeNvml()
    client = make_client(producer)
    reporter = client.start_telemetry(interval_s=0.02, gpu_probe=NvmlGpuProbe(nvml),
                                      inflight=lambda: 1)
    deadline = time.monotonic() + 5
    while client.stats().delivered < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.close()
    assert not reporter.running
    assert {r.topic for r in producer.records} == {"driftline.telemetry"}
    decoder = Decoder()
    for rec in producer.records:
        decoded = decoder.decode(rec.value)
        assert decoded.rejected == []
        (event,) = decoded.telemetry
        assert event.gpus is not None and len(event.gpus) == 2
        assert event.inflight_requests == 1
    assert nvml.shutdown_calls == 0  # the caller owns a probe it passed in


def test_reporter_owns_and_releases_the_default_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml()
    monkeypatch.setattr("streams.sdk.telemetry.NvmlGpuProbe", lambda: NvmlGpuProbe(nvml))
    with make_client() as client:
        reporter = client.start_telemetry(interval_s=60)
        assert reporter.gpu_probe is not None and reporter.gpu_probe.available
    assert nvml.shutdown_calls == 1


def test_telemetry_obeys_the_buffer_bound() -> None:
    client = make_client(FakeProducer(deliver=False), max_buffered_events=1)
    reporter = TelemetryReporter(client, gpu_probe=False)
    assert reporter.report_once() is True
    assert reporter.report_once() is False
    s = client.stats()
    assert (s.accepted, s.dropped) == (1, 1)
    client.close(timeout_s=0)


def test_invalid_interval() -> None:
    with make_client() as client, pytest.raises(ValueError):
        TelemetryReporter(client, interval_s=0, gpu_probe=False)
