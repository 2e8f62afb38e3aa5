"""Typed signals: what every detector hands to the alerting stage.

A signal is plain JSON data shaped by ``schemas/signal.v1.json`` (the
``SignalV1`` struct in :mod:`streams.events.models` decodes it). Its
``signal_id`` is a hash of the detector, its subject and the input position
that triggered it, never of the wall clock: a worker that crashes after
sending a signal but before committing its input replays that input, decides
the same thing again and sends the same id, which the alerting stage drops.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

import orjson

from streams.core.ops.condition import Condition

SIGNAL_V1 = "driftline.signal/v1"
Kind = Literal[
    "concept_drift",
    "data_drift",
    "prediction_drift",
    "multivariate_drift",
    "anomaly",
    "memory_leak",
    "silence",
    "gpu_saturation",
    "invalid_input",
]
KINDS: tuple[str, ...] = get_args(Kind)
_MAX_TEXT = 1024
_MAX_LIST = 64


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _evidence_value(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) < 2**63:
        return v
    if isinstance(v, int | float):
        return _finite(v)
    if isinstance(v, str):
        return v[:_MAX_TEXT]
    if isinstance(v, list | tuple):
        out = [_evidence_value(x) for x in v[:_MAX_LIST]]
        return [x for x in out if x is not None and not isinstance(x, bool | list)]
    return str(v)[:_MAX_TEXT]


def signal_id(*parts: Any) -> str:
    """A stable 16-byte hex id of ``parts`` (JSON-encoded, so types matter).

    >>> signal_id("adwin", "m", "v1", None, "predictions:0", 42) == signal_id("adwin", "m", "v1", None,
    ...                                                                           "predictions:0", 42)
    True
    >>> len(signal_id("x"))
    32
    """
    return hashlib.blake2b(orjson.dumps(list(parts)), digest_size=16).hexdigest()


def make_signal(
    *,
    kind: Kind,
    detector: str,
    model: str,
    active: bool,
    score: float,
    window_start_ms: int,
    window_end_ms: int,
    detected_at_ms: int,
    position: tuple[Any, ...],
    model_version: str | None = None,
    feature: str | None = None,
    threshold: float | None = None,
    p_value: float | None = None,
    since_ms: int | None = None,
    evidence: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build one signal as JSON data; ``position`` identifies the input that triggered it.

    Non-finite numbers become ``null`` (JSON has no NaN) and evidence is
    clipped to the schema's bounds, so a detector can pass what it has.

    >>> s = make_signal(kind="concept_drift", detector="adwin", model="m", active=True, score=0.1,
    ...                 window_start_ms=0, window_end_ms=10, detected_at_ms=10, position=("p:0", 7),
    ...                 evidence={"direction": "up", "mean_after": float("nan")})
    >>> s["schema"], s["evidence"], "feature" in s
    ('driftline.signal/v1', {'direction': 'up', 'mean_after': None}, False)
    """
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    lbl = dict(labels or {})
    p = _finite(p_value)
    out: dict[str, Any] = {
        "schema": SIGNAL_V1,
        "signal_id": signal_id(
            kind, detector, model, model_version, feature, sorted(lbl.items()), active, *position
        ),
        "kind": kind,
        "detector": detector,
        "model": model,
        "active": bool(active),
        "score": _finite(score) or 0.0,
        "threshold": _finite(threshold),
        "p_value": None if p is None else min(max(p, 0.0), 1.0),
        "window_start_ms": max(int(window_start_ms), 0),
        "window_end_ms": max(int(window_end_ms), 0),
        "detected_at_ms": max(int(detected_at_ms), 0),
    }
    if model_version is not None:
        out["model_version"] = model_version
    if feature is not None:
        out["feature"] = feature
    if since_ms is not None:
        out["since_ms"] = max(int(since_ms), 0)
    if evidence:
        out["evidence"] = {str(k)[:128]: _evidence_value(v) for k, v in evidence.items()}
    if lbl:
        out["labels"] = {k[:128]: str(v)[:_MAX_TEXT] for k, v in lbl.items()}
    return out


def condition_signal(
    cond: Condition,
    *,
    kind: Kind,
    detector: str,
    model: str,
    at_ms: int,
    position: tuple[Any, ...],
    model_version: str | None = None,
    labels: Mapping[str, str] | None = None,
    window_start_ms: int | None = None,
) -> dict[str, Any]:
    """The signal of an operational :class:`~streams.core.ops.condition.Condition` transition at ``at_ms``.

    The window runs from the condition's ``since_ms`` (or ``window_start_ms``) to ``at_ms``; score and
    threshold are the condition's own value and threshold.
    """
    return make_signal(
        kind=kind,
        detector=detector,
        model=model,
        model_version=model_version,
        active=cond.active,
        score=float(cond.value),
        threshold=float(cond.threshold),
        window_start_ms=cond.since_ms if window_start_ms is None else window_start_ms,
        window_end_ms=at_ms,
        detected_at_ms=at_ms,
        since_ms=cond.since_ms,
        position=position,
        labels=labels,
        evidence=dict(cond.evidence),
    )
