"""Driftline SDK: what model servers import to publish predictions, labels and telemetry.

Two lines instrument a server::

    from streams.sdk import DriftlineClient
    dl = DriftlineClient.from_env(model="churn", model_version="v3")

and then, per request, ``event_id = dl.log_prediction(features, prediction,
latency_ms=...)`` and later ``dl.log_feedback(event_id, label)``. Logging never
blocks on I/O and never raises into the serving path; see
:mod:`streams.sdk.client` for the design and :mod:`streams.sdk.buffer` for the
exact accounting (``accepted == delivered + failed + pending``).

Or, module-level::

    import streams.sdk as driftline
    driftline.connect(model="churn", model_version="v3")
    driftline.log_prediction(features, prediction, latency_ms=3.2)
"""

from streams.sdk.buffer import SdkStats
from streams.sdk.client import (
    DriftlineClient,
    ProducerLike,
    connect,
    default_producer_config,
    get_client,
    log_feedback,
    log_prediction,
    new_event_id,
)
from streams.sdk.gpu import GpuProbe, GpuSample, NvmlGpuProbe
from streams.sdk.telemetry import TelemetryReporter

__all__ = [
    "DriftlineClient",
    "GpuProbe",
    "GpuSample",
    "NvmlGpuProbe",
    "ProducerLike",
    "SdkStats",
    "TelemetryReporter",
    "connect",
    "default_producer_config",
    "get_client",
    "log_feedback",
    "log_prediction",
    "new_event_id",
]
