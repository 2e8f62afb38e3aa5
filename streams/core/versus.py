"""Champion/challenger pairing: predictions of two versions for the same request.

When a challenger (or shadow) version answers the same requests as the
champion, both log a prediction with the same ``request_id``. The buffer holds
each side until its partner arrives (or ``horizon_ms`` of event time passes)
and returns the pairs, which the engine folds as challenger-versus-champion
differences. Values are compared as numbers: numeric predictions as they are,
probability maps by the largest probability, class names as agreement
(0 when equal, 1 when not, so the mean absolute difference is the
disagreement rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Pair = tuple[str, int, float, float]  # challenger version, event time, champion value, challenger value


def _value(v: Any) -> float | str | None:
    if type(v) is int or type(v) is float:
        return float(v)
    if isinstance(v, dict) and v:
        return float(max(v.values()))
    if isinstance(v, (str, bool)):
        return str(v)
    return None


def _numbers(a: float | str, b: float | str) -> tuple[float, float] | None:
    if isinstance(a, float) and isinstance(b, float):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return 0.0, float(a != b)
    return None


class VersusBuffer:
    """Waiting predictions per version, keyed by request id.

    Examples
    --------
    >>> buf = VersusBuffer(horizon_ms=60_000)
    >>> buf.add("v1", "v1", ("v2",), ["r1"], [0.5], [1_000], "p:0", 1)
    []
    >>> buf.add("v2", "v1", ("v2",), ["r1"], [0.75], [1_200], "p:0", 2)
    [('v2', 1200, 0.5, 0.75)]
    """

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._waiting: dict[str, dict[str, tuple[float | str, int]]] = {}
        self._applied: dict[str, int] = {}

    def add(
        self,
        version: str,
        champion: str,
        challengers: Sequence[str],
        request_ids: Sequence[str | None],
        predictions: Sequence[Any],
        event_time_ms: Sequence[int],
        source: str,
        offset: int,
    ) -> list[Pair]:
        if version != champion and version not in challengers:
            return []
        if self._applied.get(source, -1) >= offset:  # a replayed record: already paired
            return []
        self._applied[source] = offset
        mine = self._waiting.setdefault(version, {})
        pairs: list[Pair] = []
        for rid, pred, t_ms in zip(request_ids, predictions, event_time_ms, strict=True):
            val = _value(pred)
            if rid is None or val is None:
                continue
            if version == champion:
                for ch in challengers:
                    hit = self._waiting.get(ch, {}).pop(rid, None)
                    nums = None if hit is None else _numbers(val, hit[0])
                    if hit is not None and nums is not None:
                        pairs.append((ch, hit[1], nums[0], nums[1]))
                mine[rid] = (val, t_ms)  # other challengers may still come
            else:
                champ = self._waiting.get(champion, {}).get(rid)
                nums = None if champ is None else _numbers(champ[0], val)
                if champ is not None and nums is not None:
                    pairs.append((version, t_ms, nums[0], nums[1]))
                else:
                    mine[rid] = (val, t_ms)
        return pairs

    def expire(self, stream_time_ms: int) -> None:
        cutoff = stream_time_ms - self.horizon_ms
        for side in self._waiting.values():
            for rid in [r for r, (_, t) in side.items() if t < cutoff]:
                del side[rid]

    def to_json(self) -> dict[str, Any]:
        return {
            "h": self.horizon_ms,
            "applied": self._applied,
            "w": {v: {r: [x, t] for r, (x, t) in side.items()} for v, side in self._waiting.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VersusBuffer:
        try:
            buf = cls(int(raw["h"]))
            buf._applied = {str(k): int(v) for k, v in raw["applied"].items()}
            buf._waiting = {
                str(v): {str(r): (x, int(t)) for r, (x, t) in side.items()} for v, side in raw["w"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed champion/challenger buffer: {exc!r}") from None
        return buf
