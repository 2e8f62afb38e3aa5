"""Silence: keys (producers, model versions) that stopped sending, and the moment they resume.

A model server that crashes, hangs or loses its network sends nothing, so no
per-event detector can notice it: the absence of data has to be tracked
separately. The worker calls :meth:`SilenceTracker.seen` once per batch and
key (for example ``"telemetry|model|host"`` or ``"predictions|model|version"``)
and :meth:`SilenceTracker.check` on a timer; silence and resumption come back
as :class:`Condition` transitions, one each per episode, so the alerting stage
fires once and resolves once.

**Processing time, not event time.** Silence is measured on the worker's
clock (``now_ms``). Event time cannot measure it: a stopped producer stops
emitting event times, so the silent key's own event clock freezes exactly
when it would be needed, and measuring it against other keys' event times
would tie one producer's alert to the clocks, lag and replays of others (a
consumer replaying a backlog sees event time race ahead and would declare
every key silent). The last event time of each key is kept as evidence only.

Two consequences of using the worker's clock are handled here:

* **The worker's own absence is not the producers' silence.** When the
  tracker has not been called for more than ``pause_gap_ms`` (worker stopped,
  partition moved to another worker, state restored from a changelog), it
  cannot tell who spoke in the meantime, so every key's silence clock restarts
  at the first call after the gap (counted in :attr:`SilenceTracker.pauses`).
  Without this, a restart would declare every key silent at once, then resume
  them all as the backlog drains: a flood of alerts about the worker, not the
  models. It follows that :meth:`SilenceTracker.check` must run on a timer, at
  least every ``pause_gap_ms / 2``, also when no data arrives at all.
* **The clock never runs backwards.** ``now_ms`` smaller than the largest
  seen so far (an NTP step, a restored state from another host) is clamped
  to it, so that a step back can neither hide a silence nor invent one.

Memory is bounded by ``max_keys``: a new key beyond it evicts the key that has
been silent longest (the smallest last-seen time, silent or not yet checked);
evictions are counted. An evicted key that was reported silent is forgotten
without a resume condition, like :meth:`SilenceTracker.forget`; size
``max_keys`` so that this stays exceptional and alert on :attr:`evictions`.

Costs: ``seen`` is a dict update and an ordered move, O(1) (about 1 µs);
``check`` is O(1 + keys that turn silent), because keys are kept in
last-seen order and the scan stops at the first key still alive.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from streams.core.ops._checks import check_state, count_field, int_param, opt_int_field
from streams.core.ops.condition import Condition

__all__ = ["Condition", "SilenceTracker"]  # Condition re-exported: it was defined here first

_INTEGRAL = (int, np.integer)
_KIND = "silence"
_VERSION = 1
_JSON_KEYS = frozenset(
    {
        "v",
        "kind",
        "silence_after_ms",
        "max_keys",
        "pause_gap_ms",
        "clock_ms",
        "epoch_ms",
        "live",
        "silent",
        "evictions",
        "pauses",
    }
)


class SilenceTracker:
    """Last-seen times per string key; reports keys that fall silent and keys that come back.

    A key is *silent* once ``now_ms - last_seen_ms >= silence_after_ms`` on
    the worker's (processing-time) clock; see the module docstring for why
    processing time, and for the handling of worker pauses and clock steps.

    Parameters
    ----------
    silence_after_ms
        Processing time without a :meth:`seen` after which a key is silent.
        The default, 2 minutes, is several telemetry periods (model servers
        report every few seconds) plus a margin for batching and consumer lag.
    max_keys
        Most keys tracked, silent ones included; the longest-silent key is
        evicted (and counted) to admit a new one. 10 000 covers, e.g., 1 000
        hosts times 10 models; each key costs about 200 bytes.
    pause_gap_ms
        A gap between two calls (``seen`` or ``check``) longer than this means
        the tracker itself was not running; every key's silence clock then
        restarts. ``None`` (default) means ``silence_after_ms``.

    Notes
    -----
    :class:`Condition` values: ``value`` is the silence duration in ms (so far,
    for an active condition; in total, for a resume) and ``threshold`` is
    ``silence_after_ms``. An active condition's ``since_ms`` is the key's last
    seen time; a resume's is the time it was seen again.

    Examples
    --------
    >>> from streams.core.ops.silence import SilenceTracker
    >>> tracker = SilenceTracker(silence_after_ms=120_000)
    >>> tracker.seen("telemetry|fraud|host-1", now_ms=0, event_time_ms=-500)
    >>> tracker.seen("telemetry|fraud|host-2", now_ms=0)
    >>> for now_ms in range(10_000, 130_001, 10_000):  # host-1 stops sending at 0
    ...     tracker.seen("telemetry|fraud|host-2", now_ms=now_ms)
    ...     for key, c in tracker.check(now_ms):
    ...         print(now_ms, key, c.active, c.since_ms, c.evidence["last_event_time_ms"])
    120000 telemetry|fraud|host-1 True 0 -500
    >>> tracker.check(130_000)  # reported once
    []
    >>> back = tracker.seen("telemetry|fraud|host-1", now_ms=135_000)
    >>> back.active, back.since_ms, back.value
    (False, 135000, 135000.0)
    >>> SilenceTracker.from_state(tracker.to_state()).to_state() == tracker.to_state()
    True
    """

    def __init__(
        self, silence_after_ms: int = 120_000, max_keys: int = 10_000, pause_gap_ms: int | None = None
    ) -> None:
        self.silence_after_ms = int_param("silence_after_ms", silence_after_ms, minimum=1)
        self.max_keys = int_param("max_keys", max_keys, minimum=1)
        self.pause_gap_ms = (
            self.silence_after_ms
            if pause_gap_ms is None
            else int_param("pause_gap_ms", pause_gap_ms, minimum=1)
        )
        # key -> (last seen processing time, largest event time or None), in last-seen order
        self._live: OrderedDict[str, tuple[int, int | None]] = OrderedDict()
        # keys reported silent, same tuples, in last-seen order (check pops _live from the front)
        self._silent: dict[str, tuple[int, int | None]] = {}
        self._clock_ms: int | None = None  # largest now_ms seen
        self._epoch_ms: int | None = None  # silence clocks start no earlier than this (after a pause)
        self._evictions = 0
        self._pauses = 0

    # ------------------------------------------------------------------ queries

    @property
    def evictions(self) -> int:
        """Keys evicted to respect ``max_keys`` since creation (carried through state)."""
        return self._evictions

    @property
    def pauses(self) -> int:
        """Times the tracker noticed it had not been called for more than ``pause_gap_ms``."""
        return self._pauses

    def __len__(self) -> int:
        return len(self._live) + len(self._silent)

    def __contains__(self, key: object) -> bool:
        return key in self._live or key in self._silent

    def is_silent(self, key: str) -> bool:
        """Whether ``key`` has been reported silent by :meth:`check` and not seen since."""
        return key in self._silent

    # ------------------------------------------------------------------ updates

    def seen(self, key: str, now_ms: int, event_time_ms: int | None = None) -> Condition | None:
        """Record that ``key`` sent data at processing time ``now_ms``.

        Parameters
        ----------
        key
            Any string; the tracker does not interpret it.
        now_ms
            The worker's clock (processing time), in ms since the epoch.
        event_time_ms
            Largest event time of the batch, if known; kept (as a running
            maximum) for the evidence of a later silence only.

        Returns
        -------
        Condition or None
            A cleared condition when ``key`` had been reported silent, else ``None``.
        """
        t = self._tick(now_ms)
        live = self._live
        entry = live.get(key)
        if entry is not None:  # the hot path: a known, live key
            event_ms = entry[1]
            if event_time_ms is not None and (event_ms is None or event_time_ms > event_ms):
                event_ms = int(event_time_ms)
            live[key] = (t, event_ms)
            live.move_to_end(key)
            return None
        silent = self._silent.pop(key, None)
        if silent is None:
            if len(live) + len(self._silent) >= self.max_keys:
                self._evict_one()
            live[key] = (t, None if event_time_ms is None else int(event_time_ms))
            return None
        last_seen_ms, last_event_ms = silent
        if event_time_ms is not None and (last_event_ms is None or event_time_ms > last_event_ms):
            last_event_ms = int(event_time_ms)
        live[key] = (t, last_event_ms)
        evidence: dict[str, float | str | int] = {
            "last_seen_ms": last_seen_ms,
            "silent_for_ms": t - last_seen_ms,
        }
        if event_time_ms is not None:
            evidence["event_time_ms"] = int(event_time_ms)
        return Condition(False, t, float(t - last_seen_ms), float(self.silence_after_ms), evidence)

    def check(self, now_ms: int) -> list[tuple[str, Condition]]:
        """Keys that have become silent at ``now_ms``, each reported once per silence, oldest first.

        Resumptions are not reported here but by :meth:`seen`, at the moment
        the key comes back.
        """
        t = self._tick(now_ms)
        deadline_ms = t - self.silence_after_ms  # keys last seen at or before this are silent
        if self._epoch_ms is not None and self._epoch_ms > deadline_ms:
            return []
        out: list[tuple[str, Condition]] = []
        live = self._live
        while live:
            key = next(iter(live))
            last_seen_ms, last_event_ms = live[key]
            if last_seen_ms > deadline_ms:
                break
            del live[key]
            self._silent[key] = (last_seen_ms, last_event_ms)
            silent_for_ms = t - last_seen_ms
            evidence: dict[str, float | str | int] = {
                "last_seen_ms": last_seen_ms,
                "silent_for_ms": silent_for_ms,
            }
            if last_event_ms is not None:
                evidence["last_event_time_ms"] = last_event_ms
            if self._epoch_ms is not None and self._epoch_ms > last_seen_ms:
                evidence["tracker_resumed_ms"] = self._epoch_ms
            out.append(
                (
                    key,
                    Condition(
                        True, last_seen_ms, float(silent_for_ms), float(self.silence_after_ms), evidence
                    ),
                )
            )
        return out

    def forget(self, key: str) -> bool:
        """Stop tracking ``key`` (a model or host taken out of service); whether it was tracked.

        A forgotten silent key reports no resume; if it sends again, it is a new key.
        """
        return self._live.pop(key, None) is not None or self._silent.pop(key, None) is not None

    def _tick(self, now_ms: int) -> int:
        """Advance the clock to ``now_ms`` (clamped: never backwards); returns the clock."""
        if type(now_ms) is not int:  # exact type check first: isinstance on a union costs more than the rest
            if isinstance(now_ms, bool) or not isinstance(now_ms, _INTEGRAL):
                raise ValueError(f"now_ms must be an int (ms since the epoch), got {type(now_ms).__name__}")
            now_ms = int(now_ms)
        now = now_ms
        clock = self._clock_ms
        if clock is None or now > clock:
            if clock is not None and now - clock > self.pause_gap_ms:
                self._epoch_ms = now
                self._pauses += 1
            self._clock_ms = clock = now
        return clock

    def _evict_one(self) -> None:
        """Drop the key with the smallest last-seen time (the longest silent)."""
        oldest_silent = next(iter(self._silent), None)
        oldest_live = next(iter(self._live), None)
        if oldest_live is None or (
            oldest_silent is not None and self._silent[oldest_silent][0] <= self._live[oldest_live][0]
        ):
            assert oldest_silent is not None  # max_keys >= 1 and the tracker is full
            del self._silent[oldest_silent]
        else:
            del self._live[oldest_live]
        self._evictions += 1

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Versioned JSON state: parameters, clock, and both key tables in last-seen order."""
        return {
            "v": _VERSION,
            "kind": _KIND,
            "silence_after_ms": self.silence_after_ms,
            "max_keys": self.max_keys,
            "pause_gap_ms": self.pause_gap_ms,
            "clock_ms": self._clock_ms,
            "epoch_ms": self._epoch_ms,
            "live": [[k, s, e] for k, (s, e) in self._live.items()],
            "silent": [[k, s, e] for k, (s, e) in self._silent.items()],
            "evictions": self._evictions,
            "pauses": self._pauses,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> SilenceTracker:
        """Rebuild a tracker from :meth:`to_state` output, validating every field.

        Raises
        ------
        ValueError
            On any payload :meth:`to_state` cannot have written, naming the field.
        """
        raw = check_state(raw, "silence state", _KIND, _VERSION, _JSON_KEYS)
        tracker = cls(raw["silence_after_ms"], raw["max_keys"], raw["pause_gap_ms"])
        clock = opt_int_field(raw, "clock_ms", "silence state")
        epoch = opt_int_field(raw, "epoch_ms", "silence state")
        if epoch is not None and (clock is None or epoch > clock):
            raise ValueError(f"silence state 'epoch_ms'={epoch!r} must be <= 'clock_ms'={clock!r}")
        tables = []
        for name in ("live", "silent"):
            rows = raw[name]
            if not isinstance(rows, list):
                raise ValueError(f"silence state {name!r} must be a list, got {type(rows).__name__}")
            table: dict[str, tuple[int, int | None]] = {}
            previous = -math.inf
            for row in rows:
                if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)):
                    raise ValueError(f"silence state {name!r} rows must be [key, seen_ms, event_time_ms]")
                seen_ms, event_ms = row[1], row[2]
                if isinstance(seen_ms, bool) or not isinstance(seen_ms, int):
                    raise ValueError(f"silence state {name!r}: seen_ms of {row[0]!r} must be an int")
                if event_ms is not None and (isinstance(event_ms, bool) or not isinstance(event_ms, int)):
                    raise ValueError(
                        f"silence state {name!r}: event_time_ms of {row[0]!r} must be an int or null"
                    )
                if seen_ms < previous or clock is None or seen_ms > clock:
                    raise ValueError(
                        f"silence state {name!r} must be in last-seen order, at or before 'clock_ms'"
                    )
                if row[0] in table:
                    raise ValueError(f"silence state {name!r} repeats key {row[0]!r}")
                previous = seen_ms
                table[row[0]] = (seen_ms, event_ms)
            tables.append(table)
        live, silent = tables
        if live.keys() & silent.keys():
            raise ValueError("silence state has keys both in 'live' and in 'silent'")
        if len(live) + len(silent) > tracker.max_keys:
            raise ValueError(f"silence state holds {len(live) + len(silent)} keys, more than max_keys")
        tracker._live = OrderedDict(live)
        tracker._silent = silent
        tracker._clock_ms = clock
        tracker._epoch_ms = epoch
        tracker._evictions = count_field(raw, "evictions", "silence state")
        tracker._pauses = count_field(raw, "pauses", "silence state")
        return tracker

    # Aliases, for callers that persist objects generically through ``to_json``/``from_json``.
    to_json = to_state
    from_json = from_state

    def __repr__(self) -> str:
        return (
            f"SilenceTracker(silence_after_ms={self.silence_after_ms}, max_keys={self.max_keys}, "
            f"live={len(self._live)}, silent={len(self._silent)})"
        )
