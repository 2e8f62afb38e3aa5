"""Alert rules: when a metric or a detector's signal is a problem worth a page.

A :class:`Rule` is plain frozen data, validated on construction (``ValueError``
naming the field). :func:`parse_rules` builds rules from the YAML ``alerting.rules``
list, strictly: an unknown key, a wrong type or a bad duration is refused with
an error naming ``rules[i].key``, because a misspelt rule that silently never
fires is worse than a worker that does not start.

Two sources:

* ``metric`` rules compare one number of a metrics snapshot
  (``schemas/metrics.v1.json``) with a threshold, with hysteresis: the
  condition starts past ``trigger`` and ends only past ``clear``, on the safe
  side, so a value hovering at the threshold does not flap.
* ``signal`` rules turn detector verdicts (``schemas/signal.v1.json``) into
  conditions: a condition kind (silence, anomaly, leak, saturation) holds from
  its ``active=true`` signal to its ``active=false`` one; a point detection
  (drift) holds for ``hold_ms`` after the last one.

Annotations are ``str.format_map`` templates over a fixed set of fields
(:data:`TEMPLATE_FIELDS`); field names are checked when the rule is built,
so attribute or index access (``{model.__class__}``) is refused, and rendering
never fails (a value that does not suit the format spec is written plainly).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from streams.core.detection.signals import KINDS as SIGNAL_KINDS
from streams.core.windows import WindowSpec, parse_duration_ms

__all__ = [
    "DEFAULT_HOLD_MS",
    "DEFAULT_RULES",
    "DEFAULT_RULES_RAW",
    "METRIC_PATHS",
    "POINT_KINDS",
    "RESERVED_LABELS",
    "SIGNAL_KINDS",
    "TEMPLATE_FIELDS",
    "Action",
    "Op",
    "Rule",
    "Severity",
    "Source",
    "check_template",
    "is_metric_path",
    "parse_rules",
    "render_template",
]

Source = Literal["metric", "signal"]
Op = Literal[">", "<"]
Severity = Literal["info", "warning", "critical"]
Action = Literal["rollback", "retrain", "scale_out", "investigate"]

SOURCES: tuple[str, ...] = get_args(Source)
OPS: tuple[str, ...] = get_args(Op)
SEVERITIES: tuple[str, ...] = get_args(Severity)
ACTIONS: tuple[str, ...] = get_args(Action)

#: Kinds whose ``active=true`` signal is a one-off detection, not the start of a condition: they
#: never send a matching "ended" signal (concept drift, Page-Hinkley data drift), so the rule holds
#: them for ``hold_ms`` after the last one. The other kinds are conditions, held until cleared.
POINT_KINDS = frozenset({"concept_drift", "data_drift", "prediction_drift", "multivariate_drift"})
DEFAULT_HOLD_MS = 30 * 60_000
#: A metric series with no qualifying snapshot for this long (at least 3 hops) stops deciding.
MIN_METRIC_HOLD_MS = 30 * 60_000

#: Labels the evaluator sets itself; a rule's ``labels`` may not override them (they are the alert's
#: identity: two series differing only there must stay two alerts).
RESERVED_LABELS = frozenset(
    {"alertname", "model", "model_version", "feature", "kind", "metric", "host", "gpu", "stream", "subject"}
)
#: Fields an annotation template may use.
TEMPLATE_FIELDS = frozenset(
    {
        "alertname",
        "model",
        "version",
        "value",
        "threshold",
        "feature",
        "kind",
        "metric",
        "window",
        "op",
        "host",
        "gpu",
        "severity",
        "action",
    }
)

_QUANTILES = ("p50", "p90", "p95", "p99", "max", "mean")
_PRF = ("precision", "recall", "f1")
#: Numeric paths of a metrics snapshot a rule may watch (plus ``features.<name>.<stat>``).
METRIC_PATHS = frozenset(
    [
        "late_events",
        "serving.count",
        "serving.rate_per_s",
        "serving.errors",
        "serving.error_rate",
        *(f"serving.latency_ms.{q}" for q in _QUANTILES),
        "labels.labelled",
        "labels.coverage",
        *(f"labels.delay_ms.{q}" for q in _QUANTILES),
        "labels.classification.n",
        "labels.classification.accuracy",
        *(f"labels.classification.{avg}.{m}" for avg in ("macro", "micro", "binary") for m in _PRF),
        *(f"labels.regression.{m}" for m in ("n", "mae", "mse", "rmse", "bias", "skipped")),
        *(f"predictions.{s}" for s in ("count", "missing", "missing_rate", "mean", "std", "min", "max")),
        "champion.error_rate_diff",
        "champion.accuracy_diff",
        "champion.rmse_diff",
    ]
)
_FEATURE_STATS = frozenset(
    {"count", "missing", "missing_rate", "mean", "std", "min", "max", "distinct_tracked"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$(?!\n)")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$(?!\n)")


def is_metric_path(path: str) -> bool:
    """Whether ``path`` names a numeric metric of a snapshot.

    >>> is_metric_path("serving.latency_ms.p99"), is_metric_path("features.amount.mean")
    (True, True)
    >>> is_metric_path("serving.latency.p99")
    False
    """
    if path in METRIC_PATHS:
        return True
    if path.startswith("features."):
        name, _, stat = path[len("features.") :].rpartition(".")
        return bool(name) and stat in _FEATURE_STATS
    return False


class _Field:
    """One template value: formats with the spec when it suits, else plainly; ``None`` reads ``n/a``."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        if self.value is None:
            return "n/a"
        try:
            return format(self.value, spec)
        except (TypeError, ValueError):
            return str(self.value)

    def __str__(self) -> str:
        return "n/a" if self.value is None else str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class _Fields(dict[str, _Field]):
    def __missing__(self, key: str) -> _Field:
        return _Field(None)


def check_template(template: str) -> None:
    """Refuse a template that is malformed or uses a field outside :data:`TEMPLATE_FIELDS`.

    >>> check_template("{model} p99 {value:.0f} ms")
    >>> check_template("{model.__class__}")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown field {model.__class__}; known: action, alertname, ...
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"malformed template: {e}") from None
    for _, name, spec, _conv in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown field {{{name}}}; known: {known}")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"nested field in the format spec of {{{name}}}")


_INNER_SPACES = re.compile(r"(?<=\S) {2,}(?=\S)")
_TRAILING_SPACES = re.compile(r" +$", re.MULTILINE)


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Fill a template checked by :func:`check_template`; never raises on values.

    A ``None`` value reads ``n/a``; a value that does not suit the format spec is written
    plainly. Runs of spaces left between words by empty fields collapse to one.

    >>> render_template("p99 {value:.0f} ms > {threshold} on {model} {version} now",
    ...                 {"value": 1234.5, "threshold": None, "model": "m", "version": ""})
    'p99 1234 ms > n/a on m now'
    >>> render_template("{value:.2f}", {"value": "text"})
    'text'
    """
    text = template.format_map(_Fields({k: _Field(v) for k, v in values.items()}))
    return _TRAILING_SPACES.sub("", _INNER_SPACES.sub(" ", text))


def _finite(v: float | None, where: str) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
        raise ValueError(f"{where}: must be a finite number, got {v!r}")


def _str_map(m: Any, where: str, max_value: int) -> dict[str, str]:
    if not isinstance(m, Mapping):
        raise ValueError(f"{where}: must be a mapping of strings, got {type(m).__name__}")
    out: dict[str, str] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not 1 <= len(k) <= 128:
            raise ValueError(f"{where}: keys must be strings of 1 to 128 characters, got {k!r}")
        if not isinstance(v, str):
            raise ValueError(f"{where}.{k}: must be a string, got {type(v).__name__}")
        if len(v) > max_value:
            raise ValueError(f"{where}.{k}: at most {max_value} characters, got {len(v)}")
        out[k] = v
    return out


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule (see the module docstring and :func:`parse_rules` for the YAML keys).

    Parameters
    ----------
    name
        The rule's name: the alert's ``signal`` and its ``alertname`` label.
    source
        ``"metric"`` (a number of a metrics snapshot) or ``"signal"`` (detector verdicts).
    models
        Globs (``fnmatch``, case-sensitive) of the models it applies to.
    metric, window, op, trigger, clear, min_count
        Metric rules: the snapshot path (:data:`METRIC_PATHS`), the window it is read from
        (normalised: ``"300s/60s"`` becomes ``"5m/1m"``; other windows and non-null segments are
        ignored), the comparison (``">"``: active above ``trigger``), the level past which it clears
        (default ``trigger``; must be on the safe side), and the least ``serving.count`` (for
        ``serving.*``) or ``labels.labelled`` (for ``labels.*``) or ``count`` (features, predictions)
        a snapshot needs to count.
    kinds, detectors, min_score
        Signal rules: the signal kinds, the detectors (empty: any) and the least score of an
        ``active=true`` signal. Clearing (``active=false``) signals pass either filter: a drift
        cleared because the reference was replaced (detector ``reference``) must end the alert.
    hold_ms
        How long a verdict stands without a new one. Signal rules: point detections
        (:data:`POINT_KINDS`) only, default 30 min; condition kinds wait for their ``active=false``.
        Metric rules: a series with no qualifying snapshot for ``hold_ms`` (retired version, traffic
        stopped) becomes inactive; default the larger of 30 min and 3 window hops.
    for_ms
        How long the condition must hold before the alert fires (0: at once).
    severity, labels, annotations, action
        The alert's severity, extra labels (not overriding :data:`RESERVED_LABELS`), annotation
        templates (:data:`TEMPLATE_FIELDS`) and suggested action.

    Examples
    --------
    >>> r = Rule("slow", "metric", metric="serving.latency_ms.p99", window="300s/60s", op=">",
    ...          trigger=1000.0, clear=800.0, for_ms=300_000)
    >>> r.window, r.clear, r.hold_ms
    ('5m/1m', 800.0, 1800000)
    >>> Rule("slow", "metric", metric="serving.latency_ms.p99", window="5m", op=">", trigger=1.0, clear=2.0)
    Traceback (most recent call last):
    ...
    ValueError: clear: must be at most trigger (1.0) for op '>', got 2.0
    """

    name: str
    source: Source
    models: tuple[str, ...] = ("*",)
    metric: str | None = None
    window: str | None = None
    op: Op | None = None
    trigger: float | None = None
    clear: float | None = None
    min_count: int = 0
    kinds: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    min_score: float | None = None
    hold_ms: int | None = None
    for_ms: int = 0
    severity: Severity = "warning"
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    action: Action | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"name: 1 to 128 characters, a letter or digit then letters, digits, '.', '_', ':' or '-',"
                f" got {self.name!r}"
            )
        if self.source not in SOURCES:
            raise ValueError(f"source: must be metric or signal, got {self.source!r}")
        s(self, "models", tuple(self.models))
        if not self.models or not all(isinstance(m, str) and m for m in self.models):
            raise ValueError(
                f"models: must be a non-empty list of non-empty globs, got {list(self.models)!r}"
            )
        s(self, "kinds", tuple(self.kinds))
        s(self, "detectors", tuple(self.detectors))
        if self.source == "metric":
            self._check_metric()
        else:
            self._check_signal()
        if isinstance(self.for_ms, bool) or not isinstance(self.for_ms, int) or self.for_ms < 0:
            raise ValueError(f"for_ms: must be an int >= 0, got {self.for_ms!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity: must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"action: must be one of {', '.join(ACTIONS)} or null, got {self.action!r}")
        labels = _str_map(self.labels, "labels", 1024)
        for k in labels:
            if not _LABEL_NAME.match(k):
                raise ValueError(f"labels.{k}: a label name is a letter or '_' then letters, digits or '_'")
            if k in RESERVED_LABELS:
                raise ValueError(f"labels.{k}: reserved, set by the evaluator")
        s(self, "labels", MappingProxyType(labels))
        annotations = _str_map(self.annotations, "annotations", 8192)
        for k, v in annotations.items():
            try:
                check_template(v)
            except ValueError as e:
                raise ValueError(f"annotations.{k}: {e}") from None
        s(self, "annotations", MappingProxyType(annotations))

    def _check_metric(self) -> None:
        s = object.__setattr__
        for name in ("kinds", "detectors"):
            if getattr(self, name):
                raise ValueError(f"{name}: only for source signal")
        if self.min_score is not None:
            raise ValueError("min_score: only for source signal")
        if not isinstance(self.metric, str) or not is_metric_path(self.metric):
            known = ", ".join([*sorted(METRIC_PATHS), "features.<name>.<stat>"])
            raise ValueError(f"metric: unknown metric path {self.metric!r}; expected one of {known}")
        if not isinstance(self.window, str):
            raise ValueError(f"window: required for source metric, like '5m/1m', got {self.window!r}")
        try:
            spec = WindowSpec.parse(self.window)
        except ValueError as e:
            raise ValueError(f"window: {e}") from None
        s(self, "window", spec.name)
        if self.op not in OPS:
            raise ValueError(f"op: must be '>' or '<', got {self.op!r}")
        if self.trigger is None:
            raise ValueError("trigger: required for source metric")
        _finite(self.trigger, "trigger")
        _finite(self.clear, "clear")
        s(self, "trigger", float(self.trigger))
        clear = self.trigger if self.clear is None else float(self.clear)
        if self.op == ">" and clear > self.trigger:
            raise ValueError(f"clear: must be at most trigger ({self.trigger}) for op '>', got {clear}")
        if self.op == "<" and clear < self.trigger:
            raise ValueError(f"clear: must be at least trigger ({self.trigger}) for op '<', got {clear}")
        s(self, "clear", clear)
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 0:
            raise ValueError(f"min_count: must be an int >= 0, got {self.min_count!r}")
        self._check_hold(max(MIN_METRIC_HOLD_MS, 3 * spec.hop_ms))

    def _check_signal(self) -> None:
        for name in ("metric", "window", "op", "trigger", "clear"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: only for source metric")
        if self.min_count:
            raise ValueError("min_count: only for source metric")
        if not self.kinds:
            raise ValueError(f"kinds: at least one of {', '.join(SIGNAL_KINDS)}")
        for i, k in enumerate(self.kinds):
            if k not in SIGNAL_KINDS:
                raise ValueError(f"kinds[{i}]: must be one of {', '.join(SIGNAL_KINDS)}, got {k!r}")
        for i, d in enumerate(self.detectors):
            if not isinstance(d, str) or not 1 <= len(d) <= 64:
                raise ValueError(f"detectors[{i}]: must be a string of 1 to 64 characters, got {d!r}")
        _finite(self.min_score, "min_score")
        self._check_hold(DEFAULT_HOLD_MS)

    def _check_hold(self, default_ms: int) -> None:
        if self.hold_ms is None:
            object.__setattr__(self, "hold_ms", default_ms)
        elif isinstance(self.hold_ms, bool) or not isinstance(self.hold_ms, int) or self.hold_ms <= 0:
            raise ValueError(f"hold_ms: must be a positive int, got {self.hold_ms!r}")

    @property
    def hold(self) -> int:
        """``hold_ms``, resolved (never ``None`` once built)."""
        assert self.hold_ms is not None
        return self.hold_ms


# -- parsing ----------------------------------------------------------------------------------------

_COMMON_KEYS = frozenset({"name", "source", "models", "for", "severity", "labels", "annotations", "action"})
_METRIC_KEYS = frozenset({"metric", "window", "op", "trigger", "clear", "min_count", "hold"})
_SIGNAL_KEYS = frozenset({"kinds", "detectors", "min_score", "hold"})
# Rule attribute -> YAML key, where they differ, so that errors name what the user wrote.
_RAW_KEY = {"for_ms": "for", "hold_ms": "hold"}


def _duration(v: Any, where: str, *, zero_ok: bool) -> int:
    if zero_ok and (v == 0 or v == "0") and not isinstance(v, bool):
        return 0
    if not isinstance(v, str):
        hint = "0 or " if zero_ok else ""
        raise ValueError(f"{where}: must be {hint}a duration like '30s', '5m' or '1h', got {v!r}")
    try:
        return parse_duration_ms(v)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _str_list(v: Any, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}: must be a list of strings, got {v!r}")
    return tuple(v)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: must be a finite number, got {v!r}")
    return float(v)


def _parse_one(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(raw).__name__}")
    for k in raw:
        if not isinstance(k, str):
            raise ValueError(f"{where}: keys must be strings, got {k!r}")
    source = raw.get("source")
    if source not in SOURCES:
        raise ValueError(f"{where}.source: must be metric or signal, got {source!r}")
    own = _METRIC_KEYS if source == "metric" else _SIGNAL_KEYS
    other = _SIGNAL_KEYS if source == "metric" else _METRIC_KEYS
    for k in raw:
        if k in other and k not in own:
            raise ValueError(f"{where}.{k}: not a key of a {source} rule")
        if k not in _COMMON_KEYS | own:
            known = ", ".join(sorted(_COMMON_KEYS | own))
            raise ValueError(f"{where}.{k}: unknown key; a {source} rule knows {known}")
    if "name" not in raw:
        raise ValueError(f"{where}.name: required")
    kw: dict[str, Any] = {"name": raw["name"], "source": source}
    for key, value in raw.items():
        w = f"{where}.{key}"
        if key in ("name", "source"):
            continue
        if key in ("models", "kinds", "detectors"):
            kw[key] = _str_list(value, w)
        elif key == "for":
            kw["for_ms"] = _duration(value, w, zero_ok=True)
        elif key == "hold":
            kw["hold_ms"] = _duration(value, w, zero_ok=False)
        elif key in ("trigger", "clear", "min_score"):
            kw[key] = _number(value, w)
        elif key == "min_count":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{w}: must be an integer, got {value!r}")
            kw[key] = value
        elif key in ("labels", "annotations"):
            if not isinstance(value, Mapping):
                raise ValueError(f"{w}: must be a mapping, got {type(value).__name__}")
            kw[key] = value
        else:  # metric, window, op, severity, action: strings (action may be null)
            if not (isinstance(value, str) or (key == "action" and value is None)):
                raise ValueError(f"{w}: must be a string, got {value!r}")
            kw[key] = value
    try:
        return Rule(**kw)
    except ValueError as e:
        msg = str(e)
        attr, sep, rest = msg.partition(":")
        head = attr.split(".", 1)[0].split("[", 1)[0]
        if sep and head in _RAW_KEY:
            msg = _RAW_KEY[head] + attr[len(head) :] + sep + rest
        raise ValueError(f"{where}.{msg}") from None


def parse_rules(raw: Sequence[Any], where: str = "rules") -> tuple[Rule, ...]:
    """Build rules from their YAML form (a list of mappings), strictly.

    Keys: ``name``, ``source`` (``metric`` or ``signal``), ``models`` (list of globs), ``for``
    (``0`` or a duration: ``"30s"``, ``"5m"``), ``severity``, ``labels``, ``annotations``,
    ``action``; metric rules add ``metric``, ``window``, ``op``, ``trigger``, ``clear``,
    ``min_count``, ``hold``; signal rules add ``kinds``, ``detectors``, ``min_score``, ``hold``.

    >>> rules = parse_rules([{"name": "errors", "source": "metric", "metric": "serving.error_rate",
    ...                       "window": "5m/1m", "op": ">", "trigger": 0.05, "clear": 0.03, "for": "5m"}])
    >>> rules[0].for_ms, rules[0].clear
    (300000, 0.03)
    >>> parse_rules([{"name": "d", "source": "signal", "kinds": ["data_drift"], "for": "5 min"}])
    Traceback (most recent call last):
    ...
    ValueError: rules[0].for: expected a positive duration like '30s', '5m' or '1h', got '5 min'
    >>> parse_rules([{"name": "d", "source": "signal", "kinds": ["data_drift"], "hold": "-1m"}])
    Traceback (most recent call last):
    ...
    ValueError: rules[0].hold: expected a positive duration like '30s', '5m' or '1h', got '-1m'
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"{where}: must be a list of rules, got {type(raw).__name__}")
    out: list[Rule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        rule = _parse_one(item, f"{where}[{i}]")
        if rule.name in seen:
            raise ValueError(f"{where}[{i}].name: {rule.name!r} already names {where}[{seen[rule.name]}]")
        seen[rule.name] = i
        out.append(rule)
    return tuple(out)


# -- defaults -----------------------------------------------------------------------------------------

#: The default rules in their YAML form (what ``alerting.rules`` replaces).
DEFAULT_RULES_RAW: tuple[dict[str, Any], ...] = (
    # Errors: 5% of requests failing is far past any availability SLO (a 99.9% target burns its
    # budget 50x faster), yet above the background of client errors most models see. Clear at 3%:
    # a rate hovering around 5% must not page, resolve and page again. for 5m: a pod restart or a
    # deploy blip (one or two hops of the 5m/1m window) passes. min_count 100: at 100 requests 5% is
    # five failures, not one unlucky call. Snapshots are per model version, and a version that fails
    # this often is fixed fastest by going back to the previous one, hence rollback.
    {
        "name": "serving_error_rate",
        "source": "metric",
        "metric": "serving.error_rate",
        "window": "5m/1m",
        "op": ">",
        "trigger": 0.05,
        "clear": 0.03,
        "min_count": 100,
        "for": "5m",
        "severity": "critical",
        "action": "rollback",
        "annotations": {
            "summary": "{model} {version}: {value:.1%} of requests fail (over {threshold:.0%} for 5 min)",
            "description": "serving.error_rate on the {window} window is {value:.3f}, above {threshold}.",
        },
    },
    # Latency: a p99 of one second is where interactive callers time out and retry (adding load).
    # Clear at 800 ms (20% below) for the same anti-flap reason; for 5m so a GC pause or a cold
    # cache after a deploy passes. min_count 100: the p99 of fewer requests is just the maximum.
    # Slowness under load is relieved by more replicas, hence scale_out; a warning, not a page,
    # because requests still succeed.
    {
        "name": "serving_latency_p99",
        "source": "metric",
        "metric": "serving.latency_ms.p99",
        "window": "5m/1m",
        "op": ">",
        "trigger": 1000.0,
        "clear": 800.0,
        "min_count": 100,
        "for": "5m",
        "severity": "warning",
        "action": "scale_out",
        "annotations": {
            "summary": "{model} {version}: p99 latency {value:.0f} ms (over {threshold:.0f} ms for 5 min)",
        },
    },
    # Accuracy on labelled predictions: the direct measure of harm. On the 1h window, because labels
    # are sparse and late (snapshots are revised as they land): an hour gathers the 200 labels that
    # make the estimate meaningful (its standard error at 0.8 is about 0.03), where a 5-minute
    # window would leave low-traffic models unwatched. Clear at 0.82, about one standard error above,
    # so a model sitting at 0.8 does not flap. for 10m on top of the window. 0.8 is a generic floor:
    # set each model's own. The fast reaction to an accuracy drop is concept_drift (ADWIN on the
    # error stream); this rule confirms it on an hour of labels, hence retrain.
    {
        "name": "accuracy_low",
        "source": "metric",
        "metric": "labels.classification.accuracy",
        "window": "1h",
        "op": "<",
        "trigger": 0.8,
        "clear": 0.82,
        "min_count": 200,
        "for": "10m",
        "severity": "critical",
        "action": "retrain",
        "annotations": {
            "summary": "{model} {version}: accuracy {value:.3f} below {threshold} on {window} of labels",
        },
    },
    # Input and output drift: the detectors already test a whole window, correct for testing every
    # feature and gate on PSI, so one verdict is enough (for 0); drift alone does not prove harm
    # (no labels yet), hence a warning. A shifted input distribution is met with a model trained on
    # it: retrain. One alert per feature (the feature label), grouped per model by the notifier.
    {
        "name": "drift",
        "source": "signal",
        "kinds": ["data_drift", "prediction_drift", "multivariate_drift"],
        "severity": "warning",
        "action": "retrain",
        "annotations": {
            "summary": "{kind} of {model} {version} {feature} (score {value:.3g}, threshold {threshold:.3g})",
        },
    },
    # Concept drift: the error rate itself moved (ADWIN / Page-Hinkley on labelled errors), so users
    # are served worse answers now: critical. Most often after a deploy, where going back is the
    # fastest mitigation: rollback.
    {
        "name": "concept_drift",
        "source": "signal",
        "kinds": ["concept_drift"],
        "severity": "critical",
        "action": "rollback",
        "annotations": {
            "summary": "Concept drift of {model} {version}: error rate moved by {value:.3g}",
        },
    },
    # Anomalies (Half-Space Trees on telemetry and latency): the detector's hysteresis already
    # requires a run of anomalous rows, so for 0; an unusual state is not yet an outage: warning,
    # investigate.
    {
        "name": "anomaly",
        "source": "signal",
        "kinds": ["anomaly"],
        "severity": "warning",
        "action": "investigate",
        "annotations": {"summary": "Anomalous behaviour of {model} {version} {host} (score {value:.2f})"},
    },
    # Memory leak: sustained RSS growth over the leak window; hours from an OOM kill, so a warning.
    # More replicas only spread the leak: investigate (restart the pods, find the leak).
    {
        "name": "memory_leak",
        "source": "signal",
        "kinds": ["memory_leak"],
        "severity": "warning",
        "action": "investigate",
        "annotations": {"summary": "Memory of {model} on {host} grows {value:.3g} bytes/h"},
    },
    # Silence: a stream stopped (predictions of a version, or a server's telemetry) for the detector's
    # silence_after (2 min): the model may be down and every other alert of it is blind. Critical,
    # at once. It inhibits that model's drift, anomaly and metric alerts (see inhibit.py).
    {
        "name": "silence",
        "source": "signal",
        "kinds": ["silence"],
        "severity": "critical",
        "action": "investigate",
        "annotations": {"summary": "No data from {model} {version} {host} for {value:.0f} ms"},
    },
    # GPU saturation: utilisation or memory above 95% for 5 min (the detector waits for it), so
    # queues grow next; add capacity: scale_out. A warning: requests still succeed.
    {
        "name": "gpu_saturation",
        "source": "signal",
        "kinds": ["gpu_saturation"],
        "severity": "warning",
        "action": "scale_out",
        "annotations": {"summary": "GPU {gpu} of {model} on {host} saturated ({value:.0f}%)"},
    },
    # Invalid input: at least 5% of a model's events (and 20 of them) failed their contract over the
    # last minute. They are in the dead-letter topic, not lost, but the model's monitoring is blind
    # to them and its drift statistics see a biased rest, so drift alerts are inhibited meanwhile
    # (inhibit.py). A producer bug, most often right after a client deploy: critical, and the fix is
    # on the producer's side, so investigate (the dead letters carry the reason per event).
    {
        "name": "invalid_input",
        "source": "signal",
        "kinds": ["invalid_input"],
        "severity": "critical",
        "action": "investigate",
        "annotations": {
            "summary": "{model}: {value:.1%} of input events fail validation (threshold {threshold:.0%})",
        },
    },
)

DEFAULT_RULES: tuple[Rule, ...] = parse_rules(list(DEFAULT_RULES_RAW), "DEFAULT_RULES")
