"""Alert lifecycle: observations in, ``driftline.alert/v1`` events out.

Each alert is identified by the :func:`fingerprint` of its labels and is in
one of three states (:class:`AlertStatus`); an inactive alert is simply
absent. As in Prometheus and Alertmanager:

* inactive -> active: **pending**, no event, until the condition has held for
  the rule's ``for_ms`` (checked by :meth:`Lifecycle.observe` and
  :meth:`Lifecycle.tick`), then **firing**, with a ``firing`` event
  (``starts_at_ms`` = that moment). With ``for_ms = 0`` it fires at once.
* active while firing: nothing, except one repeat ``firing`` event each
  ``repeat_interval_ms`` (on :meth:`Lifecycle.tick`), so a notifier that lost
  one learns it again and a long incident is not forgotten.

Every event names its **episode** (``evidence.episode``: a digest of the input
that opened the activation, stable under replay) and, for firing events, the
number of firing events sent in it so far (``evidence.notification_seq``: 1
for the first, then repeats and un-mutes). Notifiers key idempotency on these,
not on times, so a repeat is a new notification and a replayed one is not.
* inactive while pending: dropped silently. A condition that flaps faster than
  ``for_ms`` therefore never fires.
* inactive while firing: **resolved**, with a ``resolved`` event
  (``ends_at_ms``). Resolved alerts are kept ``resolve_retention_ms`` (for
  listing), then forgotten; a new activation starts a new pending episode
  under the same fingerprint.

**Silences and inhibition apply at notification time.** A muted alert is still
tracked and still changes state; its events are still written (the alerts
topic is the record of what happened) but carry ``evidence.muted_by``, a list
of ``"silence:<id>"`` and ``"inhibited_by:<fingerprint>"``, so notifiers skip
them. When a firing alert stops being muted (its silence ended, its inhibiting
alert resolved), the next :meth:`Lifecycle.tick` writes a ``firing`` event
without ``muted_by``, so it is notified then. A ``resolved`` event is muted
exactly when the last ``firing`` event of the episode was: every notified
firing gets its notified resolve, and nothing is resolved that was never
announced. Only firing alerts inhibit (pending ones do not), as in
Alertmanager.

Batching is the notifier's business: :func:`group_key` gives the key (per
model by default) under which to batch events.

The clock is ``now_ms``, an argument, clamped so that it never runs
backwards. :meth:`Lifecycle.to_json` / :meth:`Lifecycle.from_json` carry all
alert states (rule settings included), so a restored lifecycle emits exactly
the events the original would have.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from streams.core.alerting.inhibit import Inhibitor
from streams.core.alerting.rules import render_template
from streams.core.alerting.silences import SilenceSet

if TYPE_CHECKING:
    from streams.core.alerting.evaluate import Observation

__all__ = ["ALERT_V1", "AlertState", "AlertStatus", "Lifecycle", "fingerprint", "group_key"]

ALERT_V1 = "driftline.alert/v1"
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000
DEFAULT_RESOLVE_RETENTION_MS = 15 * 60_000
_STATE_VERSION = 1
#: State fields added after version 1 was first written: absent in older states, read with defaults.
_OPTIONAL_STATE = frozenset({"episode", "sends"})
_MAX_EPOCH_MS = 253_402_300_799_999
#: A summary for rules that define none.
DEFAULT_SUMMARY = "{alertname} on {model} {version} {feature} {host}: {value:.4g} (threshold {threshold:.4g})"


class AlertStatus(enum.StrEnum):
    """The state of a tracked alert; an inactive alert is not tracked at all."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of a label set: 16-byte BLAKE2b of its sorted pairs, 32 hex digits.

    Label order does not matter; names and values are separated by ``0xff``, a byte UTF-8
    never produces, so no two label sets share an encoding.

    >>> fingerprint({"model": "m", "alertname": "drift"}) == fingerprint({"alertname": "drift", "model": "m"})
    True
    >>> fingerprint({"a": "bc"}) == fingerprint({"ab": "c"}), len(fingerprint({}))
    (False, 32)
    """
    h = hashlib.blake2b(digest_size=16)
    for name, value in sorted(labels.items()):
        h.update(name.encode())
        h.update(b"\xff")
        h.update(value.encode())
        h.update(b"\xff")
    return h.hexdigest()


def group_key(labels: Mapping[str, str], by: Sequence[str] = ("model",)) -> str:
    """The key under which a notifier batches alerts: the values of the ``by`` labels.

    >>> group_key({"alertname": "drift", "model": "fraud", "feature": "amount"})
    '{model="fraud"}'
    >>> group_key({"model": "fraud"}, by=("model", "severity"))
    '{model="fraud",severity=""}'
    """
    return "{" + ",".join(f"{n}={orjson.dumps(labels.get(n, '')).decode()}" for n in by) + "}"


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _epoch(ms: int) -> int:
    return min(max(int(ms), 0), _MAX_EPOCH_MS)


def _episode_id(fp: str, obs: Observation) -> str:
    """The id of an activation: a digest of the *input* that opened it, never of the clock.

    A worker that crashes after writing an alert event but before its state
    reaches the changelog replays that input after restart and opens the
    activation again, at a later processing time, so ``starts_at_ms`` differs.
    The episode does not: it comes from the signal's own replay-stable
    ``signal_id``, or from the snapshot's window and revision, so notifiers
    derive the same idempotency key and the receiver hears of it once.
    Observations with neither (hand-made ones) fall back to their time.
    """
    ev = obs.evidence
    ident = [fp, ev.get("signal_id"), ev.get("window_start_ms"), ev.get("window_end_ms"), ev.get("revision")]
    if all(x is None for x in ident[1:]):
        ident.append(obs.at_ms)
    return hashlib.blake2b(orjson.dumps(ident), digest_size=8).hexdigest()


@dataclass(slots=True)
class AlertState:
    """Everything known about one tracked alert (read-only for callers; see :meth:`Lifecycle.alerts`)."""

    fingerprint: str
    labels: dict[str, str]
    rule: str
    status: AlertStatus
    severity: str
    for_ms: int
    action: str | None
    annotations: dict[str, str]  # templates, rendered at each event
    active_since_ms: int  # start of the current activation (pending start)
    value: float | None
    threshold: float | None
    window_ms: int
    evidence: dict[str, Any]
    starts_at_ms: int | None = None  # when it last started firing
    ends_at_ms: int | None = None  # when it resolved
    last_sent_ms: int | None = None  # the last firing event
    muted_by: list[str] = field(default_factory=list)  # of the last firing event
    episode: str = ""  # id of the input that opened this activation (see _episode_id)
    sends: int = 0  # firing events sent in this episode (first, repeats, un-mutes)

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "rule": self.rule,
            "status": self.status.value,
            "severity": self.severity,
            "for_ms": self.for_ms,
            "action": self.action,
            "annotations": self.annotations,
            "active_since_ms": self.active_since_ms,
            "value": self.value,
            "threshold": self.threshold,
            "window_ms": self.window_ms,
            "evidence": self.evidence,
            "starts_at_ms": self.starts_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "last_sent_ms": self.last_sent_ms,
            "muted_by": self.muted_by,
            "episode": self.episode,
            "sends": self.sends,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> AlertState:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be an object, got {type(raw).__name__}")
        missing = sorted(set(cls.__dataclass_fields__) - _OPTIONAL_STATE - set(raw))
        if missing:
            raise ValueError(f"{where}.{missing[0]}: missing field")

        def opt_int(k: str) -> int | None:
            v = raw[k]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{where}.{k}: must be an integer or null, got {v!r}")
            return v

        def str_map(k: str) -> dict[str, str]:
            v = raw[k]
            if not isinstance(v, Mapping) or not all(
                isinstance(a, str) and isinstance(b, str) for a, b in v.items()
            ):
                raise ValueError(f"{where}.{k}: must map strings to strings")
            return dict(v)

        try:
            status = AlertStatus(raw["status"])
        except ValueError:
            raise ValueError(
                f"{where}.status: must be pending, firing or resolved, got {raw['status']!r}"
            ) from None
        labels = str_map("labels")
        if fingerprint(labels) != raw["fingerprint"]:
            raise ValueError(f"{where}.fingerprint: does not match the labels")
        for k in ("for_ms", "active_since_ms", "window_ms"):
            if opt_int(k) is None:
                raise ValueError(f"{where}.{k}: must be an integer")
        evidence, muted = raw["evidence"], raw["muted_by"]
        if not isinstance(evidence, Mapping):
            raise ValueError(f"{where}.evidence: must be an object")
        if not isinstance(muted, list) or not all(isinstance(m, str) for m in muted):
            raise ValueError(f"{where}.muted_by: must be a list of strings")
        for k in ("rule", "severity"):
            if not isinstance(raw[k], str):
                raise ValueError(f"{where}.{k}: must be a string")
        action = raw["action"]
        if action is not None and not isinstance(action, str):
            raise ValueError(f"{where}.action: must be a string or null")
        episode, sends = raw.get("episode", ""), raw.get("sends", 0)
        if not isinstance(episode, str):
            raise ValueError(f"{where}.episode: must be a string")
        if isinstance(sends, bool) or not isinstance(sends, int) or sends < 0:
            raise ValueError(f"{where}.sends: must be an integer >= 0")
        return cls(
            fingerprint=raw["fingerprint"],
            labels=labels,
            rule=raw["rule"],
            status=status,
            severity=raw["severity"],
            for_ms=raw["for_ms"],
            action=action,
            annotations=str_map("annotations"),
            active_since_ms=raw["active_since_ms"],
            value=_finite(raw["value"]),
            threshold=_finite(raw["threshold"]),
            window_ms=raw["window_ms"],
            evidence=dict(evidence),
            starts_at_ms=opt_int("starts_at_ms"),
            ends_at_ms=opt_int("ends_at_ms"),
            last_sent_ms=opt_int("last_sent_ms"),
            muted_by=list(muted),
            episode=episode,
            sends=sends,
        )


class Lifecycle:
    """Tracks alerts and emits their ``driftline.alert/v1`` events (see the module docstring).

    Parameters
    ----------
    repeat_interval_ms
        Interval between repeat ``firing`` events of a still-firing alert (Alertmanager's default,
        4 h: often enough that a lasting incident stays visible, rarely enough not to drown a channel).
    resolve_retention_ms
        How long a resolved alert stays listed before it is forgotten.
    silences
        The silences to apply; the worker keeps it up to date from the control topic. Default: an
        empty set, reachable as :attr:`silences`.
    inhibitor
        Inhibition rules; default :data:`~streams.core.alerting.inhibit.DEFAULT_INHIBITIONS`.

    Examples
    --------
    >>> from streams.core.alerting.evaluate import Observation
    >>> from streams.core.alerting.rules import Rule
    >>> rule = Rule("concept_drift", "signal", kinds=("concept_drift",), for_ms=60_000, severity="critical")
    >>> def obs(active, at):
    ...     labels = {"alertname": "concept_drift", "model": "m", "kind": "concept_drift"}
    ...     return Observation(rule, labels, active, 0.2, 0.1, 60_000, at)
    >>> lc = Lifecycle()
    >>> lc.observe(obs(True, 0), now_ms=0)  # pending
    []
    >>> [e["status"] for e in lc.tick(now_ms=60_000)]  # held for for_ms: firing
    ['firing']
    >>> ev = lc.observe(obs(False, 90_000), now_ms=90_000)[0]
    >>> ev["status"], ev["starts_at_ms"], ev["ends_at_ms"]
    ('resolved', 60000, 90000)
    """

    def __init__(
        self,
        repeat_interval_ms: int = DEFAULT_REPEAT_INTERVAL_MS,
        resolve_retention_ms: int = DEFAULT_RESOLVE_RETENTION_MS,
        *,
        silences: SilenceSet | None = None,
        inhibitor: Inhibitor | None = None,
    ) -> None:
        if (
            isinstance(repeat_interval_ms, bool)
            or not isinstance(repeat_interval_ms, int)
            or repeat_interval_ms <= 0
        ):
            raise ValueError(f"repeat_interval_ms: must be a positive int, got {repeat_interval_ms!r}")
        if (
            isinstance(resolve_retention_ms, bool)
            or not isinstance(resolve_retention_ms, int)
            or resolve_retention_ms < 0
        ):
            raise ValueError(f"resolve_retention_ms: must be an int >= 0, got {resolve_retention_ms!r}")
        self.repeat_interval_ms = repeat_interval_ms
        self.resolve_retention_ms = resolve_retention_ms
        self.silences = SilenceSet() if silences is None else silences
        self.inhibitor = Inhibitor() if inhibitor is None else inhibitor
        self._alerts: dict[str, AlertState] = {}
        self._now_ms = 0

    def __len__(self) -> int:
        """Number of tracked alerts (pending, firing or resolved)."""
        return len(self._alerts)

    def _clock(self, now_ms: int) -> int:
        self._now_ms = max(self._now_ms, int(now_ms))
        return self._now_ms

    def alerts(self) -> list[AlertState]:
        """Copies of the tracked alerts, by fingerprint."""
        return [
            replace(a, labels=dict(a.labels), evidence=dict(a.evidence))
            for _, a in sorted(self._alerts.items())
        ]

    # -- inputs ---------------------------------------------------------------------------------

    def observe(self, obs: Observation, now_ms: int) -> list[dict[str, Any]]:
        """Apply one observation; the events it causes (at most one, for its alert)."""
        now = self._clock(now_ms)
        labels = {k: str(v) for k, v in obs.labels.items()}
        fp = fingerprint(labels)
        a = self._alerts.get(fp)
        if obs.active:
            if a is None or a.status is AlertStatus.RESOLVED:
                a = self._alerts[fp] = AlertState(
                    fingerprint=fp,
                    labels=labels,
                    rule=obs.rule.name,
                    status=AlertStatus.PENDING,
                    severity=obs.rule.severity,
                    for_ms=obs.rule.for_ms,
                    action=obs.rule.action,
                    annotations=dict(obs.rule.annotations),
                    active_since_ms=now,
                    value=None,
                    threshold=None,
                    window_ms=0,
                    evidence={},
                    episode=_episode_id(fp, obs),
                )
            self._update(a, obs)
            if a.status is AlertStatus.PENDING and now - a.active_since_ms >= a.for_ms:
                return [self._fire(a, now)]
            return []
        if a is None or a.status is AlertStatus.RESOLVED:
            return []
        if a.status is AlertStatus.PENDING:
            del self._alerts[fp]
            return []
        self._update(a, obs)
        a.status, a.ends_at_ms = AlertStatus.RESOLVED, now
        return [self._event(a, now)]

    def tick(self, now_ms: int) -> list[dict[str, Any]]:
        """Time passes: pending alerts that held long enough fire, repeats fall due, mutes lift.

        Call it on a timer (every few seconds to a minute), also when no input arrives. Events come
        in fingerprint order.
        """
        now = self._clock(now_ms)
        out: list[dict[str, Any]] = []
        for fp in sorted(self._alerts):
            a = self._alerts[fp]
            if a.status is AlertStatus.PENDING:
                if now - a.active_since_ms >= a.for_ms:
                    out.append(self._fire(a, now))
            elif a.status is AlertStatus.FIRING:
                assert a.last_sent_ms is not None
                released = bool(a.muted_by) and not self._muted_by(a, now)
                if released or now - a.last_sent_ms >= self.repeat_interval_ms:
                    out.append(self._send_firing(a, now))
            elif a.ends_at_ms is not None and now - a.ends_at_ms >= self.resolve_retention_ms:
                del self._alerts[fp]
        return out

    def retire_rules(self, keep: Iterable[str], now_ms: int) -> list[dict[str, Any]]:
        """Forget the alerts of rules not in ``keep`` (removed from the configuration).

        Firing ones are resolved (their ``resolved`` events are returned), pending ones dropped.
        """
        now = self._clock(now_ms)
        names = set(keep)
        out: list[dict[str, Any]] = []
        for fp in sorted(self._alerts):
            a = self._alerts[fp]
            if a.rule in names:
                continue
            if a.status is AlertStatus.FIRING:
                a.status, a.ends_at_ms = AlertStatus.RESOLVED, now
                a.evidence = {**a.evidence, "rule_removed": True}
                out.append(self._event(a, now))
            del self._alerts[fp]
        return out

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _update(a: AlertState, obs: Observation) -> None:
        rule = obs.rule
        a.rule, a.severity, a.for_ms, a.action = rule.name, rule.severity, rule.for_ms, rule.action
        a.annotations = dict(rule.annotations)
        a.value, a.threshold = _finite(obs.value), _finite(obs.threshold)
        a.window_ms = max(int(obs.window_ms), 0)
        a.evidence = dict(obs.evidence)

    def _fire(self, a: AlertState, now: int) -> dict[str, Any]:
        a.status, a.starts_at_ms, a.ends_at_ms = AlertStatus.FIRING, now, None
        return self._send_firing(a, now)

    def _send_firing(self, a: AlertState, now: int) -> dict[str, Any]:
        a.last_sent_ms = now
        a.sends += 1
        a.muted_by = self._muted_by(a, now)
        return self._event(a, now)

    def _muted_by(self, a: AlertState, now: int) -> list[str]:
        reasons = [f"silence:{sid}" for sid in self.silences.muted_by(a.labels, now)]
        firing = [b.labels for b in self._alerts.values() if b.status is AlertStatus.FIRING and b is not a]
        if firing:
            fps = sorted(fingerprint(src) for src in self.inhibitor.inhibited_by(a.labels, firing))
            reasons.extend(f"inhibited_by:{fp}" for fp in fps)
        return reasons

    def _event(self, a: AlertState, now: int) -> dict[str, Any]:
        """The ``driftline.alert/v1`` event of ``a`` in its current state."""
        assert a.starts_at_ms is not None
        evidence: dict[str, Any] = {
            **a.evidence,
            "suggested_action": a.action,
            "active_since_ms": _epoch(a.active_since_ms),
        }
        if a.muted_by:
            evidence["muted_by"] = list(a.muted_by)
        if a.episode:
            evidence["episode"] = a.episode
            evidence["notification_seq"] = a.sends
        values = {
            "alertname": a.rule,
            "model": a.labels.get("model", ""),
            "version": a.labels.get("model_version", ""),
            "feature": a.labels.get("feature", ""),
            "host": a.labels.get("host", ""),
            "gpu": a.labels.get("gpu", ""),
            "kind": a.labels.get("kind", ""),
            "metric": a.labels.get("metric", ""),
            "window": a.evidence.get("window", ""),
            "op": a.evidence.get("op", ""),
            "value": a.value,
            "threshold": a.threshold,
            "severity": a.severity,
            "action": a.action or "",
        }
        templates = dict(a.annotations)
        templates.setdefault("summary", DEFAULT_SUMMARY)
        annotations = {k: render_template(t, values)[:8192] for k, t in templates.items()}
        ev: dict[str, Any] = {
            "schema": ALERT_V1,
            "fingerprint": a.fingerprint,
            "status": "resolved" if a.status is AlertStatus.RESOLVED else "firing",
            "severity": a.severity,
            "model": a.labels.get("model", ""),
            "signal": a.rule,
            "value": a.value,
            "threshold": a.threshold,
            "window_ms": a.window_ms,
            "starts_at_ms": _epoch(a.starts_at_ms),
        }
        if "model_version" in a.labels:
            ev["model_version"] = a.labels["model_version"]
        if a.status is AlertStatus.RESOLVED:
            assert a.ends_at_ms is not None
            ev["ends_at_ms"] = _epoch(a.ends_at_ms)
        ev["evidence"] = evidence
        ev["labels"] = dict(a.labels)
        ev["annotations"] = annotations
        return ev

    # -- state ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Versioned JSON state of every tracked alert (silences travel on their own topic)."""
        return {
            "v": _STATE_VERSION,
            "now_ms": self._now_ms,
            "alerts": [a.to_json() for a in self._alerts.values()],
        }

    @classmethod
    def from_json(
        cls,
        raw: Any,
        repeat_interval_ms: int = DEFAULT_REPEAT_INTERVAL_MS,
        resolve_retention_ms: int = DEFAULT_RESOLVE_RETENTION_MS,
        *,
        silences: SilenceSet | None = None,
        inhibitor: Inhibitor | None = None,
    ) -> Lifecycle:
        """Restore from :meth:`to_json`; errors name the field (``lifecycle state.alerts[3].status``)."""
        lc = cls(repeat_interval_ms, resolve_retention_ms, silences=silences, inhibitor=inhibitor)
        where = "lifecycle state"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be an object, got {type(raw).__name__}")
        if raw.get("v") != _STATE_VERSION:
            raise ValueError(f"{where}.v: expected {_STATE_VERSION}, got {raw.get('v')!r}")
        now, alerts = raw.get("now_ms"), raw.get("alerts")
        if isinstance(now, bool) or not isinstance(now, int):
            raise ValueError(f"{where}.now_ms: must be an integer, got {now!r}")
        if not isinstance(alerts, list):
            raise ValueError(f"{where}.alerts: must be a list")
        lc._now_ms = now
        for i, item in enumerate(alerts):
            a = AlertState.from_json(item, f"{where}.alerts[{i}]")
            lc._alerts[a.fingerprint] = a
        return lc
