"""Concept drift: sequential detectors on one model version's error stream.

Once labels are joined, each prediction has an error: 0/1 (wrong) for
classification, the absolute error for regression. A change in its mean is
the model getting worse (or better) on live traffic, whatever the inputs did.
ADWIN (Bifet and Gavaldà, 2007) adapts its window to the stream and needs no
scale; Page-Hinkley (Page, 1954) is fed z-scores of the error learned over a
warm-up, so one threshold fits error rates and regression errors alike, and
watches increases only (a model getting better is not an incident); ADWIN
reports changes both ways, with the direction in the signal's evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streams.core.detection.config import ConceptConfig
from streams.core.detection.guard import PairGuard
from streams.core.drift.base import Detection, SequentialDetector
from streams.core.drift.sequential import DEFAULT_ERROR_ADWIN, DEFAULT_ERROR_PH, build, restore
from streams.core.join import Match
from streams.core.outcomes import TaskConfig, error_stream


def concept_detectors(cfg: ConceptConfig) -> dict[str, SequentialDetector]:
    """Fresh detectors for ``cfg``: ADWIN on the raw errors, Page-Hinkley on their z-scores."""
    out: dict[str, SequentialDetector] = {}
    if cfg.adwin:
        out["adwin"] = build(replace(DEFAULT_ERROR_ADWIN, delta=cfg.adwin_delta))
    if cfg.page_hinkley:
        out["page_hinkley"] = build(
            replace(
                DEFAULT_ERROR_PH,
                delta=cfg.ph_delta,
                threshold=cfg.ph_threshold,
                alpha=cfg.ph_alpha,
                warmup=cfg.ph_warmup,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ConceptDrift:
    """One detection, with the event times it spans."""

    detector: str
    detection: Detection
    since_ms: int
    at_ms: int
    events: int
    position: tuple[Any, ...]


class ConceptMonitor:
    """The error-stream detectors of one (model, version), with the guard of the label pairs they saw."""

    def __init__(self, cfg: ConceptConfig) -> None:
        self.detectors: dict[str, SequentialDetector] = concept_detectors(cfg)
        self.guard = PairGuard()
        self.events = 0
        self.since_ms: dict[str, int] = {}

    def add(
        self, matches: list[Match], task: TaskConfig, source: str, offset: int, batch_index: int = 0
    ) -> list[ConceptDrift]:
        """Fold the errors of this version's new matches; returns the detections they caused.

        ``source``, ``offset`` and ``batch_index`` (the record being read) only
        name the detections; what is new is decided per label pair.
        """
        fresh = self.guard.fresh(matches)
        if not fresh:
            return []
        stream = error_stream(fresh, task)
        if not stream:
            return []
        (times_ms, errors), = stream.values()
        values = np.asarray(errors, dtype=np.float64)
        out: list[ConceptDrift] = []
        for name, det in self.detectors.items():
            since = self.since_ms.setdefault(name, times_ms[0])
            for d in det.update_many(values):
                at = times_ms[d.index]
                out.append(
                    ConceptDrift(name, d, since, at, det.n_seen, (source, offset, batch_index, name, d.index))
                )
                since = at
            self.since_ms[name] = since
        self.events += len(errors)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 2,
            "pairs": self.guard.to_json(),
            "events": self.events,
            "since": self.since_ms,
            "detectors": {name: d.to_state() for name, d in self.detectors.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], cfg: ConceptConfig) -> ConceptMonitor:
        if raw.get("v") not in (1, 2):
            raise ValueError(f"concept state: unknown version {raw.get('v')!r}")
        m = cls(cfg)
        if raw["v"] == 2:  # v1 kept an offset guard per source, which a replay's other order defeats
            m.guard = PairGuard.from_json(raw["pairs"])
        m.events = int(raw["events"])
        m.since_ms = {str(k): int(v) for k, v in raw["since"].items()}
        for name, state in raw["detectors"].items():
            if name in m.detectors:  # a detector turned off since is dropped; a new one starts fresh
                m.detectors[name] = restore(state)
        return m
