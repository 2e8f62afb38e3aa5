"""Invalid input: the share of one model's events that fail validation, over a sliding window.

Events that fail their contract go to the dead-letter topic, one by one, so
nothing is lost; but a model server that starts sending malformed events (a
client library upgrade, a renamed feature, a NaN in a score) is an incident
of its own, and it makes every detector downstream wrong: drift statistics see
only the events that survived validation, so the *drift* alerts it causes
must be inhibited while it lasts (see
:data:`streams.core.alerting.inhibit.DEFAULT_INHIBITIONS`). This detector
turns the dead-letter stream into that condition.

**Attribution.** Model servers key their records by model name (the SDK
does), so a rejected record is charged to the model of its key even when
nothing inside it could be decoded.

**Units.** Events, not records. An event rejected on its own (a bad row of a
batch) counts one; a whole record that could not be decoded at all counts
as many events as this model's accepted records carry on average in the
window (one when none was accepted), so a flood of undecodable 500-event
records reads as the 50 % it is, not as 0.2 %.

**Window.** Processing time, in ``bucket_ms`` buckets over ``window_ms``: the
condition is about what arrives now, and a backlog replayed later must not
be judged by event times of the past. The rate is::

    rejected / (accepted + rejected)            over the buckets of the window

It activates at ``trigger_ratio`` once at least ``min_rejected`` events were
rejected (a single bad event out of ten is not an incident), and clears
below ``clear_ratio`` (hysteresis) or when the window empties. ``check``
must run on a timer so a model that stops sending anything clears.

State is JSON (:meth:`InvalidInput.to_state`); the clock is an argument and
never runs backwards.

Examples
--------
>>> mon = InvalidInput(window_ms=60_000, bucket_ms=10_000, min_rejected=20)
>>> mon.update(accepted_events=1_000, accepted_records=2, rejected_events=10, rejected_records=0, now_ms=0)
>>> c = mon.update(accepted_events=500, accepted_records=1, rejected_events=0, rejected_records=1,
...                now_ms=5_000)
>>> c.active, round(c.value, 3), c.evidence["rejected_records"]
(True, 0.254, 1)
>>> mon.check(now_ms=70_000).active  # the window slid past the bad record
False
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streams.core.ops._checks import check_state, float_param, int_param
from streams.core.ops.condition import Condition

__all__ = ["InvalidInput"]

_KIND = "invalid_input"
_VERSION = 1
_KEYS = frozenset({"v", "kind", "params", "buckets", "active", "since_ms", "now_ms"})


class InvalidInput:
    """Rejected share of one model's input events, with hysteresis (see the module docstring).

    Parameters
    ----------
    window_ms
        Length of the sliding window.
    bucket_ms
        Granularity of the window; ``window_ms`` must be a multiple of it.
    trigger_ratio
        Rejected share at or above which the condition starts.
    clear_ratio
        Rejected share below which it ends; at most ``trigger_ratio``.
    min_rejected
        Rejected events the window must hold before the condition can start.
    """

    def __init__(
        self,
        window_ms: int = 60_000,
        bucket_ms: int = 10_000,
        trigger_ratio: float = 0.05,
        clear_ratio: float = 0.01,
        min_rejected: int = 20,
    ) -> None:
        self.window_ms = int_param("window_ms", window_ms, 1)
        self.bucket_ms = int_param("bucket_ms", bucket_ms, 1)
        if self.window_ms % self.bucket_ms:
            raise ValueError(f"window_ms must be a multiple of bucket_ms, got {window_ms} and {bucket_ms}")
        self.trigger_ratio = float_param("trigger_ratio", trigger_ratio, 0.0, 1.0)
        self.clear_ratio = float_param("clear_ratio", clear_ratio, 0.0, 1.0)
        if self.clear_ratio > self.trigger_ratio:
            raise ValueError(f"clear_ratio must be <= trigger_ratio, got {clear_ratio} > {trigger_ratio}")
        self.min_rejected = int_param("min_rejected", min_rejected, 1)
        # bucket start -> [accepted events, accepted records, rejected events, rejected records]
        self._buckets: dict[int, list[int]] = {}
        self._active = False
        self._since_ms = 0
        self._now_ms = 0

    @property
    def active(self) -> bool:
        """Whether the condition holds now."""
        return self._active

    def update(
        self,
        accepted_events: int,
        accepted_records: int,
        rejected_events: int,
        rejected_records: int,
        now_ms: int,
    ) -> Condition | None:
        """Count one record's outcome (or several); the transition it causes, if any.

        ``rejected_events`` are events refused one by one; ``rejected_records`` whole records
        refused before their events could be counted.
        """
        counts = (accepted_events, accepted_records, rejected_events, rejected_records)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"counts must be ints >= 0, got {counts}")
        now = self._advance(now_ms)
        b = self._buckets.setdefault(now - now % self.bucket_ms, [0, 0, 0, 0])
        for i, c in enumerate(counts):
            b[i] += c
        return self._decide(now)

    def check(self, now_ms: int) -> Condition | None:
        """Timer: slide the window; the condition clears when the bad input has aged out."""
        return self._decide(self._advance(now_ms))

    def _advance(self, now_ms: int) -> int:
        self._now_ms = max(self._now_ms, int(now_ms))
        oldest = self._now_ms - self._now_ms % self.bucket_ms - self.window_ms + self.bucket_ms
        for start in [s for s in self._buckets if s < oldest]:
            del self._buckets[start]
        return self._now_ms

    def _totals(self) -> tuple[int, int, int, int]:
        acc_ev = sum(b[0] for b in self._buckets.values())
        acc_rec = sum(b[1] for b in self._buckets.values())
        rej_ev = sum(b[2] for b in self._buckets.values())
        rej_rec = sum(b[3] for b in self._buckets.values())
        return acc_ev, acc_rec, rej_ev, rej_rec

    def _decide(self, now: int) -> Condition | None:
        acc_ev, acc_rec, rej_ev, rej_rec = self._totals()
        per_record = acc_ev / acc_rec if acc_rec else 1.0
        rejected = rej_ev + rej_rec * max(per_record, 1.0)
        total = acc_ev + rejected
        ratio = rejected / total if total else 0.0
        if not self._active and ratio >= self.trigger_ratio and rejected >= self.min_rejected:
            self._active, self._since_ms = True, now
            threshold = self.trigger_ratio
        elif self._active and ratio < self.clear_ratio:
            self._active, self._since_ms = False, now
            threshold = self.clear_ratio
        else:
            return None
        return Condition(
            active=self._active,
            since_ms=now,
            value=ratio,
            threshold=threshold,
            evidence={
                "window_ms": self.window_ms,
                "accepted_events": acc_ev,
                "rejected_events": rej_ev,
                "rejected_records": rej_rec,
                "rejected_estimate": round(rejected, 1),
                "detected_ms": now,
            },
        )

    # -- state ------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON state, parameters included."""
        return {
            "v": _VERSION,
            "kind": _KIND,
            "params": {
                "window_ms": self.window_ms,
                "bucket_ms": self.bucket_ms,
                "trigger_ratio": self.trigger_ratio,
                "clear_ratio": self.clear_ratio,
                "min_rejected": self.min_rejected,
            },
            "buckets": [[start, *counts] for start, counts in sorted(self._buckets.items())],
            "active": self._active,
            "since_ms": self._since_ms,
            "now_ms": self._now_ms,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> InvalidInput:
        """Restore :meth:`to_state`; ``ValueError`` naming the field on anything malformed."""
        st = check_state(raw, "invalid-input state", _KIND, _VERSION, _KEYS)
        params = st["params"]
        if not isinstance(params, Mapping):
            raise ValueError("invalid-input state: params must be an object")
        try:
            mon = cls(**params)
        except TypeError as exc:
            raise ValueError(f"invalid-input state: params: {exc}") from None
        buckets = st["buckets"]
        if not isinstance(buckets, list) or not all(
            isinstance(b, list)
            and len(b) == 5
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in b)
            for b in buckets
        ):
            raise ValueError("invalid-input state: buckets must be lists of 5 ints >= 0")
        for key in ("since_ms", "now_ms"):
            v = st[key]
            if isinstance(v, bool) or not isinstance(v, int) or not math.isfinite(v):
                raise ValueError(f"invalid-input state: {key} must be an int")
        if not isinstance(st["active"], bool):
            raise ValueError("invalid-input state: active must be a bool")
        mon._buckets = {b[0]: list(b[1:]) for b in buckets}
        mon._active, mon._since_ms, mon._now_ms = st["active"], st["since_ms"], st["now_ms"]
        return mon
