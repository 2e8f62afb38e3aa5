"""Test doubles shared by the SDK unit tests: a Kafka producer and an NVML module."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from streams.sdk import DriftlineClient


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes


class FakeKafkaError:
    def __init__(self, reason: str = "delivery failed") -> None:
        self.reason = reason

    def code(self) -> int:
        return -1

    def __str__(self) -> str:
        return self.reason


class FakeProducer:
    """Captures produce() calls; delivery reports are served from poll().

    Parameters
    ----------
    deliver
        False: never report delivery (records stay in flight forever).
    fail_every
        Report every n-th record as failed (0: never).
    buffer_errors
        Raise ``BufferError`` from this many produce() calls first.
    produce_error
        Raise this from every produce() call (after the buffer errors).
    """

    def __init__(self, *, deliver: bool = True, fail_every: int = 0, buffer_errors: int = 0,
                 produce_error: Exception | None = None) -> None:
        self.deliver = deliver
        self.fail_every = fail_every
        self.buffer_errors = buffer_errors
        self.produce_error = produce_error
        self.records: list[Produced] = []
        self.configs: list[dict[str, Any]] = []
        self.buffer_errors_raised = 0
        self.failed_events = 0
        self._reports: list[tuple[Any, int]] = []  # (callback, record number)
        self._lock = threading.Lock()

    def factory(self, config: dict[str, Any]) -> FakeProducer:
        self.configs.append(config)
        return self

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                on_delivery: Any = None) -> None:
        with self._lock:
            if self.buffer_errors > 0:
                self.buffer_errors -= 1
                self.buffer_errors_raised += 1
                raise BufferError("Local: Queue full")
            if self.produce_error is not None:
                raise self.produce_error
            assert isinstance(value, bytes)
            self.records.append(Produced(topic, key, value))
            self._reports.append((on_delivery, len(self.records)))

    def poll(self, timeout: float = 0.0) -> int:
        served = 0
        if self.deliver:
            with self._lock:
                reports, self._reports = self._reports, []
            for callback, number in reports:
                failed = self.fail_every and number % self.fail_every == 0
                callback(FakeKafkaError() if failed else None, None)
                served += 1
        if not served and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return served

    def flush(self, timeout: float = 0.0) -> int:
        self.poll(0)
        return len(self._reports)

    def purge(self) -> None:
        with self._lock:
            self._reports = []


def make_client(producer: FakeProducer | None = None, **kwargs: Any) -> DriftlineClient:
    producer = producer or FakeProducer()
    kwargs.setdefault("model", "churn")
    kwargs.setdefault("model_version", "v3")
    kwargs.setdefault("registry", CollectorRegistry())
    kwargs.setdefault("linger_ms", 5)
    return DriftlineClient("fake:9092", producer_factory=producer.factory, **kwargs)


# -- NVML ----------------------------------------------------------------------
class FakeNVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    util: Any = 37
    used: int = 3 * 2**30
    total: int = 80 * 2**30
    temp: Any = 54
    power_mw: Any = 251_500
    fail: set[str] = field(default_factory=set)  # names of the calls that raise


class FakeNvml:
    """Stands in for the ``pynvml`` module (same function names)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[FakeGpu] | None = None, *, fail_init: bool = False,
                 fail_count: bool = False) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu(), FakeGpu(util=99, temp=71)]
        self.fail_init = fail_init
        self.fail_count = fail_count
        self.init_calls = 0
        self.shutdown_calls = 0
        self.NVMLError = FakeNVMLError

    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        gpu: FakeGpu = self.gpus[handle]
        if call in gpu.fail:
            raise FakeNVMLError(f"{call} not supported")
        return gpu

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.fail_init:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        if self.fail_count:
            raise FakeNVMLError("Driver Not Loaded")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=self._gpu(handle, "util").util, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        gpu = self._gpu(handle, "memory")
        return SimpleNamespace(used=gpu.used, total=gpu.total, free=gpu.total - gpu.used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> Any:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(handle, "temperature").temp

    def nvmlDeviceGetPowerUsage(self, handle: int) -> Any:
        return self._gpu(handle, "power").power_mw
