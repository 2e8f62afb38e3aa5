"""Which receivers get an alert: an ordered list of routes, Alertmanager-style.

Configuration (the ``notify:`` section)::

    notify:
      default_receiver: ops-email
      routes:
        - receiver: risk-slack
          match: {team: risk}
          match_re: {model: "fraud-.*"}
          continue: true          # also try the routes below
        - receiver: pager
          match: {severity: critical}

Semantics, as Alertmanager's first-level routes:

* Routes are tried in order; a route matches when every ``match`` label equals
  the given value **and** every ``match_re`` label fully matches its regular
  expression (anchored: ``fraud-.*`` does not match ``old-fraud-1``). A
  missing label reads as the empty string, so ``match_re: {env: ".*"}``
  matches alerts without ``env`` as well.
* The first matching route wins, unless it has ``continue: true``, in which
  case matching goes on with the next route and every matching route's
  receiver gets the alert.
* When no route matches, the alert goes to ``default_receiver``.

The labels routed on are :func:`alert_labels`: the alert's own labels plus
``alertname`` (the signal), ``model``, ``model_version`` (when set) and
``severity`` -- the same set the Alertmanager channel posts, so a route
written for Driftline reads like one written for Alertmanager. Nested routes,
grouping and timing (``group_by``, ``group_wait``) are not implemented: the
alerting stage already emits one event per alert state change.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Route", "RoutingTable", "alert_labels", "parse_routing"]


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """Routing labels: the alert's own plus ``alertname``, ``model``, ``model_version``, ``severity``.

    The four derived labels override labels of the same name: they are facts
    about the alert, and a user label ``severity: low`` on a critical alert
    must not route it as low. ``alertname`` is the exception: an explicit
    ``alertname`` label is kept (the user named the alert), the signal
    otherwise.

    Examples
    --------
    >>> alert_labels({"signal": "psi", "model": "fraud", "model_version": None, "severity": "warning",
    ...               "labels": {"team": "risk", "severity": "low"}})
    {'team': 'risk', 'severity': 'warning', 'alertname': 'psi', 'model': 'fraud'}
    """
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    labels["alertname"] = labels.get("alertname") or str(alert.get("signal", ""))
    labels["model"] = str(alert.get("model", ""))
    if alert.get("model_version") is not None:
        labels["model_version"] = str(alert["model_version"])
    labels["severity"] = str(alert.get("severity", ""))
    return labels


@dataclass(frozen=True, slots=True)
class Route:
    """One route: a receiver and the labels an alert must have to reach it.

    Parameters
    ----------
    receiver
        The receiver's name.
    match
        Label name to the exact value it must have.
    match_re
        Label name to a regular expression its value must fully match.
    continue_
        Keep trying the following routes after this one matched.

    Raises
    ------
    ValueError
        An empty receiver, or a regular expression that does not compile
        (``match_re.model: bad regex ...``).

    Examples
    --------
    >>> r = Route("risk", match={"team": "risk"}, match_re={"model": "fraud-.*"})
    >>> r.matches({"team": "risk", "model": "fraud-eu"}), r.matches({"team": "risk", "model": "old-fraud-1"})
    (True, False)
    """

    receiver: str
    match: Mapping[str, str] = field(default_factory=dict)
    match_re: Mapping[str, str] = field(default_factory=dict)
    continue_: bool = False
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.receiver:
            raise ValueError("receiver: must not be empty")
        compiled = []
        for name, pattern in self.match_re.items():
            try:
                compiled.append((name, re.compile(pattern)))
            except re.error as exc:
                raise ValueError(f"match_re.{name}: bad regex {pattern!r} ({exc})") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` takes this route (a missing label reads as ``""``)."""
        return all(labels.get(k, "") == v for k, v in self.match.items()) and all(
            p.fullmatch(labels.get(k, "")) is not None for k, p in self._compiled
        )


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Routes tried in order, and the receiver of alerts no route takes.

    Examples
    --------
    >>> t = RoutingTable((Route("risk", match={"team": "risk"}, continue_=True),
    ...                   Route("pager", match={"severity": "critical"})), default_receiver="ops")
    >>> t.routes_for({"team": "risk", "severity": "critical"}), t.routes_for({"team": "ml"})
    (['risk', 'pager'], ['ops'])
    """

    routes: tuple[Route, ...]
    default_receiver: str

    def routes_for(self, labels: Mapping[str, str]) -> list[str]:
        """The receivers of an alert with ``labels``, in route order, each once.

        Two routes to the same receiver deliver once: the notification's
        idempotency key is per receiver, so a second would be a duplicate.
        """
        out: list[str] = []
        for route in self.routes:
            if route.matches(labels):
                if route.receiver not in out:
                    out.append(route.receiver)
                if not route.continue_:
                    break
        return out or [self.default_receiver]

    def receivers(self) -> set[str]:
        """Every receiver the table can route to (to check that each is configured)."""
        return {self.default_receiver, *(r.receiver for r in self.routes)}


_ROUTE_KEYS = {"receiver", "match", "match_re", "continue"}


def _labels(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping of label name to value, got {type(raw).__name__}")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"{where}: label names must be non-empty strings, got {k!r}")
        if not isinstance(v, str):
            raise ValueError(f"{where}.{k}: expected a string, got {type(v).__name__} (quote it in YAML)")
        out[k] = v
    return out


def parse_routing(
    raw: Mapping[str, Any], *, where: str = "notify", receivers: Collection[str] | None = None
) -> RoutingTable:
    """Build the routing table from the YAML-shaped ``notify`` mapping.

    Parameters
    ----------
    raw
        The mapping with ``default_receiver`` and ``routes`` (other keys, such
        as ``receivers``, are left to their own parsers).
    where
        The path of ``raw`` in the configuration, for error messages.
    receivers
        The configured receiver names; when given, a route to any other name
        is an error (a typo would otherwise drop alerts on the floor).

    Raises
    ------
    ValueError
        Naming the field: ``notify.routes[1].match_re.model: bad regex ...``,
        ``notify.routes[0].receiver: unknown receiver 'slak'``,
        ``notify.routes[2].frobnicate: unknown key``.

    Examples
    --------
    >>> t = parse_routing({"default_receiver": "ops", "routes": [
    ...     {"receiver": "risk", "match_re": {"model": "fraud-.*"}, "continue": True}]})
    >>> t.routes[0].continue_, t.routes_for({"model": "fraud-eu"})
    (True, ['risk'])
    >>> parse_routing({"default_receiver": "ops", "routes": [{"receiver": "a", "match_re": {"model": "[a"}}]})
    Traceback (most recent call last):
    ...
    ValueError: notify.routes[0].match_re.model: bad regex '[a' (unterminated character set at position 0)
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = None if receivers is None else set(receivers)

    def receiver_name(value: Any, field_path: str) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{field_path}: required, a receiver name")
        if known is not None and value not in known:
            configured = ", ".join(sorted(known))
            raise ValueError(f"{field_path}: unknown receiver {value!r} (configured: {configured})")
        return value

    default = receiver_name(raw.get("default_receiver"), f"{where}.default_receiver")
    raw_routes = raw.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ValueError(f"{where}.routes: expected a list, got {type(raw_routes).__name__}")
    routes: list[Route] = []
    for i, entry in enumerate(raw_routes):
        at = f"{where}.routes[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{at}: expected a mapping, got {type(entry).__name__}")
        for key in entry:
            if key not in _ROUTE_KEYS:
                raise ValueError(f"{at}.{key}: unknown key (expected {', '.join(sorted(_ROUTE_KEYS))})")
        cont = entry.get("continue", False)
        if not isinstance(cont, bool):
            raise ValueError(f"{at}.continue: expected true or false, got {cont!r}")
        match = _labels(entry.get("match"), f"{at}.match")
        match_re = _labels(entry.get("match_re"), f"{at}.match_re")
        try:
            receiver = receiver_name(entry.get("receiver"), f"{at}.receiver")
            routes.append(Route(receiver, match, match_re, cont))
        except ValueError as exc:
            if str(exc).startswith(at):
                raise
            raise ValueError(f"{at}.{exc}") from None
    return RoutingTable(tuple(routes), default)
