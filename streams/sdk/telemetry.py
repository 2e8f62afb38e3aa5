"""Periodic resource telemetry of a model-server process.

Why from inside the server: latency regressions are often explained by the
process itself (CPU saturation, memory growth, a GPU at its thermal limit),
and the server knows its model and its in-flight requests, which node-level
exporters do not. Samples travel as ``driftline.telemetry/v1`` events through
the client's bounded buffer, so they obey the same drop rules and accounting
as predictions and can never block serving.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import psutil

from streams.sdk.gpu import GpuProbe, NvmlGpuProbe

if TYPE_CHECKING:
    from streams.sdk.client import DriftlineClient

log = logging.getLogger("streams.sdk.telemetry")

_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:-]")
_MAX_COUNT = 2**63 - 1


def as_name(value: str | None) -> str | None:
    """Coerce a host or pod name into the contract's ``Name`` form, or None if nothing is left.

    Kubernetes and most hostnames already fit; anything else (spaces, unicode)
    is replaced by ``-`` rather than making the whole sample invalid.
    """
    if not value:
        return None
    name = _NOT_NAME_CHARS.sub("-", str(value)).lstrip("._:-")[:128]
    return name or None


class TelemetryReporter:
    """Samples this process every ``interval_s`` and logs it through ``client``.

    Parameters
    ----------
    client
        The client whose buffer carries the samples, and whose model,
        model version and clock they use.
    interval_s
        Seconds between samples.
    host
        Host name in the samples (default ``socket.gethostname()``).
    pod
        Pod name (default the ``POD_NAME`` environment variable, else
        ``HOSTNAME``, which Kubernetes sets to the pod name); omitted if none.
    inflight
        Returns the number of requests being served right now; a failing or
        negative answer leaves ``inflight_requests`` out of that sample.
    gpu_probe
        Source of GPU samples; ``None`` tries NVML (:class:`NvmlGpuProbe`,
        which quietly reports nothing without an NVIDIA driver), ``False``
        disables GPU sampling.

    Notes
    -----
    psutil's process CPU percent is measured since the previous sample
    (primed at construction), so it may exceed 100 on several cores.
    """

    def __init__(
        self,
        client: DriftlineClient,
        interval_s: float = 10.0,
        host: str | None = None,
        pod: str | None = None,
        inflight: Callable[[], int] | None = None,
        gpu_probe: GpuProbe | Literal[False] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._client_ref = weakref.ref(client)
        self._clock_ms = client._clock_ms
        self.model = client.model
        self.model_version = client.model_version
        self.interval_s = interval_s
        self.host = as_name(host or socket.gethostname()) or "unknown"
        if pod is None:
            pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")
        self.pod = as_name(pod)
        self._inflight = inflight
        self._owns_probe = gpu_probe is None
        self.gpu_probe: GpuProbe | None = (
            NvmlGpuProbe() if gpu_probe is None else (gpu_probe or None)
        )
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the baseline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, Any]:
        """One ``driftline.telemetry/v1`` event's fields (without ``schema``).

        Raises only if psutil cannot read this very process; the reporter
        thread catches that and tries again next interval.
        """
        process = self._process
        with process.oneshot():
            cpu = max(0.0, float(process.cpu_percent(None)))
            rss = int(process.memory_info().rss)
            memory = min(100.0, max(0.0, float(process.memory_percent())))
        out: dict[str, Any] = {
            "host": self.host,
            "model": self.model,
            "model_version": self.model_version,
            "event_time_ms": self._clock_ms(),
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "memory_percent": memory,
        }
        if self.pod is not None:
            out["pod"] = self.pod
        inflight = self._read_inflight()
        if inflight is not None:
            out["inflight_requests"] = inflight
        if self.gpu_probe is not None:
            try:
                gpus = [dict(g) for g in self.gpu_probe.sample()]
            except Exception:  # a third-party probe; NvmlGpuProbe itself never raises
                log.debug("GPU probe failed", exc_info=True)
                gpus = []
            if gpus:
                out["gpus"] = gpus[:64]
        return out

    def _read_inflight(self) -> int | None:
        if self._inflight is None:
            return None
        try:
            n = int(self._inflight())
        except Exception:
            log.debug("inflight callback failed", exc_info=True)
            return None
        return n if 0 <= n <= _MAX_COUNT else None

    def report_once(self) -> bool:
        """Sample now and hand the sample to the client; False if sampling failed or it dropped."""
        client = self._client_ref()
        if client is None:
            return False
        try:
            sample = self.sample()
        except Exception:
            log.warning("telemetry sample failed", exc_info=True)
            return False
        return client.log_telemetry(sample)

    # -- thread ----------------------------------------------------------------
    def start(self) -> TelemetryReporter:
        """Start the daemon thread (idempotent); returns self."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"driftline-telemetry-{self.model}", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._client_ref() is None:
                return
            try:
                self.report_once()
            except Exception:  # report_once already guards; belt and braces for a daemon
                log.exception("telemetry report failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release NVML if this reporter opened it; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        if self._owns_probe and self.gpu_probe is not None:
            self.gpu_probe.shutdown()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> TelemetryReporter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
