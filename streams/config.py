"""Worker settings: defaults, then a YAML file, then ``DRIFTLINE_*`` environment variables.

Every value is checked at start-up; a bad one raises :class:`ConfigError`
naming the field and where it came from, so a misconfigured deployment fails
before it touches Kafka rather than minutes later.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from streams.notify.secrets import Secret

DEFAULT_LOCAL_BOOTSTRAP = "127.0.0.1:9092"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client of Driftline authenticates and encrypts: the ``kafka:`` section.

    One value for the faust app, the confluent-kafka producers, consumers and
    admin clients alike, so a worker cannot reach the cluster on one path and
    fail on another (a profile follower left on PLAINTEXT would only show up
    as a stalled start-up). Strimzi's two usual listeners map onto it:

    * SCRAM over TLS: ``security_protocol: SASL_SSL``, ``sasl_mechanism:
      SCRAM-SHA-512``, ``sasl_username``, the password from
      ``DRIFTLINE_KAFKA_SASL_PASSWORD`` or ``sasl_password_file``, and
      ``ssl_ca_file`` (the cluster CA; omitted: the system's CAs).
    * mutual TLS: ``security_protocol: SSL`` with ``ssl_cert_file`` and
      ``ssl_key_file`` (the KafkaUser's ``user.crt``/``user.key``) and
      ``ssl_ca_file``.

    The password is a :class:`~streams.notify.secrets.Secret` (``repr`` is
    ``***``) and is never part of an error message. The YAML file may only
    *refer* to it (``env:NAME`` or ``file:/path``): the file is a ConfigMap
    under Kubernetes, readable by anyone who can read the namespace's config.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: Secret | None = None
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_config(self) -> dict[str, str]:
        """librdkafka settings (``security.protocol``, ``sasl.*``, ``ssl.*``) for confluent-kafka clients."""
        cfg = {"security.protocol": self.security_protocol}
        if self.uses_sasl:
            cfg["sasl.mechanism"] = self.sasl_mechanism
            cfg["sasl.username"] = self.sasl_username
            cfg["sasl.password"] = self.sasl_password.reveal() if self.sasl_password is not None else ""
        if self.uses_tls:
            for key, path in (("ssl.ca.location", self.ssl_ca_file),
                              ("ssl.certificate.location", self.ssl_cert_file),
                              ("ssl.key.location", self.ssl_key_file)):
                if path:
                    cfg[key] = path
        return cfg

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for aiokafka (the faust app), equivalent to :meth:`client_config`'s ``ssl.*``.

        Server certificates and host names are verified, as librdkafka does by
        default (``ssl.endpoint.identification.algorithm=https``), so both
        kinds of client accept and refuse the same brokers.
        """
        if not self.uses_tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_ca_file or None)
        if self.ssl_cert_file:
            ctx.load_cert_chain(self.ssl_cert_file, self.ssl_key_file or None)
        return ctx


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
    #: The most input records the worker folds as one group (1: record by record); see streams.core.grouping.
    coalesce_records: int = 64
    #: The longest the worker waits to fill a group before it folds what it has.
    coalesce_wait_ms: int = 50
    kafka_version: str = "4.3.1"
    kafka_cache_dir: str = str(Path.home() / ".cache" / "driftline" / "kafka")
    local_broker_dir: str = ".driftline/kafka"
    local_broker_port: int = 9092
    local_controller_port: int = 9093
    log_level: str = "warn"
    metrics: EngineConfig = field(default_factory=EngineConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    alert_rules: tuple[Rule, ...] = DEFAULT_RULES
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)
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

    def kafka_client_config(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Settings for a confluent-kafka ``Producer``/``Consumer``/``AdminClient``: bootstrap and security.

        Every confluent-kafka client Driftline builds starts from this, so a
        cluster that needs SASL or TLS gets it on every path; ``extra`` (the
        client's own tuning: ``group.id``, ``acks``...) is applied on top.
        """
        return {"bootstrap.servers": self.bootstrap, **self.kafka.client_config(), **(extra or {})}


_INT_FIELDS = {f.name for f in fields(Settings) if f.type in ("int", int)}
_STR_FIELDS = {f.name for f in fields(Settings) if f.type in ("str", str)}
_BOUNDS = {
    "web_port": (1, 65535),
    "partitions": (1, 10_000),
    "replication_factor": (1, 32),
    "max_record_bytes": (1024, 64 * 1024 * 1024),
    "coalesce_records": (1, 10_000),
    "coalesce_wait_ms": (1, 10_000),
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


def settings_env(s: Settings) -> dict[str, str]:
    """The ``DRIFTLINE_*`` variables that give a child process (a worker) these settings' identity.

    Bootstrap address, topic prefix, app id, data directory, web port and
    partitions: what tells one run's worker from another's. Kafka security and
    the YAML file travel separately (``DRIFTLINE_KAFKA_*``, ``DRIFTLINE_CONFIG``).

    >>> settings_env(Settings(bootstrap_servers="k:9092"))["DRIFTLINE_BOOTSTRAP_SERVERS"]
    'k:9092'
    """
    return {
        "DRIFTLINE_BOOTSTRAP_SERVERS": s.bootstrap,
        "DRIFTLINE_TOPIC_PREFIX": s.topic_prefix,
        "DRIFTLINE_APP_ID": s.app_id,
        "DRIFTLINE_DATA_DIR": s.data_dir,
        "DRIFTLINE_WEB_PORT": str(s.web_port),
        "DRIFTLINE_PARTITIONS": str(s.partitions),
    }


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
    known = {f.name for f in fields(Settings)} - {"extra", "metrics", "detection", "alert_rules", "kafka"}
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
            elif key in ("metrics", "models", "detection", "rules", "notify", "kafka"):
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
    kafka = kafka_security(extra.get("kafka") or {}, env, str(config_path))
    settings = replace(
        Settings(), **values, metrics=metrics, detection=detection, alert_rules=rules, kafka=kafka,
        extra=extra,
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
    if s.uses_local_broker and s.kafka.security_protocol != "PLAINTEXT":
        raise ConfigError(f"kafka.security_protocol: {s.kafka.security_protocol} needs bootstrap_servers "
                          "(the embedded local broker speaks PLAINTEXT only)")


# -- the kafka: section (client security) ------------------------------------------
KAFKA_KEYS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file",
               "ssl_ca_file", "ssl_cert_file", "ssl_key_file")


def kafka_security(raw: Any, env: Mapping[str, str], source: str) -> KafkaSecurity:
    """Build and check :class:`KafkaSecurity` from the ``kafka:`` YAML section and ``DRIFTLINE_KAFKA_*``.

    The environment wins over the file, key by key (``DRIFTLINE_KAFKA_SASL_USERNAME``
    over ``kafka.sasl_username``), as for every other setting.
    ``DRIFTLINE_KAFKA_SASL_PASSWORD`` is the password itself (a Kubernetes
    ``secretKeyRef``); ``sasl_password_file`` / ``DRIFTLINE_KAFKA_SASL_PASSWORD_FILE``
    a file holding it (a mounted Secret; one trailing newline is dropped).
    Everything is checked here, at start-up: the protocol and mechanism,
    that SASL has a user and a password, that the certificate files are
    readable, and that no SASL or TLS option is set for a protocol that would
    silently ignore it (a forgotten ``security_protocol`` would otherwise
    surface as a connection that hangs). Errors name the field
    (``kafka.ssl_ca_file (from DRIFTLINE_KAFKA_SSL_CA_FILE): ...``), never the password.
    """
    section = _mapping(raw, f"kafka (from {source})")
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in section.items():
        if key not in KAFKA_KEYS:
            known = ", ".join(KAFKA_KEYS)
            raise ConfigError(f"kafka.{key} (from {source}): unknown setting (known: {known})")
        if not isinstance(value, str):
            raise ConfigError(f"kafka.{key} (from {source}): expected a string, got {type(value).__name__}")
        if key == "sasl_password" and not value.startswith(("env:", "file:")):
            raise ConfigError(f"kafka.sasl_password (from {source}): must be a reference, env:NAME or "
                              "file:/path; a password does not belong in the config file (a ConfigMap)")
        values[key], origin[key] = value, source
    for key in KAFKA_KEYS:
        var = f"DRIFTLINE_KAFKA_{key.upper()}"
        if var in env:
            # DRIFTLINE_KAFKA_SASL_PASSWORD holds the password itself: refer to the variable.
            values[key], origin[key] = (f"env:{var}" if key == "sasl_password" else env[var]), var

    def where(key: str) -> str:
        return f"kafka.{key} (from {origin.get(key, 'defaults')})"

    protocol = values.get("security_protocol", "PLAINTEXT").strip().upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"{where('security_protocol')}: must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                          f"got {values['security_protocol']!r}")
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    for key in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file"):
        if values.get(key) and not sasl:
            raise ConfigError(f"{where(key)}: set, but security_protocol is {protocol} (SASL needs "
                              "SASL_SSL or SASL_PLAINTEXT)")
    for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        if values.get(key) and not tls:
            raise ConfigError(f"{where(key)}: set, but security_protocol is {protocol} (TLS needs SSL or "
                              "SASL_SSL)")
        if values.get(key) and not os.access(values[key], os.R_OK):
            raise ConfigError(f"{where(key)}: cannot read {values[key]}")
    if bool(values.get("ssl_cert_file")) != bool(values.get("ssl_key_file")):
        missing = "ssl_key_file" if values.get("ssl_cert_file") else "ssl_cert_file"
        raise ConfigError(f"kafka.{missing}: a client certificate needs both ssl_cert_file and ssl_key_file")
    password = None
    mechanism = values.get("sasl_mechanism", "").strip().upper()
    if sasl:
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"{where('sasl_mechanism')}: {protocol} needs one of "
                              f"{', '.join(SASL_MECHANISMS)}, got {values.get('sasl_mechanism', '')!r}")
        if not values.get("sasl_username"):
            raise ConfigError(f"{where('sasl_username')}: {protocol} needs a user name")
        if values.get("sasl_password") and values.get("sasl_password_file"):
            raise ConfigError(f"{where('sasl_password_file')}: give the password once: sasl_password or "
                              "sasl_password_file, not both")
        ref = values.get("sasl_password") or (
            "file:" + values["sasl_password_file"] if values.get("sasl_password_file") else "")
        key = "sasl_password_file" if values.get("sasl_password_file") else "sasl_password"
        if not ref:
            raise ConfigError(f"kafka.sasl_password: {protocol} needs a password "
                              "(DRIFTLINE_KAFKA_SASL_PASSWORD or kafka.sasl_password_file)")
        from streams.notify.secrets import resolve_secret

        try:
            password = resolve_secret(ref, where(key), env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    security = KafkaSecurity(security_protocol=protocol, sasl_mechanism=mechanism if sasl else "",
                             sasl_username=values.get("sasl_username", ""), sasl_password=password,
                             ssl_ca_file=values.get("ssl_ca_file", ""),
                             ssl_cert_file=values.get("ssl_cert_file", ""),
                             ssl_key_file=values.get("ssl_key_file", ""))
    # A CA file that is not PEM, a key that does not match its certificate: say so now, not at connect.
    if security.ssl_ca_file:
        try:
            ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{where('ssl_ca_file')}: not a PEM CA certificate ({exc})") from None
    try:
        security.ssl_context()
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where('ssl_cert_file')}: certificate and ssl_key_file do not load as a pair "
                          f"({exc})") from None
    return security


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
