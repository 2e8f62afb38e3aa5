"""Worker settings: defaults, then a YAML file, then ``DRIFTLINE_*`` environment variables.

Every value is checked at start-up; a bad one raises :class:`ConfigError`
naming the field and where it came from, so a misconfigured deployment fails
before it touches Kafka rather than minutes later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from streams.core.alerting.rules import DEFAULT_RULES, Rule, parse_rules
from streams.core.detection.config import (
    AnomalyConfig,
    ConceptConfig,
    DataConfig,
    DetectionConfig,
    OpsConfig,
)
from streams.core.metrics_config import EngineConfig, ModelConfig
from streams.core.outcomes import TaskConfig
from streams.core.windows import WindowSpec, parse_duration_ms

DEFAULT_LOCAL_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the CLI and the local broker need.

    ``bootstrap_servers`` empty means "the embedded local broker"; any other
    value points every component at that cluster instead.
    """

    bootstrap_servers: str = ""
    topic_prefix: str = "driftline."
    app_id: str = "driftline-worker"
    data_dir: str = ".driftline/worker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    partitions: int = 4
    replication_factor: int = 1
    max_record_bytes: int = 4 * 1024 * 1024
    kafka_version: str = "4.3.1"
    kafka_cache_dir: str = str(Path.home() / ".cache" / "driftline" / "kafka")
    local_broker_dir: str = ".driftline/kafka"
    local_broker_port: int = 9092
    local_controller_port: int = 9093
    log_level: str = "warn"
    metrics: EngineConfig = field(default_factory=EngineConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    alert_rules: tuple[Rule, ...] = DEFAULT_RULES
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The address clients use: the configured cluster, else the local broker."""
        return self.bootstrap_servers or f"127.0.0.1:{self.local_broker_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap_servers

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


_INT_FIELDS = {f.name for f in fields(Settings) if f.type in ("int", int)}
_STR_FIELDS = {f.name for f in fields(Settings) if f.type in ("str", str)}
_BOUNDS = {
    "web_port": (1, 65535),
    "partitions": (1, 10_000),
    "replication_factor": (1, 32),
    "max_record_bytes": (1024, 64 * 1024 * 1024),
    "local_broker_port": (1, 65535),
    "local_controller_port": (1, 65535),
}
_LOG_LEVELS = ("crit", "error", "warn", "info", "debug")


def _coerce(name: str, raw: Any, source: str) -> Any:
    if name in _INT_FIELDS:
        if isinstance(raw, bool):
            raise ConfigError(f"{name} (from {source}): expected an integer, got {raw!r}")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} (from {source}): expected an integer, got {raw!r}") from None
        lo, hi = _BOUNDS.get(name, (-(2**63), 2**63))
        if not lo <= value <= hi:
            raise ConfigError(f"{name} (from {source}): must be in [{lo}, {hi}], got {value}")
        return value
    if not isinstance(raw, str):
        raise ConfigError(f"{name} (from {source}): expected a string, got {type(raw).__name__}")
    return raw


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from a YAML file, the environment and keyword overrides (in that order).

    Environment variables are the field names upper-cased with a ``DRIFTLINE_``
    prefix, e.g. ``DRIFTLINE_BOOTSTRAP_SERVERS``; ``DRIFTLINE_BOOTSTRAP`` is an
    accepted alias for the bootstrap address.
    """
    env = os.environ if env is None else env
    known = {f.name for f in fields(Settings)} - {"extra", "metrics", "detection", "alert_rules"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    config_path = path or env.get("DRIFTLINE_CONFIG")
    if config_path:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_path}: top level must be a mapping")
        for key, raw in loaded.items():
            if key in known:
                values[key] = _coerce(key, raw, str(config_path))
            elif key in ("metrics", "models", "detection", "rules", "notify"):
                extra[key] = raw
            else:
                raise ConfigError(f"{key} (from {config_path}): unknown setting")
    if "DRIFTLINE_BOOTSTRAP" in env:
        values["bootstrap_servers"] = env["DRIFTLINE_BOOTSTRAP"]
    for name in known:
        var = f"DRIFTLINE_{name.upper()}"
        if var in env:
            values[name] = _coerce(name, env[var], var)
    for name, raw in overrides.items():
        if name not in known:
            raise ConfigError(f"{name}: unknown setting")
        if raw is not None:
            values[name] = _coerce(name, raw, "command line")
    models = extra.get("models") or {}
    metrics = engine_config(extra.get("metrics") or {}, models, str(config_path))
    detection = detection_config(extra.get("detection") or {}, models, str(config_path))
    rules = DEFAULT_RULES
    if "rules" in extra:
        try:
            rules = parse_rules(extra["rules"] or [])
        except ValueError as exc:
            raise ConfigError(f"{exc} (from {config_path})") from None
    settings = replace(
        Settings(), **values, metrics=metrics, detection=detection, alert_rules=rules, extra=extra
    )
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.log_level not in _LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(_LOG_LEVELS)}, got {s.log_level!r}")
    if not s.app_id:
        raise ConfigError("app_id: must not be empty")
    if s.bootstrap_servers:
        for part in s.bootstrap_servers.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(
                    f"bootstrap_servers: expected host:port[,host:port...], got {s.bootstrap_servers!r}"
                )
    if s.local_broker_port == s.local_controller_port:
        raise ConfigError("local_controller_port: must differ from local_broker_port")
    if not s.kafka_version.startswith(("3.", "4.")):
        raise ConfigError(f"kafka_version: expected a 3.x or 4.x release, got {s.kafka_version!r}")


_METRICS_DURATIONS = {"allowed_lateness": "allowed_lateness_ms", "idle_close": "idle_close_ms",
                      "label_horizon": "label_horizon_ms"}
_METRICS_INTS = ("max_pending_labels", "max_segments", "max_features", "top_k", "max_classes")
_MODEL_KEYS = {"task", "positive_label", "threshold", "sample_rate", "sampling", "stratify_by", "champion",
               "challengers", "concept_drift"}


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _model_config(raw: Mapping[str, Any], where: str) -> ModelConfig:
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        known = ", ".join(sorted(_MODEL_KEYS))
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown setting (known: {known})")
    try:
        positive = raw.get("positive_label")
        task = TaskConfig(task=raw.get("task", "auto"),
                          positive_label=None if positive is None else str(positive),
                          threshold=float(raw.get("threshold", 0.5)))
        if task.task not in ("auto", "classification", "regression"):
            raise ValueError(f"task: must be auto, classification or regression, got {task.task!r}")
        return ModelConfig(task=task, sample_rate=float(raw.get("sample_rate", 1.0)),
                           strategy=raw.get("sampling", "random"),
                           stratify_by=str(raw.get("stratify_by", "prediction")),
                           champion=None if raw.get("champion") is None else str(raw["champion"]),
                           challengers=tuple(str(c) for c in raw.get("challengers", ())))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def engine_config(metrics: Any, models: Any, source: str) -> EngineConfig:
    """Build the metrics engine settings from the ``metrics:`` and ``models:`` YAML sections."""
    m = _mapping(metrics, f"metrics (from {source})")
    kwargs: dict[str, Any] = {}
    for key, raw in m.items():
        where = f"metrics.{key} (from {source})"
        try:
            if key == "windows":
                if not isinstance(raw, list) or not raw:
                    raise ValueError("expected a non-empty list like ['1m', '5m/1m', '1h']")
                kwargs["windows"] = tuple(WindowSpec.parse(str(w)) for w in raw)
            elif key in _METRICS_DURATIONS:
                text = str(raw)
                kwargs[_METRICS_DURATIONS[key]] = 0 if text in ("0", "0s") else parse_duration_ms(text)
            elif key in _METRICS_INTS:
                if isinstance(raw, bool) or not isinstance(raw, int):
                    raise ValueError(f"expected an integer, got {raw!r}")
                kwargs[key] = raw
            elif key == "enabled":
                if not isinstance(raw, bool):
                    raise ValueError(f"expected true or false, got {raw!r}")
                kwargs[key] = raw
            elif key == "segment_by":
                kwargs[key] = tuple(str(k) for k in (raw if isinstance(raw, list) else [raw]))
            elif key == "default_model":
                kwargs[key] = _model_config(_mapping(raw, where), where)
            else:
                raise ValueError("unknown setting")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    per_model = {str(name): _model_config(_mapping(cfg, f"models.{name}"), f"models.{name} (from {source})")
                 for name, cfg in _mapping(models, f"models (from {source})").items()}
    try:
        return EngineConfig(models=per_model, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"metrics.{exc} (from {source})") from None


def _section(cls: Any, raw: Any, where: str, base: Any = None) -> Any:
    """Build the frozen dataclass ``cls`` from a YAML mapping, typed by its fields' defaults.

    ``<name>_ms`` fields also accept ``<name>: 2m`` (a duration); every error
    names ``<where>.<key>``.
    """
    base = base if base is not None else cls()
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in _mapping(raw, where).items():
        name = key if key in names else f"{key}_ms" if f"{key}_ms" in names else None
        at = f"{where}.{key}"
        if name is None or not isinstance(getattr(base, name), bool | int | float | str):
            raise ConfigError(f"{at}: unknown setting (known: {', '.join(sorted(names))})")
        default = getattr(base, name)
        if name.endswith("_ms") and isinstance(value, str):
            try:
                value = 0 if value in ("0", "0s") else parse_duration_ms(value)
            except ValueError as exc:
                raise ConfigError(f"{at}: {exc}") from None
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(f"{at}: expected {type(default).__name__}, got {value!r}")
        kwargs[name] = value
    try:
        return replace(base, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where}.{exc}") from None


_DETECTION_SECTIONS = {
    "concept": ConceptConfig, "data": DataConfig, "anomaly": AnomalyConfig, "ops": OpsConfig,
}


def detection_config(detection: Any, models: Any, source: str) -> DetectionConfig:
    """Build the detection settings from the ``detection:`` section and ``models.<name>.concept_drift``."""
    where = f"detection (from {source})"
    kwargs: dict[str, Any] = {}
    for key, raw in _mapping(detection, where).items():
        if key == "enabled":
            if not isinstance(raw, bool):
                raise ConfigError(f"detection.enabled (from {source}): expected true or false, got {raw!r}")
            kwargs["enabled"] = raw
        elif key in _DETECTION_SECTIONS:
            kwargs[key] = _section(_DETECTION_SECTIONS[key], raw or {}, f"detection.{key}")
        else:
            raise ConfigError(f"detection.{key} (from {source}): unknown setting "
                              f"(known: enabled, {', '.join(_DETECTION_SECTIONS)})")
    concept = kwargs.get("concept", ConceptConfig())
    per_model = {str(name): _section(ConceptConfig, cfg["concept_drift"], f"models.{name}.concept_drift",
                                     base=concept)
                 for name, cfg in _mapping(models, f"models (from {source})").items()
                 if isinstance(cfg, Mapping) and cfg.get("concept_drift") is not None}
    return DetectionConfig(concept_by_model=per_model, **kwargs)
