"""Tests of streams.notify: channels against real local servers, retry, dedup, routing, secrets."""

from __future__ import annotations

from typing import Any

FIRING: dict[str, Any] = {
    "schema": "driftline.alert/v1",
    "fingerprint": "9f2c4e1a7b3d5f60",
    "status": "firing",
    "severity": "warning",
    "model": "fraud-detector",
    "model_version": "2026-01-01.3",
    "signal": "feature_drift_psi",
    "value": 0.31,
    "threshold": 0.2,
    "window_ms": 3_600_000,
    "starts_at_ms": 1_767_232_800_000,
    "evidence": {"feature": "amount", "drifted_features": ["amount", "country", "hour"], "ref_mean": 84.2,
                 "cur_mean": 131.7, "bins": [0.1, 0.4, 0.3, 0.2], "n": 48211},
    "labels": {"team": "risk", "env": "prod"},
    "annotations": {"summary": "Distribution of feature amount drifted (PSI 0.31 > 0.2).",
                    "runbook_url": "https://runbooks.example/drift"},
}

RESOLVED: dict[str, Any] = {**FIRING, "status": "resolved", "value": 0.12, "ends_at_ms": 1_767_236_400_000}
