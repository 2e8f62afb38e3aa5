"""The transition every operational detector reports: a condition started or ended."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Condition"]


@dataclass(frozen=True, slots=True)
class Condition:
    """A transition of an operational condition: it started (``active``) or it ended.

    Detectors return a ``Condition`` only when their state flips, so a stream
    of conditions alternates active, cleared, active, ... per subject, and the
    alerting stage can fire and resolve without floods.

    Attributes
    ----------
    active
        ``True``: the condition now holds; ``False``: it has cleared.
    since_ms
        When the new state began, back-dated where the detector knows it (the
        last time a silent key was seen, the start of the run of samples that
        proved saturation), not when it was confirmed; the confirmation time
        is in ``evidence`` (``detected_ms``) where it differs.
    value
        The measured quantity the decision is based on, in the unit of
        ``threshold`` (each detector documents it).
    threshold
        The level ``value`` was compared with for this transition.
    evidence
        Flat details for the alert: finite numbers and short strings only, so
        that it fits the ``evidence`` of ``driftline.signal/v1`` unchanged.

    Examples
    --------
    >>> c = Condition(active=True, since_ms=1_000, value=130_000.0, threshold=120_000.0,
    ...               evidence={"last_seen_ms": 1_000})
    >>> c.active, c.since_ms, c.value >= c.threshold
    (True, 1000, True)
    """

    active: bool
    since_ms: int
    value: float
    threshold: float
    evidence: dict[str, float | str | int] = field(default_factory=dict)
