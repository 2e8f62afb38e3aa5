"""Typed event contracts, mirroring the JSON Schemas in ``schemas/``.

Why msgspec: one C pass both parses and validates (types, bounds, lengths,
enums), about 1 µs per prediction event, where orjson followed by per-field
checks in Python costs ten to twenty times more. The JSON Schemas remain the
published contract; ``tests/unit/events/test_differential.py`` proves these
structs accept exactly what the schemas accept.

Numbers carry explicit finite bounds (``FINITE``) so that ``1e400`` (which a
JSON parser turns into infinity) is rejected by both sides alike.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MAX_F64 = 1.7976931348623157e308
Finite = Annotated[float, msgspec.Meta(ge=-MAX_F64, le=MAX_F64)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_F64)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
# CPU percent of one process may exceed 100 on several cores (psutil semantics).
CpuPercent = Annotated[float, msgspec.Meta(ge=0.0, le=100_000.0)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]  # up to 9999-12-31
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Patterns end in ``$(?!\n)``, not ``$``: Python's ``re`` (which msgspec uses)
# lets ``$`` match before a final newline, so ``"fraud\n"`` would pass, while
# JSON Schema's ECMA-262 ``$`` does not. With ``(?!\n)`` both dialects agree.
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$(?!\n)")]
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

FeatureValue = Finite | ShortText | bool | None
Features = Annotated[dict[Key, FeatureValue], msgspec.Meta(max_length=1000)]
Probabilities = Annotated[dict[Key, Probability], msgspec.Meta(min_length=1, max_length=1000)]
PredictionValue = Finite | ShortText | Probabilities
Segment = Annotated[dict[Key, ShortText], msgspec.Meta(max_length=32)]
Label = Finite | ShortText

PREDICTION_V1 = "driftline.prediction/v1"
PREDICTION_COLUMNS_V1 = "driftline.prediction-columns/v1"
FEEDBACK_V1 = "driftline.feedback/v1"
FEEDBACK_COLUMNS_V1 = "driftline.feedback-columns/v1"
TELEMETRY_V1 = "driftline.telemetry/v1"
ALERT_V1 = "driftline.alert/v1"
SIGNAL_V1 = "driftline.signal/v1"
DEAD_LETTER_V1 = "driftline.dead-letter/v1"

MAX_BATCH_EVENTS = 100_000


class _Event(msgspec.Struct, forbid_unknown_fields=True, tag_field="schema", omit_defaults=True):
    """Base of every event: strict (unknown fields are an error) and tagged by ``schema``."""


class PredictionV1(_Event, tag=PREDICTION_V1):
    """One model prediction, published by a model server as it answers."""

    event_id: EventId
    model: Name
    model_version: Version
    event_time_ms: EpochMs
    latency_ms: NonNegative
    status: Literal["ok", "error"]
    features: Features = {}
    prediction: PredictionValue | None = None
    segment: Segment | None = None
    request_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class FeedbackV1(_Event, tag=FEEDBACK_V1):
    """A ground-truth label for an earlier prediction, joined by ``event_id``."""

    event_id: EventId
    model: Name
    label: Label
    event_time_ms: EpochMs


class GpuV1(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One GPU as NVML reports it."""

    index: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    utilization_percent: Percent | None = None
    memory_used_bytes: Count | None = None
    memory_total_bytes: Count | None = None
    temperature_c: Annotated[float, msgspec.Meta(ge=-273.15, le=1000.0)] | None = None
    power_w: NonNegative | None = None


class TelemetryV1(_Event, tag=TELEMETRY_V1):
    """Resource usage of one model-server process, sampled periodically."""

    host: Name
    model: Name
    event_time_ms: EpochMs
    cpu_percent: CpuPercent
    rss_bytes: Count
    memory_percent: Percent
    model_version: Version | None = None
    pod: Name | None = None
    inflight_requests: Count | None = None
    gpus: Annotated[list[GpuV1], msgspec.Meta(max_length=64)] | None = None


Batch = Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]


class PredictionColumnsV1(_Event, tag=PREDICTION_COLUMNS_V1):
    """Column-oriented batch of predictions of one model version.

    Each field is an array, one entry per event, so that the worker decodes a
    whole batch into numpy arrays without building one dict per event. All
    arrays must have the same length (checked after decoding: JSON Schema
    cannot state it).
    """

    model: Name
    model_version: Version
    event_id: Annotated[list[EventId], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]
    event_time_ms: list[EpochMs]
    latency_ms: list[NonNegative]
    status: list[Literal["ok", "error"]]
    features: Annotated[dict[Key, list[FeatureValue]], msgspec.Meta(max_length=1000)] = {}
    prediction: list[PredictionValue | None] | None = None
    segment: Annotated[dict[Key, list[ShortText | None]], msgspec.Meta(max_length=32)] | None = None
    request_id: list[Annotated[str, msgspec.Meta(max_length=256)] | None] | None = None


class FeedbackColumnsV1(_Event, tag=FEEDBACK_COLUMNS_V1):
    """Column-oriented batch of labels of one model."""

    model: Name
    event_id: Annotated[list[EventId], msgspec.Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]
    label: list[Label]
    event_time_ms: list[EpochMs]


SingleEvent = PredictionV1 | FeedbackV1 | TelemetryV1
ColumnBatch = PredictionColumnsV1 | FeedbackColumnsV1
KNOWN_SCHEMAS = frozenset(
    {PREDICTION_V1, PREDICTION_COLUMNS_V1, FEEDBACK_V1, FEEDBACK_COLUMNS_V1, TELEMETRY_V1}
)
EVENT_KIND = {
    PREDICTION_V1: "prediction",
    PREDICTION_COLUMNS_V1: "prediction",
    FEEDBACK_V1: "feedback",
    FEEDBACK_COLUMNS_V1: "feedback",
    TELEMETRY_V1: "telemetry",
}


class DeadLetterV1(msgspec.Struct, tag_field="schema", tag=DEAD_LETTER_V1, omit_defaults=True):
    """A record (or one event of a batch) that the worker could not accept.

    ``original_b64`` holds the exact bytes read from Kafka (the whole record,
    or the one event's own JSON when only part of a batch was bad), so a fixed
    consumer can replay it.
    """

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_b64: str
    original_size_bytes: int
    received_ms: int
    batch_index: int | None = None
    source_key_b64: str | None = None


Evidence = dict[Key, Finite | ShortText | bool | list[Finite | ShortText] | None]
Fingerprint = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16,64}$(?!\n)")]
SignalKind = Literal["concept_drift", "data_drift", "prediction_drift", "multivariate_drift", "anomaly",
                     "memory_leak", "silence", "gpu_saturation",
                     "invalid_input"]


class SignalV1(msgspec.Struct, tag_field="schema", tag=SIGNAL_V1, omit_defaults=True):
    """One detector's verdict, for the alerting stage (see ``schemas/signal.v1.json``).

    ``active`` is true for a detection or a condition that holds, false when a
    condition (silence, leak, saturation, anomaly) has cleared. ``signal_id``
    is derived from the detector, its subject and the input position that
    triggered it, so a replay after a crash repeats the same id and the
    alerting stage can drop the duplicate.
    """

    signal_id: Fingerprint
    kind: SignalKind
    detector: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    model: Name
    active: bool
    score: Finite
    threshold: Finite | None
    p_value: Probability | None
    window_start_ms: EpochMs
    window_end_ms: EpochMs
    detected_at_ms: EpochMs
    model_version: Version | None = None
    feature: Key | None = None
    since_ms: EpochMs | None = None
    evidence: Evidence = {}
    labels: dict[Key, ShortText] = {}


class AlertV1(msgspec.Struct, tag_field="schema", tag=ALERT_V1, omit_defaults=True):
    """A state change of one alert (firing or resolved), keyed by ``fingerprint``."""

    fingerprint: Fingerprint
    status: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"]
    model: Name
    signal: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    value: Finite | None
    threshold: Finite | None
    window_ms: Count
    starts_at_ms: EpochMs
    model_version: Version | None = None
    ends_at_ms: EpochMs | None = None
    evidence: Evidence = {}
    labels: dict[Key, ShortText] = {}
    annotations: dict[Key, Annotated[str, msgspec.Meta(max_length=8192)]] = {}
