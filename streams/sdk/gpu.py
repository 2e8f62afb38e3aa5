"""GPU sampling through NVML, degrading to "no GPU" on any failure.

Why so defensive: most model servers run where there is no NVIDIA driver, and
monitoring must never be the reason a server fails to start or a telemetry
thread dies. So every NVML failure (no ``pynvml`` module, no driver library,
``NVMLError``, anything) disables the probe once and for all, and a failure
reading one field of one device only leaves that field out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol, Required, TypedDict, runtime_checkable

log = logging.getLogger("streams.sdk.gpu")

MAX_GPUS = 64  # the telemetry contract's limit
_MAX_INDEX = 1023
_MAX_F64 = 1.7976931348623157e308
_MAX_COUNT = 2**63 - 1


class GpuSample(TypedDict, total=False):
    """One device as the ``driftline.telemetry/v1`` ``gpus`` items describe it."""

    index: Required[int]
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float
    power_w: float


@runtime_checkable
class GpuProbe(Protocol):
    """What :class:`~streams.sdk.telemetry.TelemetryReporter` needs from a GPU source."""

    @property
    def available(self) -> bool: ...

    def sample(self) -> list[GpuSample]: ...

    def shutdown(self) -> None: ...


class NvmlGpuProbe:
    """Samples every NVIDIA GPU visible to this process through NVML.

    Parameters
    ----------
    nvml
        An object with the ``pynvml`` functions (``nvmlInit``,
        ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``,
        ``nvmlDeviceGetUtilizationRates``, ``nvmlDeviceGetMemoryInfo``,
        ``nvmlDeviceGetTemperature``, ``nvmlDeviceGetPowerUsage``,
        ``nvmlShutdown``). ``None`` imports ``pynvml`` (package
        ``nvidia-ml-py``). Tests pass a fake.

    Notes
    -----
    ``sample()`` never raises. When NVML cannot be initialised the probe is
    disabled: ``available`` is False and ``sample()`` returns ``[]`` forever,
    so telemetry simply carries no ``gpus`` field.
    """

    def __init__(self, nvml: Any = None) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []
        self._initialised = False
        self.disabled_reason = ""
        try:
            if nvml is None:
                import pynvml

                nvml = pynvml
            nvml.nvmlInit()
        except Exception as exc:  # any failure at all means "no GPU", never an error
            self.disabled_reason = _describe(exc)
            log.debug("NVML unavailable, GPU telemetry disabled: %s", self.disabled_reason)
            return
        self._nvml = nvml
        self._initialised = True
        try:
            count = int(nvml.nvmlDeviceGetCount())
            for index in range(min(count, MAX_GPUS, _MAX_INDEX + 1)):
                try:
                    self._handles.append((index, nvml.nvmlDeviceGetHandleByIndex(index)))
                except Exception as exc:
                    log.debug("NVML device %d skipped: %s", index, _describe(exc))
        except Exception as exc:
            self.disabled_reason = _describe(exc)
            log.debug("NVML device count failed, GPU telemetry disabled: %s", exc)
            self.shutdown()

    @property
    def available(self) -> bool:
        """True while NVML is initialised and at least one device was found."""
        return self._initialised and bool(self._handles)

    def sample(self) -> list[GpuSample]:
        """Read every device; a field NVML cannot give is left out."""
        with self._lock:
            if not self.available:
                return []
            try:
                return [self._sample_one(index, handle) for index, handle in self._handles]
            except Exception as exc:  # defensive: the per-field guards should catch all
                log.debug("NVML sample failed: %s", _describe(exc))
                return []

    def _sample_one(self, index: int, handle: Any) -> GpuSample:
        nvml = self._nvml
        out: GpuSample = {"index": index}
        try:
            util = _number(nvml.nvmlDeviceGetUtilizationRates(handle).gpu, 0.0, 100.0)
            if util is not None:
                out["utilization_percent"] = util
        except Exception:
            pass
        try:
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = _count(mem.used), _count(mem.total)
            if used is not None:
                out["memory_used_bytes"] = used
            if total is not None:
                out["memory_total_bytes"] = total
        except Exception:
            pass
        try:
            sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
            temp = _number(nvml.nvmlDeviceGetTemperature(handle, sensor), -273.15, 1000.0)
            if temp is not None:
                out["temperature_c"] = temp
        except Exception:
            pass
        try:
            power = _number(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 0.0, _MAX_F64)
            if power is not None:
                out["power_w"] = power
        except Exception:
            pass
        return out

    def shutdown(self) -> None:
        """Release NVML (``nvmlShutdown``) if this probe initialised it; idempotent."""
        with self._lock:
            if not self._initialised:
                return
            self._initialised = False
            self._handles = []
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown failed: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _number(value: Any, lo: float, hi: float) -> float | None:
    """``value`` as a float inside the contract's range, else None (field left out)."""
    if isinstance(value, bool):
        return None
    v = float(value)
    return v if lo <= v <= hi else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    v = int(value)
    return v if 0 <= v <= _MAX_COUNT else None
