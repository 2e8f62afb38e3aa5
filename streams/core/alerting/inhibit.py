"""Inhibition: a firing alert that explains others mutes them, with Alertmanager's semantics.

An :class:`InhibitRule` says: while some *firing* alert matches ``source``, the
alerts that match ``target`` and have the same values for every ``equal``
label (a label absent from both counts as equal) are inhibited. As in
Alertmanager (``inhibit/inhibit.go``), an alert that matches both sides of a
rule is not inhibited by alerts that also match both sides, so a rule never
makes two alerts mute each other, and no alert inhibits itself.

Matchers are :class:`~streams.core.alerting.silences.Matcher` s, from
``*_match`` (equality) and ``*_match_re`` (anchored regex) mappings, as in
Alertmanager's classic ``inhibit_rules`` syntax.

The defaults (:data:`DEFAULT_INHIBITIONS`) follow the cause:

* A model version whose predictions stopped (a ``silence`` alert with
  ``stream=predictions``) inhibits that version's drift, anomaly and metric
  alerts: with no data their windows are partial and their verdicts noise.
  ``equal`` is (``model``, ``model_version``): the silence detector watches each
  version's predictions, and a retired version falling silent must not mute the
  alerts of the version that replaced it.
* A server whose telemetry stopped (``stream=telemetry``) inhibits the host-level
  alerts of that model on that host (anomaly, memory leak, GPU saturation):
  they are computed from the telemetry that is missing. It does *not* mute the
  model's metric or drift alerts: those come from predictions, which may well
  still flow while a telemetry agent is down.
* A firing ``invalid_input`` alert (inputs failing validation) inhibits the
  model's drift alerts: malformed inputs look like drift, and the cause to fix
  is the producer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streams.core.alerting.silences import Matcher

__all__ = ["DEFAULT_INHIBITIONS", "InhibitRule", "Inhibitor", "parse_inhibit_rules"]

Labels = Mapping[str, str]
_KEYS = frozenset({"source_match", "source_match_re", "target_match", "target_match_re", "equal"})


def _matchers(match: Mapping[str, str], match_re: Mapping[str, str], side: str) -> tuple[Matcher, ...]:
    out = []
    for key, mapping, regex in ((f"{side}_match", match, False), (f"{side}_match_re", match_re, True)):
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{key}: must be a mapping of label name to value, got {type(mapping).__name__}")
        for name, value in mapping.items():
            try:
                out.append(Matcher(name, value, is_regex=regex))
            except ValueError as e:
                raise ValueError(f"{key}.{name}: {e}") from None
    if not out:
        raise ValueError(
            f"{side}_match: at least one {side} matcher is needed ({side}_match or {side}_match_re)"
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """Firing alerts matching the source mute the alerts matching the target with equal ``equal`` labels.

    Examples
    --------
    >>> r = InhibitRule({"alertname": "silence"}, {}, ("model",), target_match_re={"kind": ".*drift"})
    >>> src = {"alertname": "silence", "model": "m"}
    >>> r.inhibits({"alertname": "drift", "kind": "data_drift", "model": "m"}, [src])
    [{'alertname': 'silence', 'model': 'm'}]
    >>> r.inhibits({"alertname": "drift", "kind": "data_drift", "model": "other"}, [src])
    []
    """

    source_match: Mapping[str, str]
    target_match: Mapping[str, str]
    equal: tuple[str, ...] = ()
    source_match_re: Mapping[str, str] = field(default_factory=dict)
    target_match_re: Mapping[str, str] = field(default_factory=dict)
    source: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)
    target: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        for name in ("source_match", "source_match_re", "target_match", "target_match_re"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                s(self, name, MappingProxyType(dict(value)))
        s(self, "source", _matchers(self.source_match, self.source_match_re, "source"))
        s(self, "target", _matchers(self.target_match, self.target_match_re, "target"))
        if isinstance(self.equal, str):
            raise ValueError(f"equal: must be a list of label names, got the string {self.equal!r}")
        s(self, "equal", tuple(self.equal))
        for i, name in enumerate(self.equal):
            try:
                Matcher(name, "")
            except ValueError:
                raise ValueError(f"equal[{i}]: must be a label name, got {name!r}") from None

    def source_matches(self, labels: Labels) -> bool:
        return all(m.matches(labels) for m in self.source)

    def target_matches(self, labels: Labels) -> bool:
        return all(m.matches(labels) for m in self.target)

    def inhibits(self, labels: Labels, firing: Iterable[Labels]) -> list[Labels]:
        """The firing alerts (label sets) that, by this rule, inhibit the alert ``labels``."""
        if not self.target_matches(labels):
            return []
        two_sided = self.source_matches(labels)
        out = []
        for src in firing:
            if not self.source_matches(src):
                continue
            if any(src.get(n, "") != labels.get(n, "") for n in self.equal):
                continue
            if two_sided and self.target_matches(src):
                continue
            out.append(src)
        return out


class Inhibitor:
    """Decides whether an alert is inhibited by the firing ones, under a set of rules.

    Examples
    --------
    >>> inh = Inhibitor()  # the defaults
    >>> silent = {"alertname": "silence", "kind": "silence", "stream": "predictions", "model": "m",
    ...           "model_version": "v1"}
    >>> drift = {"alertname": "drift", "kind": "data_drift", "model": "m", "model_version": "v1",
    ...          "feature": "amount"}
    >>> inh.inhibited(drift, [silent]), inh.inhibited(drift, []), inh.inhibited(silent, [silent])
    (True, False, False)
    """

    def __init__(self, rules: Iterable[InhibitRule] | None = None) -> None:
        self.rules: tuple[InhibitRule, ...] = DEFAULT_INHIBITIONS if rules is None else tuple(rules)

    def inhibited_by(self, labels: Labels, firing: Iterable[Labels]) -> list[Labels]:
        """Every firing alert that inhibits ``labels`` (under any rule), in ``firing`` order, once each."""
        pool = list(firing)
        out: list[Labels] = []
        for rule in self.rules:
            for src in rule.inhibits(labels, pool):
                if not any(src is o for o in out):
                    out.append(src)
        return out

    def inhibited(self, labels: Labels, firing: Iterable[Labels]) -> bool:
        """Whether some firing alert inhibits ``labels``."""
        pool = list(firing)
        return any(rule.inhibits(labels, pool) for rule in self.rules)


def parse_inhibit_rules(raw: Sequence[Any], where: str = "inhibit_rules") -> tuple[InhibitRule, ...]:
    """Build rules from their YAML form, strictly (errors name ``inhibit_rules[i].key``).

    >>> parse_inhibit_rules([{"source_match": {"alertname": "silence"}, "target_match_re": {"kind": ".*"},
    ...                       "equal": ["model"]}])[0].equal
    ('model',)
    >>> parse_inhibit_rules([{"source_match": {"alertname": "x"}, "target_match_re": {"kind": "("}}])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: inhibit_rules[0].target_match_re.kind: value: invalid regex '(': ...
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"{where}: must be a list, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{w}: must be a mapping, got {type(item).__name__}")
        for k in item:
            if k not in _KEYS:
                raise ValueError(f"{w}.{k}: unknown key; known: {', '.join(sorted(_KEYS))}")
        equal = item.get("equal", [])
        if not isinstance(equal, list) or not all(isinstance(x, str) for x in equal):
            raise ValueError(f"{w}.equal: must be a list of label names, got {equal!r}")
        try:
            out.append(
                InhibitRule(
                    source_match=item.get("source_match", {}),
                    target_match=item.get("target_match", {}),
                    equal=tuple(equal),
                    source_match_re=item.get("source_match_re", {}),
                    target_match_re=item.get("target_match_re", {}),
                )
            )
        except ValueError as e:
            raise ValueError(f"{w}.{e}") from None
    return tuple(out)


_DRIFT = "concept_drift|data_drift|prediction_drift|multivariate_drift"

DEFAULT_INHIBITIONS: tuple[InhibitRule, ...] = (
    # A version's predictions stopped: its drift and anomaly verdicts...
    InhibitRule(
        {"kind": "silence", "stream": "predictions"},
        {},
        ("model", "model_version"),
        target_match_re={"kind": f"{_DRIFT}|anomaly"},
    ),
    # ... and its metric alerts (every metric alert carries a metric label) are noise.
    InhibitRule(
        {"kind": "silence", "stream": "predictions"},
        {},
        ("model", "model_version"),
        target_match_re={"metric": ".+"},
    ),
    # A server's telemetry stopped: the host-level alerts computed from it are noise.
    InhibitRule(
        {"kind": "silence", "stream": "telemetry"},
        {},
        ("model", "host"),
        target_match_re={"kind": "anomaly|memory_leak|gpu_saturation"},
    ),
    # Inputs failing validation look like drift: fix the producer first.
    InhibitRule({"alertname": "invalid_input"}, {}, ("model",), target_match_re={"kind": _DRIFT}),
)
