"""Paths and names shared by the deploy tests."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from streams.config import KAFKA_KEYS, Settings

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "kubernetes"


def settings_env_names() -> set[str]:
    """Every ``DRIFTLINE_*`` variable that streams/config.py reads: a manifest must use no other."""
    names = {f"DRIFTLINE_{f.name.upper()}" for f in fields(Settings)}
    names -= {"DRIFTLINE_METRICS", "DRIFTLINE_DETECTION", "DRIFTLINE_ALERT_RULES", "DRIFTLINE_EXTRA",
              "DRIFTLINE_KAFKA"}
    names |= {f"DRIFTLINE_KAFKA_{k.upper()}" for k in KAFKA_KEYS}
    return names | {"DRIFTLINE_BOOTSTRAP", "DRIFTLINE_CONFIG"}
