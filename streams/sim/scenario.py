"""Scenario files: simulated traffic, the worker settings it runs under, and the incidents it injects.

A scenario is what a load test or the demo replays: which models serve (their
versions, features, request rate, label delay, telemetry), which worker
settings make the detectors fit a run of minutes instead of hours, and when
each incident starts and ends. The runner compares the alerts it gets with
this schedule, so the schedule is the ground truth of the whole report:
every field is checked here, strictly, and an error names its place
(``incidents[3].kind: ...``), because a typo that silently drops an incident
would report a detector as perfect.

Pure: parsing does no I/O besides :func:`load_scenario` reading the file,
and the worker configuration is validated with the same functions the worker
uses (:mod:`streams.config`), so a scenario that parses starts a worker.

Format (YAML)::

    name: all_incidents            # default: the file's stem
    description: ...
    duration_s: 480                # how long the fleet sends traffic
    seed: 7                        # every random draw of the fleet derives from it
    grace_s: 90                    # alerts up to this long after an incident ends still count for it
    processes: 3                   # simulated model-server processes (default: up to 4)
    sdk: {linger_ms: 250}          # settings of every simulated server's DriftlineClient (or batch_events)
    model_defaults: {rate_per_s: 100, hosts: 1}     # merged under every model
    models:
      - name: fraud
        versions: {v1: 0.8, v2: 0.2}                # or a list of names (equal shares)
        rate_per_s: 150                             # predictions per second
        features:
          numeric: {amount: {mean: 50, std: 20, weight: 1.0}}   # weight: part of the model's score
          categorical: {country: {fr: 0.4, de: 0.3, us: 0.2, jp: 0.1}}
        label_fraction: 0.5                         # share of predictions that get a label
        label_delay_s: [1, 5]                       # uniform between the two
        latency_ms: 25                              # median
        error_rate: 0.005
        telemetry_interval_s: 1
        hosts: 2                                    # or a list of host names
        gpus: 1                                     # simulated GPUs per host
        rss_mib: 800
        cpu_percent: 35
    worker:                                         # merged into the worker's YAML config
      detection: {ops: {silence_after: 30s}}
    rule_overrides:                                 # patches of the default rules, by name
      serving_error_rate: {window: 1m, for: 30s}
    incidents:
      - {kind: latency_spike, model: fraud, at_s: 60, duration_s: 90, params: {factor: 40}}

Incident kinds and their parameters (defaults in :data:`INCIDENT_PARAMS`):
``feature_drift_abrupt`` and ``feature_drift_gradual`` (``feature``,
``shift_sd``, ``categorical``, ``mix``), ``concept_drift``
(``inverted_fraction``), ``latency_spike`` (``factor``), ``error_burst``
(``error_rate``), ``memory_leak`` (``mib_per_min``, ``hosts``),
``gpu_saturation`` (``utilization_percent``, ``memory_fraction``, ``hosts``),
``silence`` (``telemetry``), ``malformed_flood`` (``records_per_s``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_CATEGORICAL",
    "DEFAULT_NUMERIC",
    "INCIDENT_KINDS",
    "INCIDENT_PARAMS",
    "CategoricalFeature",
    "Incident",
    "ModelSpec",
    "NumericFeature",
    "Scenario",
    "ScenarioError",
    "deep_merge",
    "load_scenario",
    "parse_scenario",
]

INCIDENT_KINDS: tuple[str, ...] = (
    "feature_drift_abrupt",
    "feature_drift_gradual",
    "concept_drift",
    "latency_spike",
    "error_burst",
    "memory_leak",
    "gpu_saturation",
    "silence",
    "malformed_flood",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$(?!\n)")
#: Top-level keys of the worker's YAML config a scenario may set. Connection and naming
#: (bootstrap_servers, topic_prefix, app_id, data_dir, web_port) belong to whoever runs it.
WORKER_KEYS = frozenset({"metrics", "models", "detection", "rules", "partitions", "log_level"})


class ScenarioError(ValueError):
    """The scenario is malformed; the message starts with the place (``incidents[3].kind``)."""


@dataclass(frozen=True, slots=True)
class NumericFeature:
    """A normally distributed input; ``weight`` is its share in the simulated model's score."""

    name: str
    mean: float
    std: float
    weight: float = 0.0


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    """A category drawn with fixed shares (``weights`` sum to 1, in the order of ``values``)."""

    name: str
    values: tuple[str, ...]
    weights: tuple[float, ...]


DEFAULT_NUMERIC: tuple[NumericFeature, ...] = (
    NumericFeature("amount", 50.0, 20.0, 0.0),
    NumericFeature("age", 40.0, 12.0, 0.0),
    NumericFeature("score", 0.0, 1.0, 1.0),
)
DEFAULT_CATEGORICAL: tuple[CategoricalFeature, ...] = (
    CategoricalFeature("country", ("fr", "de", "us", "jp"), (0.4, 0.3, 0.2, 0.1)),
    CategoricalFeature("device", ("mobile", "desktop", "tablet"), (0.6, 0.3, 0.1)),
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One simulated model: its traffic, its labels, its servers (see the module docstring)."""

    name: str
    versions: tuple[tuple[str, float], ...] = (("v1", 1.0),)
    rate_per_s: float = 100.0
    numeric: tuple[NumericFeature, ...] = DEFAULT_NUMERIC
    categorical: tuple[CategoricalFeature, ...] = DEFAULT_CATEGORICAL
    label_fraction: float = 0.5
    label_delay_s: tuple[float, float] = (1.0, 5.0)
    latency_ms: float = 25.0
    error_rate: float = 0.005
    telemetry_interval_s: float = 1.0
    hosts: tuple[str, ...] = ()
    gpus: int = 0
    rss_mib: float = 800.0
    cpu_percent: float = 35.0

    def feature(self, name: str) -> NumericFeature | CategoricalFeature | None:
        for n in self.numeric:
            if n.name == name:
                return n
        for c in self.categorical:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True)
class Incident:
    """One scheduled incident: ``kind`` on ``model`` during ``[at_s, at_s + duration_s)``.

    ``params`` is complete (defaults filled in by the parser), so the fleet
    never guesses.
    """

    kind: str
    model: str
    at_s: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def active(self, t_s: float) -> bool:
        return self.at_s <= t_s < self.end_s

    def label(self) -> str:
        return f"{self.kind} on {self.model}"


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file (see the module docstring for the format)."""

    name: str
    duration_s: float
    models: tuple[ModelSpec, ...]
    incidents: tuple[Incident, ...] = ()
    description: str = ""
    seed: int = 7
    grace_s: float = 60.0
    processes: int = 0
    worker: dict[str, Any] = field(default_factory=dict, hash=False)
    rule_overrides: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    sdk: dict[str, Any] = field(default_factory=dict, hash=False)

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def incidents_of(self, model: str) -> tuple[Incident, ...]:
        return tuple(i for i in self.incidents if i.model == model)

    @property
    def total_rate_per_s(self) -> float:
        return sum(m.rate_per_s for m in self.models)

    def with_total_rate(self, rate_per_s: float) -> Scenario:
        """The same scenario with every model's rate scaled so that they sum to ``rate_per_s``."""
        if not rate_per_s > 0:
            raise ScenarioError(f"rate: must be positive, got {rate_per_s}")
        k = rate_per_s / self.total_rate_per_s
        return replace(self, models=tuple(replace(m, rate_per_s=m.rate_per_s * k) for m in self.models))

    def worker_config(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The worker's YAML config: ``base`` (e.g. the user's file), the scenario's ``worker`` over it,
        and the default rules patched by ``rule_overrides`` (over ``base``'s rules if it has some)."""
        cfg = deep_merge(dict(base or {}), self.worker)
        if self.rule_overrides:
            cfg["rules"] = _patched_rules(self.rule_overrides, cfg.get("rules"))
        return cfg


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces.

    >>> deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]})
    {'a': {'x': 1, 'y': 3}, 'l': [2]}
    """
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _patched_rules(overrides: Mapping[str, Mapping[str, Any]], rules: Any = None) -> list[dict[str, Any]]:
    from streams.core.alerting.rules import DEFAULT_RULES_RAW

    base = [dict(r) for r in (rules if isinstance(rules, list) else DEFAULT_RULES_RAW)]
    names = {r.get("name") for r in base}
    for name in overrides:
        if name not in names:
            raise ScenarioError(f"rule_overrides.{name}: no rule of that name (known: "
                                f"{', '.join(sorted(str(n) for n in names))})")
    return [{**r, **overrides.get(str(r.get("name")), {})} for r in base]


# -- parsing helpers ------------------------------------------------------------------------------


def _fail(where: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{where}: {msg}")


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _fail(where, f"expected a mapping, got {type(raw).__name__}")
    for k in raw:
        if not isinstance(k, str):
            raise _fail(where, f"keys must be strings, got {k!r}")
    return raw


def _known(raw: Mapping[str, Any], where: str, known: Sequence[str], required: Sequence[str] = ()) -> None:
    for k in raw:
        if k not in known:
            raise _fail(f"{where}.{k}", f"unknown key (known: {', '.join(sorted(known))})")
    for k in required:
        if k not in raw:
            raise _fail(f"{where}.{k}", "required")


def _number(raw: Any, where: str, lo: float = -math.inf, hi: float = math.inf,
            lo_open: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _fail(where, f"expected a number, got {raw!r}")
    v = float(raw)
    if v < lo or v > hi or (lo_open and v == lo):
        lo_s = f"({lo:g}" if lo_open else f"[{lo:g}"
        raise _fail(where, f"must be in {lo_s}, {hi:g}], got {raw!r}")
    return v


def _int(raw: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _fail(where, f"expected an integer, got {raw!r}")
    if not lo <= raw <= hi:
        raise _fail(where, f"must be in [{lo}, {hi}], got {raw}")
    return raw


def _name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not _NAME.match(raw):
        raise _fail(where, f"expected a name of letters, digits, '.', '_', ':' or '-' (1 to 128), "
                           f"got {raw!r}")
    return raw


def _text(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise _fail(where, f"expected a string, got {type(raw).__name__}")
    return raw


def _bool(raw: Any, where: str) -> bool:
    if not isinstance(raw, bool):
        raise _fail(where, f"expected true or false, got {raw!r}")
    return raw


def _shares(raw: Any, where: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """A mapping value -> positive weight, normalised to sum 1 (order kept)."""
    m = _mapping(raw, where)
    if not m:
        raise _fail(where, "needs at least one value")
    weights = [_number(w, f"{where}.{k}", 0.0, math.inf, lo_open=True) for k, w in m.items()]
    for k in m:
        if not k or len(k) > 256:
            raise _fail(f"{where}.{k}", "values must be 1 to 256 characters")
    total = sum(weights)
    return tuple(m), tuple(w / total for w in weights)


# -- models ---------------------------------------------------------------------------------------

_MODEL_KEYS = (
    "name", "versions", "rate_per_s", "features", "label_fraction", "label_delay_s", "latency_ms",
    "error_rate", "telemetry_interval_s", "hosts", "gpus", "rss_mib", "cpu_percent",
)


def _features(raw: Any, where: str) -> tuple[tuple[NumericFeature, ...], tuple[CategoricalFeature, ...]]:
    m = _mapping(raw, where)
    _known(m, where, ("numeric", "categorical"))
    numeric: list[NumericFeature] = []
    for name, spec in _mapping(m.get("numeric") or {}, f"{where}.numeric").items():
        at = f"{where}.numeric.{name}"
        _name(name, at)
        s = _mapping(spec, at)
        _known(s, at, ("mean", "std", "weight"), required=("mean", "std"))
        numeric.append(NumericFeature(name, _number(s["mean"], f"{at}.mean"),
                                      _number(s["std"], f"{at}.std", 0.0, math.inf, lo_open=True),
                                      _number(s.get("weight", 0.0), f"{at}.weight", -10.0, 10.0)))
    categorical: list[CategoricalFeature] = []
    for name, spec in _mapping(m.get("categorical") or {}, f"{where}.categorical").items():
        at = f"{where}.categorical.{name}"
        _name(name, at)
        values, weights = _shares(spec, at)
        categorical.append(CategoricalFeature(name, values, weights))
    if not numeric and not categorical:
        raise _fail(where, "needs at least one numeric or categorical feature")
    clash = {f.name for f in numeric} & {f.name for f in categorical}
    if clash:
        raise _fail(f"{where}.categorical.{sorted(clash)[0]}", "already a numeric feature")
    return tuple(numeric), tuple(categorical)


def _model(raw: Any, where: str) -> ModelSpec:
    m = _mapping(raw, where)
    _known(m, where, _MODEL_KEYS, required=("name",))
    name = _name(m["name"], f"{where}.name")
    kw: dict[str, Any] = {"name": name}
    if "versions" in m:
        v = m["versions"]
        if isinstance(v, list):
            if not v:
                raise _fail(f"{where}.versions", "needs at least one version")
            names = [_text(x, f"{where}.versions[{i}]") for i, x in enumerate(v)]
            shares: tuple[tuple[str, ...], tuple[float, ...]] = (tuple(names), tuple(1 / len(v) for _ in v))
        else:
            shares = _shares(v, f"{where}.versions")
        for i, ver in enumerate(shares[0]):
            if not 1 <= len(ver) <= 64:
                raise _fail(f"{where}.versions[{i}]", f"a version is 1 to 64 characters, got {ver!r}")
        if len(set(shares[0])) != len(shares[0]):
            raise _fail(f"{where}.versions", "versions must differ")
        kw["versions"] = tuple(zip(*shares, strict=True))
    if "rate_per_s" in m:
        kw["rate_per_s"] = _number(m["rate_per_s"], f"{where}.rate_per_s", 0.0, 100_000.0, lo_open=True)
    if "features" in m:
        kw["numeric"], kw["categorical"] = _features(m["features"], f"{where}.features")
    if "label_fraction" in m:
        kw["label_fraction"] = _number(m["label_fraction"], f"{where}.label_fraction", 0.0, 1.0)
    if "label_delay_s" in m:
        d = m["label_delay_s"]
        at = f"{where}.label_delay_s"
        if isinstance(d, int | float) and not isinstance(d, bool):
            lo = hi = _number(d, at, 0.0, 86_400.0)
        elif isinstance(d, list) and len(d) == 2:
            lo, hi = _number(d[0], f"{at}[0]", 0.0, 86_400.0), _number(d[1], f"{at}[1]", 0.0, 86_400.0)
            if hi < lo:
                raise _fail(at, f"the upper bound {hi:g} is below the lower bound {lo:g}")
        else:
            raise _fail(at, f"expected seconds or [min, max], got {d!r}")
        kw["label_delay_s"] = (lo, hi)
    if "latency_ms" in m:
        kw["latency_ms"] = _number(m["latency_ms"], f"{where}.latency_ms", 0.0, 600_000.0, lo_open=True)
    if "error_rate" in m:
        kw["error_rate"] = _number(m["error_rate"], f"{where}.error_rate", 0.0, 1.0)
    if "telemetry_interval_s" in m:
        kw["telemetry_interval_s"] = _number(m["telemetry_interval_s"], f"{where}.telemetry_interval_s",
                                             0.1, 3600.0)
    hosts = m.get("hosts", 1)
    if isinstance(hosts, list):
        if not hosts:
            raise _fail(f"{where}.hosts", "needs at least one host")
        kw["hosts"] = tuple(_name(h, f"{where}.hosts[{i}]") for i, h in enumerate(hosts))
        if len(set(kw["hosts"])) != len(kw["hosts"]):
            raise _fail(f"{where}.hosts", "host names must differ")
    else:
        n = _int(hosts, f"{where}.hosts", 1, 64)
        kw["hosts"] = tuple(f"{name}-srv-{i}"[:128] for i in range(n))
    if "gpus" in m:
        kw["gpus"] = _int(m["gpus"], f"{where}.gpus", 0, 16)
    if "rss_mib" in m:
        kw["rss_mib"] = _number(m["rss_mib"], f"{where}.rss_mib", 1.0, 1_000_000.0)
    if "cpu_percent" in m:
        kw["cpu_percent"] = _number(m["cpu_percent"], f"{where}.cpu_percent", 0.0, 6400.0)
    return ModelSpec(**kw)


# -- incidents ------------------------------------------------------------------------------------

Check = Callable[[Any, str, ModelSpec], Any]


def _pos(hi: float) -> Check:
    return lambda v, w, m: _number(v, w, 0.0, hi, lo_open=True)


def _fraction(v: Any, w: str, m: ModelSpec) -> float:
    return _number(v, w, 0.0, 1.0)


def _numeric_feature(v: Any, w: str, m: ModelSpec) -> str:
    if not isinstance(v, str) or not isinstance(m.feature(v), NumericFeature):
        raise _fail(w, f"expected a numeric feature of {m.name} "
                       f"({', '.join(f.name for f in m.numeric) or 'none'}), got {v!r}")
    return v


def _categorical_feature(v: Any, w: str, m: ModelSpec) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not isinstance(m.feature(v), CategoricalFeature):
        raise _fail(w, f"expected a categorical feature of {m.name} "
                       f"({', '.join(f.name for f in m.categorical) or 'none'}) or null, got {v!r}")
    return v


def _mix(v: Any, w: str, m: ModelSpec) -> dict[str, float] | None:
    if v is None:
        return None
    values, weights = _shares(v, w)
    return dict(zip(values, weights, strict=True))


def _hosts(v: Any, w: str, m: ModelSpec) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not v:
        raise _fail(w, f"expected a non-empty list of hosts of {m.name}, got {v!r}")
    for i, h in enumerate(v):
        if h not in m.hosts:
            raise _fail(f"{w}[{i}]", f"not a host of {m.name} ({', '.join(m.hosts)}), got {h!r}")
    return list(v)


def _flag(v: Any, w: str, m: ModelSpec) -> bool:
    return _bool(v, w)


def _first_numeric(m: ModelSpec) -> str | None:
    return m.numeric[0].name if m.numeric else None


def _first_categorical(m: ModelSpec) -> str | None:
    return m.categorical[0].name if m.categorical else None


_DRIFT: dict[str, tuple[Check, Any]] = {
    "feature": (_numeric_feature, _first_numeric),
    "shift_sd": (lambda v, w, m: _number(v, w, -100.0, 100.0), 1.0),
    "categorical": (_categorical_feature, _first_categorical),
    "mix": (_mix, None),
}
#: Parameters of each incident kind: name -> (check, default or a function of the model giving it).
INCIDENT_PARAMS: dict[str, dict[str, tuple[Check, Any]]] = {
    "feature_drift_abrupt": _DRIFT,
    "feature_drift_gradual": {**_DRIFT, "shift_sd": (_DRIFT["shift_sd"][0], 1.5)},
    # share of labels drawn against the model's score instead of with it: 1.0 inverts them all
    "concept_drift": {"inverted_fraction": (_fraction, 1.0)},
    "latency_spike": {"factor": (_pos(10_000.0), 40.0)},
    "error_burst": {"error_rate": (_fraction, 0.3)},
    "memory_leak": {"mib_per_min": (_pos(1_000_000.0), 200.0), "hosts": (_hosts, None)},
    "gpu_saturation": {
        "utilization_percent": (lambda v, w, m: _number(v, w, 0.0, 100.0), 99.0),
        "memory_fraction": (_fraction, 0.99),
        "hosts": (_hosts, None),
    },
    "silence": {"telemetry": (_flag, True)},
    "malformed_flood": {"records_per_s": (_pos(10_000.0), 20.0)},
}


def _incident(raw: Any, where: str, models: Mapping[str, ModelSpec], duration_s: float) -> Incident:
    m = _mapping(raw, where)
    _known(m, where, ("kind", "model", "at_s", "duration_s", "params"),
           required=("kind", "model", "at_s", "duration_s"))
    kind = m["kind"]
    if kind not in INCIDENT_KINDS:
        raise _fail(f"{where}.kind", f"must be one of {', '.join(INCIDENT_KINDS)}, got {kind!r}")
    model = m["model"]
    if model not in models:
        raise _fail(f"{where}.model", f"no model of that name (models: {', '.join(models)}), got {model!r}")
    spec = models[model]
    at_s = _number(m["at_s"], f"{where}.at_s", 0.0, math.inf)
    if at_s >= duration_s:
        raise _fail(f"{where}.at_s", f"starts at or after the end of the scenario ({duration_s:g} s)")
    length_s = _number(m["duration_s"], f"{where}.duration_s", 0.0, math.inf, lo_open=True)
    known = INCIDENT_PARAMS[kind]
    given = _mapping(m.get("params") or {}, f"{where}.params")
    _known(given, f"{where}.params", tuple(known))
    params: dict[str, Any] = {}
    for key, (check, default) in known.items():
        if key in given:
            params[key] = check(given[key], f"{where}.params.{key}", spec)
        else:
            params[key] = default(spec) if callable(default) else default
    if kind.startswith("feature_drift") and params["feature"] is None and params["categorical"] is None:
        raise _fail(f"{where}.params", f"{model} has no feature to drift")
    if kind == "gpu_saturation" and spec.gpus < 1:
        raise _fail(f"{where}.model", f"{model} has no GPU (set gpus: 1 or more on the model)")
    return Incident(kind, model, at_s, length_s, params)


# -- the scenario -----------------------------------------------------------------------------------

_TOP_KEYS = ("name", "description", "duration_s", "seed", "grace_s", "processes", "sdk", "model_defaults",
             "models", "worker", "rule_overrides", "incidents")


def _sdk(raw: Any) -> dict[str, Any]:
    """Client settings of the simulated servers. ``linger_ms`` matters to the worker: its cost is
    mostly per record, and a server at 100 predictions/s sends a record every ``linger_ms``."""
    m = _mapping(raw, "sdk")
    _known(m, "sdk", ("linger_ms", "batch_events"))
    out: dict[str, Any] = {}
    if "linger_ms" in m:
        out["linger_ms"] = _number(m["linger_ms"], "sdk.linger_ms", 0.0, 60_000.0, lo_open=True)
    if "batch_events" in m:
        out["batch_events"] = _int(m["batch_events"], "sdk.batch_events", 1, 500)
    return out


def _check_worker(cfg: Mapping[str, Any]) -> None:
    """Validate the worker config with the worker's own parsers (errors name ``worker.<key>``)."""
    from streams.config import ConfigError, detection_config, engine_config
    from streams.core.alerting.rules import parse_rules

    for k in cfg:
        if k not in WORKER_KEYS:
            known = ", ".join(sorted(WORKER_KEYS))
            raise _fail(f"worker.{k}", f"not a setting a scenario may change (known: {known})")
    source = "the scenario"
    try:
        engine_config(cfg.get("metrics") or {}, cfg.get("models") or {}, source)
        detection_config(cfg.get("detection") or {}, cfg.get("models") or {}, source)
        if "rules" in cfg:
            parse_rules(cfg["rules"] or [], "worker.rules")
    except ConfigError as exc:
        raise ScenarioError(f"worker.{str(exc).replace(f' (from {source})', '')}") from None
    except ValueError as exc:  # parse_rules names worker.rules[i] itself
        raise ScenarioError(str(exc)) from None
    if "partitions" in cfg:
        _int(cfg["partitions"], "worker.partitions", 1, 10_000)
    if "log_level" in cfg and cfg["log_level"] not in ("crit", "error", "warn", "info", "debug"):
        raise _fail("worker.log_level", f"must be crit, error, warn, info or debug, got {cfg['log_level']!r}")


def _rule_overrides(raw: Any, worker: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    from streams.core.alerting.rules import parse_rules

    where = "rule_overrides"
    out: dict[str, dict[str, Any]] = {}
    for name, patch in _mapping(raw, where).items():
        p = _mapping(patch, f"{where}.{name}")
        if "name" in p or "source" in p:
            raise _fail(f"{where}.{name}", "may not change a rule's name or source")
        out[name] = dict(p)
    rules = _patched_rules(out, worker.get("rules"))
    for rule in rules:
        if rule["name"] in out:
            try:
                parse_rules([rule], "rules")
            except ValueError as exc:
                raise ScenarioError(str(exc).replace("rules[0]", f"{where}.{rule['name']}", 1)) from None
    return out


def parse_scenario(raw: Any, default_name: str = "scenario") -> Scenario:
    """Build a :class:`Scenario` from its YAML data, strictly (:class:`ScenarioError` names the field)."""
    top = _mapping(raw, "scenario")
    _known(top, "scenario", _TOP_KEYS, required=("duration_s", "models"))
    name = _name(top.get("name", default_name), "name")
    duration_s = _number(top["duration_s"], "duration_s", 0.0, 7 * 86_400.0, lo_open=True)
    defaults = dict(_mapping(top.get("model_defaults") or {}, "model_defaults"))
    if "name" in defaults:
        raise _fail("model_defaults.name", "each model names itself")
    _known(defaults, "model_defaults", _MODEL_KEYS)
    raw_models = top["models"]
    if not isinstance(raw_models, list) or not raw_models:
        raise _fail("models", "expected a non-empty list of models")
    models: dict[str, ModelSpec] = {}
    for i, rm in enumerate(raw_models):
        spec = _model({**defaults, **_mapping(rm, f"models[{i}]")}, f"models[{i}]")
        if spec.name in models:
            raise _fail(f"models[{i}].name", f"{spec.name!r} is already a model")
        models[spec.name] = spec
    raw_incidents = top.get("incidents") or []
    if not isinstance(raw_incidents, list):
        raise _fail("incidents", f"expected a list, got {type(raw_incidents).__name__}")
    incidents = tuple(_incident(r, f"incidents[{i}]", models, duration_s)
                      for i, r in enumerate(raw_incidents))
    worker = dict(_mapping(top.get("worker") or {}, "worker"))
    _check_worker(worker)
    overrides = _rule_overrides(top.get("rule_overrides") or {}, worker)
    processes = _int(top.get("processes", 0), "processes", 0, 64)
    return Scenario(
        name=name,
        description=_text(top.get("description", ""), "description"),
        duration_s=duration_s,
        seed=_int(top.get("seed", 7), "seed", 0, 2**32 - 1),
        grace_s=_number(top.get("grace_s", 60.0), "grace_s", 0.0, 86_400.0),
        processes=processes,
        models=tuple(models.values()),
        incidents=incidents,
        worker=worker,
        rule_overrides=overrides,
        sdk=_sdk(top.get("sdk") or {}),
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and parse a scenario file; errors start with the file's path."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    try:
        return parse_scenario(raw, default_name=p.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
