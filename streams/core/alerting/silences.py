"""Silences: operator-made mutes of alerts by label matchers, for a time, as in Alertmanager.

A :class:`Silence` mutes every alert whose labels satisfy all its
:class:`Matcher` s while ``starts_at_ms <= now_ms < ends_at_ms``. Matchers
follow Alertmanager: ``=``, ``!=``, ``=~``, ``!~``; a regex must match the
whole value (it is anchored); a label the alert lacks reads as ``""``.

Silences travel on a compacted control topic keyed by silence id, one JSON
document per silence (:meth:`Silence.encode`); a new record with the same id
replaces the silence (edit, or early end with ``ends_at_ms`` now), and a
tombstone (null value) expires it: :meth:`SilenceSet.apply` does both.

Validation is strict, with errors naming the field: at least one matcher,
regexes compile, ``ends_at_ms > starts_at_ms``, and at least one matcher must
not match the empty string, so that no silence can mute every alert by
accident (``alertname=~".*"``), an Alertmanager rule too.

Matching runs Python's ``re`` on operator-written patterns: silences come from
operators, not from the monitored traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

__all__ = ["Matcher", "Silence", "SilenceSet"]

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$(?!\n)")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$(?!\n)")
_MATCHER_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_SILENCE_KEYS = frozenset({"v", "id", "matchers", "starts_at_ms", "ends_at_ms", "created_by", "comment"})
_MATCHER_KEYS = frozenset({"name", "value", "is_regex", "is_equal"})
_MAX_EPOCH_MS = 253_402_300_799_999
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition: ``name`` equals (or matches, ``is_regex``) ``value``, or not (``is_equal=False``).

    >>> Matcher("model", "fraud.*", is_regex=True).matches({"model": "fraud-v2"})
    True
    >>> Matcher("env", "prod", is_equal=False).matches({})  # a missing label reads as ""
    True
    >>> Matcher.parse('severity!~"info|warning"')
    Matcher(name='severity', value='info|warning', is_regex=True, is_equal=False)
    """

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False, hash=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _LABEL_NAME.match(self.name):
            raise ValueError(
                f"name: a label name (a letter or '_', then letters, digits or '_'), got {self.name!r}"
            )
        if not isinstance(self.value, str) or len(self.value) > 1024:
            raise ValueError(f"value: must be a string of at most 1024 characters, got {self.value!r}")
        if not isinstance(self.is_regex, bool):
            raise ValueError(f"is_regex: must be a boolean, got {self.is_regex!r}")
        if not isinstance(self.is_equal, bool):
            raise ValueError(f"is_equal: must be a boolean, got {self.is_equal!r}")
        if self.is_regex:
            try:
                object.__setattr__(self, "_pattern", re.compile(f"(?:{self.value})"))
            except re.error as e:
                raise ValueError(f"value: invalid regex {self.value!r}: {e}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher."""
        v = labels.get(self.name, "")
        hit = v == self.value if self._pattern is None else self._pattern.fullmatch(v) is not None
        return hit == self.is_equal

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``; the value may be quoted."""
        m = _MATCHER_TEXT.match(text)
        if not m:
            raise ValueError(f"expected name=value, name!=value, name=~regex or name!~regex, got {text!r}")
        name, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(name, value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))

    def __str__(self) -> str:
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        return f"{self.name}{op[(self.is_regex, self.is_equal)]}{orjson.dumps(self.value).decode()}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "is_regex": self.is_regex, "is_equal": self.is_equal}

    @classmethod
    def from_json(cls, raw: Any) -> Matcher:
        """Strict: an object with ``name`` and ``value``, optional ``is_regex`` and ``is_equal``."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"must be an object, got {type(raw).__name__}")
        for k in raw:
            if k not in _MATCHER_KEYS:
                raise ValueError(f"{k}: unknown field")
        for k in ("name", "value"):
            if k not in raw:
                raise ValueError(f"{k}: missing field")
        return cls(raw["name"], raw["value"], raw.get("is_regex", False), raw.get("is_equal", True))


def _epoch_ms(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_EPOCH_MS:
        raise ValueError(f"{where}: must be an integer of milliseconds since the epoch, got {v!r}")
    return v


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the alerts matching every one of ``matchers`` from ``starts_at_ms`` until ``ends_at_ms``.

    Examples
    --------
    >>> s = Silence("maint-42", (Matcher("model", "fraud"),), 1_000, 5_000, "ops@acme", "retraining")
    >>> s.mutes({"model": "fraud", "alertname": "drift"}, now_ms=2_000), s.mutes({"model": "fraud"}, 5_000)
    (True, False)
    >>> Silence("x", (Matcher("model", ".*", is_regex=True),), 0, 1, "me", "everything")
    Traceback (most recent call last):
    ...
    ValueError: matchers: at least one matcher must not match the empty string (a silence of everything)
    """

    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str
    comment: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise ValueError(
                f"id: 1 to 128 characters, a letter or digit then letters, digits, '.', '_', ':' or '-',"
                f" got {self.id!r}"
            )
        object.__setattr__(self, "matchers", tuple(self.matchers))
        if not self.matchers:
            raise ValueError("matchers: at least one matcher is needed")
        for i, m in enumerate(self.matchers):
            if not isinstance(m, Matcher):
                raise ValueError(f"matchers[{i}]: must be a Matcher, got {type(m).__name__}")
        if all(m.matches({}) for m in self.matchers):
            raise ValueError(
                "matchers: at least one matcher must not match the empty string (a silence of everything)"
            )
        _epoch_ms(self.starts_at_ms, "starts_at_ms")
        _epoch_ms(self.ends_at_ms, "ends_at_ms")
        if self.ends_at_ms <= self.starts_at_ms:
            raise ValueError(
                f"ends_at_ms: must be after starts_at_ms ({self.starts_at_ms}), got {self.ends_at_ms}"
            )
        for name in ("created_by", "comment"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip() or len(v) > 1024:
                raise ValueError(f"{name}: must be a non-empty string of at most 1024 characters, got {v!r}")

    def active(self, now_ms: int) -> bool:
        """Whether it is in force at ``now_ms``: ``starts_at_ms <= now_ms < ends_at_ms``."""
        return self.starts_at_ms <= now_ms < self.ends_at_ms

    def mutes(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether it is in force and every matcher matches ``labels``."""
        return self.active(now_ms) and all(m.matches(labels) for m in self.matchers)

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON, the value of the silence's record on the control topic."""
        return {
            "v": _VERSION,
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "starts_at_ms": self.starts_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "created_by": self.created_by,
            "comment": self.comment,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Silence:
        """Strict inverse of :meth:`to_json`; errors name the field (``matchers[1].value: ...``)."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"silence: must be an object, got {type(raw).__name__}")
        for k in raw:
            if k not in _SILENCE_KEYS:
                raise ValueError(f"{k}: unknown field")
        if raw.get("v", _VERSION) != _VERSION:
            raise ValueError(f"v: expected {_VERSION}, got {raw.get('v')!r}")
        for k in sorted(_SILENCE_KEYS - {"v"}):
            if k not in raw:
                raise ValueError(f"{k}: missing field")
        ms = raw["matchers"]
        if not isinstance(ms, list):
            raise ValueError(f"matchers: must be a list, got {type(ms).__name__}")
        matchers = []
        for i, m in enumerate(ms):
            try:
                matchers.append(Matcher.from_json(m))
            except ValueError as e:
                sep = ": " if str(e).startswith("must") else "."
                raise ValueError(f"matchers[{i}]{sep}{e}") from None
        return cls(
            raw["id"],
            tuple(matchers),
            raw["starts_at_ms"],
            raw["ends_at_ms"],
            raw["created_by"],
            raw["comment"],
        )

    def encode(self) -> bytes:
        """The record value for the control topic (UTF-8 JSON)."""
        return orjson.dumps(self.to_json())

    @classmethod
    def decode(cls, data: bytes | str) -> Silence:
        """Inverse of :meth:`encode`."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"silence: not JSON: {e}") from None
        return cls.from_json(raw)


class SilenceSet:
    """The silences known, by id; what a worker rebuilds from the control topic.

    Examples
    --------
    >>> ss = SilenceSet()
    >>> ss.add(Silence("s1", (Matcher.parse("model=fraud"),), 0, 10_000, "ops", "deploy"))
    >>> ss.muted_by({"model": "fraud"}, now_ms=5_000), ss.mutes({"model": "other"}, now_ms=5_000)
    (['s1'], False)
    >>> ss.expire("s1", now_ms=6_000).ends_at_ms, ss.mutes({"model": "fraud"}, now_ms=6_000)
    (6000, False)
    """

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._by_id: dict[str, Silence] = {}
        for s in silences:
            self.add(s)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Silence]:
        return iter(sorted(self._by_id.values(), key=lambda s: s.id))

    def get(self, silence_id: str) -> Silence | None:
        return self._by_id.get(silence_id)

    def add(self, silence: Silence) -> None:
        """Add it, or replace the silence with the same id (an edit)."""
        self._by_id[silence.id] = silence

    def expire(self, silence_id: str, now_ms: int) -> Silence | None:
        """End it now and forget it; the silence removed, or ``None`` when the id is unknown.

        A silence in force comes back ended at ``now_ms``; one not started yet, or already over,
        comes back as it was.
        """
        s = self._by_id.pop(silence_id, None)
        if s is None or not s.active(now_ms):
            return s
        return replace(s, ends_at_ms=max(now_ms, s.starts_at_ms + 1))

    def active(self, now_ms: int) -> list[Silence]:
        """The silences in force at ``now_ms``, by id."""
        return [s for s in self if s.active(now_ms)]

    def muted_by(self, labels: Mapping[str, str], now_ms: int) -> list[str]:
        """Ids of the silences that mute ``labels`` at ``now_ms``, sorted (empty: not muted)."""
        return sorted(s.id for s in self._by_id.values() if s.mutes(labels, now_ms))

    def mutes(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether some silence mutes ``labels`` at ``now_ms``."""
        return any(s.mutes(labels, now_ms) for s in self._by_id.values())

    def prune(self, now_ms: int) -> list[str]:
        """Forget the silences that ended; their ids."""
        gone = sorted(i for i, s in self._by_id.items() if s.ends_at_ms <= now_ms)
        for i in gone:
            del self._by_id[i]
        return gone

    def apply(self, key: bytes | str, value: bytes | str | None, now_ms: int) -> Silence | None:
        """Apply one control-topic record: ``value`` a silence (added or replaced), ``None`` a tombstone.

        Returns the silence added, or the one expired by a tombstone. The key must be the id.
        """
        silence_id = key.decode() if isinstance(key, bytes) else key
        if value is None:
            return self.expire(silence_id, now_ms)
        try:
            s = Silence.decode(value)
        except ValueError as e:
            raise ValueError(f"silence {silence_id!r}: {e}") from None
        if s.id != silence_id:
            raise ValueError(f"silence {silence_id!r}: id: the record key is {silence_id!r}, the id {s.id!r}")
        self.add(s)
        return s
